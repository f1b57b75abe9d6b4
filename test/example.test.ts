/**
 * The README's first command: `npm run example` starts the example service under the runner with two
 * workers and a live /metrics endpoint. Run here without its build step (the suite has built already).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { ROOT, freePort, labelValues, scrape, startNode, total, waitFor, type Proc } from './helpers';

describe('npm run example', () => {
  let ex: Proc;
  let metricsPort: number;
  beforeAll(async () => {
    metricsPort = await freePort();
    ex = startNode([join(ROOT, 'scripts/example.mjs')], {
      EXAMPLE_SKIP_BUILD: '1', PORT: String(await freePort()), PROMETHEUS_METRICS_PORT: String(metricsPort),
    });
    await waitFor(() => /ready: \d+ requests sent/.test(ex.stdout), 45_000, 'the example to be ready');
  });
  afterAll(async () => { await ex?.stop('SIGINT'); });

  it('serves two workers and exactly the warm-up requests on /metrics', async () => {
    const sent = Number(/ready: (\d+) requests sent/.exec(ex.stdout)![1]);
    expect(sent).toBe(42);
    const s = await scrape(metricsPort);
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(42);
    expect(labelValues(s, 'gunicorn_worker_uptime_seconds', 'worker_id')).toHaveLength(2);
    expect(total(s, 'gunicorn_worker_requests_total', { endpoint: '/users/:userId' })).toBe(18);
    expect(total(s, 'gunicorn_worker_requests_total', { method: 'POST', endpoint: '/orders' })).toBe(1);
    // 40 requests cycle over 7 paths: 6 × '/' (+1 readiness probe), 18 × /users/:userId, 6 × /slow,
    // 5 × /fail (503) and 5 × /boom (thrown → 500)
    expect(total(s, 'gunicorn_worker_requests_total', { method: 'GET', endpoint: '/' })).toBe(7);
    expect(total(s, 'gunicorn_worker_request_duration_seconds_count', { endpoint: '/slow' })).toBe(6);
    expect(total(s, 'gunicorn_worker_failed_requests_total', { endpoint: '/fail', error_type: 'RequestError' })).toBe(5);
    expect(total(s, 'gunicorn_worker_failed_requests_total', { endpoint: '/boom', error_type: 'RequestError' })).toBe(5);
    expect(total(s, 'gunicorn_worker_failed_requests_total')).toBe(10);
  });
});
