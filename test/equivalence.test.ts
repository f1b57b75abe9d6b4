/**
 * The fast path is an optimisation, not a second meaning: the same request stream recorded through
 * the per-series accumulators + MetricProducer (PREFORK_OTEL_RECORDING=fast) and through OpenTelemetry's
 * synchronous Counter / Histogram with the View (=otel) must scrape to identical values. And the
 * serializer, rewritten for speed, must write byte for byte what OTel's PrometheusSerializer writes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { AggregationTemporality, DataPointType, type MetricData, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { ValueType } from '@opentelemetry/api';
import { loadConfig, type ExporterConfig } from '../src/config';
import { Telemetry } from '../src/export/telemetry';
import { serializePrometheus } from '../src/export/serializer';
import { Metrics } from '../src/metrics/Metrics';
import { RequestMetricProducer } from '../src/metrics/producer';
import { ERROR_TYPES, M, type ErrorType } from '../src/metrics/contract';
import {
  FIXTURES, REGISTER_CJS, freePort, hit, parseMetrics, scrape, scrapeText, select, startNode, total, waitForHttp,
  type Proc, type Sample,
} from './helpers';
import { sendAll, type Req } from './http-client';

const REQUEST_FAMILIES = [M.requestsTotal.name, M.requestDuration.name, M.failedRequests.name, M.errorHandling.name];

/** The lines (HELP/TYPE/UNIT and samples) of the four request-path families, sorted. */
function requestLines(text: string): string[] {
  return text.split('\n')
    .filter((l) => REQUEST_FAMILIES.some((f) => l.startsWith(`${f}{`) || l.startsWith(`${f}_`) || l.includes(` ${f} `)))
    .sort();
}

/** A deterministic stream: every boundary exactly, just above and below it, 0, beyond the last bucket. */
function durationList(buckets: readonly number[]): number[] {
  const out = [0, 1e-9, 0.0001, 20, 10.000001, 1234.5];
  for (const b of buckets) out.push(b, b * (1 - 1e-12), b + 1e-9, b / 3);
  let x = 12345;
  for (let i = 0; i < 400; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out.push((x / 2147483648) ** 3 * 12);
  }
  return out;
}

interface Pipeline { telemetry: Telemetry; metrics: Metrics }

function pipeline(config: ExporterConfig, recording: 'fast' | 'otel'): Pipeline {
  const producer = new RequestMetricProducer();
  const telemetry = new Telemetry(config, recording === 'fast' ? [producer] : []);
  const metrics = new Metrics({ meterProvider: telemetry.meterProvider, workerId: '4242', buckets: config.buckets, recording, producer });
  return { telemetry, metrics };
}

