import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Attributes } from '@opentelemetry/api';
import { defaultResource, resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import type { ExporterConfig } from '../config';

/**
 * The resource of one process (the preload's process, one runner / cluster worker, a master), as the
 * OTel resource semantic conventions name it. Later entries win:
 *
 *  1. the SDK defaults: `service.name` = `unknown_service:<argv0>` (the spec's fallback), `telemetry.sdk.*`;
 *  2. this process: `service.instance.id` (a random UUID per process start, as the spec recommends, so
 *     every worker is its own instance), `process.pid`, `host.name`, `process.runtime.*`;
 *  3. `extra` attributes from the caller;
 *  4. OTEL_RESOURCE_ATTRIBUTES (the operator knows best: it may set any of the above);
 *  5. OTEL_SERVICE_NAME, which the spec gives precedence over `service.name` in OTEL_RESOURCE_ATTRIBUTES.
 *
 * The values come from the validated config (src/config/otel.ts), not from re-reading the environment.
 * A collector's Prometheus exporter turns `service.name` (with `service.namespace`) into `job` and
 * `service.instance.id` into `instance`; the rest goes to `target_info`.
 */
export function processResource(
  config: Pick<ExporterConfig, 'serviceName' | 'resourceAttributes'>,
  extra: Attributes = {},
): Resource {
  const host = hostname();
  let r = defaultResource().merge(resourceFromAttributes({
    'service.instance.id': randomUUID(),
    'process.pid': process.pid,
    'process.runtime.name': 'nodejs',
    'process.runtime.version': process.versions.node,
    'host.name': host,
    ...extra,
  }));
  if (Object.keys(config.resourceAttributes).length > 0) r = r.merge(resourceFromAttributes(config.resourceAttributes));
  if (config.serviceName) r = r.merge(resourceFromAttributes({ 'service.name': config.serviceName }));
  return r;
}
