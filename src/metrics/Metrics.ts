import type { Attributes, Counter, Histogram, Meter, MeterProvider } from '@opentelemetry/api';
import { defaultMeterProvider } from './default-provider';
import { ERROR_TYPES, M, SCOPE, type ErrorType, type WorkerState } from './contract';
import { methodIndex, METHODS } from './labels';
import { RequestMetricProducer } from './producer';
import { RequestStore, type Series } from './store';
import { DEFAULT_BUCKETS } from '../config';

function monotonicMs(): number {
  const t = process.hrtime();
  return t[0] * 1e3 + t[1] / 1e6;
}

export interface MetricsOptions {
  /** where the instruments live; default: the process's prefork-otel pipeline if there is one, else the global MeterProvider (./default-provider.ts) */
  meterProvider?: MeterProvider;
  /** worker_id label; default: process.pid */
  workerId?: string | number;
  /** duration histogram boundaries in seconds; default Prometheus' .005 … 10 */
  buckets?: readonly number[];
  /**
   * fast (default): per-series accumulators read by a MetricProducer at collection time.
   * otel: OpenTelemetry synchronous Counter / Histogram per request (≈ 2 µs more per request).
   */
  recording?: 'fast' | 'otel';
  /** the producer that hands fast-path series to the readers; default: the process-wide one */
  producer?: RequestMetricProducer;
}

/** The process-wide producer every fast-path `Metrics` registers its store with. */
export const processProducer = new RequestMetricProducer();

/** Error type name → index (ERROR_TYPES); unknown names are rejected (the contract has four). */
export function errorTypeIndex(errorType: string): number {
  const i = (ERROR_TYPES as readonly string[]).indexOf(errorType);
  if (i < 0) throw new TypeError(`prefork-otel: unknown error_type ${JSON.stringify(errorType)}: expected one of ${ERROR_TYPES.join(', ')}`);
  return i;
}

/**
 * The worker metrics of the reference (`Metrics` class): requests, duration, failures, errors,
 * memory, CPU, uptime and state, with the reference's methods.
 */
export class Metrics {
  readonly workerId: string;
  readonly meter: Meter;
  readonly recording: 'fast' | 'otel';
  /** fast-path accumulators (also used by the HTTP observer) */
  readonly store: RequestStore;
  readonly startTime = Date.now();
  memoryBytes: number | undefined;
  cpuPercent: number | undefined;
  /** CPU time (µs, user + system) and monotonic time (ms) at the last CPU sample */
  private lastCpuUs: number;
  private lastCpuAtMs: number;
  uptimeSeconds = 0;
  private state: { name: WorkerState; since: number; attrs: Attributes } | undefined;
  private readonly otel: { requests: Counter; duration: Histogram; failed: Counter; errors: Counter } | undefined;
  private readonly workerAttrs: Attributes;

  constructor(options: MetricsOptions = {}) {
    this.workerId = String(options.workerId ?? process.pid);
    this.workerAttrs = { worker_id: this.workerId };
    // first values at once, so the gauges are in the very first scrape: CPU percent averaged since the
    // process started; every later sample averages over the time since the one before
    this.memoryBytes = process.memoryUsage.rss();
    const used = process.cpuUsage();
    const up = process.uptime();
    this.cpuPercent = up > 0 ? ((used.user + used.system) / 1e6 / up) * 100 : 0;
    this.lastCpuUs = used.user + used.system;
    this.lastCpuAtMs = monotonicMs();
    this.recording = options.recording ?? 'fast';
    const provider = options.meterProvider ?? defaultMeterProvider();
    this.meter = provider.getMeter(SCOPE.name, SCOPE.version);
    const buckets = options.buckets ?? DEFAULT_BUCKETS;
    this.store = new RequestStore(buckets, this.workerId);

    if (this.recording === 'otel') {
      const advice = { explicitBucketBoundaries: [...buckets] };
      this.otel = {
        requests: this.meter.createCounter(M.requestsTotal.name, { description: M.requestsTotal.help }),
        duration: this.meter.createHistogram(M.requestDuration.name, { description: M.requestDuration.help, unit: M.requestDuration.unit, advice }),
        failed: this.meter.createCounter(M.failedRequests.name, { description: M.failedRequests.help }),
        errors: this.meter.createCounter(M.errorHandling.name, { description: M.errorHandling.help }),
      };
    }
    const producer = options.producer ?? processProducer;
    if (this.recording === 'fast') producer.add(this.store);
    producer.addState(() => (this.state ? { attributes: this.state.attrs, value: this.state.since } : undefined));

    const memory = this.meter.createObservableGauge(M.memoryBytes.name, { description: M.memoryBytes.help, unit: M.memoryBytes.unit });
    const cpu = this.meter.createObservableGauge(M.cpuPercent.name, { description: M.cpuPercent.help, unit: M.cpuPercent.unit });
    const uptime = this.meter.createObservableGauge(M.uptimeSeconds.name, { description: M.uptimeSeconds.help, unit: M.uptimeSeconds.unit });
    this.meter.addBatchObservableCallback((r) => {
      if (this.memoryBytes !== undefined) r.observe(memory, this.memoryBytes, this.workerAttrs);
      if (this.cpuPercent !== undefined) r.observe(cpu, this.cpuPercent, this.workerAttrs);
      this.updateUptime();
      r.observe(uptime, this.uptimeSeconds, this.workerAttrs);
    }, [memory, cpu, uptime]);
  }