describe('fast recording ≡ OTel synchronous instruments (in-process, bitwise)', () => {
  it('a negative or NaN duration is recorded as 0 s, the same in both modes', async () => {
    const config = loadConfig({}, { targetInfo: false });
    const fast = pipeline(config, 'fast');
    const otel = pipeline(config, 'otel');
    try {
      for (const m of [fast.metrics, otel.metrics]) {
        m.recordRequest('GET', '/clock-skew', -0.25);
        m.recordRequest('GET', '/clock-skew', Number.NaN);
        m.recordRequest('GET', '/clock-skew', 0.3);
      }
      const a = await fast.telemetry.scrape();
      expect(requestLines(a)).toEqual(requestLines(await otel.telemetry.scrape()));
      const s = parseMetrics(a);
      expect(total(s, M.requestsTotal.name, { endpoint: '/clock-skew' })).toBe(3);
      expect(total(s, `${M.requestDuration.name}_bucket`, { endpoint: '/clock-skew', le: '0.005' })).toBe(2);
      expect(total(s, `${M.requestDuration.name}_sum`, { endpoint: '/clock-skew' })).toBe(0.3);
    } finally {
      await fast.telemetry.shutdown();
      await otel.telemetry.shutdown();
    }
  });

  for (const buckets of [undefined, [0.001, 0.5, 3]]) {
    it(`same stream, same scrape${buckets ? ' (custom buckets)' : ''}`, async () => {
      const config = loadConfig({}, { targetInfo: false, ...(buckets ? { buckets } : {}) });
      const fast = pipeline(config, 'fast');
      const otel = pipeline(config, 'otel');
      try {
        const methods = ['GET', 'POST', 'get', 'PROPFIND', 'DELETE', 'PATCH'];
        const endpoints = ['/', '/users/:id', '/orders/:id/items', 'weird "quoted" \\ path\nline'];
        const durations = durationList(config.buckets);
        let n = 0;
        for (const m of [fast.metrics, otel.metrics]) {
          n = 0;
          for (let i = 0; i < durations.length; i++) {
            const method = methods[i % methods.length]!;
            const endpoint = endpoints[(i >> 1) % endpoints.length]!;
            const ok = i % 7 !== 0;
            const errorType = ERROR_TYPES[i % ERROR_TYPES.length] as ErrorType;
            if (ok) m.recordRequest(method, endpoint, durations[i]!);
            else m.recordRequest(method, endpoint, durations[i]!, false, errorType);
            if (i % 11 === 0) m.recordError(method, endpoint, errorType, 'handled');
            n++;
          }
          // only errors, never a request, on this series
          m.recordError('PUT', '/only-errors', 'MemoryError');
        }
        const a = await fast.telemetry.scrape();
        const b = await otel.telemetry.scrape();
        const la = requestLines(a);
        expect(la).toEqual(requestLines(b));
        // the comparison is not vacuous: every family is there, with the exact totals sent
        const s = parseMetrics(a);
        expect(total(s, M.requestsTotal.name)).toBe(n);
        expect(total(s, `${M.requestDuration.name}_count`)).toBe(n);
        expect(total(s, `${M.requestDuration.name}_bucket`, { le: '+Inf' })).toBe(n);
        expect(total(s, M.failedRequests.name)).toBe(durations.filter((_, i) => i % 7 === 0).length);
        expect(total(s, M.errorHandling.name)).toBe(durations.filter((_, i) => i % 7 === 0).length
          + durations.filter((_, i) => i % 11 === 0).length + 1);
        expect(select(s, M.requestsTotal.name, { method: 'OTHER' }).length).toBeGreaterThan(0);
        expect(select(s, `${M.requestDuration.name}_bucket`).length).toBeGreaterThan(10);
        // sums are bitwise equal: the same additions in the same order
        const sums = (t: string) => select(parseMetrics(t), `${M.requestDuration.name}_sum`).map((x) => x.value);
        expect(sums(a)).toEqual(sums(b));
      } finally {
        await fast.telemetry.shutdown();
        await otel.telemetry.shutdown();
      }
    });
  }
});

