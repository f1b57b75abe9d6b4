import type { Attributes } from '@opentelemetry/api';
import type { MetricData, ResourceMetrics, ScopeMetrics } from '@opentelemetry/sdk-metrics';

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
