import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Attributes } from '@opentelemetry/api';
import { detectResources, envDetector, resourceFromAttributes, type Resource } from '@opentelemetry/resources';

/**
 * The process resource: service.name (OTEL_SERVICE_NAME, else OTEL_RESOURCE_ATTRIBUTES, else
 * "prefork-otel"), service.instance.id, process.pid, host.name, plus OTEL_RESOURCE_ATTRIBUTES.
 */
export function processResource(serviceName: string | undefined, extra: Attributes = {}): Resource {
  const fromEnv = detectResources({ detectors: [envDetector] });
  const base = resourceFromAttributes({
    'service.name': 'prefork-otel',
    'service.instance.id': `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`,
    'host.name': hostname(),
    'process.pid': process.pid,
    ...extra,
  });
  let r = base.merge(fromEnv);
  if (serviceName) r = r.merge(resourceFromAttributes({ 'service.name': serviceName }));
  return r;
}