describe('fast recording ≡ OTel synchronous instruments (real HTTP, two processes)', () => {
  const apps: Record<'fast' | 'otel', { proc: Proc; app: number; metrics: number }> = {} as never;
  beforeAll(async () => {
    for (const mode of ['fast', 'otel'] as const) {
      const app = await freePort();
      const metrics = await freePort();
      const proc = startNode(['-r', REGISTER_CJS, join(FIXTURES, 'http-app.cjs')], {
        APP_PORT: String(app), PROMETHEUS_METRICS_PORT: String(metrics), PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
        PREFORK_OTEL_RECORDING: mode,
      });
      apps[mode] = { proc, app, metrics };
    }
    for (const a of Object.values(apps)) {
      await waitForHttp(`http://127.0.0.1:${a.metrics}/metrics`);
      await waitForHttp(`http://127.0.0.1:${a.app}/`);
    }
  });
  afterAll(async () => {
    await Promise.all(Object.values(apps).map((a) => a.proc.stop()));
  });

  it('counts, failures and histogram totals match series by series', async () => {
    const stream: Array<[string, string]> = [];
    for (let i = 0; i < 30; i++) stream.push(['GET', `/users/${i}`]);
    for (let i = 0; i < 9; i++) stream.push(['POST', `/orders/${i}/items`]);
    for (let i = 0; i < 5; i++) stream.push(['DELETE', '/fail/now']);
    for (let i = 0; i < 4; i++) stream.push(['PUT', '/throw']);
    for (let i = 0; i < 3; i++) stream.push(['GET', '/slow']);
    stream.push(['PROPFIND', '/dav']);
    const before: Record<string, Sample[]> = {};
    for (const mode of ['fast', 'otel'] as const) before[mode] = await scrape(apps[mode].metrics);
    // the waitForHttp probes of '/' are already counted, the same in both
    for (const mode of ['fast', 'otel'] as const) {
      await Promise.all(stream.map(([method, path]) => hit(`http://127.0.0.1:${apps[mode].app}${path}`, { method })));
    }
    const view = (samples: Sample[], name: string) => samples
      .filter((x) => x.name === name)
      .map((x) => {
        const { worker_id: _w, ...labels } = x.labels;
        return `${name}${JSON.stringify(Object.entries(labels).sort())} ${x.value}`;
      })
      .sort();
    const got: Record<string, Sample[]> = {};
    for (const mode of ['fast', 'otel'] as const) got[mode] = parseMetrics(await scrapeText(apps[mode].metrics));
    for (const name of [M.requestsTotal.name, `${M.requestDuration.name}_count`, M.failedRequests.name, M.errorHandling.name]) {
      expect(view(got.fast!, name)).toEqual(view(got.otel!, name));
    }
    const inf = (s: Sample[]) => view(s.filter((x) => x.labels.le === '+Inf'), `${M.requestDuration.name}_bucket`);
    expect(inf(got.fast!)).toEqual(inf(got.otel!));
    for (const mode of ['fast', 'otel'] as const) {
      const s = got[mode]!;
      expect(total(s, M.requestsTotal.name) - total(before[mode]!, M.requestsTotal.name)).toBe(stream.length);
      // each series' buckets add up to its count (non-cumulative sum = the +Inf bucket)
      for (const c of select(s, M.requestsTotal.name)) {
        expect(select(s, `${M.requestDuration.name}_bucket`, { ...c.labels, le: '+Inf' })[0]!.value).toBe(c.value);
      }
      expect(total(s, M.failedRequests.name, { error_type: 'RequestError' })).toBe(9);
    }
  });

  it('one keep-alive connection: repeated, alternating and failing (method, path) land in their own series', async () => {
    // the observer remembers the last raw (method, URL) of a connection; every change must be seen
    const seq: Req[] = [];
    const expected = new Map<string, number>();
    const add = (method: string, path: string, endpoint: string) => {
      seq.push({ method, path });
      const k = `${method.toUpperCase()} ${endpoint}`;
      expected.set(k, (expected.get(k) ?? 0) + 1);
    };
    for (let i = 0; i < 5; i++) add('GET', '/same', '/same');
    add('POST', '/same', '/same');
    add('GET', '/same', '/same');
    for (let i = 0; i < 4; i++) add('GET', `/users/${i}`, '/users/:id');
    add('GET', '/same?x=1', '/same');
    add('DELETE', '/fail/x', '/fail/x');
    add('DELETE', '/fail/x', '/fail/x');
    add('GET', '/same', '/same');
    add('patch', '/same', '/same');
    const before: Record<string, Sample[]> = {};
    for (const mode of ['fast', 'otel'] as const) before[mode] = await scrape(apps[mode].metrics);
    for (const mode of ['fast', 'otel'] as const) {
      const statuses = await sendAll(apps[mode].app, seq, 1);
      expect([...statuses.values()].reduce((a, b) => a + b, 0)).toBe(seq.length);
    }
    for (const mode of ['fast', 'otel'] as const) {
      const s = await scrape(apps[mode].metrics);
      for (const [k, n] of expected) {
        const [method, endpoint] = k.split(' ') as [string, string];
        const was = select(before[mode]!, M.requestsTotal.name, { method, endpoint })[0]?.value ?? 0;
        const now = select(s, M.requestsTotal.name, { method, endpoint })[0]?.value ?? 0;
        expect(now - was, `${mode} ${method} ${endpoint}`).toBe(n);
      }
      const failedWas = select(before[mode]!, M.failedRequests.name, { method: 'DELETE', endpoint: '/fail/x', error_type: 'RequestError' })[0]?.value ?? 0;
      expect(select(s, M.failedRequests.name, { method: 'DELETE', endpoint: '/fail/x', error_type: 'RequestError' })[0]!.value - failedWas).toBe(2);
    }
  });
});

/** What OTel's serializer writes for our options, with our one-trailing-newline rule. */
function otelText(rm: ResourceMetrics, targetInfo: boolean): string {
  const t = new PrometheusSerializer(undefined, false, undefined, !targetInfo, true).serialize(rm);
  return t.endsWith('\n') ? t : t + '\n';
}

const T = [1700000000, 0] as [number, number];
function sumMetric(name: string, points: Array<[Record<string, unknown>, number]>, monotonic = true, description = 'd', unit = ''): MetricData {
  return {
    descriptor: { name, description, unit, valueType: ValueType.DOUBLE },
    aggregationTemporality: AggregationTemporality.CUMULATIVE,
    dataPointType: DataPointType.SUM,
    isMonotonic: monotonic,
    dataPoints: points.map(([attributes, value]) => ({ startTime: T, endTime: T, attributes: attributes as never, value })),
  };
}

