/**
 * The preload on real Express 5, Fastify 5 and Koa 3 (+ @koa/router) servers, each in its own child
 * process: a known mix of methods, routes (parametric, mounted / prefixed, nested, 404) and status
 * codes (2xx, 4xx, explicit 5xx, thrown errors, rejected promises, client aborts), then exact
 * assertions on the scraped series.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { FIXTURES, REGISTER_CJS, REGISTER_ESM, scrape, select, startApp, waitFor, waitForHttp, type Proc, type Sample } from './helpers';
import { abortMidResponse, sendAll, type Req } from './http-client';

interface Framework {
  name: string;
  fixture: string;
  preload: '-r' | '--import';
  /** endpoint of GET /api/v1/admin/accounts/:accountId answered 401 by auth middleware before the route */
  adminEndpoint: string;
  /** status of PROPFIND /dav/folder (no route): 404, or 501 from Koa's allowedMethods() — a 5xx, so a failure */
  davStatus: number;
  /** extra requests and their expected series (framework-specific routes) */
  extra: Array<{ req: Req; n: number; method: string; endpoint: string; status: number }>;
}

const FRAMEWORKS: Framework[] = [
  // Express matches a route only after the router-level middleware ran: the 401 keeps the normalised path
  {
    name: 'Express 5', fixture: 'express-app.cjs', preload: '--import', adminEndpoint: '/api/v1/admin/accounts/:id', davStatus: 404,
    // 200 only if the handler sees req.route and req.baseUrl as Express set them
    extra: [{ req: { method: 'GET', path: '/api/v1/route-info/5' }, n: 2, method: 'GET', endpoint: '/api/v1/route-info/:x', status: 200 }],
  },
  {
    name: 'Fastify 5', fixture: 'fastify-app.cjs', preload: '-r', adminEndpoint: '/api/v1/admin/accounts/:accountId', davStatus: 404,
    extra: [
      // schema validation fails (400) before the handler: still the route template
      { req: { method: 'POST', path: '/users/77/emails', headers: { 'content-type': 'application/json' }, body: '{}' }, n: 3, method: 'POST', endpoint: '/users/:userId/emails', status: 400 },
      { req: { method: 'POST', path: '/users/78/emails', headers: { 'content-type': 'application/json' }, body: '{"address":"a@b"}' }, n: 2, method: 'POST', endpoint: '/users/:userId/emails', status: 201 },
    ],
  },
  // @koa/router sets the matched route before it runs router-level middleware
  { name: 'Koa 3 + @koa/router', fixture: 'koa-app.mjs', preload: '-r', adminEndpoint: '/api/v1/admin/accounts/:accountId', davStatus: 501, extra: [] },
];

/** One line of the plan: `n` requests (ids vary), the series they land in, the status they get. */
interface Step { n: number; method: string; path: (i: number) => string; endpoint: string; status: number; headers?: Record<string, string> }

