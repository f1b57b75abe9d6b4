import { PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import type { ResourceMetrics } from '@opentelemetry/sdk-metrics';

/** Content type of the Prometheus text exposition format the OTel serializer writes. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * The one serializer: OpenTelemetry's PrometheusSerializer, without scope labels (so every series
 * carries exactly the reference's labels) and with `target_info` unless disabled.
 */
export function serializePrometheus(rm: ResourceMetrics, opts: { targetInfo: boolean }): string {
  const text = new PrometheusSerializer(undefined, false, undefined, !opts.targetInfo, true).serialize(rm);
  return text.endsWith('\n') ? text : text + '\n';
}
