import type { Attributes } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import {
  AggregationType, MeterProvider, type MetricProducer, type MetricReader, type ResourceMetrics, type ViewOptions,
} from '@opentelemetry/sdk-metrics';
import { M } from '../metrics/contract';
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

/** The live Telemetry instances of this process (normally one). */
const live = new Set<Telemetry>();

/**
 * Flush and stop every Telemetry of this process: the last OTLP export carries everything counted up
 * to now. For applications that end themselves with `process.exit()` (which runs no asynchronous
 * code): `await shutdown()` first. Exported by the library as `shutdown`.
 */
export async function shutdownTelemetry(): Promise<void> {
  await Promise.all([...live].map((t) => t.shutdown()));
}

/**
 * One process's OpenTelemetry pipeline: its one MeterProvider, a Prometheus exporter reader used to
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
  readonly prometheus: PrometheusExporter;
  readonly pushReaders: MetricReader[];
  private closed = false;
  private readonly onBeforeExit: (() => void) | undefined;
  private pushTransform: PushTransform | undefined;

  constructor(readonly config: ExporterConfig, producers: MetricProducer[], resourceAttributes: Attributes = {}) {
    this.prometheus = new PrometheusExporter({
      preventServerStart: true,
      metricProducers: producers,
      withoutScopeInfo: true,
      withoutTargetInfo: !config.targetInfo,
    });
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

  /** Flush push readers (a final OTLP export) and stop. Idempotent. */
  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    live.delete(this);
    if (this.onBeforeExit) process.removeListener('beforeExit', this.onBeforeExit);
    await this.meterProvider.shutdown().catch(() => undefined);
  }
}
