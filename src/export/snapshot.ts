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
}

export function toSnapshot(rm: ResourceMetrics, pid = process.pid, final = false): Snapshot {
  const scopeMetrics = rm.scopeMetrics.map((sm) => ({
    scope: { name: sm.scope.name, version: sm.scope.version, schemaUrl: sm.scope.schemaUrl },
    metrics: sm.metrics.map(jsonSafe),
  }));
  const snap: Snapshot = { v: 1, pid, time: Date.now(), resource: { ...rm.resource.attributes }, scopeMetrics };
  if (final) snap.final = true;
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

/** Validates the shape of something that claims to be a snapshot (IPC or a file can carry anything). */
export function isSnapshot(x: unknown): x is Snapshot {
  const s = x as Snapshot;
  return !!s && typeof s === 'object' && s.v === 1 && typeof s.pid === 'number' && Array.isArray(s.scopeMetrics);
}
