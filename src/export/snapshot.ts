import type { Attributes } from '@opentelemetry/api';
import type { DataPoint, Histogram, MetricData, ResourceMetrics, ScopeMetrics } from '@opentelemetry/sdk-metrics';

/**
 * A worker's collected metrics in a JSON-safe form: what travels over IPC to the master, between
 * threads, and into PROMETHEUS_MULTIPROC_DIR files. It is the OTel MetricData as collected by the
 * worker's reader, with the resource reduced to its attributes and non-finite histogram min/max
 * dropped (JSON has no Infinity).
 */
export interface Snapshot {
  v: 1;
  pid: number;
  /** Date.now() when collected */
  time: number;
  resource: Attributes;
  scopeMetrics: ScopeMetrics[];
  /** set on the last snapshot a worker sends before it exits */
  final?: boolean;
  /** requests in flight in the worker when it was taken (for the master's exit line), where known */
  inFlight?: number;
}

export function toSnapshot(rm: ResourceMetrics, pid = process.pid, final = false, inFlight?: number): Snapshot {
  const scopeMetrics = rm.scopeMetrics.map((sm) => ({
    scope: { name: sm.scope.name, version: sm.scope.version, schemaUrl: sm.scope.schemaUrl },
    metrics: sm.metrics.map(jsonSafe),
  }));
  const snap: Snapshot = { v: 1, pid, time: Date.now(), resource: { ...rm.resource.attributes }, scopeMetrics };
  if (final) snap.final = true;
  if (inFlight !== undefined) snap.inFlight = inFlight;
  return snap;
}

function jsonSafe(m: MetricData): MetricData {
  if (m.dataPointType !== 0 /* HISTOGRAM */) return m;
  return {
    ...m,
    dataPoints: m.dataPoints.map((p) => {
      const v = p.value;
      if (Number.isFinite(v.min) && Number.isFinite(v.max)) return p;
      return { ...p, value: { buckets: v.buckets, sum: v.sum, count: v.count } };
    }),
  };
}

/**
 * A snapshot that can be built synchronously when a process ends abruptly (`process.exit()`, where
 * nothing asynchronous runs): the last full snapshot with the metrics of `fresh` (read synchronously,
 * e.g. the fast-path request metrics) put in place of their older same-named versions. Metrics of
 * `fresh` without data points do not replace anything (in `otel` recording mode the request metrics
 * come from the SDK instruments, not from the synchronous producer).
 */
export function freshenSnapshot(last: Snapshot | undefined, fresh: ScopeMetrics, pid = process.pid, final = true): Snapshot {
  const replace = new Set(fresh.metrics.filter((m) => m.dataPoints.length > 0).map((m) => m.descriptor.name));
  const kept = (last?.scopeMetrics ?? []).map((sm) => ({ scope: sm.scope, metrics: sm.metrics.filter((m) => !replace.has(m.descriptor.name)) }));
  const add = { scope: { name: fresh.scope.name, version: fresh.scope.version, schemaUrl: fresh.scope.schemaUrl }, metrics: fresh.metrics.filter((m) => replace.has(m.descriptor.name)).map(jsonSafe) };
  const snap: Snapshot = { v: 1, pid, time: Date.now(), resource: last?.resource ?? {}, scopeMetrics: [...kept, add] };
  if (final) snap.final = true;
  return snap;
}

/** Validates the shape of something that claims to be a snapshot (IPC or a file can carry anything). */
export function isSnapshot(x: unknown): x is Snapshot {
  const s = x as Snapshot;
  return !!s && typeof s === 'object' && s.v === 1 && typeof s.pid === 'number' && Array.isArray(s.scopeMetrics);
}

/**
 * A snapshot sent as what changed since the previous one on the same link (`base`, by sequence
 * number): the metrics in their order, each either whole (`m`: new since the base) or as its point
 * count `n` with the points that differ from the base's at the same index (`ci` indices, `cp` points).
 * A point is unchanged when its attributes and value are equal (its timestamps are not compared: the
 * Prometheus text carries none). An idle worker's answer is then a few hundred bytes instead of its
 * whole series set, and the master keeps its unchanged point objects (their text is cached).
 */
export interface SnapshotDelta {
  v: 1;
  pid: number;
  time: number;
  seq: number;
  base: number;
  resource: Attributes;
  scopes: Array<{ scope: ScopeMetrics['scope']; metrics: MetricDelta[] }>;
  final?: boolean;
  inFlight?: number;
}

export type MetricDelta = { m: MetricData } | { name: string; n: number; ci: number[]; cp: DataPoint<unknown>[] };

function scopeKey(s: ScopeMetrics['scope']): string {
  return `${s.name}\0${s.version ?? ''}`;
}

