import { ConfigError, invalid } from './errors';
import { parseBool, parseEnum, parseInteger } from './parse';

/**
 * The standard OpenTelemetry environment (OTel specification, "Environment Variable Specification" and
 * "OTLP Exporter Configuration"): what prefork-otel reads itself, and a check of what the maintained OTLP
 * exporter packages read themselves (endpoint, headers, timeout, compression, temporality, certificates).
 * Those packages ignore a bad value with a diagnostic nobody sees and fall back to a default (e.g. send to
 * localhost:4318); here a bad value stops start-up with one line, like every other setting.
 */

type Env = Record<string, string | undefined>;

export type MetricsExporterName = 'prometheus' | 'otlp' | 'console' | 'none';
export type OtlpProtocol = 'http/protobuf' | 'http/json' | 'grpc';

export const METRICS_EXPORTERS = ['prometheus', 'otlp', 'console', 'none'] as const;
export const OTLP_PROTOCOLS = ['http/protobuf', 'http/json', 'grpc'] as const;

/** Where `exporters` came from: PREFORK_OTEL_EXPORTER wins over OTEL_METRICS_EXPORTER; neither set → the default. */
export type ExportersSource = 'PREFORK_OTEL_EXPORTER' | 'OTEL_METRICS_EXPORTER' | 'default';

export interface OtelEnv {
  /**
   * PREFORK_OTEL_EXPORTER, else OTEL_METRICS_EXPORTER (comma list; `none` selects nothing). Default
   * here: prometheus (the reference's scrape endpoint). Only prefork-otel's own pipeline reads this
   * choice; an app's own sdk-node reads OTEL_METRICS_EXPORTER itself.
   */
  exporters: Exclude<MetricsExporterName, 'none'>[];
  /** which variable `exporters` came from (named in the start line and in errors) */
  exportersSource: ExportersSource;
  /** the raw value of that variable ('' for the default) */
  exportersRaw: string;
  /**
   * PREFORK_OTEL_GLOBAL (default false): register prefork-otel's MeterProvider as the process's global
   * one (`metrics.getMeter()` in app code then lands on our endpoint). Off by default so an app's own
   * NodeSDK / MeterProvider registers as global unhindered (docs/opentelemetry-coexistence.md).
   */
  globalMeterProvider: boolean;
  /** OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL; default http/protobuf */
  otlpProtocol: OtlpProtocol;
  /** OTEL_METRIC_EXPORT_INTERVAL (ms), default 60000 */
  exportIntervalMs: number;
  /** OTEL_METRIC_EXPORT_TIMEOUT (ms), default 30000; never more than the interval */
  exportTimeoutMs: number;
  /** OTEL_SERVICE_NAME */
  serviceName: string | undefined;
  /** OTEL_RESOURCE_ATTRIBUTES, decoded */
  resourceAttributes: Record<string, string>;
}

function has(env: Env, name: string): boolean {
  const v = env[name];
  return v !== undefined && v.trim() !== '';
}

/** The metrics-specific variable when set, else the general one (OTLP exporter spec precedence). */
function pick(env: Env, suffix: string): [name: string, value: string] | undefined {
  for (const name of [`OTEL_EXPORTER_OTLP_METRICS_${suffix}`, `OTEL_EXPORTER_OTLP_${suffix}`]) {
    if (has(env, name)) return [name, env[name]!.trim()];
  }
  return undefined;
}

/** Enum values of the OTel environment are case-insensitive (env spec). */
function otelEnum<T extends string>(name: string, raw: string, allowed: readonly T[]): T {
  const v = raw.trim().toLowerCase();
  if ((allowed as readonly string[]).includes(v)) return v as T;
  return parseEnum(name, raw, allowed);
}

