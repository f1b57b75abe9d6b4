/**
 * The runner's configuration (`prefork-otel [options] APP`): gunicorn's settings, each defined once
 * in SETTINGS (CLI flag, config-file key, validation, default, help), merged
 * defaults < config file (-c) < environment < command line, and validated with the shared parsers.
 */
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ConfigError, invalid } from './errors';
import { parseBool, parseEnum, parseHost, parseInteger, parseNumber, parsePort } from './parse';
import { HOOK_NAMES, type RawHooks } from './hooks';

type Env = Record<string, string | undefined>;

/** Worker classes: canonical kind of every accepted `-k` value (gunicorn short names and our class names). */
export const WORKER_CLASSES = {
  sync: 'sync',
  PrometheusWorker: 'sync',
  gthread: 'gthread',
  PrometheusThreadWorker: 'gthread',
  eventlet: 'eventlet',
  PrometheusEventletWorker: 'eventlet',
  gevent: 'gevent',
  PrometheusGeventWorker: 'gevent',
  async: 'gevent',
} as const;
export type WorkerKind = (typeof WORKER_CLASSES)[keyof typeof WORKER_CLASSES];
/** the class name reported in logs for each kind */
export const WORKER_CLASS_NAMES: Record<WorkerKind, string> = {
  sync: 'PrometheusWorker', gthread: 'PrometheusThreadWorker', eventlet: 'PrometheusEventletWorker', gevent: 'PrometheusGeventWorker',
};

export const LOG_LEVELS = ['debug', 'info', 'warning', 'error', 'critical'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** One listening address: `host:port`, `[v6]:port`, `host` (port 8000), `unix:/path`, `fd://N`. */
export type Bind =
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string }
  | { kind: 'fd'; fd: number };

/** The APP argument: `path/to/app.js`, `path/to/app.js:exportName`, `path/to/app.mjs:create()`. */
export interface AppSpec {
  /** as written on the command line */
  raw: string;
  /** absolute path of the module */
  path: string;
  /** the export to use (default: the module's default export / module.exports) */
  exportName?: string;
  /** `name()` was written: call the export as a factory */
  call: boolean;
}

/** The typed, validated settings of the runner (everything but the APP and the hooks). */
export interface RunnerSettings {
  bind: Bind[];
  workers: number;
  workerClass: WorkerKind;
  threads: number;
  workerConnections: number;
  /** seconds; 0 = no timeout */
  timeout: number;
  /** a worker blocked past --timeout aborts itself first (watchdog thread): TimeoutError, worker_abort, final snapshot */
  abortOnTimeout: boolean;
  gracefulTimeout: number;
  keepAlive: number;
  maxRequests: number;
  maxRequestsJitter: number;
  pidfile: string | undefined;
  procName: string | undefined;
  logLevel: LogLevel;
  /** `-` = stderr */
  errorLog: string;
  /** KEY=VALUE pairs put in the workers' environment */
  rawEnv: Record<string, string>;
  chdir: string | undefined;
  /** the metrics endpoint's web config (exporter-toolkit YAML: TLS, basic auth); over PROMETHEUS_WEB_CONFIG_FILE */
  metricsWebConfig: string | undefined;
}

export interface RunnerConfig extends RunnerSettings {
  app: AppSpec;
  /** absolute path of the -c file, when given */
  configFile: string | undefined;
  /** user hooks from the config file (master side; workers load the file again for theirs) */
  hooks: RawHooks;
  checkConfig: boolean;
  printConfig: boolean;
}

/** What the command line asked for. */
export type CliRequest =
  | { kind: 'help' }
  | { kind: 'version' }
  | { kind: 'run'; config: RunnerConfig; warnings: string[] };

type Raw = unknown;
interface Setting<K extends keyof RunnerSettings = keyof RunnerSettings> {
  key: K;
  /** the gunicorn config-file name (also accepted in the -c file) */
  file: string;
  long: string;
  short?: string;
  multiple?: boolean;
  meta: string;
  help: string;
  /** the default, from the environment where gunicorn takes it from there */
  dflt: (env: Env) => RunnerSettings[K];
  /** validate one raw value (a string from the CLI/env, any JSON/JS value from the config file) */
  parse: (source: string, raw: Raw, prev: RunnerSettings[K]) => RunnerSettings[K];
}

