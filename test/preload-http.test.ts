import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FIXTURES, REGISTER_CJS, freePort, hit, labelValues, scrape, select, startNode, total, value, waitForHttp, type Proc,
} from './helpers';
import { join } from 'node:path';

describe('preload on a plain node:http server', () => {
  let app: Proc;
  let appPort: number;
  let metricsPort: number;
  beforeAll(async () => {
    appPort = await freePort();
    metricsPort = await freePort();
    app = startNode(['-r', REGISTER_CJS, join(FIXTURES, 'http-app.cjs')], {
      APP_PORT: String(appPort), PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
    });
    await waitForHttp(`http://127.0.0.1:${metricsPort}/metrics`);
    await waitForHttp(`http://127.0.0.1:${appPort}/`);
  });
  afterAll(async () => { await app?.stop(); });

  it('counts every request exactly, with method and normalised endpoint', async () => {
    const before = await scrape(metricsPort);
    const base = total(before, 'gunicorn_worker_requests_total');
    const sent: Array<[string, string]> = [];
    for (let i = 0; i < 25; i++) sent.push(['GET', `/users/${1000 + i}`]);
    for (let i = 0; i < 7; i++) sent.push(['POST', `/orders/${i}/items?x=${i}`]);
    for (let i = 0; i < 4; i++) sent.push(['DELETE', '/fail/now']);
    for (let i = 0; i < 3; i++) sent.push(['PUT', '/throw']);
    sent.push(['PROPFIND', '/dav']);
    for (const [method, path] of sent) await hit(`http://127.0.0.1:${appPort}${path}`, { method });

    const s = await scrape(metricsPort);
    const pid = String(app.child.pid);
    expect(total(s, 'gunicorn_worker_requests_total') - base).toBe(sent.length);
    expect(value(s, 'gunicorn_worker_requests_total', { worker_id: pid, method: 'GET', endpoint: '/users/:id' })).toBe(25);
    expect(value(s, 'gunicorn_worker_requests_total', { method: 'POST', endpoint: '/orders/:id/items' })).toBe(7);
    expect(value(s, 'gunicorn_worker_requests_total', { method: 'DELETE', endpoint: '/fail/now' })).toBe(4);
    expect(value(s, 'gunicorn_worker_requests_total', { method: 'OTHER', endpoint: '/dav' })).toBe(1);
    expect(labelValues(s, 'gunicorn_worker_requests_total', 'worker_id')).toEqual([pid]);
    // histogram _count equals the counter, series by series
    for (const c of select(s, 'gunicorn_worker_requests_total')) {
      expect(value(s, 'gunicorn_worker_request_duration_seconds_count', c.labels)).toBe(c.value);
      expect(value(s, 'gunicorn_worker_request_duration_seconds_bucket', { ...c.labels, le: '+Inf' })).toBe(c.value);
    }
    // failures: 503 ×4 and 500 ×3, in both failure counters, as RequestError
    expect(value(s, 'gunicorn_worker_failed_requests_total', { method: 'DELETE', endpoint: '/fail/now', error_type: 'RequestError' })).toBe(4);
    expect(value(s, 'gunicorn_worker_failed_requests_total', { method: 'PUT', endpoint: '/throw', error_type: 'RequestError' })).toBe(3);
    expect(value(s, 'gunicorn_worker_error_handling_total', { method: 'PUT', endpoint: '/throw', error_type: 'RequestError' })).toBe(3);
    expect(total(s, 'gunicorn_worker_failed_requests_total')).toBe(7);
    // label sets are exactly the reference's
    for (const x of select(s, 'gunicorn_worker_requests_total')) expect(Object.keys(x.labels).sort()).toEqual(['endpoint', 'method', 'worker_id']);
    for (const x of select(s, 'gunicorn_worker_failed_requests_total')) expect(Object.keys(x.labels).sort()).toEqual(['endpoint', 'error_type', 'method', 'worker_id']);
  });

  it('reports uptime, memory, cpu and the running state for this pid', async () => {
    const s = await scrape(metricsPort);
    const pid = String(app.child.pid);
    expect(value(s, 'gunicorn_worker_memory_bytes', { worker_id: pid })).toBeGreaterThan(10 * 1024 * 1024);
    expect(value(s, 'gunicorn_worker_cpu_percent', { worker_id: pid })).toBeGreaterThanOrEqual(0);
    expect(value(s, 'gunicorn_worker_uptime_seconds', { worker_id: pid })).toBeGreaterThan(0);
    const state = select(s, 'gunicorn_worker_state');
    expect(state.map((x) => x.labels)).toEqual([{ worker_id: pid, state: 'running' }]);
    expect(Math.abs(state[0]!.value - Date.now() / 1000)).toBeLessThan(600);
  });
});