function plan(fw: Framework): Step[] {
  return [
    { n: 12, method: 'GET', path: (i) => `/users/${100 + i}`, endpoint: '/users/:userId', status: 200 },
    { n: 2, method: 'HEAD', path: (i) => `/users/${7 + i}`, endpoint: '/users/:userId', status: 200 },
    { n: 5, method: 'POST', path: () => '/users', endpoint: '/users', status: 201 },
    { n: 3, method: 'PATCH', path: (i) => `/users/${i}`, endpoint: '/users/:userId', status: 400 },
    { n: 6, method: 'GET', path: (i) => `/api/v1/items/${i}?full=${i}`, endpoint: '/api/v1/items/:itemId', status: 200 },
    { n: 4, method: 'DELETE', path: (i) => `/api/v1/items/${50 + i}`, endpoint: '/api/v1/items/:itemId', status: 204 },
    { n: 3, method: 'GET', path: (i) => `/api/v1/orders/${9 + i}/lines/${i}`, endpoint: '/api/v1/orders/:orderId/lines/:lineNo', status: 200 },
    { n: 2, method: 'GET', path: (i) => `/api/v1/admin/accounts/${12 + i}`, endpoint: fw.adminEndpoint, status: 401 },
    { n: 1, method: 'GET', path: () => '/api/v1/admin/accounts/12', endpoint: '/api/v1/admin/accounts/:accountId', status: 200, headers: { 'x-token': 'secret' } },
    { n: 3, method: 'GET', path: () => '/status/503', endpoint: '/status/:code', status: 503 },
    { n: 2, method: 'GET', path: () => '/status/504', endpoint: '/status/:code', status: 504 },
    { n: 1, method: 'GET', path: () => '/status/404', endpoint: '/status/:code', status: 404 },
    { n: 2, method: 'PUT', path: () => '/throw', endpoint: '/throw', status: 500 },
    { n: 3, method: 'GET', path: () => '/api/v1/boom', endpoint: '/api/v1/boom', status: 500 },
    { n: 2, method: 'GET', path: (i) => `/api/v1/reject/${3 + i}`, endpoint: '/api/v1/reject/:jobId', status: 500 },
    { n: 2, method: 'POST', path: () => '/api/v1/unavailable', endpoint: '/api/v1/unavailable', status: 503 },
    { n: 3, method: 'GET', path: (i) => `/no/such/page/${40 + i}?q=${i}`, endpoint: '/no/such/page/:id', status: 404 },
    // a method outside the standard set is folded to OTHER
    { n: 1, method: 'PROPFIND', path: () => '/dav/folder', endpoint: '/dav/folder', status: fw.davStatus },
  ];
}

const ABORTS = 2;
const key = (method: string, endpoint: string) => `${method} ${endpoint}`;

function counts(samples: Sample[], name: string, withErrorType = false): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of select(samples, name)) {
    const k = key(s.labels.method!, s.labels.endpoint!) + (withErrorType ? ` ${s.labels.error_type}` : '');
    out[k] = (out[k] ?? 0) + s.value;
  }
  return out;
}

