/**
 * The endpoint bounds under hostile paths. A path scan: 10,000 distinct paths against a server with
 * PREFORK_OTEL_MAX_ENDPOINTS=50 give exactly 50 distinct normalised endpoints + `__overflow__`, with
 * every request still counted; ids collapse before the cap; framework routes are never folded.
 * 8 KB paths: every endpoint value ≤ MAX_ENDPOINT_LENGTH and the scrape within docs/metrics.md's bound.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import {
  FIXTURES, REGISTER_CJS, freePort, labelValues, parseMetrics, scrape, scrapeText, select, startNode, total, value, waitFor, waitForHttp, word, type Proc,
} from './helpers';
import { DEFAULT_BUCKETS } from '../src/config';
import { MAX_ENDPOINT_LENGTH, TRUNCATED_MARKER } from '../src/metrics/labels';
import { sendAll, type Req } from './http-client';

async function start(fixture: string, env: Record<string, string>): Promise<{ app: Proc; appPort: number; metricsPort: number }> {
  const appPort = await freePort();
  const metricsPort = await freePort();
  const app = startNode(['-r', REGISTER_CJS, join(FIXTURES, fixture)], {
    APP_PORT: String(appPort), PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1', ...env,
  });
  await waitFor(() => app.stdout.includes('listening'), 20_000, `${fixture} listening (stderr: ${app.stderr})`);
  await waitForHttp(`http://127.0.0.1:${metricsPort}/metrics`).catch((e: Error) => {
    throw new Error(`${e.message} (stderr: ${app.stderr})`);
  });
  return { app, appPort, metricsPort };
}

describe('endpoint cap on a node:http server (PREFORK_OTEL_MAX_ENDPOINTS=50)', () => {
  let srv: Awaited<ReturnType<typeof start>>;
  beforeAll(async () => { srv = await start('http-app.cjs', { PREFORK_OTEL_MAX_ENDPOINTS: '50' }); });
  afterAll(async () => { await srv?.app.stop(); });

  it('10,000 distinct paths: exactly 50 endpoints + __overflow__, every request counted', async () => {
    const SCAN = 9_000;
    const IDS = 1_000;
    // first one id path (it takes one of the 50 slots), then the scan with id paths mixed in
    const reqs: Req[] = [{ method: 'GET', path: '/items/1' }];
    let ids = 1;
    for (let i = 0; i < SCAN; i++) {
      reqs.push({ method: 'GET', path: `/scan/${word(i)}/${word(i * 7 + 3)}?n=${i}` });
      if (i % 9 === 4 && ids < IDS) {
        reqs.push({ method: 'GET', path: `/items/${100 + i}` });
        ids++;
      }
    }
    expect(reqs.length).toBe(SCAN + IDS);
    const statuses = await sendAll(srv.appPort, reqs, 16);
    expect(Object.fromEntries(statuses)).toEqual({ 200: SCAN + IDS });

    const s = await scrape(srv.metricsPort);
    const endpoints = labelValues(s, 'gunicorn_worker_requests_total', 'endpoint');
    expect(endpoints.length).toBe(51);
    expect(endpoints).toContain('__overflow__');
    expect(endpoints.filter((e) => e !== '__overflow__').length).toBe(50);
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(SCAN + IDS);
    // ids are collapsed before the cap: every id path landed in its one endpoint, even after the cap was full
    expect(value(s, 'gunicorn_worker_requests_total', { endpoint: '/items/:id' })).toBe(IDS);
    // 49 scan paths were admitted (one request each), the rest overflowed
    expect(value(s, 'gunicorn_worker_requests_total', { endpoint: '__overflow__' })).toBe(SCAN - 49);
    for (const e of endpoints.filter((x) => x !== '__overflow__' && x !== '/items/:id')) {
      expect(e).toMatch(/^\/scan\/[g-z]+\/[g-z]+$/);
      expect(value(s, 'gunicorn_worker_requests_total', { endpoint: e })).toBe(1);
    }
    // the histogram follows the same series
    expect(value(s, 'gunicorn_worker_request_duration_seconds_count', { endpoint: '__overflow__' })).toBe(SCAN - 49);
    expect(value(s, 'gunicorn_worker_request_duration_seconds_bucket', { endpoint: '__overflow__', le: '+Inf' })).toBe(SCAN - 49);
    expect(select(s, 'gunicorn_worker_request_duration_seconds_count').length).toBe(51);

    // the bound holds: another scan adds nothing but overflow
    await sendAll(srv.appPort, Array.from({ length: 500 }, (_, i) => ({ method: 'GET', path: `/again/${word(i)}` })), 8);
    const s2 = await scrape(srv.metricsPort);
    expect(labelValues(s2, 'gunicorn_worker_requests_total', 'endpoint')).toEqual(endpoints);
    expect(value(s2, 'gunicorn_worker_requests_total', { endpoint: '__overflow__' })).toBe(SCAN - 49 + 500);
  });
});

describe('8 KB paths against the preload (PREFORK_OTEL_MAX_ENDPOINTS=50)', () => {
  let srv: Awaited<ReturnType<typeof start>>;
  beforeAll(async () => { srv = await start('http-app.cjs', { PREFORK_OTEL_MAX_ENDPOINTS: '50' }); });
  afterAll(async () => { await srv?.app.stop(); });

  it('2,400 distinct 8 KB paths: every endpoint ≤ MAX_ENDPOINT_LENGTH, the scrape within the documented bound', async () => {
    const N = 2_400;
    // three shapes of distinct 8 KB paths: one long segment, many short segments, a long id
    const reqs: Req[] = Array.from({ length: N }, (_, i) => {
      const shape = i % 3;
      const path = shape === 0 ? `/p/${word(i)}${'x'.repeat(8192)}`
        : shape === 1 ? Array.from({ length: 1200 }, (_, k) => `/${word(i * 1200 + k)}`).join('').slice(0, 8192)
          : `/items/${'7'.repeat(8192)}?i=${i}`;
      return { method: 'GET', path };
    });
    const statuses = await sendAll(srv.appPort, reqs, 8);
    expect(Object.fromEntries(statuses)).toEqual({ 200: N });

    const text = await scrapeText(srv.metricsPort);
    const s = parseMetrics(text);
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(N);
    const endpoints = labelValues(s, 'gunicorn_worker_requests_total', 'endpoint');
    for (const e of endpoints) expect(e.length).toBeLessThanOrEqual(MAX_ENDPOINT_LENGTH);
    // the one-long-segment paths all fold into one value, the ids into another
    expect(value(s, 'gunicorn_worker_requests_total', { endpoint: '/p' + TRUNCATED_MARKER })).toBe(N / 3);
    expect(value(s, 'gunicorn_worker_requests_total', { endpoint: '/items/:id' })).toBe(N / 3);
    // the many-segment paths: cut at a segment boundary and marked, at most the cap of them
    const cut = endpoints.filter((e) => e !== '/p' + TRUNCATED_MARKER && e !== '/items/:id' && e !== '__overflow__');
    expect(cut.length).toBe(48);
    for (const e of cut) expect(e).toMatch(new RegExp(`^(/[g-z]+)+${TRUNCATED_MARKER}$`));
    expect(endpoints.length).toBe(51);

    // docs/metrics.md: per (method, endpoint) label set at most B + 4 + 2·4 sample lines (counter,
    // B + 1 buckets, _sum, _count; failures and errors per error type), each ≤ 200 bytes of name,
    // fixed labels and value + 2 × MAX_ENDPOINT_LENGTH bytes of endpoint; label sets ≤ methods × (cap + 1)
    const methods = 1;
    const lines = DEFAULT_BUCKETS.length + 4 + 2 * 4;
    const bound = methods * (50 + 1) * lines * (200 + 2 * MAX_ENDPOINT_LENGTH) + 64 * 1024;
    const bytes = Buffer.byteLength(text);
    expect(bytes).toBeLessThanOrEqual(bound);
    // without the length cap one label set alone would carry 18 × 8 KB
    expect(bytes).toBeLessThan(51 * 18 * 8192 / 10);
  });
});

describe('endpoint cap on Express (PREFORK_OTEL_MAX_ENDPOINTS=5)', () => {
  let srv: Awaited<ReturnType<typeof start>>;
  beforeAll(async () => { srv = await start('express-app.cjs', { PREFORK_OTEL_MAX_ENDPOINTS: '5' }); });
  afterAll(async () => { await srv?.app.stop(); });

  it('a 404 scan fills the cap but never folds route templates, mounted or not', async () => {
    await sendAll(srv.appPort, Array.from({ length: 300 }, (_, i) => ({ method: 'GET', path: `/probe/${word(i)}` })), 8);
    const routes: Array<[Req, string]> = [
      [{ method: 'GET', path: '/users/5' }, '/users/:userId'],
      [{ method: 'POST', path: '/users' }, '/users'],
      [{ method: 'GET', path: '/status/201' }, '/status/:code'],
      [{ method: 'GET', path: '/api/v1/items/3' }, '/api/v1/items/:itemId'],
      [{ method: 'DELETE', path: '/api/v1/items/4' }, '/api/v1/items/:itemId'],
      [{ method: 'GET', path: '/api/v1/orders/1/lines/2' }, '/api/v1/orders/:orderId/lines/:lineNo'],
      [{ method: 'POST', path: '/api/v1/unavailable' }, '/api/v1/unavailable'],
      [{ method: 'GET', path: '/api/v1/admin/accounts/9', headers: { 'x-token': 'secret' } }, '/api/v1/admin/accounts/:accountId'],
    ];
    await sendAll(srv.appPort, routes.map(([r]) => r), 2);
    const s = await scrape(srv.metricsPort);
    for (const [r, endpoint] of routes) expect(value(s, 'gunicorn_worker_requests_total', { method: r.method, endpoint })).toBe(1);
    const probes = select(s, 'gunicorn_worker_requests_total', { method: 'GET' }).filter((x) => x.labels.endpoint!.startsWith('/probe/'));
    expect(probes.length).toBe(5);
    expect(value(s, 'gunicorn_worker_requests_total', { endpoint: '__overflow__' })).toBe(295);
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(300 + routes.length);
  });
});
