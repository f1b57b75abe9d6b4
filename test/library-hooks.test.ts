/** The library's reference hooks, called by a server that manages its own process (no preload). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { FIXTURES, ROOT, hit, scrape, startApp, total, value, waitFor, type Proc } from './helpers';

describe('hooks: on_starting, worker_int, pre_request, post_request', () => {
  let app: Proc;
  let appPort: number;
  let metricsPort: number;
  beforeAll(async () => {
    ({ app, appPort, metricsPort } = await startApp([join(FIXTURES, 'library-hooks.cjs')], { PREFORK_OTEL_LIB: join(ROOT, 'dist/cjs/index.js') }));
  });
  afterAll(async () => { await app?.stop(); });

  it('records exactly the requests the server reported through post_request', async () => {
    for (let i = 0; i < 12; i++) await hit(`http://127.0.0.1:${appPort}/items/${i}`);
    for (let i = 0; i < 3; i++) await hit(`http://127.0.0.1:${appPort}/fail`, { method: 'POST' });
    const s = await waitFor(async () => {
      const x = await scrape(metricsPort);
      return total(x, 'gunicorn_worker_requests_total') === 15 ? x : undefined;
    }, 10_000, '15 requests');
    const pid = String(app.child.pid);
    expect(value(s, 'gunicorn_worker_requests_total', { worker_id: pid, method: 'GET', endpoint: '/items/:id' })).toBe(12);
    expect(value(s, 'gunicorn_worker_request_duration_seconds_count', { worker_id: pid, method: 'POST', endpoint: '/fail' })).toBe(3);
    expect(value(s, 'gunicorn_worker_failed_requests_total', { worker_id: pid, method: 'POST', endpoint: '/fail', error_type: 'RequestError' })).toBe(3);
    expect(value(s, 'gunicorn_master_signals_total', { signal: 'hup', action: 'reload' })).toBe(1);
  });
});
