import {
  DataPointType, type DataPoint, type Histogram, type MetricData, type ScopeMetrics,
} from '@opentelemetry/sdk-metrics';

/** Only counters and histograms of an exited process are kept (its gauges describe a dead process). */
export function cumulativeOnly(scopes: ScopeMetrics[]): ScopeMetrics[] {
  return scopes.map((sm) => ({
    scope: sm.scope,
    metrics: sm.metrics.filter((m) => m.dataPointType === DataPointType.HISTOGRAM
      || (m.dataPointType === DataPointType.SUM && m.isMonotonic)),
  }));
}

/**
 * Merges scope metrics from several sources (this process, worker snapshots) so that each metric
 * name appears once: data points of the same (scope, metric name) are put under one MetricData.
 * Points from different workers differ by worker_id, so nothing is summed and nothing collides;
 * with `sumDuplicates` (threads of one worker) points with equal attributes are added together.
 */
export function mergeScopeMetrics(sources: ScopeMetrics[][], sumDuplicates = false): ScopeMetrics[] {
  const scopes = new Map<string, { sm: ScopeMetrics; byName: Map<string, MetricData> }>();
  for (const source of sources) {
    for (const sm of source) {
      const sk = `${sm.scope.name}\0${sm.scope.version ?? ''}`;
      let entry = scopes.get(sk);
      if (!entry) {
        entry = { sm: { scope: sm.scope, metrics: [] }, byName: new Map() };
        scopes.set(sk, entry);
      }
      for (const m of sm.metrics) {
        const prev = entry.byName.get(m.descriptor.name);
        if (!prev) {
          const copy = { ...m, dataPoints: [...m.dataPoints] } as MetricData;
          entry.byName.set(m.descriptor.name, copy);
          entry.sm.metrics.push(copy);
        } else if (prev.dataPointType === m.dataPointType) {
          (prev.dataPoints as DataPoint<unknown>[]).push(...(m.dataPoints as DataPoint<unknown>[]));
        }
        // a same-named metric of another type is a conflict the exposition format cannot carry: the first wins
      }
    }
  }
  const out = [...scopes.values()].map((e) => e.sm);
  if (sumDuplicates) for (const sm of out) sm.metrics = sm.metrics.map(sumSameAttributes);
  return out;
}

function attrKey(a: object): string {
  return JSON.stringify(Object.entries(a).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
}

/** Adds up data points with equal attributes (counters and histograms); for gauges the last wins. */
export function sumSameAttributes(m: MetricData): MetricData {
  const byKey = new Map<string, DataPoint<any>>();
  for (const p of m.dataPoints as DataPoint<any>[]) {
    const key = attrKey(p.attributes);
    const prev = byKey.get(key);
    if (!prev || m.dataPointType === DataPointType.GAUGE) {
      byKey.set(key, p);
    } else if (m.dataPointType === DataPointType.HISTOGRAM) {
      const a = prev.value as Histogram;
      const b = p.value as Histogram;
      byKey.set(key, {
        ...prev,
        value: {
          buckets: { boundaries: a.buckets.boundaries, counts: a.buckets.counts.map((c, i) => c + (b.buckets.counts[i] ?? 0)) },
          sum: (a.sum ?? 0) + (b.sum ?? 0),
          count: a.count + b.count,
        },
      });
    } else if (m.dataPointType === DataPointType.SUM) {
      byKey.set(key, { ...prev, value: (prev.value as number) + (p.value as number) });
    }
  }
  return { ...m, dataPoints: [...byKey.values()] } as MetricData;
}