const int = (min: number, max: number) => (source: string, raw: Raw) => parseInteger(source, raw, min, max);
const secs = (max: number) => (source: string, raw: Raw) => parseNumber(source, raw, 0, max, 'seconds');
const str = (source: string, raw: Raw) => {
  if (typeof raw !== 'string' || raw === '') throw invalid(source, raw, 'expected a non-empty string');
  return raw;
};

export function parseBind(source: string, raw: Raw): Bind {
  const s = typeof raw === 'string' ? raw.trim() : '';
  if (s.startsWith('unix:')) {
    const path = s.slice(5);
    if (path === '') throw invalid(source, raw, 'expected unix:PATH with a socket path');
    return { kind: 'unix', path: resolve(path) };
  }
  if (s.startsWith('fd://')) return { kind: 'fd', fd: parseInteger(source, s.slice(5), 0, 65535) };
  const allowed = 'expected HOST:PORT, HOST, [IPv6]:PORT, unix:PATH or fd://N (e.g. 127.0.0.1:8000, 0.0.0.0:80, unix:/tmp/app.sock)';
  if (s === '') throw invalid(source, raw, allowed);
  let host: string;
  let port = '8000';
  const v6 = /^\[([^\]]+)\](?::(.*))?$/.exec(s);
  if (v6) {
    host = v6[1]!;
    if (v6[2] !== undefined) port = v6[2];
  } else if ((s.match(/:/g) ?? []).length === 1) {
    [host, port] = s.split(':') as [string, string];
    if (host === '') host = '0.0.0.0';
  } else if (s.includes(':')) {
    throw invalid(source, raw, allowed);
  } else {
    host = s;
  }
  try {
    return { kind: 'tcp', host: parseHost(source, host), port: parsePort(source, port) };
  } catch {
    throw invalid(source, raw, allowed);
  }
}

function defaultWorkers(env: Env): number {
  if (env.GUNICORN_WORKERS) return parseInteger('GUNICORN_WORKERS', env.GUNICORN_WORKERS, 1, 1024);
  if (env.WEB_CONCURRENCY) return parseInteger('WEB_CONCURRENCY', env.WEB_CONCURRENCY, 1, 1024);
  return 1;
}