  /**
   * record_request: one request of `duration` seconds. `success = false` also counts it in
   * failed_requests_total and error_handling_total with `errorType` (default RequestError).
   */
  recordRequest(method: string, endpoint: string, duration: number, success = true, errorType: ErrorType = 'RequestError'): void {
    const mi = methodIndex(method);
    // a negative or NaN duration (a caller's clock error) is recorded as 0 s in both recording modes:
    // the request still counts, and OTel's Histogram (which drops negatives) and ours agree
    const seconds = duration > 0 ? duration : 0;
    this.record(mi, this.fastSeries(mi, endpoint), endpoint, seconds, success ? -1 : errorTypeIndex(errorType));
  }

  /** The fast-path series slot for (method slot, endpoint); undefined in otel mode. */
  fastSeries(mi: number, endpoint: string): Series | undefined {
    return this.otel ? undefined : this.store.series(mi, endpoint);
  }

  /** Hot path: record into the pre-resolved slot (fast) or the OTel instruments (otel). */
  record(mi: number, series: Series | undefined, endpoint: string, seconds: number, errorIdx: number): void {
    if (series !== undefined) {
      this.store.observe(series, seconds, errorIdx);
      return;
    }
    const o = this.otel!;
    const attrs = { worker_id: this.workerId, method: METHODS[mi]!, endpoint };
    o.requests.add(1, attrs);
    o.duration.record(seconds, attrs);
    if (errorIdx >= 0) {
      const eattrs = { ...attrs, error_type: ERROR_TYPES[errorIdx]! };
      o.failed.add(1, eattrs);
      o.errors.add(1, eattrs);
    }
  }

  /** record_error: an error handled while serving (method, endpoint), counted in error_handling_total. */
  recordError(method: string, endpoint: string, errorType: ErrorType | string, _message?: string): void {
    const ei = errorTypeIndex(errorType);
    const mi = methodIndex(method);
    if (this.otel) {
      this.otel.errors.add(1, { worker_id: this.workerId, method: METHODS[mi]!, endpoint, error_type: ERROR_TYPES[ei]! });
    } else {
      this.store.series(mi, endpoint).errors[ei]!++;
    }
  }

  /**
   * update_resource_usage: RSS bytes (`process.memoryUsage.rss()`, the resident set of
   * /proc/self/stat that pidusage and psutil report) and CPU percent of this process since the last
   * sample (`process.cpuUsage()`, user + system, over the monotonic time between the two samples;
   * 100 = one core). Read in-process: one sample costs ≈ 10,000 instructions, against ≈ 440,000 for
   * pidusage (which opens and reads /proc files through the thread pool), counted by callgrind.
   */
  async updateResourceUsage(what: { memory?: boolean; cpu?: boolean } = { memory: true, cpu: true }): Promise<void> {
    if (what.memory !== false) this.memoryBytes = process.memoryUsage.rss();
    if (what.cpu !== false) {
      const used = process.cpuUsage();
      const us = used.user + used.system;
      const at = monotonicMs();
      const elapsedMs = at - this.lastCpuAtMs;
      if (elapsedMs > 0) {
        this.cpuPercent = ((us - this.lastCpuUs) / 1000 / elapsedMs) * 100;
        this.lastCpuUs = us;
        this.lastCpuAtMs = at;
      }
    }
  }

  /** update_uptime: seconds since this worker started. */
  updateUptime(): void {
    this.uptimeSeconds = (Date.now() - this.startTime) / 1000;
  }

  /** update_worker_state: the worker entered `state` now; only the current state's series is exported. */
  updateWorkerState(state: WorkerState): void {
    if (this.state?.name === state) return;
    this.state = { name: state, since: Date.now() / 1000, attrs: { worker_id: this.workerId, state } };
  }

  get currentState(): WorkerState | undefined {
    return this.state?.name;
  }
}
