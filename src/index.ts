/** The library: the reference's classes and hooks, for servers that manage their own processes. */
export { Metrics, processProducer, type MetricsOptions } from './metrics/Metrics';
export { MasterMetrics } from './metrics/MasterMetrics';
export { M as METRICS, ERROR_TYPES, WORKER_STATES, RESTART_REASONS, type ErrorType, type WorkerState, type RestartReason } from './metrics/contract';
export { RequestMetricProducer } from './metrics/producer';
export { EndpointPolicy, normalizePath, methodIndex, METHODS, OVERFLOW_ENDPOINT } from './metrics/labels';
export { loadConfig, ConfigError, DEFAULT_BUCKETS, type ExporterConfig } from './config';
export { Telemetry, PreforkMetricProducer, contractViews, shutdownTelemetry as shutdown } from './export/telemetry';
export { serializePrometheus, PROMETHEUS_CONTENT_TYPE } from './export/serializer';
export { startMetricsServer, type MetricsServer } from './export/server';
export { HttpObserver, type RequestHooks } from './hooks/http';
export { hooks, type LibraryServer, type LibraryWorker } from './hooks/library';
export { HOOK_NAMES, type UserHooks, type ServerApi, type WorkerApi, type WorkerInfo } from './hooks/server';
export { PrometheusWorker } from './workers/sync';
export { PrometheusThreadWorker } from './workers/gthread';
export { PrometheusEventletWorker, PrometheusGeventWorker, PrometheusAsyncWorker } from './workers/async';
export { WorkerRuntime } from './workers/runtime';
export { startSingleProcess } from './modes/single';
