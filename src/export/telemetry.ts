import { metrics as otelMetrics, type Attributes, type MeterProvider as ApiMeterProvider } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationType, MeterProvider, MetricReader,
  type CollectionResult, type MetricCollectOptions, type MetricProducer, type ResourceMetrics, type ScopeMetrics, type ViewOptions,
} from '@opentelemetry/sdk-metrics';
import { M } from '../metrics/contract';
import { isDefaultMeterProvider, setDefaultMeterProvider } from '../metrics/default-provider';
import type { ExporterConfig } from '../config';
import { processResource } from './resource';
import { createPushReaders, type PushTransform } from './push';
import { serializePrometheus } from './serializer';

/** The Views the contract needs: the duration histogram in seconds with the configured buckets. */
export function contractViews(buckets: readonly number[]): ViewOptions[] {
  return [{
    instrumentName: M.requestDuration.name,
    aggregation: { type: AggregationType.EXPLICIT_BUCKET_HISTOGRAM, options: { boundaries: [...buckets], recordMinMax: false } },
  }];
}

/**
 * A pull reader that only collects: what the scrape endpoint, snapshots to a master and
 * PreforkMetricProducer read (cumulative, the SDK's default aggregation). Serialising is
 * ./serializer.ts's job, serving ./server.ts's, so no exporter package is needed for it.
 */
export class CollectingReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

/**
 * The live Telemetry instances of this process (normally one). Kept on globalThis so that two copies
 * of this package in one process (an app depending on another version) still find each other's.
 */
const LIVE = Symbol.for('prefork-otel.telemetry.live');
const live: Set<Telemetry> = ((globalThis as { [LIVE]?: Set<Telemetry> })[LIVE] ??= new Set<Telemetry>());

/**
 * Flush and stop every Telemetry of this process: the last OTLP export carries everything counted up
 * to now. For applications that end themselves with `process.exit()` (which runs no asynchronous
 * code): `await shutdown()` first. Exported by the library as `shutdown`.
 */
export async function shutdownTelemetry(): Promise<void> {
  await Promise.all([...live].map((t) => t.shutdown()));
}

/**
 * One process's OpenTelemetry pipeline: its one MeterProvider, a collecting reader used to
 * collect locally (for the scrape endpoint and for snapshots sent to a master), and the push readers
 * (OTLP, console) OTEL_METRICS_EXPORTER selects. The fast-path producers are registered on every reader.
 *
 * With push readers, the last export happens on `shutdown()` (WorkerRuntime.close(), a runner worker's
 * graceful exit) and, for a process that simply runs out of work, on 'beforeExit'. No signal handler
 * is installed here: a process ended by a signal is the business of whoever owns its life cycle
 * (src/modes/lifecycle.ts for the preload, the runner for its workers), which calls `shutdown()`.
 */
export class Telemetry {
  readonly meterProvider: MeterProvider;
  /** the collecting reader (the Prometheus endpoint's source; named for that role) */
  readonly prometheus: CollectingReader;
  readonly pushReaders: MetricReader[];
  private closed = false;
  private readonly onBeforeExit: (() => void) | undefined;
  private pushTransform: PushTransform | undefined;

  constructor(readonly config: ExporterConfig, producers: MetricProducer[], resourceAttributes: Attributes = {}) {
    this.prometheus = new CollectingReader({ metricProducers: producers });
    this.pushReaders = createPushReaders(config, producers, () => this.pushTransform);
    this.meterProvider = new MeterProvider({
      resource: processResource(config, resourceAttributes),
      views: contractViews(config.buckets),
      readers: [this.prometheus, ...this.pushReaders],
    });
    live.add(this);
    if (this.pushReaders.length > 0) {
      // the event loop ran dry: one final export (it keeps the loop alive until sent), then the process ends
      this.onBeforeExit = () => void this.shutdown();
      process.once('beforeExit', this.onBeforeExit);
    }
  }

  /** Everything this process has, as OpenTelemetry collected it. */
  async collect(): Promise<ResourceMetrics> {
    const { resourceMetrics } = await this.prometheus.collect();
    return resourceMetrics;
  }

  /** The exposition text of this process alone. */
  async scrape(): Promise<string> {
    return serializePrometheus(await this.collect(), this.config);
  }

  /**
   * Reshape what the push readers send from now on (the scrape path is not affected). A master that
   * serves no requests itself sets `withoutWorkerMetrics`, so its OTLP export carries only the master
   * metrics while each worker exports its own series.
   */
  setPushTransform(transform: PushTransform | undefined): void {
    this.pushTransform = transform;
  }

  /** Export now on every push reader (OTLP, console): what has been counted so far leaves the process. */
  async flush(): Promise<void> {
    if (this.closed) return;
    await Promise.all(this.pushReaders.map((r) => r.forceFlush().catch(() => undefined)));
  }

  /**
   * Make this the process's prefork-otel pipeline: the default of `Metrics` / `MasterMetrics` created
   * without a `meterProvider` (src/metrics/default-provider.ts) — and, only when PREFORK_OTEL_GLOBAL=true,
   * also the OTel global MeterProvider (the rule: docs/opentelemetry-coexistence.md). Our own
   * instruments never need the global; it only decides where *the app's* `metrics.getMeter()` calls
   * land. Returns whether ours is now the global one.
   */
  registerAsProcessProvider(): boolean {
    setDefaultMeterProvider(this.meterProvider);
    if (!this.config.globalMeterProvider) return false;
    if (!otelMetrics.setGlobalMeterProvider(this.meterProvider)) {
      process.stderr.write('prefork-otel: PREFORK_OTEL_GLOBAL=true, but another global MeterProvider is already registered: it stays global, '
        + 'prefork-otel keeps its own pipeline (its gunicorn_* series are unaffected)\n');
      return false;
    }
    handOverOnLaterRegistration(this.meterProvider);
    return true;
  }

