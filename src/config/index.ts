import { invalid } from './errors';
import { loadOtelEnv, type OtelEnv } from './otel';
import { METRICS_MAX_CONNECTIONS, type WebSources } from './web';
import {
  parseBool, parseBuckets, parseEnum, parseHost, parseInteger, parseNumber, parsePath, parsePort,
} from './parse';

export { ConfigError, invalid, exitOnUserError } from './errors';
export * from './parse';
export { loadOtelEnv, type ExportersSource, type MetricsExporterName, type OtlpProtocol, type OtelEnv } from './otel';
export { METRICS_MAX_CONNECTIONS, hasWebConfig, loadWebConfig, secureContextOptions, type WebConfig, type WebSources, type WebTls } from './web';

/** Prometheus' client default buckets, in seconds (the reference's histogram is in seconds). */
export const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

export type PortInUsePolicy = 'warn' | 'exit';
export type RecordingMode = 'fast' | 'otel';

/**
 * The one typed configuration of the exporter side (metrics, endpoint, sampling), plus the standard
 * OTel variables (OtelEnv, read by ./otel.ts).
 */
export interface ExporterConfig extends OtelEnv, WebSources {
  /** PROMETHEUS_METRICS_PORT */
  metricsPort: number;
  /** PROMETHEUS_BIND_ADDRESS */
  bindAddress: string;
  /** PREFORK_OTEL_METRICS_PATH */
  metricsPath: string;
  /** PROMETHEUS_MULTIPROC_DIR: set → multiprocess (directory) mode */
  multiprocDir: string | undefined;
  /** GUNICORN_WORKERS */
  workers: number;
  /** PREFORK_OTEL_ON_PORT_IN_USE */
  onPortInUse: PortInUsePolicy;
  /** PREFORK_OTEL_MAX_ENDPOINTS: distinct normalised-path endpoint values per process, and distinct endpoint values over the union a master serves */
  maxEndpoints: number;
  /** PREFORK_OTEL_BUCKETS */
  buckets: number[];
  /** PREFORK_OTEL_MEMORY_INTERVAL (seconds) */
  memoryIntervalMs: number;
  /** PREFORK_OTEL_CPU_INTERVAL (seconds) */
  cpuIntervalMs: number;
  /** PREFORK_OTEL_SCRAPE_TIMEOUT (seconds): master's deadline for worker answers */
  scrapeTimeoutMs: number;
  /** PREFORK_OTEL_SNAPSHOT_INTERVAL (seconds): workers push a snapshot this often */
  snapshotIntervalMs: number;
  /** PREFORK_OTEL_RETENTION (seconds): an exited worker's final series stay this long */
  retentionMs: number;
  /** PREFORK_OTEL_MAX_RETAINED: at most this many exited workers' series are kept at a time */
  maxRetained: number;
  /** PREFORK_OTEL_TARGET_INFO */
  targetInfo: boolean;
  /** PREFORK_OTEL_RECORDING: fast (per-series accumulators + MetricProducer) or otel (synchronous instruments) */
  recording: RecordingMode;
  /** PREFORK_OTEL_DISABLED */
  disabled: boolean;
  /** PREFORK_OTEL_METRICS_MAX_CONNECTIONS */
  metricsMaxConnections: number;
}

type Env = Record<string, string | undefined>;

function has(env: Env, name: string): boolean {
  const v = env[name];
  return v !== undefined && v !== '';
}

function seconds(env: Env, name: string, dflt: number, min: number, max: number): number {
  return Math.round((has(env, name) ? parseNumber(name, env[name], min, max, 'seconds') : dflt) * 1000);
}

/**
 * The one configuration loader: defaults < environment < overrides (the runner passes its CLI /
 * config-file values as overrides after validating them with the same parsers).
 * Throws ConfigError (one line: variable, value, what is allowed) on any invalid value.
 */
