import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ExportResult } from '@opentelemetry/core';
import {
  ConsoleMetricExporter, PeriodicExportingMetricReader,
  type AggregationTemporality, type InstrumentType, type MetricProducer, type MetricReader, type PushMetricExporter, type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { ConfigError, type ExporterConfig, type OtlpProtocol } from '../config';

/**
 * Push readers: OTLP (to an OpenTelemetry Collector) and console, as OTEL_METRICS_EXPORTER selects.
 *
 * The OTLP exporters are OpenTelemetry's maintained packages, one per protocol; each reads the rest of
 * the standard OTLP environment itself (OTEL_EXPORTER_OTLP[_METRICS]_ENDPOINT, _HEADERS, _TIMEOUT,
 * _COMPRESSION, _CERTIFICATE…, OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE). src/config/otel.ts
 * has already checked those values, so a typo stops start-up with one line instead of silently sending
 * to the default endpoint.
 *
 * Every process that serves requests (the preload's process, each runner or cluster worker) has its own
 * Telemetry and so its own push readers: each worker exports its own series (they carry worker_id) under
 * its own resource (service.instance.id, process.pid), and a master exports its master metrics the same
 * way. See docs/otel-collector.md for why workers push directly instead of through the master.
 */

/**
 * The OTLP exporter package of each protocol. All three are optional peer dependencies, loaded only
 * when OTEL_METRICS_EXPORTER / PREFORK_OTEL_EXPORTER selects otlp: a Prometheus-only install carries
 * none of them (nor sdk-logs, sdk-trace, protobufjs or @grpc/grpc-js, which they bring).
 */
export const OTLP_PACKAGES: Readonly<Record<OtlpProtocol, string>> = {
  'http/protobuf': '@opentelemetry/exporter-metrics-otlp-proto',
  'http/json': '@opentelemetry/exporter-metrics-otlp-http',
  grpc: '@opentelemetry/exporter-metrics-otlp-grpc',
};

/**
 * The installed sdk-metrics' version: the exporter to install is the release built on it (one shared
 * copy). Read from its package.json next to its entry point (3.x exports no ./package.json subpath).
 */
function sdkMetricsVersion(): string {
  try {
    let dir = dirname(require.resolve('@opentelemetry/sdk-metrics'));
    for (let up = 0; up < 5; up++, dir = dirname(dir)) {
      const file = join(dir, 'package.json');
      if (!existsSync(file)) continue;
      const meta = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (meta.name === '@opentelemetry/sdk-metrics' && meta.version) return meta.version;
    }
  } catch {
    // fall through
  }
  return 'unknown';
}

/* eslint-disable @typescript-eslint/no-require-imports -- each protocol's exporter is loaded only when selected */
type OtlpModule = { OTLPMetricExporter: new () => PushMetricExporter };

/**
 * Load the OTLP exporter package of `protocol`; a ConfigError (one line naming the package to
 * install) when it is missing. The preload calls it before its start line, so a missing package is
 * the only line printed.
 */
export function requireOtlpExporter(protocol: OtlpProtocol): OtlpModule {
  const pkg = OTLP_PACKAGES[protocol];
  try {
    return require(pkg) as OtlpModule;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    // only the package itself missing is a user error; a broken install below it keeps its stack
    if (err.code !== 'MODULE_NOT_FOUND' || !String(err.message).includes(`'${pkg}'`)) throw e;
    throw new ConfigError(
      `prefork-otel: OTLP export (otlp with protocol ${protocol}) needs the optional package ${pkg}, which is not installed: `
      + `npm install ${pkg} (the release built on the installed @opentelemetry/sdk-metrics ${sdkMetricsVersion()}), `
      + 'or leave otlp out of PREFORK_OTEL_EXPORTER / OTEL_METRICS_EXPORTER',
    );
  }
}

export function createOtlpExporter(protocol: OtlpProtocol): PushMetricExporter {
  return new (requireOtlpExporter(protocol).OTLPMetricExporter)();
}
/* eslint-enable @typescript-eslint/no-require-imports */

/** What a process pushes may differ from what it collects (a master pushes no worker series). */
export type PushTransform = (rm: ResourceMetrics) => ResourceMetrics;

/** An exporter that applies the process's current push transform before handing over to `inner`. */
class TransformingExporter implements PushMetricExporter {
  readonly selectAggregationTemporality?: (t: InstrumentType) => AggregationTemporality;
  constructor(private readonly inner: PushMetricExporter, private readonly transform: () => PushTransform | undefined) {
    if (inner.selectAggregationTemporality) this.selectAggregationTemporality = inner.selectAggregationTemporality.bind(inner);
  }
  export(metrics: ResourceMetrics, done: (result: ExportResult) => void): void {
    const t = this.transform();
    this.inner.export(t ? t(metrics) : metrics, done);
  }
  forceFlush(): Promise<void> {
    return this.inner.forceFlush();
  }
  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }
}

/**
 * Push readers (OTLP, console) selected by OTEL_METRICS_EXPORTER, each with the fast-path producers;
 * `transform()` (read at every export) may reshape what leaves.
 */
export function createPushReaders(cfg: ExporterConfig, producers: MetricProducer[], transform: () => PushTransform | undefined = () => undefined): MetricReader[] {
  const readers: MetricReader[] = [];
  for (const name of cfg.exporters) {
    if (name === 'prometheus') continue;
    const exporter = new TransformingExporter(name === 'otlp' ? createOtlpExporter(cfg.otlpProtocol) : new ConsoleMetricExporter(), transform);
    readers.push(new PeriodicExportingMetricReader({
      exporter,
      exportIntervalMillis: cfg.exportIntervalMs,
      exportTimeoutMillis: Math.min(cfg.exportTimeoutMs, cfg.exportIntervalMs),
      metricProducers: producers,
    }));
  }
  return readers;
}
