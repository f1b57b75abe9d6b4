/**
 * The preload: `node -r prefork-otel/register app.js` or `node --import prefork-otel/register app.js`.
 * Chooses how this process is observed, then wires the layers (src/modes/*):
 *  - PREFORK_OTEL_ROLE=runner-master / runner-worker: the runner set this process up itself; nothing here;
 *  - PROMETHEUS_MULTIPROC_DIR set: multiproc — write snapshots to the directory, serve the union if the port is free;
 *  - a node:cluster worker of a preloaded primary: cluster worker — report to the primary over IPC, no endpoint;
 *  - a node:cluster worker of another primary (PM2 cluster mode): single process, with a warning;
 *  - anything else: single process, which becomes the cluster master if it forks node:cluster workers.
 *
 * The global MeterProvider: the preload never registers ours as global unless PREFORK_OTEL_GLOBAL=true
 * (src/export/telemetry.ts), so an app starting its own NodeSDK / MeterProvider after the preload keeps
 * its whole pipeline; our gunicorn_* series live on our own MeterProvider either way.
 * When PREFORK_OTEL_EXPORTER or OTEL_METRICS_EXPORTER is set, one stderr line says what our exporter does.
 */
import cluster from 'node:cluster';
import { realpathSync } from 'node:fs';
import { join } from 'node:path';
import { exitOnUserError, loadConfig, type ExporterConfig } from './config';
import { requireOtlpExporter } from './export/push';
import { exporterStartLine } from './export/telemetry';
import { isOurClusterWorker, startClusterPrimary, startClusterWorker } from './modes/cluster';
import { startMultiproc } from './modes/multiproc';
import { appEnv, pm2ClusterWarning, pm2Process } from './modes/pm2';
import { startSingleProcess } from './modes/single';

const LOADED = Symbol.for('prefork-otel.register');

export type PreloadMode = 'none' | 'multiproc' | 'cluster-worker' | 'foreign-cluster-worker' | 'primary';

export function chooseMode(config: ExporterConfig, env: NodeJS.ProcessEnv = process.env): PreloadMode {
  const role = env.PREFORK_OTEL_ROLE;
  if (role === 'runner-master' || role === 'runner-worker' || config.disabled) return 'none';
  if (config.multiprocDir !== undefined) return 'multiproc';
  if (isOurClusterWorker(env)) return 'cluster-worker';
  if (cluster.isWorker) return 'foreign-cluster-worker';
  return 'primary';
}

/** Is this process our own runner's CLI (the preload inherited through NODE_OPTIONS)? It sets itself up. */
function isRunnerCli(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === join(__dirname, 'cli.js');
  } catch {
    return false;
  }
}

function main(): void {
  const g = globalThis as { [LOADED]?: true };
  if (g[LOADED]) return;
  g[LOADED] = true;
  const role = process.env.PREFORK_OTEL_ROLE;
  if (role === 'runner-master' || role === 'runner-worker' || isRunnerCli()) return;
  let config: ExporterConfig;
  // PM2 cluster mode hands the app's env over in process.env.pm2_env, copied only after preloads ran (modes/pm2.ts)
  const env = appEnv();
  try {
    config = loadConfig(env);
  } catch (e) {
    exitOnUserError(e);
  }
  try {
    const mode = chooseMode(config, env);
    // the start line when a variable chose our exporters: here if no endpoint will say it once listening
    // (src/modes/single.ts); a cluster worker of ours stays quiet, its primary says it
    const announceNow = mode === 'multiproc' || !config.exporters.includes('prometheus');
    // a missing OTLP exporter package is the one line, not the start line before it
    if (mode !== 'none' && config.exporters.includes('otlp')) requireOtlpExporter(config.otlpProtocol);
    const announce = announceNow && mode !== 'none' && mode !== 'cluster-worker' && config.exportersSource !== 'default';
    if (announce && mode !== 'multiproc') process.stderr.write(exporterStartLine(config) + '\n');
    switch (mode) {
      case 'none':
        return;
      case 'multiproc':
        startMultiproc(config, env);
        // after the directory check: a bad directory is the one line
        if (announce) process.stderr.write(exporterStartLine(config) + '\n');
        return;
      case 'cluster-worker':
        startClusterWorker(config);
        return;
      case 'foreign-cluster-worker': {
        const pm2 = pm2Process(env);
        if (pm2) process.stderr.write(pm2ClusterWarning(pm2));
        else process.stderr.write(`prefork-otel: pid ${process.pid} is a node:cluster worker of a primary without the preload (PM2 cluster mode?): `
          + 'each scrape reaches one worker only; set PROMETHEUS_MULTIPROC_DIR to serve all workers\' metrics\n');
        startSingleProcess(config).catch(exitOnUserError);
        return;
      }
      case 'primary':
        startClusterPrimary(config).catch(exitOnUserError);
        return;
    }
  } catch (e) {
    exitOnUserError(e);
  }
}

main();