/** Every setting of the runner, once: flag, config-file key, default, validation, help. */
export const SETTINGS: Setting[] = [
  {
    key: 'bind', file: 'bind', long: 'bind', short: 'b', multiple: true, meta: 'ADDRESS',
    help: 'listen on HOST:PORT, unix:PATH or fd://N; repeatable [127.0.0.1:8000, or 0.0.0.0:$PORT]',
    dflt: (env) => [env.PORT ? { kind: 'tcp', host: '0.0.0.0', port: parsePort('PORT', env.PORT) } : { kind: 'tcp', host: '127.0.0.1', port: 8000 }],
    parse: (source, raw) => (Array.isArray(raw) ? raw : [raw]).map((r) => parseBind(source, r)),
  },
  {
    key: 'workers', file: 'workers', long: 'workers', short: 'w', meta: 'INT',
    help: 'number of worker processes [$GUNICORN_WORKERS, else $WEB_CONCURRENCY, else 1]',
    dflt: () => 1, parse: int(1, 1024),
  },
  {
    key: 'workerClass', file: 'worker_class', long: 'worker-class', short: 'k', meta: 'CLASS',
    help: 'sync | gthread | eventlet | gevent | async (or PrometheusWorker, PrometheusThreadWorker, PrometheusEventletWorker, PrometheusGeventWorker) [sync]',
    dflt: () => 'sync',
    parse: (source, raw) => WORKER_CLASSES[parseEnum(source, raw, Object.keys(WORKER_CLASSES) as (keyof typeof WORKER_CLASSES)[])],
  },
  { key: 'threads', file: 'threads', long: 'threads', meta: 'INT', help: 'worker threads per gthread worker (sync with more than 1 becomes gthread) [1]', dflt: () => 1, parse: int(1, 256) },
  {
    key: 'workerConnections', file: 'worker_connections', long: 'worker-connections', meta: 'INT',
    help: 'maximum simultaneous connections per worker (eventlet, gevent, gthread) [1000]', dflt: () => 1000, parse: int(1, 1_000_000),
  },
  { key: 'timeout', file: 'timeout', long: 'timeout', short: 't', meta: 'SECONDS', help: 'kill and replace a worker silent for this long; 0 disables [30]', dflt: () => 30, parse: secs(86400) },
  {
    key: 'abortOnTimeout', file: 'abort_on_timeout', long: 'abort-on-timeout', meta: 'BOOL',
    help: 'a worker whose event loop is blocked past --timeout counts its requests failed (TimeoutError), runs worker_abort and sends its metrics before it dies (a watchdog thread per worker, ~9 MB) [true]',
    dflt: () => true, parse: (s, r) => parseBool(s, r),
  },
  { key: 'gracefulTimeout', file: 'graceful_timeout', long: 'graceful-timeout', meta: 'SECONDS', help: 'time a stopping worker gets to finish its requests [30]', dflt: () => 30, parse: secs(86400) },
  { key: 'keepAlive', file: 'keepalive', long: 'keep-alive', meta: 'SECONDS', help: 'idle keep-alive connection timeout (not for sync) [2]', dflt: () => 2, parse: secs(3600) },
  { key: 'maxRequests', file: 'max_requests', long: 'max-requests', meta: 'INT', help: 'restart a worker after this many requests; 0 disables [0]', dflt: () => 0, parse: int(0, 1e12) },
  { key: 'maxRequestsJitter', file: 'max_requests_jitter', long: 'max-requests-jitter', meta: 'INT', help: 'add up to this many to --max-requests, per worker [0]', dflt: () => 0, parse: int(0, 1e12) },
  { key: 'pidfile', file: 'pidfile', long: 'pid', short: 'p', meta: 'FILE', help: 'write the master pid to FILE', dflt: () => undefined, parse: (s, r) => resolve(str(s, r)) },
  { key: 'procName', file: 'proc_name', long: 'name', short: 'n', meta: 'NAME', help: 'process title suffix (prefork-otel: master [NAME])', dflt: () => undefined, parse: str },
  { key: 'logLevel', file: 'loglevel', long: 'log-level', meta: 'LEVEL', help: 'debug | info | warning | error | critical [info]', dflt: () => 'info', parse: (s, r) => parseEnum(s, r, LOG_LEVELS) },
  { key: 'errorLog', file: 'errorlog', long: 'error-logfile', meta: 'FILE', help: 'log file ("-" = stderr); workers\' output goes there too; reopened on SIGUSR1 [-]', dflt: () => '-', parse: (s, r) => (str(s, r) === '-' ? '-' : resolve(r as string)) },
  {
    key: 'rawEnv', file: 'raw_env', long: 'env', short: 'e', multiple: true, meta: 'KEY=VALUE', help: 'set an environment variable in the workers; repeatable',
    dflt: () => ({}),
    parse: (source, raw, prev) => {
      const out = { ...(prev as Record<string, string>) };
      for (const r of Array.isArray(raw) ? raw : [raw]) {
        const m = typeof r === 'string' ? /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(r) : null;
        if (!m) throw invalid(source, r, 'expected KEY=VALUE');
        out[m[1]!] = m[2]!;
      }
      return out;
    },
  },
  {
    key: 'chdir', file: 'chdir', long: 'chdir', meta: 'DIR', help: 'change to DIR before loading the app',
    dflt: () => undefined,
    parse: (source, raw) => {
      const dir = resolve(str(source, raw));
      if (!existsSync(dir) || !statSync(dir).isDirectory()) throw invalid(source, raw, 'expected an existing directory');
      return dir;
    },
  },
  { key: 'metricsWebConfig', file: 'metrics_web_config', long: 'metrics-web-config', meta: 'FILE', help: 'TLS and basic auth for the metrics endpoint: a Prometheus web config file (docs/configuration.md) [PROMETHEUS_WEB_CONFIG_FILE]', dflt: () => undefined, parse: (s, r) => resolve(str(s, r)) },
];

