/**
 * End to end against a real Prometheus (Debian's `prometheus`, installed by .ci/run): it scrapes a
 * preloaded app every second; the test sends a known set of requests and asks Prometheus' HTTP API
 * for exact numbers — the totals, the failure counters, histogram_quantile over the duration buckets,
 * the master counters — then evaluates every query of the shipped Grafana dashboard.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES, REGISTER_CJS, ROOT, hit, startApp, waitFor, type Proc } from './helpers';
import { load, startRunner, type Runner } from './runner-helpers';
import { startPrometheus, type PromServer } from './fixtures/prometheus';

const DASHBOARD = join(ROOT, 'otel-collector/grafana/dashboards/prefork-otel.json');

/** Every PromQL expression of the dashboard, with Grafana's variables filled in for `job`. */
export function dashboardQueries(job: string): Array<{ panel: string; expr: string }> {
  const d = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Array<{ title: string; type: string; targets?: Array<{ expr: string }> }> };
  return d.panels.filter((p) => p.type !== 'row').flatMap((p) => (p.targets ?? []).map((t) => ({
    panel: p.title,
    expr: t.expr.replaceAll('$job', job).replaceAll('$worker_id', '.*').replaceAll('$__rate_interval', '20s').replaceAll('$__range', '5m'),
  })));
}

/**
 * The dashboard queries that return no data. A PromQL error fails at once; an empty result is retried
 * for a while (rate() / increase() need two samples of a series inside their window, and a series that
 * just appeared has one).
 */
async function emptyQueries(prom: PromServer, queries: Array<{ panel: string; expr: string }>): Promise<string[]> {
  const empty: string[] = [];
  for (const { panel, expr } of queries) {
    const ok = await waitFor(async () => (await prom.query(expr)).length > 0, 15_000, expr).catch((e: Error) => {
      if (/failed:/.test(e.message)) throw e;
      return false;
    });
    if (!ok) empty.push(`${panel}: ${expr}`);
  }
  return empty;
}

