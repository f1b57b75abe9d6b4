/**
 * The preload with PROMETHEUS_MULTIPROC_DIR set: for process managers we do not control (PM2 cluster
 * mode, several processes sharing a volume). Every preloaded process writes its snapshot to the
 * directory (src/export/multiproc.ts) and also offers to serve the union on the metrics port:
 *  - the first process to bind the port serves; the others quietly try again every snapshot interval,
 *    so when the serving process goes, another one takes over;
 *  - node:cluster workers (PM2 cluster mode) share the port through their primary: each of them
 *    answers with the same union;
 *  - to leave the port to a separate `prefork-otel exporter`, set OTEL_METRICS_EXPORTER=none (or otlp)
 *    for the application processes.
 * Before answering, the serving process writes its own file, so every answer is built from files
 * alone and a counter never goes backwards from one scrape to the next, whichever process answers.
 * A preloaded process that forks node:cluster workers becomes their master (see PrimaryWatch): its
 * file carries the restarts it observed instead of worker series of its own.
 */
import { ConfigError, ensureWritableDir, exitOnUserError, type ExporterConfig } from '../config';
import { MultiprocReader, MultiprocWriter } from '../export/multiproc';
import { serializePrometheus } from '../export/serializer';
import { startMetricsServer } from '../export/server';
import { PrimaryWatch } from './cluster';
import { endTimeoutMs, flushOnProcessEnd } from './lifecycle';
import { processRuntime } from './single';

export function startMultiproc(config: ExporterConfig): void {
  const dir = ensureWritableDir('PROMETHEUS_MULTIPROC_DIR', config.multiprocDir!);
  const runtime = processRuntime(config);
  const watch = new PrimaryWatch(runtime);
  const writer = new MultiprocWriter(dir, () => watch.localMetrics(), config.snapshotIntervalMs).start();
  flushOnProcessEnd({
    flush: () => writer.write(),
    flushSync: () => writer.writeFinalSync(watch.freshSync()),
  }, endTimeoutMs(config));
  if (!config.exporters.includes('prometheus')) return;

  const reader = new MultiprocReader(dir);
  const gather = async () => {
    const local = await watch.localMetrics();
    await writer.write(local);
    return serializePrometheus({ resource: local.resource, scopeMetrics: await reader.union() }, config);
  };
  const attempt = () => {
    startMetricsServer({ host: config.bindAddress, port: config.metricsPort, path: config.metricsPath, gather, web: config }).catch((e: unknown) => {
      if (e instanceof ConfigError && e.exitCode === 2) exitOnUserError(e); // a bad web config: one line, exit 2
      if (e instanceof ConfigError && e.message.includes('EADDRINUSE')) {
        setTimeout(attempt, config.snapshotIntervalMs).unref();
        return;
      }
      // a bad address or a permission problem: say it once (PREFORK_OTEL_ON_PORT_IN_USE=exit makes it fatal)
      const message = e instanceof Error ? e.message : String(e);
      process.stderr.write(`${message}; writing ${dir} without serving the metrics endpoint\n`);
      if (config.onPortInUse === 'exit') process.exit(e instanceof ConfigError ? e.exitCode : 1);
    });
  };
  attempt();
}
