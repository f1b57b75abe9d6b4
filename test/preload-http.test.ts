import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES, REGISTER_CJS, hit, labelValues, scrape, select, startApp, total, value, waitFor, waitForHttp, type Proc } from './helpers';
import { join } from 'node:path';
import { connect } from 'node:net';

describe('preload on a plain node:http server', () => {
  let app: Proc;
  let appPort: number;
  let metricsPort: number;
  beforeAll(async () => {
    ({ app, appPort, metricsPort } = await startApp(['-r', REGISTER_CJS, join(FIXTURES, 'http-app.cjs')]));
    await waitForHttp(`http://127.0.0.1:${metricsPort}/metrics`);
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

  it('pipelined requests on one connection: each counted once, and those cut off by a close count as aborted', async () => {
    const before = await scrape(metricsPort);
    const base = total(before, 'gunicorn_worker_requests_total');
    const req = (path: string) => `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`;
    // three requests in one write; the server answers them in order on the same socket
    const sock = connect(appPort, '127.0.0.1');
    let got = '';
    const answered = (n: number) => new Promise<void>((resolve, reject) => {
      const check = () => { if ((got.match(/HTTP\/1\.1 /g) ?? []).length >= n) resolve(); };
      sock.on('data', (d) => { got += d.toString(); check(); });
      sock.on('error', reject);
      check();
    });
    sock.write(req('/sleep/40') + req('/users/7') + req('/fail/p'));
    await answered(3);
    expect(got.match(/HTTP\/1\.1 \d+/g)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 200', 'HTTP/1.1 503']);
    // then three more, and the client leaves as soon as the first is answered: the other two were
    // started by the app but never finished
    sock.write(req('/sleep/5') + req('/sleep/3000') + req('/sleep/3001'));
    await answered(4);
    sock.destroy();
    const s = await waitFor(async () => {
      const x = await scrape(metricsPort);
      return total(x, 'gunicorn_worker_requests_total') - base === 6 ? x : undefined;
    }, 10_000, 'six requests recorded');
    const d = (k: string, labels: Record<string, string>) => value(s, k, labels) - total(before, k, labels);
    expect(d('gunicorn_worker_requests_total', { method: 'GET', endpoint: '/sleep/:id' })).toBe(4);
    expect(d('gunicorn_worker_requests_total', { method: 'GET', endpoint: '/users/:id' })).toBe(1);
    expect(d('gunicorn_worker_requests_total', { method: 'GET', endpoint: '/fail/p' })).toBe(1);
    expect(d('gunicorn_worker_failed_requests_total', { method: 'GET', endpoint: '/sleep/:id', error_type: 'RequestError' })).toBe(2);
    expect(d('gunicorn_worker_failed_requests_total', { method: 'GET', endpoint: '/fail/p', error_type: 'RequestError' })).toBe(1);
    expect(d('gunicorn_worker_request_duration_seconds_count', { method: 'GET', endpoint: '/sleep/:id' })).toBe(4);
    // the first one's duration covers its 40 ms timer; the cut-off ones end at the close, long before 3 s
    expect(d('gunicorn_worker_request_duration_seconds_sum', { method: 'GET', endpoint: '/sleep/:id' })).toBeGreaterThanOrEqual(0.045);
    expect(d('gunicorn_worker_request_duration_seconds_bucket', { method: 'GET', endpoint: '/sleep/:id', le: '2.5' })).toBe(4);
    // and when the app finally answers them (after the close), nothing more is counted. Proof that it
    // has answered them: a probe with the same 3001 ms timer, set after theirs. Node fires timers of one
    // duration in the order they were set, so when the probe's answer arrives, the app's res.end() for
    // /sleep/3000 and /sleep/3001 has run. Only the probe itself is counted (one more success).
    expect(await hit(`http://127.0.0.1:${appPort}/sleep/3001`)).toBe(200);
    const after = await scrape(metricsPort);
    expect(total(after, 'gunicorn_worker_requests_total') - base).toBe(7);
    expect(value(after, 'gunicorn_worker_requests_total', { method: 'GET', endpoint: '/sleep/:id' }) - total(before, 'gunicorn_worker_requests_total', { method: 'GET', endpoint: '/sleep/:id' })).toBe(5);
    expect(total(after, 'gunicorn_worker_failed_requests_total') - total(before, 'gunicorn_worker_failed_requests_total')).toBe(3);
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