describe.each(FRAMEWORKS)('preload on $name', (fw) => {
  let app: Proc;
  let appPort: number;
  let metricsPort: number;
  beforeAll(async () => {
    // readiness without sending the app a request (every app request is counted)
    ({ app, appPort, metricsPort } = await startApp([fw.preload, fw.preload === '-r' ? REGISTER_CJS : REGISTER_ESM, join(FIXTURES, fw.fixture)], {}, fw.name));
    await waitForHttp(`http://127.0.0.1:${metricsPort}/metrics`);
  });
  afterAll(async () => { await app?.stop(); });

  it('counts every request exactly per (method, route template), with failures by error_type', async () => {
    const steps = plan(fw);
    const reqs: Req[] = [];
    const expected: Record<string, number> = {};
    const statuses = new Map<number, number>();
    const add = (method: string, endpoint: string, status: number, n: number) => {
      expected[key(method, endpoint)] = (expected[key(method, endpoint)] ?? 0) + n;
      statuses.set(status, (statuses.get(status) ?? 0) + n);
    };
    for (const s of steps) {
      for (let i = 0; i < s.n; i++) reqs.push({ method: s.method, path: s.path(i), headers: s.headers });
      add(s.method === 'PROPFIND' ? 'OTHER' : s.method, s.endpoint, s.status, s.n);
    }
    for (const x of fw.extra) {
      for (let i = 0; i < x.n; i++) reqs.push(x.req);
      add(x.method, x.endpoint, x.status, x.n);
    }
    // the app answers exactly as planned (so the expectations below are about the metrics, not the app)
    const got = await sendAll(appPort, reqs, 4);
    expect(Object.fromEntries(got)).toEqual(Object.fromEntries(statuses));

    // two clients go away while the handler is still answering
    for (let i = 0; i < ABORTS; i++) await abortMidResponse(appPort, `/wait/${60_000 + i}`);
    expected[key('GET', '/wait/:ms')] = ABORTS;
    const sent = reqs.length + ABORTS;
    await waitFor(async () => counts(await scrape(metricsPort), 'gunicorn_worker_failed_requests_total')[key('GET', '/wait/:ms')] === ABORTS,
      15_000, 'the aborted requests to be recorded');

    const s = await scrape(metricsPort);
    const pid = String(app.child.pid);

    // requests_total: exactly the planned series, each with its exact count
    expect(counts(s, 'gunicorn_worker_requests_total')).toEqual(expected);
    expect(select(s, 'gunicorn_worker_requests_total').reduce((a, x) => a + x.value, 0)).toBe(sent);
    // never a raw id in an endpoint
    for (const x of select(s, 'gunicorn_worker_requests_total')) expect(x.labels.endpoint).not.toMatch(/\/\d+(\/|$)/);

    // exact label sets, worker_id = the pid
    for (const x of select(s, 'gunicorn_worker_requests_total')) {
      expect(Object.keys(x.labels).sort()).toEqual(['endpoint', 'method', 'worker_id']);
      expect(x.labels.worker_id).toBe(pid);
    }
    for (const name of ['gunicorn_worker_failed_requests_total', 'gunicorn_worker_error_handling_total']) {
      for (const x of select(s, name)) {
        expect(Object.keys(x.labels).sort()).toEqual(['endpoint', 'error_type', 'method', 'worker_id']);
        expect(x.labels.worker_id).toBe(pid);
      }
    }

    // the duration histogram: one per counter series, _count == counter, +Inf == _count, cumulative buckets
    const hc = select(s, 'gunicorn_worker_request_duration_seconds_count');
    expect(hc.length).toBe(select(s, 'gunicorn_worker_requests_total').length);
    for (const c of select(s, 'gunicorn_worker_requests_total')) {
      const m = { worker_id: pid, method: c.labels.method!, endpoint: c.labels.endpoint! };
      expect(select(s, 'gunicorn_worker_request_duration_seconds_count', m).map((x) => x.value)).toEqual([c.value]);
      const buckets = select(s, 'gunicorn_worker_request_duration_seconds_bucket', m);
      expect(buckets.map((b) => b.labels.le)).toEqual(['0.005', '0.01', '0.025', '0.05', '0.075', '0.1', '0.25', '0.5', '0.75', '1', '2.5', '5', '7.5', '10', '+Inf']);
      expect(buckets.at(-1)!.value).toBe(c.value);
      for (let i = 1; i < buckets.length; i++) expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value);
      expect(select(s, 'gunicorn_worker_request_duration_seconds_sum', m)[0]!.value).toBeGreaterThan(0);
    }

    // failures: every 5xx (explicit, thrown, rejected) and every client abort; 4xx are not failures.
    // 504 is a TimeoutError, everything else a RequestError; error_handling_total counts the same.
    const failed: Record<string, number> = {
      'GET /status/:code RequestError': 3,
      'GET /status/:code TimeoutError': 2,
      'PUT /throw RequestError': 2,
      'GET /api/v1/boom RequestError': 3,
      'GET /api/v1/reject/:jobId RequestError': 2,
      'POST /api/v1/unavailable RequestError': 2,
      'GET /wait/:ms RequestError': ABORTS,
    };
    if (fw.davStatus >= 500) failed['OTHER /dav/folder RequestError'] = 1;
    expect(counts(s, 'gunicorn_worker_failed_requests_total', true)).toEqual(failed);
    expect(counts(s, 'gunicorn_worker_error_handling_total', true)).toEqual(failed);
  });

  it('exports the running state, uptime, memory and cpu of this pid only', async () => {
    const s = await scrape(metricsPort);
    const pid = String(app.child.pid);
    expect(select(s, 'gunicorn_worker_state').map((x) => x.labels)).toEqual([{ worker_id: pid, state: 'running' }]);
    for (const name of ['gunicorn_worker_memory_bytes', 'gunicorn_worker_cpu_percent', 'gunicorn_worker_uptime_seconds']) {
      expect(select(s, name).map((x) => x.labels)).toEqual([{ worker_id: pid }]);
    }
  });
});