/** gunicorn settings that have no meaning for Node processes: accepted in a config file with a warning. */
const NOT_APPLICABLE = new Set([
  'preload_app', 'worker_tmp_dir', 'daemon', 'user', 'group', 'umask', 'initgroups', 'reload', 'reload_engine', 'reload_extra_files',
  'sendfile', 'reuse_port', 'spew', 'tmp_upload_dir', 'secure_scheme_headers', 'forwarded_allow_ips', 'proxy_protocol', 'proxy_allow_ips',
  'accesslog', 'access_log_format', 'disable_redirect_access_to_syslog', 'syslog', 'syslog_addr', 'syslog_prefix', 'syslog_facility',
  'logconfig', 'logconfig_dict', 'logconfig_json', 'logger_class', 'capture_output', 'enable_stdio_inheritance', 'statsd_host', 'statsd_prefix',
  'dogstatsd_tags', 'paste', 'pythonpath', 'wsgi_app', 'limit_request_line', 'limit_request_fields', 'limit_request_field_size',
  'backlog', 'keyfile', 'certfile', 'ssl_version', 'cert_reqs', 'ca_certs', 'suppress_ragged_eofs', 'do_handshake_on_connect', 'ciphers',
  'raw_paste_global_conf', 'strip_header_spaces', 'permit_unconventional_http_method', 'permit_unconventional_http_version',
  'casefold_http_method', 'header_map', 'print_config', 'check_config', 'config', 'default_proc_name', 'worker_abort', 'ssl_context',
]);

const CLI_ONLY = {
  config: { type: 'string', short: 'c' },
  'check-config': { type: 'boolean' },
  'print-config': { type: 'boolean' },
  version: { type: 'boolean', short: 'v' },
  help: { type: 'boolean', short: 'h' },
  'log-file': { type: 'string' },
} as const;

function parseOptions() {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = { ...CLI_ONLY };
  for (const s of SETTINGS) options[s.long] = { type: 'string', ...(s.short ? { short: s.short } : {}), ...(s.multiple ? { multiple: true } : {}) };
  return options;
}

/** util.parseArgs errors → one line with the flag and what is allowed. */
function parseCommandLine(args: string[], what: string): { values: Record<string, string | string[] | boolean | undefined>; positionals: string[] } {
  try {
    return parseArgs({ args, options: parseOptions(), allowPositionals: true, strict: true }) as never;
  } catch (e) {
    const err = e as Error & { code?: string };
    const m = /'([^']+)'/.exec(err.message);
    if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new ConfigError(`prefork-otel: unknown option ${m?.[1] ?? ''} in ${what} (see prefork-otel --help)`);
    if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') throw new ConfigError(`prefork-otel: option ${m?.[1] ?? ''} in ${what} needs a value (see prefork-otel --help)`);
    throw new ConfigError(`prefork-otel: ${err.message.split('\n')[0]} (in ${what})`);
  }
}

/** The APP argument → absolute module path, export name, factory call. */
export function parseAppSpec(raw: string, cwd = process.cwd()): AppSpec {
  // `file.js:name` / `file.js:name()`; a Windows drive letter's colon is not a separator
  const m = /^(.+?)(?::([A-Za-z_$][\w$]*)(\(\))?)?$/.exec(raw);
  if (!m || m[1] === undefined) throw invalid('APP', raw, 'expected MODULE[:EXPORT] or MODULE:FACTORY() (e.g. app.js, app.mjs:app, app.js:createApp())');
  const path = isAbsolute(m[1]) ? m[1] : resolve(cwd, m[1]);
  if (!existsSync(path) || !statSync(path).isFile()) {
    // exit 3: gunicorn's WORKER_BOOT_ERROR, what gunicorn exits with for a module it cannot import
    throw new ConfigError(`prefork-otel: APP module not found: ${JSON.stringify(m[1])} (looked for ${path}): expected a .js, .cjs or .mjs file`, 3);
  }
  return { raw, path, exportName: m[2], call: m[3] !== undefined };
}