export function parseMetricsExporters(raw: string | undefined, source = 'OTEL_METRICS_EXPORTER'): OtelEnv['exporters'] {
  if (raw === undefined || raw.trim() === '') return ['prometheus'];
  const names = raw.split(',').map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw invalid(source, raw, `expected a comma list of ${METRICS_EXPORTERS.join(', ')}`);
  const out = new Set<Exclude<MetricsExporterName, 'none'>>();
  let none = false;
  for (const n of names) {
    const v = n.toLowerCase();
    if (!(METRICS_EXPORTERS as readonly string[]).includes(v)) {
      throw invalid(source, raw, `expected a comma list of ${METRICS_EXPORTERS.join(', ')}`);
    }
    if (v === 'none') none = true;
    else out.add(v as Exclude<MetricsExporterName, 'none'>);
  }
  if (none && out.size > 0) throw invalid(source, raw, '"none" cannot be combined with other exporters');
  return [...out];
}

/**
 * Our exporters, by precedence: PREFORK_OTEL_EXPORTER (prefork-otel's own, so an app can quiet its
 * sdk-node with OTEL_METRICS_EXPORTER=none and keep our endpoint), else OTEL_METRICS_EXPORTER, else prometheus.
 */
export function selectExporters(env: Env): Pick<OtelEnv, 'exporters' | 'exportersSource' | 'exportersRaw'> {
  for (const name of ['PREFORK_OTEL_EXPORTER', 'OTEL_METRICS_EXPORTER'] as const) {
    if (has(env, name)) return { exporters: parseMetricsExporters(env[name], name), exportersSource: name, exportersRaw: env[name]!.trim() };
  }
  return { exporters: ['prometheus'], exportersSource: 'default', exportersRaw: '' };
}

export function parseOtlpProtocol(env: Env): OtlpProtocol {
  const p = pick(env, 'PROTOCOL');
  return p ? otelEnum(p[0], p[1], OTLP_PROTOCOLS) : 'http/protobuf';
}

/**
 * OTEL_RESOURCE_ATTRIBUTES: `key=value,key2=value2`, keys and values percent-encoded (',' and '=' must be).
 * The same rules as the SDK's env detector, but a bad value is an error instead of silently dropping all.
 */
export function parseResourceAttributes(raw: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (raw === undefined || raw.trim() === '') return out;
  const allowed = 'expected key=value pairs separated by commas, with "," "=" and "%" percent-encoded (e.g. deployment.environment=prod,service.namespace=shop)';
  for (const item of raw.split(',')) {
    if (item.trim() === '') continue;
    const parts = item.split('=');
    if (parts.length !== 2 || parts[0]!.trim() === '') throw invalid('OTEL_RESOURCE_ATTRIBUTES', raw, allowed);
    let key: string;
    let value: string;
    try {
      key = decodeURIComponent(parts[0]!.trim());
      value = decodeURIComponent(parts[1]!.trim());
    } catch {
      throw invalid('OTEL_RESOURCE_ATTRIBUTES', raw, allowed);
    }
    if (key.length > 255 || value.length > 255) throw invalid('OTEL_RESOURCE_ATTRIBUTES', raw, 'keys and values must be at most 255 characters');
    out[key] = value;
  }
  return out;
}

/** An endpoint URL: http(s) for the HTTP protocols; for gRPC also `host:port` and `unix:` (what the gRPC exporter accepts). */
function checkEndpoint(name: string, value: string, protocol: OtlpProtocol): void {
  const grpc = protocol === 'grpc';
  const allowed = grpc
    ? 'expected a URL like http://otel-collector:4317 (or host:port, or unix:///path)'
    : 'expected an http:// or https:// URL like http://otel-collector:4318';
  if (grpc && /^[A-Za-z0-9.\-_[\]:]+:\d{1,5}$/.test(value) && !value.includes('://')) return;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(name, value, allowed);
  }
  const schemes = grpc ? ['http:', 'https:', 'unix:'] : ['http:', 'https:'];
  if (!schemes.includes(url.protocol) || (url.protocol !== 'unix:' && url.hostname === '')) throw invalid(name, value, allowed);
}

/**
 * Headers `key=value,key2=value2` (W3C baggage-like, percent-encoded). The value is never echoed:
 * headers usually carry credentials.
 */
