/**
 * `prefork-otel [OPTIONS] APP`: the gunicorn-style runner (docs/runner.md), and
 * `prefork-otel exporter [OPTIONS]`: the PROMETHEUS_MULTIPROC_DIR exporter. Only wires the layers:
 * configuration → master (Arbiter) → exit code.
 */
import { spawn } from 'node:child_process';
import { chownSync, closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, exitOnUserError, loadConfig, loadWebConfig } from './config';
import { describeConfig, helpText, loadRunnerConfig, serveSettings, SERVE_ENV, type RunnerConfig } from './config/runner';
import { Arbiter } from './master/arbiter';
import { watchForReload } from './master/reload';
import { RunnerLog } from './util/logger';
import { APP_LOAD_ERROR, WORKER_BOOT_ERROR } from './workers/protocol';

function version(): string {
  try {
    return (JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** --check-config: the configuration is valid (we got here) and the app loads and yields a server. */
async function checkApp(config: Awaited<ReturnType<typeof loadRunnerConfig>> & { kind: 'run' }): Promise<never> {
  const { loadApp } = await import('./workers/app');
  try {
    await loadApp(config.config.app, Math.max(1, Math.min(config.config.timeout, 10)) * 1000, { listenSideServers: false });
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    process.stderr.write(`prefork-otel: APP ${config.config.app.raw} failed to load:\n${(e as Error)?.stack ?? e}\n`);
    process.exit(APP_LOAD_ERROR);
  }
  process.stdout.write(`prefork-otel: configuration OK; ${config.config.app.raw} loads\n`);
  process.exit(0);
}

/**
 * --preload: load the APP once in the master, before forking, so a broken app fails fast with
 * one message (the workers load it again: Node cannot fork a loaded heap).
 */
async function preload(config: RunnerConfig, log: RunnerLog): Promise<void> {
  const { loadApp } = await import('./workers/app');
  try {
    await loadApp(config.app, Math.max(1, Math.min(config.timeout, 10)) * 1000, { listenSideServers: false });
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    log.error(`Exception while loading the application (--preload)\n${(e as Error)?.stack ?? e}`);
    process.exit(WORKER_BOOT_ERROR);
  }
}

/** the access log file is created by the master (a bad path fails at once) and given to --user/--group, as gunicorn's */
function prepareAccessLog(config: RunnerConfig): void {
  const file = config.accessLog;
  if (!file || file === '-') return;
  try {
    closeSync(openSync(file, 'a'));
  } catch (e) {
    throw new ConfigError(`prefork-otel: cannot open --access-logfile ${JSON.stringify(file)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (config.user !== undefined || config.group !== undefined) {
    try {
      chownSync(file, config.user ?? -1, config.group ?? config.userGid ?? -1);
    } catch { /* as gunicorn: probably /dev/null, or not root */ }
  }
}

/** -D / --daemon: start the same command line detached (stdio to /dev/null) and exit 0 */
function daemonize(argv: string[], cwd: string): never {
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...argv], {
    cwd, detached: true, stdio: 'ignore', env: { ...process.env, PREFORK_OTEL_DAEMONIZED: '1' },
  });
  child.unref();
  process.exit(0);
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'exporter') {
    // the PROMETHEUS_MULTIPROC_DIR exporter (src/modes/exporter.ts): loaded only when asked for
    const { runExporter } = await import('./modes/exporter');
    await runExporter(argv.slice(1));
    return;
  }
  const request = await loadRunnerConfig(argv);
  if (request.kind === 'help') {
    process.stdout.write(helpText(version()));
    return;
  }
  if (request.kind === 'version') {
    process.stdout.write(`prefork-otel ${version()}\n`);
    return;
  }
  const { config, warnings } = request;
  const cwd = process.cwd();
  // a master started by USR2 (and anything it spawns) inherits this: the preload does nothing there (src/register.ts)
  process.env.PREFORK_OTEL_ROLE = 'runner-master';
  const exporter = loadConfig(process.env, { workers: config.workers, ...(config.metricsWebConfig ? { webConfigFile: config.metricsWebConfig } : {}) });
  if (config.printConfig) {
    for (const w of warnings) process.stderr.write(`prefork-otel: warning: ${w}\n`);
    process.stdout.write(JSON.stringify({ ...describeConfig(config), exporter }, null, 2) + '\n');
    return;
  }
  if (config.chdir) process.chdir(config.chdir);
  if (config.checkConfig) loadWebConfig(exporter); // the metrics endpoint's web config: one line, exit 2
  if (config.checkConfig) await checkApp(request);
  if (config.daemon && process.env.PREFORK_OTEL_DAEMONIZED !== '1') {
    for (const w of warnings) process.stderr.write(`prefork-otel: warning: ${w}\n`);
    daemonize(argv, cwd);
  }
  const log = new RunnerLog(config.logLevel, config.errorLog);
  for (const w of warnings) log.warning(w);
  prepareAccessLog(config);
  if (config.preloadApp) await preload(config, log);
  // the workers' serving settings (workers/app.ts): the forked workers inherit the environment
  process.env[SERVE_ENV] = JSON.stringify(serveSettings(config));
  if (config.reload) watchForReload(config, log);
  process.title = `prefork-otel: master${config.procName ? ` [${config.procName}]` : ''}`;
  const code = await new Arbiter(config, exporter, log, argv, version(), cwd).run();
  process.exit(code);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  exitOnUserError(e);
});