/** A config file's values (JSON, CommonJS or ES module; gunicorn's keys; hooks as functions). */
export async function readConfigFile(file: string, cwd = process.cwd()): Promise<Record<string, unknown>> {
  const path = resolve(cwd, file);
  if (!existsSync(path) || !statSync(path).isFile()) throw new ConfigError(`prefork-otel: config file not found: ${JSON.stringify(file)} (-c/--config expects a .js, .cjs, .mjs or .json file)`);
  let mod: unknown;
  try {
    if (path.endsWith('.json')) {
      mod = createRequire(path)(path);
    } else {
      // import() loads CommonJS and ES modules alike (kept out of TypeScript's CommonJS rewrite)
      const ns = await dynamicImport(pathToFileURL(path).href) as Record<string, unknown>;
      mod = ns.default !== undefined && Object.keys(ns).every((k) => k === 'default' || k === 'module.exports') ? ns.default : { ...(ns.default as Record<string, unknown> | undefined), ...ns };
    }
  } catch (e) {
    throw new ConfigError(`prefork-otel: cannot load config file ${JSON.stringify(file)}: ${((e as Error).message ?? String(e)).split('\n')[0]}`);
  }
  if (!mod || typeof mod !== 'object') throw new ConfigError(`prefork-otel: config file ${JSON.stringify(file)} must export an object of settings (gunicorn names, e.g. { workers: 4, bind: '0.0.0.0:8000' })`);
  const out = { ...(mod as Record<string, unknown>) };
  delete out.default;
  delete out['module.exports'];
  return out;
}

/** `import()` that TypeScript's CommonJS output leaves alone, so ES-module apps and configs load. */
export const dynamicImport = new Function('specifier', 'return import(specifier)') as (specifier: string) => Promise<unknown>;

function defaults(env: Env): RunnerSettings {
  const out = {} as Record<string, unknown>;
  for (const s of SETTINGS) out[s.key] = s.dflt(env);
  return out as unknown as RunnerSettings;
}

function applyValues(target: RunnerSettings, values: Record<string, unknown>, source: (s: Setting) => string): void {
  for (const s of SETTINGS) {
    const v = values[s.long];
    if (v === undefined) continue;
    (target as unknown as Record<string, unknown>)[s.key] = s.parse(source(s), v, target[s.key] as never);
  }
}

/** Config-file keys → settings and hooks; unknown keys are errors, gunicorn keys without a Node meaning warnings. */
function applyFile(target: RunnerSettings, file: string, values: Record<string, unknown>, warnings: string[]): RawHooks {
  const hooks: RawHooks = {};
  const byFile = new Map(SETTINGS.map((s) => [s.file, s]));
  for (const [key, v] of Object.entries(values)) {
    if ((HOOK_NAMES as readonly string[]).includes(key)) {
      if (typeof v !== 'function') throw invalid(`${key} (in ${file})`, typeof v, 'expected a function (a server hook)');
      (hooks as Record<string, unknown>)[key] = v;
      continue;
    }
    const s = byFile.get(key);
    if (s) {
      (target as unknown as Record<string, unknown>)[s.key] = s.parse(`${key} (in ${file})`, v, target[s.key] as never);
    } else if (NOT_APPLICABLE.has(key)) {
      warnings.push(`config file ${file}: ${key} has no effect in prefork-otel (see docs/runner.md)`);
    } else {
      throw new ConfigError(`prefork-otel: unknown setting ${JSON.stringify(key)} in config file ${file}: expected one of ${[...byFile.keys()].join(', ')} or a hook (${HOOK_NAMES.join(', ')})`);
    }
  }
  return hooks;
}

/**
 * The command line (+ environment, + the -c file) → what to do. Throws ConfigError (one line) on
 * any bad flag, value, file or missing APP.
 */
