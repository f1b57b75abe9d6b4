import type { ExporterConfig } from '../config';
import { ConfigError } from '../config';
import { startMetricsServer } from '../export/server';
import { WorkerRuntime } from '../workers/runtime';

const WARNED = Symbol.for('prefork-otel.single');

/**
 * One process serving HTTP itself: observe it and serve its metrics on the Prometheus endpoint.
 * Metrics port in use: by default warn once on stderr and keep the app running without the endpoint
 * (a metrics side-port must not take the service down); PREFORK_OTEL_ON_PORT_IN_USE=exit makes it fatal.
 */
export async function startSingleProcess(config: ExporterConfig): Promise<WorkerRuntime> {
  const g = globalThis as { [WARNED]?: WorkerRuntime };
  if (g[WARNED]) return g[WARNED];
  const runtime = new WorkerRuntime(config);
  g[WARNED] = runtime;
  setImmediate(() => runtime.metrics.updateWorkerState('running')).unref();
  if (config.exporters.includes('prometheus')) {
    try {
      await startMetricsServer({
        host: config.bindAddress,
        port: config.metricsPort,
        path: config.metricsPath,
        gather: () => runtime.telemetry.scrape(),
      });
    } catch (e) {
      if (!(e instanceof ConfigError) || config.onPortInUse === 'exit') throw e;
      process.stderr.write(`${e.message}; serving the app without the metrics endpoint (PREFORK_OTEL_ON_PORT_IN_USE=exit makes this fatal)\n`);
    }
  }
  return runtime;
}