describe('a real Prometheus scraping a preloaded app', () => {
  let app: Proc;
  let appPort: number;
  let prom: PromServer;

  beforeAll(async () => {
    let metricsPort: number;
    ({ app, appPort, metricsPort } = await startApp(['-r', REGISTER_CJS, join(FIXTURES, 'otlp-app.cjs')], {
      // two buckets make the quantiles exact: fast requests (< 1 s) in the first, the 1.5 s ones in the second
      PREFORK_OTEL_BUCKETS: '1,60',
      PREFORK_OTEL_CPU_INTERVAL: '0.5',
      PREFORK_OTEL_MEMORY_INTERVAL: '0.5',
      MASTER_EVENTS: '1',
    }));
    prom = await startPrometheus([{ job: 'prefork-otel', target: `127.0.0.1:${metricsPort}` }]);
  });
  afterAll(async () => {
    await prom?.stop();
    await app?.stop();
  });

  it('has exactly the numbers that were sent: totals, per endpoint, failures, histogram quantiles, master counters', async () => {
    await waitFor(async () => (await prom.query('up{job="prefork-otel"} == 1')).length === 1, 30_000, 'target up');
    const base = `http://127.0.0.1:${appPort}`;
    const slow = Promise.all(Array.from({ length: 10 }, () => hit(`${base}/slow?ms=1500`)));
    for (let i = 0; i < 90; i++) await hit(`${base}/users/${i}`);
    for (let i = 0; i < 7; i++) await hit(`${base}/fail/x`, { method: 'DELETE' });
    for (let i = 0; i < 3; i++) await hit(`${base}/throw`, { method: 'PUT' });
    expect(await slow).toEqual(Array(10).fill(200));

    // Prometheus has them once a scrape after the last request has been stored
    await waitFor(async () => (await prom.query('sum(gunicorn_worker_requests_total) == 110')).length === 1, 30_000, '110 requests in Prometheus');
    const pid = String(app.child.pid);
    expect(await prom.scalar('sum(gunicorn_worker_requests_total)')).toBe(110);
    const byRoute = await prom.query('sum by (method, endpoint) (gunicorn_worker_requests_total)');
    expect(Object.fromEntries(byRoute.map((r) => [`${r.metric.method} ${r.metric.endpoint}`, r.value]))).toEqual({
      'GET /users/:id': 90, 'GET /slow': 10, 'DELETE /fail/x': 7, 'PUT /throw': 3,
    });
    expect((await prom.query('gunicorn_worker_requests_total')).every((r) => r.metric.worker_id === pid && r.metric.job === 'prefork-otel')).toBe(true);
    expect(await prom.scalar('sum(gunicorn_worker_request_duration_seconds_count)')).toBe(110);
    expect(await prom.scalar('sum(gunicorn_worker_failed_requests_total)')).toBe(10);
    expect(await prom.scalar('sum(gunicorn_worker_failed_requests_total{method="DELETE", endpoint="/fail/x", error_type="RequestError"})')).toBe(7);
    expect(await prom.scalar('sum(gunicorn_worker_failed_requests_total{method="PUT", endpoint="/throw", error_type="RequestError"})')).toBe(3);
    expect(await prom.scalar('sum(gunicorn_worker_error_handling_total)')).toBe(10);

    // buckets le=1: 100 (90 fast + 10 failures), le=60: 110. histogram_quantile interpolates linearly:
    // p50 → rank 55 in (0, 1]: 55/100; p95 → rank 104.5 in (1, 60]: 1 + 59 × 4.5/10; p99 → 1 + 59 × 8.9/10
    const bucketSum = 'sum by (le) (gunicorn_worker_request_duration_seconds_bucket)';
    expect(await prom.scalar(`histogram_quantile(0.5, ${bucketSum})`)).toBeCloseTo(0.55, 9);
    expect(await prom.scalar(`histogram_quantile(0.95, ${bucketSum})`)).toBeCloseTo(27.55, 9);
    expect(await prom.scalar(`histogram_quantile(0.99, ${bucketSum})`)).toBeCloseTo(53.51, 9);
    // the slow endpoint alone: all 10 in (1, 60] → p50 = 1 + 59 × 5/10
    expect(await prom.scalar('histogram_quantile(0.5, sum by (le) (gunicorn_worker_request_duration_seconds_bucket{endpoint="/slow"}))')).toBeCloseTo(30.5, 9);
    expect(await prom.scalar('sum(gunicorn_worker_request_duration_seconds_bucket{le="1"})')).toBe(100);
    expect(await prom.scalar('sum(gunicorn_worker_request_duration_seconds_bucket{le="+Inf"})')).toBe(110);
    // the slow requests took at least 1.5 s each
    expect(await prom.scalar('sum(gunicorn_worker_request_duration_seconds_sum{endpoint="/slow"})')).toBeGreaterThanOrEqual(15);

    // the master counters (recorded through the library's MasterMetrics by the fixture)
    expect(await prom.scalar('gunicorn_master_worker_restarts_total{worker_id="4242", reason="max_requests"}')).toBe(1);
    expect(await prom.scalar('gunicorn_master_signals_total{signal="HUP", action="reload"}')).toBe(1);
    // the gauges
    expect(await prom.query('gunicorn_worker_state')).toEqual([{ metric: expect.objectContaining({ worker_id: pid, state: 'running' }), value: expect.any(Number) }]);
    expect(await prom.scalar(`gunicorn_worker_memory_bytes{worker_id="${pid}"}`)).toBeGreaterThan(10 * 1024 * 1024);
    expect(await prom.scalar(`gunicorn_worker_uptime_seconds{worker_id="${pid}"}`)).toBeGreaterThan(0);
    expect(await prom.scalar(`count(gunicorn_worker_cpu_percent{worker_id="${pid}"})`)).toBe(1);
    expect(prom.log).not.toMatch(/level=error/);
  });

  it('answers every query of the shipped Grafana dashboard with data', async () => {
    const queries = dashboardQueries('prefork-otel');
    expect(queries.length).toBeGreaterThanOrEqual(20);
    expect(await emptyQueries(prom, queries)).toEqual([]);
  });
});

