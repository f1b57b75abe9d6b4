import { ValueType, type Attributes, type HrTime } from '@opentelemetry/api';
import {
  AggregationTemporality, DataPointType,
  type CollectionResult, type DataPoint, type Histogram, type MetricData, type MetricProducer, type ScopeMetrics,
} from '@opentelemetry/sdk-metrics';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { ERROR_TYPES, M, SCOPE } from './contract';
import { nowHrTime, type RequestStore, type Series } from './store';

const EMPTY_RESOURCE = resourceFromAttributes({});

/** gunicorn_worker_state{worker_id,state} = Unix seconds when `state` was entered */
export interface WorkerStatePoint { attributes: Attributes; value: number }

function seriesAttrs(store: RequestStore, s: Series): Attributes {
  return (s.attrs ??= { worker_id: store.workerId, method: s.method, endpoint: s.endpoint });
}

function errorAttrs(store: RequestStore, s: Series, i: number): Attributes {
  const all = (s.errorAttrs ??= []);
  return (all[i] ??= { worker_id: store.workerId, method: s.method, endpoint: s.endpoint, error_type: ERROR_TYPES[i]! });
}

function sum(name: string, description: string, points: DataPoint<number>[]): MetricData {
  return {
    descriptor: { name, description, unit: '', valueType: ValueType.DOUBLE },
    aggregationTemporality: AggregationTemporality.CUMULATIVE,
    dataPointType: DataPointType.SUM,
    isMonotonic: true,
    dataPoints: points,
  };
}

/**
 * Hands the request-path accumulators of one or more RequestStores to OpenTelemetry at collection
 * time, as cumulative Sum and explicit-bucket Histogram data — the same MetricData an OTel
 * synchronous Counter / Histogram would produce, under the same names. Registered on every reader of
 * the process (Prometheus, OTLP, snapshots), so every path sees the same numbers.
 */
export class RequestMetricProducer implements MetricProducer {
  private readonly stores: RequestStore[] = [];
  private readonly states: Array<() => WorkerStatePoint | undefined> = [];
  add(store: RequestStore): void {
    this.stores.push(store);
  }

  /**
   * A worker's current state for gunicorn_worker_state. Produced here, not by an observable gauge:
   * the SDK's cumulative storage keeps every attribute set an observable gauge ever reported, so a
   * worker that went booting → running would go on exporting its `booting` series. Here only the
   * current state's series exists.
   */
  addState(source: () => WorkerStatePoint | undefined): void {
    this.states.push(source);
  }

  async collect(): Promise<CollectionResult> {
    return { resourceMetrics: { resource: EMPTY_RESOURCE, scopeMetrics: [this.scopeMetrics()] }, errors: [] };
  }

  scopeMetrics(endTime: HrTime = nowHrTime()): ScopeMetrics {
    const requests: DataPoint<number>[] = [];
    const durations: DataPoint<Histogram>[] = [];
    const failed: DataPoint<number>[] = [];
    const errors: DataPoint<number>[] = [];
    for (const store of this.stores) {
      const startTime = store.startTime;
      for (const s of store.all) {
        if (s.count === 0 && !s.errors.some((n) => n > 0)) continue;
        const attributes = seriesAttrs(store, s);
        if (s.count > 0) {
          requests.push({ startTime, endTime, attributes, value: s.count });
          durations.push({
            startTime, endTime, attributes,
            value: { buckets: { boundaries: store.boundaries.slice(), counts: Array.from(s.buckets) }, sum: s.sum, count: s.count },
          });
        }
        for (let i = 0; i < ERROR_TYPES.length; i++) {
          if (s.failed[i]! > 0) failed.push({ startTime, endTime, attributes: errorAttrs(store, s, i), value: s.failed[i]! });
          if (s.errors[i]! > 0) errors.push({ startTime, endTime, attributes: errorAttrs(store, s, i), value: s.errors[i]! });
        }
      }
    }
    const metrics: MetricData[] = [
      sum(M.requestsTotal.name, M.requestsTotal.help, requests),
      {
        descriptor: { name: M.requestDuration.name, description: M.requestDuration.help, unit: M.requestDuration.unit, valueType: ValueType.DOUBLE },
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: DataPointType.HISTOGRAM,
        dataPoints: durations,
      },
      sum(M.failedRequests.name, M.failedRequests.help, failed),
      sum(M.errorHandling.name, M.errorHandling.help, errors),
    ];
    const statePoints: DataPoint<number>[] = [];
    for (const source of this.states) {
      const p = source();
      if (p) statePoints.push({ startTime: endTime, endTime, attributes: p.attributes, value: p.value });
    }
    metrics.push({
      descriptor: { name: M.workerState.name, description: M.workerState.help, unit: '', valueType: ValueType.DOUBLE },
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.GAUGE,
      dataPoints: statePoints,
    });
    // a metric without points is left out: in `otel` recording mode (no store registered) the SDK's
    // own instruments carry these names, and a second, empty family would repeat their HELP / TYPE
    return { scope: { ...SCOPE }, metrics: metrics.filter((m) => m.dataPoints.length > 0) };
  }
}

