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
 * When that write fails (a full disk, …) it warns once and answers with its own counts from memory.
 * The directory is checked at start (checkMultiprocDir: ours or sticky, else one line and exit 2).
 * A preloaded process that forks node:cluster workers becomes their master (see PrimaryWatch): its
 * file carries the restarts it observed instead of worker series of its own.
 */
import cluster from 'node:cluster';
import { ConfigError, exitOnUserError, type ExporterConfig } from '../config';
import { HostMetricsSource, hostMetricsRequested } from '../export/host-metrics';
import { MultiprocReader, MultiprocWriter, Warnings, checkMultiprocDir } from '../export/multiproc';
import { serializePrometheus } from '../export/serializer';
import { startMetricsServer } from '../export/server';
import { PrimaryWatch } from './cluster';
import { endTimeoutMs, flushOnProcessEnd } from './lifecycle';
import { processRuntime } from './single';

/** `env`: the application's environment (modes/pm2.ts: under PM2 cluster mode it is not process.env yet). */
export function startMultiproc(config: ExporterConfig, env: Record<string, string | undefined> = process.env): void {
  const wantHost = hostMetricsRequested(env);
  const dir = checkMultiprocDir('PROMETHEUS_MULTIPROC_DIR', config.multiprocDir!);
  const runtime = processRuntime(config);
  const watch = new PrimaryWatch(runtime);
  const warnings = new Warnings();
  const writer = new MultiprocWriter(dir, () => watch.localMetrics(), config.snapshotIntervalMs, process.pid, warnings).start();
  flushOnProcessEnd({
    flush: () => writer.write(),
    flushSync: () => writer.writeFinalSync(watch.freshSync()),
    close: () => writer.close(),
  }, endTimeoutMs(config));
  if (!config.exporters.includes('prometheus')) return;

  const reader = new MultiprocReader(dir, { deadlineMs: config.scrapeTimeoutMs, warnings });
  // host metrics (PREFORK_OTEL_HOST_METRICS=true): from the process serving the endpoint only, never in the files;
  // node:cluster workers (PM2 cluster mode) all answer on the shared port, so they serve the host-wide system.* only
  let host: HostMetricsSource | undefined;
  const gather = async () => {
    // ask the other processes for fresh files while collecting and writing our own
    const [local, hostScopes] = await Promise.all([watch.localMetrics(), host?.collect(), reader.freshen(writer.name)]);
    await writer.write(local);
    // our own write failed (ENOSPC, …): our fresh counts from memory instead of our (older) file
    const own = writer.failing && writer.lastFile ? [writer.lastFile.snapshot.scopeMetrics] : [];
    if (hostScopes) own.push(hostScopes);
    const scopeMetrics = await reader.union(own, writer.failing && writer.lastFile ? writer.name : undefined);
    return serializePrometheus({ resource: local.resource, scopeMetrics }, config);
  };
  const attempt = () => {
    startMetricsServer({ host: config.bindAddress, port: config.metricsPort, path: config.metricsPath, gather, web: config }).then(() => {
      if (!wantHost || host) return;
      try {
        host = HostMetricsSource.start({ systemOnly: cluster.isWorker, env });
      } catch (e) {
        process.stderr.write(`${e instanceof Error ? e.message : String(e)}; serving without host metrics\n`);
      }
    }, (e: unknown) => {
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