  /** Flush push readers (a final OTLP export) and stop. Idempotent. */
  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    live.delete(this);
    if (isDefaultMeterProvider(this.meterProvider)) setDefaultMeterProvider(undefined);
    if (this.onBeforeExit) process.removeListener('beforeExit', this.onBeforeExit);
    await this.meterProvider.shutdown().catch(() => undefined);
  }
}

/**
 * With PREFORK_OTEL_GLOBAL=true ours is registered first (the preload runs before the app). The OTel
 * API refuses a second registration without a word, so an app starting its own NodeSDK afterwards
 * would lose its whole metrics pipeline to ours (NodeSDK also points its instrumentations at
 * whatever is global). Instead: when another provider is registered, ours steps aside first and
 * says so in one line. Instruments the app created on ours before that moment stay on ours.
 */
function handOverOnLaterRegistration(ours: MeterProvider): void {
  const api = otelMetrics as { setGlobalMeterProvider(provider: ApiMeterProvider): boolean };
  const register = api.setGlobalMeterProvider;
  api.setGlobalMeterProvider = function setGlobalMeterProvider(provider: ApiMeterProvider): boolean {
    if (provider !== ours && otelMetrics.getMeterProvider() === ours) {
      otelMetrics.disable();
      api.setGlobalMeterProvider = register; // once: from here on the API behaves as always
      process.stderr.write('prefork-otel: the app registered its own global MeterProvider (PREFORK_OTEL_GLOBAL=true had made ours global): '
        + 'handing over to it; instruments created before now stay on prefork-otel\'s endpoint, gunicorn_* series are unaffected\n');
    }
    return register.call(this, provider);
  };
}

const EMPTY_RESOURCE = resourceFromAttributes({});

/**
 * Join the app's own OpenTelemetry pipeline: a MetricProducer that hands this process's prefork-otel
 * metrics (every gunicorn_worker_* series, and gunicorn_master_* in a master) to one of the app's
 * readers, so they leave through the app's exporter (OTLP, Prometheus…) under the app's resource:
 *
 *     new PrometheusExporter({ port: 9464, metricProducers: [new PreforkMetricProducer()] })
 *     new PeriodicExportingMetricReader({ exporter, metricProducers: [new PreforkMetricProducer()] })
 *
 * It reads whatever prefork-otel pipeline lives in the process at collection time (the preload's,
 * a runner or cluster worker's), so it can be created before or after the preload set up; with none
 * it produces nothing. Each process gives only its own series: under the runner or a cluster every
 * worker's app exports that worker's series (with its worker_id), while the master's endpoint still
 * serves the union of all workers. Values are cumulative.
 */
export class PreforkMetricProducer implements MetricProducer {
  async collect(options?: MetricCollectOptions): Promise<CollectionResult> {
    const scopeMetrics: ScopeMetrics[] = [];
    const errors: unknown[] = [];
    for (const t of [...live]) {
      const r = await t.prometheus.collect(options);
      scopeMetrics.push(...r.resourceMetrics.scopeMetrics);
      errors.push(...r.errors);
    }
    return { resourceMetrics: { resource: EMPTY_RESOURCE, scopeMetrics }, errors };
  }
}

/**
 * The preload's start line: what prefork-otel's exporter does and which variable decided it, so
 * OTEL_METRICS_EXPORTER=none meant for an app's sdk-node never switches our endpoint off unnoticed.
 * Printed whenever PREFORK_OTEL_EXPORTER or OTEL_METRICS_EXPORTER is set: by src/register.ts at once
 * when the endpoint is off (or multiproc), else by src/modes/single.ts once it listens (`bound`).
 */
export function exporterStartLine(config: ExporterConfig, bound?: { host: string; port: number }): string {
  return `prefork-otel: ${exporterSummary(config, bound)}`;
}

/** What our exporters do and which variable decided it (the runner's master logs this when its endpoint is off). */
export function exporterSummary(config: ExporterConfig, bound?: { host: string; port: number }): string {
  const why = config.exportersSource === 'default' ? 'default' : `${config.exportersSource}=${config.exportersRaw}`;
  const host = bound?.host ?? config.bindAddress;
  const where = `${host.includes(':') ? `[${host}]` : host}:${bound?.port ?? config.metricsPort}${config.metricsPath}`;
  const parts = [!config.exporters.includes('prometheus') ? 'metrics endpoint off'
    : bound ? `metrics endpoint serving on ${where}`
    : `metrics endpoint on ${where} (served by the first process of PROMETHEUS_MULTIPROC_DIR that binds it)`];
  for (const e of config.exporters) {
    if (e === 'otlp') parts.push(`pushing OTLP (${config.otlpProtocol}) every ${config.exportIntervalMs} ms`);
    if (e === 'console') parts.push(`printing to the console every ${config.exportIntervalMs} ms`);
  }
  const hint = config.exportersSource === 'OTEL_METRICS_EXPORTER'
    ? '; PREFORK_OTEL_EXPORTER takes precedence for prefork-otel alone' : '';
  return `${parts.join(', ')} (${why}${hint})`;
}
