/**
 * OTLP from the runner: every worker process exports its own series under its own resource, the
 * master exports the master metrics, and graceful ends (a worker retiring at --max-requests, the whole
 * runner on SIGTERM) send final exports that carry everything — the export interval here is 10
 * minutes, so every number that arrives came with a final export. The receiver runs inside the test:
 * no OpenTelemetry Collector binary can be downloaded on these machines (test/fixtures/otlp-receiver.ts).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES, freePort, total as scrapeTotal, select } from './helpers';
import { load, startRunner, type Runner } from './runner-helpers';
import { pointsOf, startHttpReceiver, type Export, type Receiver } from './fixtures/otlp-receiver';

const APP = join(FIXTURES, 'runner-http.cjs');

function sum(e: Export, name: string, match: Record<string, string> = {}): number {
  return pointsOf(e, name).filter((p) => Object.entries(match).every(([k, v]) => p.attributes[k] === v))
    .reduce((a, p) => a + (p.value ?? p.count ?? 0), 0);
}

function pidOf(e: Export): string {
  expect(e.resourceMetrics).toHaveLength(1);
  return String(e.resourceMetrics[0]!.resource['process.pid']);
}

describe('prefork-otel -w 2 --max-requests 40 with OTEL_METRICS_EXPORTER=prometheus,otlp', () => {
  let receiver: Receiver;
  let r: Runner;
  let scraped: number;
  let retired: string[];

  beforeAll(async () => {
    receiver = await startHttpReceiver(await freePort());
    r = await startRunner(['-w', '2', '--max-requests', '40', APP], {
      workers: 2,
      env: {
        OTEL_METRICS_EXPORTER: 'prometheus,otlp', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_METRIC_EXPORT_INTERVAL: '600000', OTEL_SERVICE_NAME: 'runner-app',
      },
    });
    const statuses = await load(r.url('/'), 100, 4);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    await r.waitRunning(2);
    const s = await r.scrape();
    scraped = scrapeTotal(s, 'gunicorn_worker_requests_total');
    retired = select(s, 'gunicorn_master_worker_restarts_total', { reason: 'max_requests' }).map((x) => x.labels.worker_id!).sort();
    r.signal('SIGTTIN');
    await r.waitRunning(3);
    expect(await r.stop()).toEqual({ code: 0, signal: null });
  });
  afterAll(async () => { await receiver?.close(); });

  it('the scrape had every request, and some workers retired at --max-requests', () => {
    expect(scraped).toBe(100);
    expect(retired.length).toBeGreaterThanOrEqual(2);
  });

  it('one final export per process: each worker (retired ones included) and the master', () => {
    const pids = receiver.exports.map(pidOf);
    expect(new Set(pids).size).toBe(pids.length); // nothing periodic: exactly one export each
    const master = String(r.proc.child.pid);
    expect(pids).toContain(master);
    for (const pid of retired) expect(pids).toContain(pid);
    for (const e of receiver.exports) expect(e.resourceMetrics[0]!.resource['service.name']).toBe('runner-app');
    const instances = receiver.exports.map((e) => e.resourceMetrics[0]!.resource['service.instance.id']);
    expect(new Set(instances).size).toBe(instances.length);
  });

  it('the workers\' final exports add up to exactly the requests sent, each worker only its own worker_id', () => {
    const master = String(r.proc.child.pid);
    const workers = receiver.exports.filter((e) => pidOf(e) !== master);
    let all = 0;
    for (const e of workers) {
      const pid = pidOf(e);
      expect(pointsOf(e, 'gunicorn_worker_uptime_seconds').map((p) => p.attributes.worker_id)).toEqual([pid]);
      // the state it ended in
      expect(pointsOf(e, 'gunicorn_worker_state').map((p) => p.attributes)).toContainEqual({ worker_id: pid, state: 'stopping' });
      // (the worker added by TTIN just before the stop may have served nothing)
      expect(pointsOf(e, 'gunicorn_worker_requests_total').every((p) => p.attributes.worker_id === pid)).toBe(true);
      // a worker that retired at --max-requests served its quota (40; requests in flight on its other connections still finish there)
      if (retired.includes(pid)) expect(sum(e, 'gunicorn_worker_requests_total')).toBeGreaterThanOrEqual(40);
      expect(sum(e, 'gunicorn_worker_request_duration_seconds')).toBe(sum(e, 'gunicorn_worker_requests_total'));
      all += sum(e, 'gunicorn_worker_requests_total');
    }
    expect(all).toBe(100);
  });

  it('the master exports the master metrics (restarts by reason, signals) and no worker series', () => {
    const master = String(r.proc.child.pid);
    const e = receiver.exports.find((x) => pidOf(x) === master)!;
    const restarts = pointsOf(e, 'gunicorn_master_worker_restarts_total');
    expect(restarts.map((p) => p.attributes.worker_id).sort()).toEqual(retired);
    for (const p of restarts) {
      expect(p.attributes.reason).toBe('max_requests');
      expect(p.value).toBe(1);
    }
    expect(sum(e, 'gunicorn_master_signals_total', { signal: 'ttin', action: 'scale_up' })).toBe(1);
    expect(sum(e, 'gunicorn_master_signals_total', { signal: 'term' })).toBe(1);
    for (const name of ['gunicorn_worker_requests_total', 'gunicorn_worker_uptime_seconds', 'gunicorn_worker_state', 'gunicorn_worker_memory_bytes']) {
      expect(pointsOf(e, name), name).toEqual([]);
    }
  });

  // gunicorn_worker_state is produced through the MetricProducer (not an observable gauge, whose
  // cumulative storage would keep every state ever reported): a final export carries only the current one.
  it('each worker\'s final export has exactly one gunicorn_worker_state series: its current state', () => {
    const master = String(r.proc.child.pid);
    for (const e of receiver.exports.filter((x) => pidOf(x) !== master)) {
      expect(pointsOf(e, 'gunicorn_worker_state').map((p) => p.attributes.state)).toEqual(['stopping']);
    }
  });
});
