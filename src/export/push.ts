import {
  ConsoleMetricExporter, PeriodicExportingMetricReader, type MetricProducer, type MetricReader, type PushMetricExporter,
} from '@opentelemetry/sdk-metrics';
import { invalid, parseEnum, type ExporterConfig, type OtlpProtocol } from '../config';

type Env = Record<string, string | undefined>;

/** OTLP protocol per the OTel spec: the metrics-specific variable wins over the general one. */
export function otlpProtocol(env: Env = process.env): OtlpProtocol {
  const name = env.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL ? 'OTEL_EXPORTER_OTLP_METRICS_PROTOCOL' : 'OTEL_EXPORTER_OTLP_PROTOCOL';
  const raw = env[name];
  if (!raw) return 'http/protobuf';
  return parseEnum(name, raw, ['http/protobuf', 'http/json', 'grpc'] as const);
}

/** The OTLP exporter of the maintained OTel package for the configured protocol (it reads OTEL_EXPORTER_OTLP_* itself). */
export function createOtlpExporter(env: Env = process.env): PushMetricExporter {
  const protocol = otlpProtocol(env);
  if (protocol === 'http/json') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { OTLPMetricExporter } = require('@opentelemetry/exporter-metrics-otlp-http') as typeof import('@opentelemetry/exporter-metrics-otlp-http');
    return new OTLPMetricExporter();
  }
  if (protocol === 'http/protobuf') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { OTLPMetricExporter } = require('@opentelemetry/exporter-metrics-otlp-proto') as typeof import('@opentelemetry/exporter-metrics-otlp-proto');
    return new OTLPMetricExporter();
  }
  throw invalid('OTEL_EXPORTER_OTLP_PROTOCOL', protocol, 'grpc is not supported by prefork-otel; use http/protobuf or http/json');
}

/** Push readers (OTLP, console) selected by OTEL_METRICS_EXPORTER, each with the fast-path producer. */
export function createPushReaders(cfg: ExporterConfig, producers: MetricProducer[], env: Env = process.env): MetricReader[] {
  const readers: MetricReader[] = [];
  for (const name of cfg.exporters) {
    if (name === 'prometheus') continue;
    const exporter = name === 'otlp' ? createOtlpExporter(env) : new ConsoleMetricExporter();
    readers.push(new PeriodicExportingMetricReader({
      exporter,
      exportIntervalMillis: cfg.exportIntervalMs,
      exportTimeoutMillis: Math.min(30000, cfg.exportIntervalMs),
      metricProducers: producers,
    }));
  }
  return readers;
}