export async function loadRunnerConfig(argv: string[], env: Env = process.env, cwd = process.cwd()): Promise<CliRequest> {
  const cli = parseCommandLine(argv, 'the command line');
  if (cli.values.help) return { kind: 'help' };
  if (cli.values.version) return { kind: 'version' };
  const envArgs = env.GUNICORN_CMD_ARGS ? parseCommandLine(env.GUNICORN_CMD_ARGS.trim().split(/\s+/), 'GUNICORN_CMD_ARGS') : undefined;
  if (envArgs && envArgs.positionals.length > 0) throw invalid('GUNICORN_CMD_ARGS', env.GUNICORN_CMD_ARGS, 'expected options only (no APP)');

  const warnings: string[] = [];
  const settings = defaults(env);
  const configFileArg = (cli.values.config ?? envArgs?.values.config) as string | undefined;
  let hooks: RawHooks = {};
  let configFile: string | undefined;
  if (configFileArg !== undefined) {
    configFile = resolve(cwd, configFileArg);
    hooks = applyFile(settings, configFileArg, await readConfigFile(configFileArg, cwd), warnings);
  }
  // environment: GUNICORN_WORKERS / WEB_CONCURRENCY, then GUNICORN_CMD_ARGS (gunicorn's own env layer)
  if (env.GUNICORN_WORKERS || env.WEB_CONCURRENCY) settings.workers = defaultWorkers(env);
  if (envArgs) applyValues(settings, envArgs.values, (s) => `--${s.long} (in GUNICORN_CMD_ARGS)`);
  applyValues(settings, cli.values, (s) => `--${s.long}`);
  if (cli.values['log-file'] !== undefined) settings.errorLog = SETTINGS.find((s) => s.key === 'errorLog')!.parse('--log-file', cli.values['log-file'], '-') as string;
  // gunicorn: the sync worker with more than one thread is the gthread worker
  if (settings.workerClass === 'sync' && settings.threads > 1) settings.workerClass = 'gthread';

  if (cli.positionals.length === 0) throw new ConfigError('prefork-otel: missing APP: usage: prefork-otel [OPTIONS] APP (a module exporting a request listener, an Express/Koa/Fastify app or a factory; see --help)');
  if (cli.positionals.length > 1) throw invalid('APP', cli.positionals.join(' '), 'expected exactly one APP (options go before or after it; see --help)');
  const app = parseAppSpec(cli.positionals[0]!, settings.chdir ?? cwd);

  return {
    kind: 'run',
    warnings,
    config: { ...settings, app, configFile, hooks, checkConfig: !!cli.values['check-config'], printConfig: !!cli.values['print-config'] },
  };
}

/** The --help text, generated from SETTINGS. */
export function helpText(version: string): string {
  const lines = [
    `prefork-otel ${version}: a gunicorn-style pre-fork runner for Node HTTP apps, with gunicorn_worker_* / gunicorn_master_* metrics`,
    '',
    'usage: prefork-otel [OPTIONS] APP',
    '       prefork-otel exporter [OPTIONS]     serve the union of PROMETHEUS_MULTIPROC_DIR (see docs)',
    '',
    'APP: MODULE[:EXPORT] or MODULE:FACTORY() — a module exporting a (req, res) listener, an Express app,',
    '     a Koa app (or app.callback()), a Fastify instance, an http.Server, or a factory of one; or a script',
    '     that calls listen() itself (the runner\'s --bind is used instead). CommonJS or ES module.',
    '',
    'options:',
    '  -c, --config FILE              settings and hooks (.js, .cjs, .mjs, .json; gunicorn key names)',
  ];
  for (const s of SETTINGS) {
    const flag = `${s.short ? `-${s.short}, ` : '    '}--${s.long} ${s.meta}`;
    lines.push(`  ${flag.padEnd(31)}${s.help}`);
  }
  lines.push(
    '      --log-file FILE            same as --error-logfile',
    '      --check-config             validate the configuration, load the app once, and exit',
    '      --print-config             print the resolved configuration as JSON and exit',
    '  -v, --version                  print the version and exit',
    '  -h, --help                     print this help and exit',
    '',
    'signals (master): HUP reload workers, TTIN +1 worker, TTOU -1 worker, TERM graceful stop, INT/QUIT fast stop,',
    '                  USR1 reopen log file, USR2 upgrade (re-exec), WINCH ignored (as gunicorn, not daemonized)',
    'metrics: http://$PROMETHEUS_BIND_ADDRESS:$PROMETHEUS_METRICS_PORT/metrics (default 0.0.0.0:9091), all workers aggregated',
    'environment: GUNICORN_CMD_ARGS, GUNICORN_WORKERS, WEB_CONCURRENCY, PORT, and the exporter variables (docs/configuration.md)',
    'docs: docs/runner.md',
  );
  return lines.join('\n') + '\n';
}

/** The settings as JSON (for --print-config and the workers' boot message); hooks by name only. */
export function describeConfig(c: RunnerConfig): Record<string, unknown> {
  const { hooks, ...rest } = c;
  return { ...rest, hooks: Object.keys(hooks) };
}