function sameAttributes(a: Attributes, b: Attributes): boolean {
  if (a === b) return true;
  let n = 0;
  for (const k in a) {
    if (a[k] !== b[k]) return false;
    n++;
  }
  for (const _ in b) n--;
  return n === 0;
}

function sameValue(a: unknown, b: unknown): boolean {
  if (typeof a === 'number' || typeof b === 'number') return a === b;
  const x = a as Histogram;
  const y = b as Histogram;
  if (!x || !y || x.count !== y.count || x.sum !== y.sum || x.min !== y.min || x.max !== y.max) return false;
  const cx = x.buckets.counts;
  const cy = y.buckets.counts;
  if (cx.length !== cy.length) return false;
  for (let i = 0; i < cx.length; i++) if (cx[i] !== cy[i]) return false;
  const bx = x.buckets.boundaries;
  const by = y.buckets.boundaries;
  if (bx.length !== by.length) return false;
  for (let i = 0; i < bx.length; i++) if (bx[i] !== by[i]) return false;
  return true;
}

/** `next` as the changes since `base` (both full snapshots of the same worker). */
export function diffSnapshot(base: Snapshot, next: Snapshot, seq: number, baseSeq: number): SnapshotDelta {
  const baseScopes = new Map<string, Map<string, MetricData>>();
  for (const sm of base.scopeMetrics) baseScopes.set(scopeKey(sm.scope), new Map(sm.metrics.map((m) => [m.descriptor.name, m])));
  const scopes = next.scopeMetrics.map((sm) => {
    const old = baseScopes.get(scopeKey(sm.scope));
    return {
      scope: sm.scope,
      metrics: sm.metrics.map((m): MetricDelta => {
        const prev = old?.get(m.descriptor.name);
        if (!prev || prev.dataPointType !== m.dataPointType) return { m };
        const ci: number[] = [];
        const cp: DataPoint<unknown>[] = [];
        const pp = prev.dataPoints as DataPoint<unknown>[];
        const np = m.dataPoints as DataPoint<unknown>[];
        for (let i = 0; i < np.length; i++) {
          const p = np[i]!;
          const q = pp[i];
          if (q && sameAttributes(p.attributes, q.attributes) && sameValue(p.value, q.value)) continue;
          ci.push(i);
          cp.push(p);
        }
        return { name: m.descriptor.name, n: np.length, ci, cp };
      }),
    };
  });
  const d: SnapshotDelta = { v: 1, pid: next.pid, time: next.time, seq, base: baseSeq, resource: next.resource, scopes };
  if (next.final) d.final = true;
  if (next.inFlight !== undefined) d.inFlight = next.inFlight;
  return d;
}

/**
 * The full snapshot `d` describes, given the `base` it was made against (undefined if `d` does not
 * fit `base`: the caller then asks for a full snapshot). Unchanged points are `base`'s own objects.
 */
export function applySnapshotDelta(base: Snapshot, d: SnapshotDelta): Snapshot | undefined {
  const baseScopes = new Map<string, Map<string, MetricData>>();
  for (const sm of base.scopeMetrics) baseScopes.set(scopeKey(sm.scope), new Map(sm.metrics.map((m) => [m.descriptor.name, m])));
  const scopeMetrics: ScopeMetrics[] = [];
  for (const sd of d.scopes) {
    const old = baseScopes.get(scopeKey(sd.scope));
    const metrics: MetricData[] = [];
    for (const md of sd.metrics) {
      if ('m' in md) {
        metrics.push(md.m);
        continue;
      }
      const prev = old?.get(md.name);
      if (!prev) return undefined;
      if (md.ci.length === 0 && md.n === prev.dataPoints.length) {
        metrics.push(prev);
        continue;
      }
      const pp = prev.dataPoints as DataPoint<unknown>[];
      const points: DataPoint<unknown>[] = new Array(md.n);
      let k = 0;
      for (let i = 0; i < md.n; i++) {
        if (k < md.ci.length && md.ci[k] === i) points[i] = md.cp[k++]!;
        else if (i < pp.length) points[i] = pp[i]!;
        else return undefined;
      }
      metrics.push({ ...prev, dataPoints: points } as MetricData);
    }
    scopeMetrics.push({ scope: sd.scope, metrics });
  }
  const snap: Snapshot = { v: 1, pid: d.pid, time: d.time, resource: d.resource, scopeMetrics };
  if (d.final) snap.final = true;
  if (d.inFlight !== undefined) snap.inFlight = d.inFlight;
  return snap;
}

export function isSnapshotDelta(x: unknown): x is SnapshotDelta {
  const d = x as SnapshotDelta;
  return !!d && typeof d === 'object' && d.v === 1 && typeof d.pid === 'number' && typeof d.seq === 'number'
    && typeof d.base === 'number' && Array.isArray(d.scopes);
}
