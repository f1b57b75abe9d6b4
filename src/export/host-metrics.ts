/**
 * OpenTelemetry's host metrics (@opentelemetry/host-metrics: system.cpu.*, system.memory.*,
 * system.network.*, process.cpu.*, process.memory.*) beside the gunicorn_* metrics, from exactly one
 * process per host: the runner's master, the preloaded cluster primary (or single process), or the
 * process that serves the PROMETHEUS_MULTIPROC_DIR endpoint (`prefork-otel exporter`, or the app
 * process that bound the port). Workers never export them (N copies of one host would be summed).
 *
 * Off by default; `PREFORK_OTEL_HOST_METRICS=true` (or the runner's `--host-metrics`) turns them on. The package is loaded lazily, only
 * then (it is an optional peer: a process without the variable never loads it). Prometheus names are
 * those OTel's exporter writes (our serializer is byte-equal to it): `system_cpu_time_total`,
 * `system_memory_usage`, `process_cpu_time_total`, … (docs/cluster.md, "Host metrics").
 */
import type { MeterProvider as ApiMeterProvider } from '@opentelemetry/api';
import { MeterProvider, MetricReader, type ScopeMetrics } from '@opentelemetry/sdk-metrics';
import { invalid, parseBool } from '../config';

export const HOST_METRICS_ENV = 'PREFORK_OTEL_HOST_METRICS';
/** the instrumentation scope name the host metrics are created under */
export const HOST_METRICS_SCOPE = 'prefork-otel-host';
/** the package, loaded only when asked for */
const PACKAGE = '@opentelemetry/host-metrics';

/** PREFORK_OTEL_HOST_METRICS as a boolean (unset: false); ConfigError on anything else. */
export function hostMetricsRequested(env: Record<string, string | undefined> = process.env): boolean {
  const v = env[HOST_METRICS_ENV];
  return v !== undefined && v !== '' && parseBool(HOST_METRICS_ENV, v);
}

interface HostMetricsModule {
  HostMetrics: new (config: { meterProvider: ApiMeterProvider; name?: string; metricGroups?: string[] }) => { start(): void };
}

function load(source: string): HostMetricsModule {
  try {
    return require(PACKAGE) as HostMetricsModule;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw e;
    throw invalid(source, 'true', `needs the package ${PACKAGE} (npm install ${PACKAGE}), which is not installed`);
  }
}

/** metric groups of the package; `process.*` describes the exporting process itself */
const SYSTEM_GROUPS = ['system.cpu', 'system.memory', 'system.network'];

/**
 * Start the host metrics on `meterProvider` if PREFORK_OTEL_HOST_METRICS is true or `on` (the
 * runner's --host-metrics), once per process; `systemOnly`: only the host-wide system.* groups.
 * Returns whether they run.
 */
export function startHostMetrics(meterProvider: ApiMeterProvider, opts: { systemOnly?: boolean; on?: boolean; env?: Record<string, string | undefined> } = {}): boolean {
  if (!hostMetricsRequested(opts.env) && opts.on !== true) return false;
  if (started) return true;
  const { HostMetrics } = load(hostMetricsRequested(opts.env) ? HOST_METRICS_ENV : '--host-metrics');
  new HostMetrics({ meterProvider, name: HOST_METRICS_SCOPE, ...(opts.systemOnly ? { metricGroups: SYSTEM_GROUPS } : {}) }).start();
  started = true;
  return true;
}
let started = false;

/** A reader that only collects when asked (the scrape). */
class PullReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> { /* nothing buffered */ }
  protected override async onShutdown(): Promise<void> { /* nothing to release */ }
}

/**
 * Host metrics kept apart from this process's own pipeline, collected only by the process answering a
 * scrape: for the multiproc modes, where what a process collects for itself is also written to its
 * file (and would be summed over every process in the union).
 */
export class HostMetricsSource {
  private readonly reader = new PullReader();
  private constructor() {}

  /** A started source, or undefined when PREFORK_OTEL_HOST_METRICS is not true. */
  static start(opts: { systemOnly?: boolean; env?: Record<string, string | undefined> } = {}): HostMetricsSource | undefined {
    if (!hostMetricsRequested(opts.env)) return undefined;
    const source = new HostMetricsSource();
    const provider = new MeterProvider({ readers: [source.reader] });
    if (!startHostMetrics(provider, opts)) return undefined;
    return source;
  }

  async collect(): Promise<ScopeMetrics[]> {
    const { resourceMetrics } = await this.reader.collect();
    return resourceMetrics.scopeMetrics;
  }
}
