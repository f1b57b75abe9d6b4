import type { Attributes, HrTime } from '@opentelemetry/api';
import { ERROR_TYPES } from './contract';
import { METHODS } from './labels';

/**
 * Per-series accumulator of the request-path instruments (requests_total, request_duration_seconds,
 * failed_requests_total, error_handling_total) for one (method, endpoint). A request touches only
 * this: two number adds and one bucket increment. OpenTelemetry reads it at collection time.
 */
export class Series {
  count = 0;
  sum = 0;
  /** non-cumulative bucket counts, length = boundaries + 1 (the last is +Inf) */
  readonly buckets: Float64Array;
  /** failed_requests_total per error type (index into ERROR_TYPES) */
  readonly failed = new Float64Array(ERROR_TYPES.length);
  /** error_handling_total per error type */
  readonly errors = new Float64Array(ERROR_TYPES.length);
  /** attribute objects, built on first collection and reused */
  attrs: Attributes | undefined;
  errorAttrs: Attributes[] | undefined;
  constructor(readonly method: string, readonly endpoint: string, nBuckets: number) {
    this.buckets = new Float64Array(nBuckets + 1);
  }
}

/** Index of the bucket for `v`: the first boundary >= v (Prometheus `le`, OTel's upper-inclusive). */
export function bucketIndex(boundaries: readonly number[], v: number): number {
  const n = boundaries.length;
  let i = 0;
  while (i < n && boundaries[i]! < v) i++;
  return i;
}

/** All request-path series of one process (or one worker thread). */
export class RequestStore {
  readonly all: Series[] = [];
  private readonly byMethod: Map<string, Series>[] = METHODS.map(() => new Map());
  readonly startTime: HrTime;
  constructor(readonly boundaries: readonly number[], readonly workerId: string) {
    this.startTime = nowHrTime();
  }

  /** The series for (method slot, endpoint), created on first use. */
  series(methodIdx: number, endpoint: string): Series {
    const m = this.byMethod[methodIdx]!;
    let s = m.get(endpoint);
    if (s === undefined) {
      s = new Series(METHODS[methodIdx]!, endpoint, this.boundaries.length);
      m.set(endpoint, s);
      this.all.push(s);
    }
    return s;
  }

  /** Count one request of `seconds`; errorIdx >= 0 also counts it failed with ERROR_TYPES[errorIdx]. */
  observe(s: Series, seconds: number, errorIdx: number): void {
    s.count++;
    s.sum += seconds;
    // the first bucket checked here: most requests fall in it, and V8 does not inline bucketIndex
    // this deep (its call was ≈ 40 instructions a request in the callgrind diff)
    const b = this.boundaries;
    s.buckets[seconds <= b[0]! ? 0 : bucketIndex(b, seconds)]!++;
    if (errorIdx >= 0) {
      s.failed[errorIdx]!++;
      s.errors[errorIdx]!++;
    }
  }
}

export function nowHrTime(): HrTime {
  const ms = Date.now();
  return [Math.floor(ms / 1000), (ms % 1000) * 1e6];
}
