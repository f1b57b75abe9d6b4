import type { ExporterConfig } from '../config';
import { ConfigError } from '../config';
import { startMetricsServer, type MetricsServer } from '../export/server';
import { exporterStartLine } from '../export/telemetry';
import { WorkerRuntime } from '../workers/runtime';

const RUNTIME = Symbol.for('prefork-otel.single');

/**
 * This process's one WorkerRuntime, created synchronously (the preload must be observing before the
 * application's first line runs) and only once, even if the preload is loaded twice. Its state becomes
 * `running` once the application's main module has run.
 */
export function processRuntime(config: ExporterConfig): WorkerRuntime {
  const g = globalThis as { [RUNTIME]?: WorkerRuntime };
  if (g[RUNTIME]) return g[RUNTIME];
  const runtime = new WorkerRuntime(config);
  g[RUNTIME] = runtime;
  setImmediate(() => runtime.metrics.updateWorkerState('running')).unref();
  return runtime;
}

/**
 * Serve `gather` on the Prometheus endpoint (PROMETHEUS_BIND_ADDRESS:PROMETHEUS_METRICS_PORT).
 * Metrics port in use: by default warn once on stderr and keep the app running without the endpoint
 * (a metrics side-port must not take the service down); PREFORK_OTEL_ON_PORT_IN_USE=exit makes it fatal.
 */
export async function serveMetricsEndpoint(config: ExporterConfig, gather: () => Promise<string>): Promise<MetricsServer | undefined> {
  try {
    const server = await startMetricsServer({ host: config.bindAddress, port: config.metricsPort, path: config.metricsPath, gather, web: config });
    // a variable chose our exporters: say what they do (src/export/telemetry.ts); the default stays quiet
    if (config.exportersSource !== 'default') process.stderr.write(exporterStartLine(config, server) + '\n');
    return server;
  } catch (e) {
    // only a port in use is survivable: a bind address that is not this machine's or a privileged port is
    // a configuration mistake, fatal like any other bad value
    if (!(e instanceof ConfigError) || e.reason !== 'port_in_use' || config.onPortInUse === 'exit') throw e;
    process.stderr.write(`${e.message}; serving the app without the metrics endpoint (PREFORK_OTEL_ON_PORT_IN_USE=exit makes this fatal)\n`);
    return undefined;
  }
}

/** One process serving HTTP itself: observe it and serve its metrics on the Prometheus endpoint. */
export async function startSingleProcess(config: ExporterConfig): Promise<WorkerRuntime> {
  const existing = (globalThis as { [RUNTIME]?: WorkerRuntime })[RUNTIME];
  if (existing) return existing;
  const runtime = processRuntime(config);
  if (config.exporters.includes('prometheus')) await serveMetricsEndpoint(config, () => runtime.telemetry.scrape());
  return runtime;
}
