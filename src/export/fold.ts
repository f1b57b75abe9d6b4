import {
  DataPointType, type DataPoint, type Histogram, type MetricData, type ScopeMetrics,
} from '@opentelemetry/sdk-metrics';
import { OVERFLOW_ENDPOINT } from '../metrics/labels';

/**
 * The master's longest `endpoint` value: a backstop behind the worker's own bound (src/metrics/labels.ts
 * truncates long raw paths). A longer value reaching the master is folded into `__overflow__` (reason
 * `endpoint_length`), so a worker that does not bound its values still cannot blow up the scrape.
 */
export const MAX_UNION_ENDPOINT_LENGTH = 1024;

function attrKey(a: object): string {
  return JSON.stringify(Object.entries(a).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
}

/** a + b of two points of the same metric (counters: values; histograms: buckets, sum, count); undefined if they cannot be added */
function addPoints(type: DataPointType, a: DataPoint<any>, b: DataPoint<any>): DataPoint<any> | undefined {
  if (type === DataPointType.SUM) return { ...a, value: (a.value as number) + (b.value as number) };
  if (type !== DataPointType.HISTOGRAM) return undefined;
  const x = a.value as Histogram;
  const y = b.value as Histogram;
  if (x.buckets.counts.length !== y.buckets.counts.length) return undefined;
  return {
    ...a,
    value: {
      buckets: { boundaries: x.buckets.boundaries, counts: x.buckets.counts.map((c, i) => c + y.buckets.counts[i]!) },
      sum: (x.sum ?? 0) + (y.sum ?? 0),
      count: x.count + y.count,
    },
  };
}

/** What one fold did to one worker's snapshot. */
export interface FoldResult {
  scopes: ScopeMetrics[];
  /** data points folded into `__overflow__` because the union already had `max` endpoint values */
  capped: number;
  /** data points folded because their endpoint value was longer than MAX_UNION_ENDPOINT_LENGTH */
  tooLong: number;
  /** data points that could not be folded (a gauge, or a histogram with other buckets) and were dropped */
  dropped: number;
}

/**
 * The endpoint cap over the union a master serves (live workers plus retained exited ones): at most
 * `max` distinct `endpoint` values besides `__overflow__`, whatever each process admitted on its own.
 *
 * Admission is first come, first served and sticky: a value is admitted while there is room and then
 * stays admitted for the life of the master; a value that found the union full is folded from then on.
 * So one worker's series keep their identity from scrape to scrape (a value never moves in or out of
 * `__overflow__`), and every folded counter or histogram is added into that worker's
 * `endpoint="__overflow__"` series of the same (method[, error_type]), so totals stay exact and never go
 * backwards. Memory: at most `max` strings of at most MAX_UNION_ENDPOINT_LENGTH characters.
 */
export class EndpointUnion {
  private readonly admitted = new Set<string>();
  constructor(readonly max: number, readonly maxLength = MAX_UNION_ENDPOINT_LENGTH) {}

  get size(): number {
    return this.admitted.size;
  }

  has(endpoint: string): boolean {
    return this.admitted.has(endpoint);
  }

  /** keep `endpoint` as it is (true) or fold it (false); admits it when there is room */
  private keep(ep: string): boolean | 'long' {
    if (ep === OVERFLOW_ENDPOINT) return true;
    if (ep.length > this.maxLength) return 'long';
    if (this.admitted.has(ep)) return true;
    if (this.admitted.size >= this.max) return false;
    this.admitted.add(ep);
    return true;
  }

  /**
   * One worker's scope metrics with every endpoint beyond the union folded. Data points without an
   * `endpoint` attribute pass untouched; nothing is copied unless something is folded.
   */
  fold(scopes: ScopeMetrics[]): FoldResult {
    const r: FoldResult = { scopes, capped: 0, tooLong: 0, dropped: 0 };
    let changed = false;
    const out = scopes.map((sm) => {
      let smChanged = false;
      const metrics = sm.metrics.map((m) => {
        const folded = this.foldMetric(m, r);
        if (folded !== m) smChanged = true;
        return folded;
      });
      if (!smChanged) return sm;
      changed = true;
      return { scope: sm.scope, metrics };
    });
    if (changed) r.scopes = out;
    return r;
  }

  private foldMetric(m: MetricData, r: FoldResult): MetricData {
    const points = m.dataPoints as DataPoint<any>[];
    let firstFold = -1;
    for (let i = 0; i < points.length; i++) {
      const ep = (points[i]!.attributes as Record<string, unknown>).endpoint;
      if (typeof ep !== 'string') continue;
      const k = this.keep(ep);
      if (k !== true) {
        firstFold = i;
        break;
      }
    }
    if (firstFold < 0) return m;
    // something folds: rebuild this metric's points, overflow points keyed by their other attributes
    const kept: DataPoint<any>[] = points.slice(0, firstFold);
    const overflow = new Map<string, number>();
    for (let i = 0; i < firstFold; i++) {
      const a = points[i]!.attributes as Record<string, unknown>;
      if (a.endpoint === OVERFLOW_ENDPOINT) overflow.set(attrKey(a), i);
    }
    for (let i = firstFold; i < points.length; i++) {
      const p = points[i]!;
      const a = p.attributes as Record<string, unknown>;
      const ep = a.endpoint;
      // (keep() again for firstFold: it only has an effect when it admits, which it did not)
      const k = typeof ep === 'string' ? this.keep(ep) : true;
      if (k === true) {
        if (ep === OVERFLOW_ENDPOINT) {
          const key = attrKey(a);
          const at = overflow.get(key);
          if (at === undefined) {
            overflow.set(key, kept.length);
            kept.push(p);
          } else {
            const sum = addPoints(m.dataPointType, kept[at]!, p);
            if (sum) kept[at] = sum;
            else r.dropped++;
          }
        } else {
          kept.push(p);
        }
        continue;
      }
      if (k === 'long') r.tooLong++;
      else r.capped++;
      const attributes = { ...a, endpoint: OVERFLOW_ENDPOINT };
      const key = attrKey(attributes);
      const at = overflow.get(key);
      if (at === undefined) {
        if (m.dataPointType === DataPointType.GAUGE) {
          r.dropped++;
          continue;
        }
        overflow.set(key, kept.length);
        kept.push({ ...p, attributes });
      } else {
        const sum = addPoints(m.dataPointType, kept[at]!, p);
        if (sum) kept[at] = sum;
        else r.dropped++;
      }
    }
    return { ...m, dataPoints: kept } as MetricData;
  }
}
