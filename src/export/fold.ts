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

/** One worker's fold decisions: fixed for the life of its entry, so its series never move. */
export interface FoldOwner {
  /** endpoint values this worker's series keep (each holds a reference in the union) */
  readonly own: Set<string>;
  /** endpoint values folded into this worker's `__overflow__` series */
  readonly folded: Set<string>;
}

export function foldOwner(): FoldOwner {
  return { own: new Set(), folded: new Set() };
}

/**
 * The endpoint cap over the union a master serves (live workers plus retained exited ones): at most
 * `max` distinct `endpoint` values besides `__overflow__` are served, whatever each process admitted
 * on its own.
 *
 * A worker's value is kept when the union already serves it (another worker has it) or there is room;
 * otherwise it is folded into that worker's `endpoint="__overflow__"` series of the same
 * (method[, error_type]): counters and histograms are added, so totals stay exact. Each decision is
 * fixed for that worker for as long as the master holds it (live or retained): its series never move in
 * or out of `__overflow__`, so no series goes backwards between scrapes. A value stays admitted while any
 * held worker keeps it, and its place is freed once none does (its workers exited and their retention
 * ended), so a scan long ago does not fill the cap for ever.
 * Memory: at most `max` admitted values plus, per held worker, the values it sent (each worker bounds
 * those itself), none longer than MAX_UNION_ENDPOINT_LENGTH.
 */
export class EndpointUnion {
  /** admitted value → how many held workers keep it */
  private readonly refs = new Map<string, number>();
  constructor(readonly max: number, readonly maxLength = MAX_UNION_ENDPOINT_LENGTH) {}

  get size(): number {
    return this.refs.size;
  }

  has(endpoint: string): boolean {
    return this.refs.has(endpoint);
  }

  /** keep `endpoint` for `owner` (true) or fold it (false / 'long'); admits it when there is room */
  private keep(ep: string, owner: FoldOwner): boolean | 'long' {
    if (ep === OVERFLOW_ENDPOINT) return true;
    if (ep.length > this.maxLength) return 'long';
    if (owner.own.has(ep)) return true;
    if (owner.folded.has(ep)) return false;
    const n = this.refs.get(ep);
    if (n === undefined && this.refs.size >= this.max) {
      owner.folded.add(ep);
      return false;
    }
    this.refs.set(ep, (n ?? 0) + 1);
    owner.own.add(ep);
    return true;
  }

  /** `owner` is no longer held (its retention ended): its values free their places once no one keeps them */
  release(owner: FoldOwner): void {
    for (const ep of owner.own) {
      const n = this.refs.get(ep);
      if (n === undefined) continue;
      if (n <= 1) this.refs.delete(ep);
      else this.refs.set(ep, n - 1);
    }
    owner.own.clear();
    owner.folded.clear();
  }

  /**
   * One worker's scope metrics with every endpoint beyond the union folded. Data points without an
   * `endpoint` attribute pass untouched; nothing is copied unless something is folded.
   */
  fold(scopes: ScopeMetrics[], owner: FoldOwner): FoldResult {
    const r: FoldResult = { scopes, capped: 0, tooLong: 0, dropped: 0 };
    let changed = false;
    const out = scopes.map((sm) => {
      let smChanged = false;
      const metrics = sm.metrics.map((m) => {
        const folded = this.foldMetric(m, r, owner);
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

  private foldMetric(m: MetricData, r: FoldResult, owner: FoldOwner): MetricData {
    const points = m.dataPoints as DataPoint<any>[];
    let firstFold = -1;
    for (let i = 0; i < points.length; i++) {
      const ep = (points[i]!.attributes as Record<string, unknown>).endpoint;
      if (typeof ep !== 'string') continue;
      const k = this.keep(ep, owner);
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
      // (keep() again for firstFold: the decision is remembered, the answer is the same)
      const k = typeof ep === 'string' ? this.keep(ep, owner) : true;
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
