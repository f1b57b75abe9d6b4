/**
 * The metric contract of ../shared/spec/metrics-api-reference.md: names, help texts and label names,
 * exactly as the reference writes them. Nothing else in the code spells a metric name.
 */
export const WORKER_LABELS = ['worker_id'] as const;
export const REQUEST_LABELS = ['worker_id', 'method', 'endpoint'] as const;
export const ERROR_LABELS = ['worker_id', 'method', 'endpoint', 'error_type'] as const;

export const M = {
  requestsTotal: { name: 'gunicorn_worker_requests_total', help: 'Total requests handled by worker', labels: REQUEST_LABELS, unit: '' },
  requestDuration: { name: 'gunicorn_worker_request_duration_seconds', help: 'Request duration in seconds', labels: REQUEST_LABELS, unit: 's' },
  memoryBytes: { name: 'gunicorn_worker_memory_bytes', help: 'Memory usage in bytes', labels: WORKER_LABELS, unit: 'By' },
  cpuPercent: { name: 'gunicorn_worker_cpu_percent', help: 'CPU usage percentage', labels: WORKER_LABELS, unit: '%' },
  uptimeSeconds: { name: 'gunicorn_worker_uptime_seconds', help: 'Worker uptime in seconds', labels: WORKER_LABELS, unit: 's' },
  workerState: { name: 'gunicorn_worker_state', help: 'Worker state with timestamp', labels: ['worker_id', 'state'] as const, unit: '' },
  failedRequests: { name: 'gunicorn_worker_failed_requests_total', help: 'Failed requests with method/endpoint labels', labels: ERROR_LABELS, unit: '' },
  errorHandling: { name: 'gunicorn_worker_error_handling_total', help: 'Error tracking with method and endpoint labels', labels: ERROR_LABELS, unit: '' },
  workerRestarts: { name: 'gunicorn_master_worker_restarts_total', help: 'Total worker restarts', labels: ['worker_id', 'reason'] as const, unit: '' },
  signals: { name: 'gunicorn_master_signals_total', help: 'Signal handling metrics', labels: ['signal', 'action'] as const, unit: '' },
} as const;

/** The error types of the reference; docs/metrics.md says what each means in Node. */
export const ERROR_TYPES = ['RequestError', 'TimeoutError', 'MemoryError', 'CPUError'] as const;
export type ErrorType = (typeof ERROR_TYPES)[number];

/** Worker states (gunicorn_worker_state{state}); only the current one is exported. */
export const WORKER_STATES = ['booting', 'running', 'stopping'] as const;
export type WorkerState = (typeof WORKER_STATES)[number] | (string & {});

/** Restart reasons of gunicorn_master_worker_restarts_total{reason}. */
export const RESTART_REASONS = ['crash', 'timeout', 'max_requests', 'reload', 'oom', 'signal'] as const;
export type RestartReason = (typeof RESTART_REASONS)[number] | (string & {});

/** The instrumentation scope every prefork-otel metric is produced under. */
export const SCOPE = { name: 'prefork-otel', version: '0.1.0' } as const;

/**
 * prefork-otel's own health metrics (not in the reference): how the scrape itself is doing. Served by
 * the scrape hub (src/export/hub.ts) of a master (the runner, a node:cluster primary) and of a single
 * process; docs/metrics.md says exactly when each changes.
 */
export const HEALTH = {
  scrapeDuration: {
    name: 'prefork_otel_scrape_duration_seconds', labels: [] as const, unit: 's',
    help: 'Duration of this scrape\'s collection (asking the workers, waiting for them, merging), in seconds',
  },
  snapshotAge: {
    name: 'prefork_otel_worker_snapshot_age_seconds', labels: ['worker_id'] as const, unit: 's',
    help: 'Age of the data served for each live worker: 0 when it answered this scrape, else seconds since its last snapshot',
  },
  seriesOverflow: {
    name: 'prefork_otel_series_overflow_total', labels: ['reason'] as const, unit: '',
    help: 'Series folded into endpoint="__overflow__" or dropped by the scrape bounds, by reason',
  },
} as const;

/**
 * reason of prefork_otel_series_overflow_total: `endpoint_cap` (folded: the union already had
 * PREFORK_OTEL_MAX_ENDPOINTS values), `endpoint_length` (folded: value longer than the master's
 * backstop length), `retained_workers` (an exited worker's series dropped before PREFORK_OTEL_RETENTION
 * ran out, because PREFORK_OTEL_MAX_RETAINED exited workers were already held), `unfoldable` (a data
 * point that could not be added into its overflow series and was dropped).
 */
export const OVERFLOW_REASONS = ['endpoint_cap', 'endpoint_length', 'retained_workers', 'unfoldable'] as const;
export type OverflowReason = (typeof OVERFLOW_REASONS)[number];