describe('a real Prometheus scraping the runner (prefork-otel -w 2 --max-requests 30)', () => {
  let r: Runner;
  let prom: PromServer;

  beforeAll(async () => {
    r = await startRunner(['-w', '2', '--max-requests', '30', join(FIXTURES, 'runner-http.cjs')], { workers: 2 });
    prom = await startPrometheus([{ job: 'runner', target: `127.0.0.1:${r.metricsPort}` }]);
  });
  afterAll(async () => {
    await prom?.stop();
    expect(await r?.stop()).toEqual({ code: 0, signal: null });
  });

  it('has every request of every worker (retired ones included), the restarts by reason and the signals, exactly', async () => {
    await waitFor(async () => (await prom.query('up{job="runner"} == 1')).length === 1, 30_000, 'runner target up');
    const ok = await load(r.url('/'), 100, 4);
    const fails = await load(r.url('/fail'), 10, 2);
    expect(ok.filter((x) => x !== 200)).toEqual([]);
    expect(fails.filter((x) => x !== 503)).toEqual([]);
    await r.waitRunning(2);
    r.signal('SIGTTIN');
    await r.waitRunning(3);
    // every worker that served requests and is no longer running has retired: Prometheus must show
    // its restart too (the master records it when it reaps the worker, a moment after the worker's
    // final snapshot), so wait until the two sets agree
    const retiredIds = async () => {
      const served = new Set((await prom.query('sum by (worker_id) (gunicorn_worker_requests_total)')).map((x) => x.metric.worker_id!));
      for (const x of await prom.query('gunicorn_worker_state{state="running"}')) served.delete(x.metric.worker_id!);
      return [...served].sort();
    };
    const restartIds = async () => (await prom.query('gunicorn_master_worker_restarts_total')).map((x) => x.metric.worker_id!).sort();
    await waitFor(async () => (await prom.query('sum(gunicorn_worker_requests_total) == 110')).length === 1
      && (await prom.query('gunicorn_master_signals_total{signal="ttin"} == 1')).length === 1
      && (await prom.query('count(gunicorn_worker_state{state="running"}) == 3')).length === 1
      && JSON.stringify(await retiredIds()) === JSON.stringify(await restartIds()), 30_000, 'all in Prometheus');

    expect(await prom.scalar('sum(gunicorn_worker_requests_total)')).toBe(110);
    expect(await prom.scalar('sum(gunicorn_worker_requests_total{endpoint="/"})')).toBe(100);
    expect(await prom.scalar('sum(gunicorn_worker_failed_requests_total{endpoint="/fail", error_type="RequestError"})')).toBe(10);
    expect(await prom.scalar('sum(gunicorn_worker_request_duration_seconds_count)')).toBe(110);
    // exactly one restart per retired worker, each one that served its quota of 30. How many: the two
    // workers still serving when the load ended hold at most 29 each, and a retiring worker finishes
    // at most the requests already under way on its other connections (≤ 3 + 1), so 110 requests
    // make at least ceil((110 − 2 × 29) / 34) = 2 retirements
    const restarts = await prom.query('gunicorn_master_worker_restarts_total');
    expect(restarts.map((x) => x.metric.worker_id).sort()).toEqual(await retiredIds());
    expect(restarts.length).toBeGreaterThanOrEqual(2);
    for (const x of restarts) {
      expect(x.metric.reason).toBe('max_requests');
      expect(x.value).toBe(1);
      const served = await prom.scalar(`sum(gunicorn_worker_requests_total{worker_id="${x.metric.worker_id}"})`);
      expect(served).toBeGreaterThanOrEqual(30);
      expect(served).toBeLessThanOrEqual(34);
    }
    expect(await prom.scalar('sum(gunicorn_master_worker_restarts_total{reason="max_requests"})')).toBe(restarts.length);
    expect(await prom.scalar('gunicorn_master_signals_total{signal="ttin", action="scale_up"}')).toBe(1);
    expect(await prom.scalar('count(gunicorn_worker_state{state="running"})')).toBe(3);
  });

  it('answers every query of the shipped Grafana dashboard with data', async () => {
    expect(await emptyQueries(prom, dashboardQueries('runner'))).toEqual([]);
  });
});

describe('the shipped otel-collector/prometheus.yml', () => {
  it('passes promtool check config', () => {
    const r = spawnSync('promtool', ['check', 'config', join(ROOT, 'otel-collector/prometheus.yml')], { encoding: 'utf8' });
    expect(r.stdout + r.stderr).toContain('SUCCESS');
    expect(r.status).toBe(0);
  });
});
