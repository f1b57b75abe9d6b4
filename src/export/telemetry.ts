import type { Attributes } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import {
  AggregationType, MeterProvider, type MetricProducer, type MetricReader, type ResourceMetrics, type ViewOptions,
} from '@opentelemetry/sdk-metrics';
import { M } from '../metrics/contract';
import type { ExporterConfig } from '../config';
import { processResource } from './resource';
import { createPushReaders } from './push';
import { serializePrometheus } from './serializer';

/** The Views the contract needs: the duration histogram in seconds with the configured buckets. */
export function contractViews(buckets: readonly number[]): ViewOptions[] {
  return [{
    instrumentName: M.requestDuration.name,
    aggregation: { type: AggregationType.EXPLICIT_BUCKET_HISTOGRAM, options: { boundaries: [...buckets], recordMinMax: false } },
  }];
}

/**
 * One process's OpenTelemetry pipeline: its one MeterProvider, a Prometheus exporter reader used to
 * collect locally (for the scrape endpoint and for snapshots sent to a master), and the push readers
 * (OTLP, console) OTEL_METRICS_EXPORTER selects. The fast-path producers are registered on every reader.
 */
export class Telemetry {
  readonly meterProvider: MeterProvider;
  readonly prometheus: PrometheusExporter;
  readonly pushReaders: MetricReader[];
  private closed = false;

  constructor(readonly config: ExporterConfig, producers: MetricProducer[], resourceAttributes: Attributes = {}) {
    this.prometheus = new PrometheusExporter({
      preventServerStart: true,
      metricProducers: producers,
      withoutScopeInfo: true,
      withoutTargetInfo: !config.targetInfo,
    });
    this.pushReaders = createPushReaders(config, producers);
    this.meterProvider = new MeterProvider({
      resource: processResource(config.serviceName, resourceAttributes),
      views: contractViews(config.buckets),
      readers: [this.prometheus, ...this.pushReaders],
    });
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

  /** Flush push readers (a final OTLP export) and stop. Idempotent. */
  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.meterProvider.shutdown().catch(() => undefined);
  }
}