describe('serializer ≡ OTel PrometheusSerializer (byte for byte)', () => {
  it('on a real pipeline (gauges, counters, histograms, target_info) with and without target_info', async () => {
    const config = loadConfig({}, {});
    const p = pipeline(config, 'fast');
    try {
      p.metrics.memoryBytes = 123456789;
      p.metrics.cpuPercent = 12.5;
      p.metrics.updateWorkerState('running');
      for (let i = 0; i < 50; i++) p.metrics.recordRequest(i % 2 ? 'GET' : 'POST', `/r/${i % 5}`, i / 17, i % 9 !== 0);
      const rm = await p.telemetry.collect();
      for (const ti of [true, false]) expect(serializePrometheus(rm, { targetInfo: ti })).toBe(otelText(rm, ti));
    } finally {
      await p.telemetry.shutdown();
    }
  });

  it('on awkward names, label values, values and shapes', () => {
    const hist = (attributes: Record<string, unknown>, boundaries: number[], counts: number[], extra: { sum?: number; count?: number } = {}) => ({
      startTime: T, endTime: T, attributes: attributes as never,
      value: { buckets: { boundaries, counts }, ...extra } as never,
    });
    const metrics: MetricData[] = [
      sumMetric('gunicorn_worker_requests_total', [
        [{ worker_id: '1', method: 'GET', endpoint: '/a' }, 3],
        [{ worker_id: '1', method: 'GET', endpoint: 'q"uo\\te\nnl' }, 1],
        [{ worker_id: '1', method: 'GET', endpoint: 'ünï©ødé ☃' }, 2],
        [{}, 7],
      ]),
      sumMetric('http.server.dotted-name', [[{ 'a.b-c': 'x', n: 5, t: true, arr: [1, 'x'] as never, nul: null as never }, 0.1 + 0.2]], true, 'help with \\ and\nnewline', 'ms'),
      sumMetric('9starts_with_digit', [[{ k: 'v' }, NaN]]),
      sumMetric('updown', [[{ k: 'v' }, -Infinity], [{ k: 'w' }, Infinity], [{ k: 'x' }, -0], [{ k: 'y' }, 1e21], [{ k: 'z' }, 5e-7]], false, ''),
      sumMetric('__', [[{ k: 'v' }, 1]]),
      sumMetric('empty_counter', []),
      {
        descriptor: { name: 'g', description: 'gauge', unit: 'By', valueType: ValueType.DOUBLE },
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: DataPointType.GAUGE,
        dataPoints: [{ startTime: T, endTime: T, attributes: { worker_id: '7' }, value: 42 }],
      },
      {
        descriptor: { name: 'h_seconds', description: 'hist', unit: 's', valueType: ValueType.DOUBLE },
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: DataPointType.HISTOGRAM,
        dataPoints: [
          hist({ worker_id: '1', method: 'GET', endpoint: '/x' }, [0.005, 0.1, 10], [1, 2, 0, 4], { sum: 12.34, count: 7 }),
          hist({}, [1, 2], [0, 0, 1], { sum: 3, count: 1 }),
          hist({ le: 'clash' }, [1, Infinity], [1, 2, 9], { count: 3 }),
          hist({ a: 'b' }, [], [5], {}),
          hist({ a: 'c' }, [0.1], [], { sum: 0, count: 0 }),
        ],
      } as MetricData,
      { descriptor: { name: 'h_empty', description: '', unit: '', valueType: ValueType.DOUBLE }, aggregationTemporality: AggregationTemporality.CUMULATIVE, dataPointType: DataPointType.HISTOGRAM, dataPoints: [] } as MetricData,
    ];
    const resource = resourceFromAttributes({ 'service.name': 'svc "x"', 'process.pid': 99, 'a\\b': 'c\nd' });
    const rm: ResourceMetrics = { resource, scopeMetrics: [{ scope: { name: 's1' }, metrics: metrics.slice(0, 4) }, { scope: { name: 's2', version: '1' }, metrics: metrics.slice(4) }] };
    for (const ti of [true, false]) expect(serializePrometheus(rm, { targetInfo: ti })).toBe(otelText(rm, ti));
    const none: ResourceMetrics = { resource, scopeMetrics: [] };
    for (const ti of [true, false]) expect(serializePrometheus(none, { targetInfo: ti })).toBe(otelText(none, ti));
    const emptyScopes: ResourceMetrics = { resource: resourceFromAttributes({}), scopeMetrics: [{ scope: { name: 's' }, metrics: [] }] };
    for (const ti of [true, false]) expect(serializePrometheus(emptyScopes, { targetInfo: ti })).toBe(otelText(emptyScopes, ti));
  });
});