function checkHeaders(name: string, value: string): void {
  for (const item of value.split(',')) {
    if (item.trim() === '') continue;
    const eq = item.indexOf('=');
    let ok = eq > 0 && item.slice(0, eq).trim() !== '' && item.slice(eq + 1).trim() !== '';
    if (ok) {
      try {
        decodeURIComponent(item);
      } catch {
        ok = false;
      }
    }
    if (!ok) {
      throw new ConfigError(`prefork-otel: invalid ${name} (value not shown): expected key=value pairs separated by commas, percent-encoded (e.g. api-key=secret,x-tenant=a)`);
    }
  }
}

/**
 * Check the OTLP exporter variables the maintained exporter packages read themselves. Throws a
 * ConfigError (one line) on the first bad one.
 */
export function checkOtlpExporterEnv(env: Env, protocol: OtlpProtocol): void {
  for (const name of ['OTEL_EXPORTER_OTLP_METRICS_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT']) {
    if (has(env, name)) checkEndpoint(name, env[name]!.trim(), protocol);
  }
  for (const name of ['OTEL_EXPORTER_OTLP_METRICS_HEADERS', 'OTEL_EXPORTER_OTLP_HEADERS']) {
    if (has(env, name)) checkHeaders(name, env[name]!);
  }
  for (const name of ['OTEL_EXPORTER_OTLP_METRICS_TIMEOUT', 'OTEL_EXPORTER_OTLP_TIMEOUT']) {
    if (has(env, name)) parseInteger(name, env[name], 1, 3_600_000);
  }
  for (const name of ['OTEL_EXPORTER_OTLP_METRICS_COMPRESSION', 'OTEL_EXPORTER_OTLP_COMPRESSION']) {
    if (has(env, name)) otelEnum(name, env[name]!, ['none', 'gzip'] as const);
  }
  if (has(env, 'OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE')) {
    otelEnum('OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE', env.OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE!, ['cumulative', 'delta', 'lowmemory'] as const);
  }
  if (protocol === 'grpc') {
    for (const name of ['OTEL_EXPORTER_OTLP_METRICS_INSECURE', 'OTEL_EXPORTER_OTLP_INSECURE']) {
      if (has(env, name)) parseBool(name, env[name]);
    }
  }
}

/** Everything of the standard OTel environment that prefork-otel uses; ConfigError on a bad value. */
export function loadOtelEnv(env: Env): OtelEnv {
  const { exporters, exportersSource, exportersRaw } = selectExporters(env);
  const otlpProtocol = parseOtlpProtocol(env);
  if (exporters.includes('otlp')) checkOtlpExporterEnv(env, otlpProtocol);
  const exportIntervalMs = has(env, 'OTEL_METRIC_EXPORT_INTERVAL')
    ? parseInteger('OTEL_METRIC_EXPORT_INTERVAL', env.OTEL_METRIC_EXPORT_INTERVAL, 1, 86_400_000) : 60_000;
  const timeout = has(env, 'OTEL_METRIC_EXPORT_TIMEOUT')
    ? parseInteger('OTEL_METRIC_EXPORT_TIMEOUT', env.OTEL_METRIC_EXPORT_TIMEOUT, 1, 86_400_000) : 30_000;
  return {
    exporters,
    exportersSource,
    exportersRaw,
    globalMeterProvider: has(env, 'PREFORK_OTEL_GLOBAL') ? parseBool('PREFORK_OTEL_GLOBAL', env.PREFORK_OTEL_GLOBAL) : false,
    otlpProtocol,
    exportIntervalMs,
    exportTimeoutMs: Math.min(timeout, exportIntervalMs),
    serviceName: has(env, 'OTEL_SERVICE_NAME') ? env.OTEL_SERVICE_NAME!.trim() : undefined,
    resourceAttributes: parseResourceAttributes(env.OTEL_RESOURCE_ATTRIBUTES),
  };
}
