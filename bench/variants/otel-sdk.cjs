// The OpenTelemetry way (-r this file): @opentelemetry/sdk-node with instrumentation-http and the
// Prometheus exporter on BENCH_METRICS_PORT. Traces and logs off (OTEL_TRACES_EXPORTER=none etc.),
// so only the HTTP metrics (http.server.request.duration) cost anything beyond the instrumentation.
'use strict';
process.env.OTEL_TRACES_EXPORTER ??= 'none';
process.env.OTEL_LOGS_EXPORTER ??= 'none';
process.env.OTEL_METRICS_EXPORTER ??= 'none';
const { NodeSDK } = require('@opentelemetry/sdk-node');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const { PrometheusExporter } = require('@opentelemetry/exporter-prometheus');

const sdk = new NodeSDK({
  serviceName: 'bench',
  metricReader: new PrometheusExporter({ port: Number(process.env.BENCH_METRICS_PORT), host: '127.0.0.1' }),
  instrumentations: [new HttpInstrumentation()],
});
sdk.start();