export function loadConfig(env: Env = process.env, overrides: Partial<ExporterConfig> = {}): ExporterConfig {
  // the standard OTel variables (OTEL_METRICS_EXPORTER, OTEL_EXPORTER_OTLP_*, OTEL_METRIC_EXPORT_*, OTEL_SERVICE_NAME,
  // OTEL_RESOURCE_ATTRIBUTES): see ./otel.ts
  const otel = loadOtelEnv(env);

  const cfg: ExporterConfig = {
    metricsPort: has(env, 'PROMETHEUS_METRICS_PORT') ? parsePort('PROMETHEUS_METRICS_PORT', env.PROMETHEUS_METRICS_PORT) : 9091,
    bindAddress: has(env, 'PROMETHEUS_BIND_ADDRESS') ? parseHost('PROMETHEUS_BIND_ADDRESS', env.PROMETHEUS_BIND_ADDRESS) : '0.0.0.0',
    metricsPath: has(env, 'PREFORK_OTEL_METRICS_PATH') ? parsePath('PREFORK_OTEL_METRICS_PATH', env.PREFORK_OTEL_METRICS_PATH) : '/metrics',
    multiprocDir: has(env, 'PROMETHEUS_MULTIPROC_DIR') ? String(env.PROMETHEUS_MULTIPROC_DIR) : undefined,
    workers: has(env, 'GUNICORN_WORKERS') ? parseInteger('GUNICORN_WORKERS', env.GUNICORN_WORKERS, 1, 1024) : 1,
    onPortInUse: has(env, 'PREFORK_OTEL_ON_PORT_IN_USE')
      ? parseEnum('PREFORK_OTEL_ON_PORT_IN_USE', env.PREFORK_OTEL_ON_PORT_IN_USE, ['warn', 'exit'] as const) : 'warn',
    maxEndpoints: has(env, 'PREFORK_OTEL_MAX_ENDPOINTS') ? parseInteger('PREFORK_OTEL_MAX_ENDPOINTS', env.PREFORK_OTEL_MAX_ENDPOINTS, 1, 100000) : 500,
    buckets: has(env, 'PREFORK_OTEL_BUCKETS') ? parseBuckets('PREFORK_OTEL_BUCKETS', env.PREFORK_OTEL_BUCKETS) : [...DEFAULT_BUCKETS],
    memoryIntervalMs: seconds(env, 'PREFORK_OTEL_MEMORY_INTERVAL', 30, 0.1, 86400),
    cpuIntervalMs: seconds(env, 'PREFORK_OTEL_CPU_INTERVAL', 10, 0.1, 86400),
    scrapeTimeoutMs: seconds(env, 'PREFORK_OTEL_SCRAPE_TIMEOUT', 1, 0.01, 60),
    snapshotIntervalMs: seconds(env, 'PREFORK_OTEL_SNAPSHOT_INTERVAL', 5, 0.05, 3600),
    retentionMs: seconds(env, 'PREFORK_OTEL_RETENTION', 300, 0, 86400 * 7),
    maxRetained: has(env, 'PREFORK_OTEL_MAX_RETAINED') ? parseInteger('PREFORK_OTEL_MAX_RETAINED', env.PREFORK_OTEL_MAX_RETAINED, 0, 10000) : 64,
    targetInfo: has(env, 'PREFORK_OTEL_TARGET_INFO') ? parseBool('PREFORK_OTEL_TARGET_INFO', env.PREFORK_OTEL_TARGET_INFO) : true,
    recording: has(env, 'PREFORK_OTEL_RECORDING') ? parseEnum('PREFORK_OTEL_RECORDING', env.PREFORK_OTEL_RECORDING, ['fast', 'otel'] as const) : 'fast',
    disabled: has(env, 'PREFORK_OTEL_DISABLED') ? parseBool('PREFORK_OTEL_DISABLED', env.PREFORK_OTEL_DISABLED) : false,
    // the metrics endpoint's TLS and basic auth: only names here; ./web.ts reads the files where the endpoint starts
    webConfigFile: has(env, 'PROMETHEUS_WEB_CONFIG_FILE') ? String(env.PROMETHEUS_WEB_CONFIG_FILE) : undefined,
    sslCertFile: has(env, 'PROMETHEUS_SSL_CERTFILE') ? String(env.PROMETHEUS_SSL_CERTFILE) : undefined,
    sslKeyFile: has(env, 'PROMETHEUS_SSL_KEYFILE') ? String(env.PROMETHEUS_SSL_KEYFILE) : undefined,
    sslClientCaFile: has(env, 'PROMETHEUS_SSL_CLIENT_CAFILE') ? String(env.PROMETHEUS_SSL_CLIENT_CAFILE) : undefined,
    sslClientCaPath: has(env, 'PROMETHEUS_SSL_CLIENT_CAPATH') ? String(env.PROMETHEUS_SSL_CLIENT_CAPATH) : undefined,
    metricsMaxConnections: has(env, 'PREFORK_OTEL_METRICS_MAX_CONNECTIONS')
      ? parseInteger('PREFORK_OTEL_METRICS_MAX_CONNECTIONS', env.PREFORK_OTEL_METRICS_MAX_CONNECTIONS, 1, 65535) : METRICS_MAX_CONNECTIONS,
    sslClientAuthRequired: has(env, 'PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED')
      ? parseBool('PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED', env.PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED) : false,
    ...otel,
    ...overrides,
  };
  return cfg;
}
