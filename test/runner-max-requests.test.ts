/**
 * --max-requests: workers retire gracefully after their quota (reason max_requests) and are
 * replaced; every request sent is still counted (each leaving worker's final snapshot).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { FIXTURES, labelValues, select, total, waitFor } from './helpers';
import { load, startRunner, type Runner } from './runner-helpers';

const APP = join(FIXTURES, 'runner-http.cjs');
let r: Runner | undefined;
afterEach(async () => {
  await r?.stop();
  r = undefined;
});

describe.each([
  ['gevent', []],
  ['gthread', ['--threads', '2']],
] as Array<[string, string[]]>)('--max-requests 50 --max-requests-jitter 10 -k %s', (kind, extra) => {
  it('recycles workers with reason max_requests and still counts every request', async () => {
    r = await startRunner(['-w', '2', '-k', kind, ...extra, '--max-requests', '50', '--max-requests-jitter', '10', APP], { workers: 2 });
    const statuses = await load(r.url('/'), 300, 4);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    // the master records a restart when it reaps the worker, a moment after the worker's final
    // snapshot: wait until every worker that served and is no longer running shows its restart
    const s = await waitFor(async () => {
      const x = await r!.scrape();
      const running = new Set(select(x, 'gunicorn_worker_state', { state: 'running' }).map((y) => y.labels.worker_id!));
      const gone = labelValues(x, 'gunicorn_worker_requests_total', 'worker_id').filter((id) => !running.has(id)).sort();
      const restarted = labelValues(x, 'gunicorn_master_worker_restarts_total', 'worker_id').sort();
      return running.size === 2 && JSON.stringify(gone) === JSON.stringify(restarted) ? x : undefined;
    }, 20_000, 'a restart for every retired worker');
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(300);
    const retired = select(s, 'gunicorn_master_worker_restarts_total', { reason: 'max_requests' });
    expect(total(s, 'gunicorn_master_worker_restarts_total')).toBe(retired.length);
    // how many: the two workers serving at the end hold at most 59 each (quota ≤ 60), a retired one
    // at most 66 (below), so 300 requests make at least ceil((300 − 2 × 59) / 66) = 3 retirements
    expect(retired.length).toBeGreaterThanOrEqual(3);
    for (const x of retired) {
      expect(x.value).toBe(1);
      // a worker stops accepting at the request that reaches its quota (50 + up to 10 jitter);
      // requests already under way on its other connections (4 clients; gthread: also the other
      // thread's next one) still finish there
      const served = total(s, 'gunicorn_worker_requests_total', { worker_id: x.labels.worker_id! });
      expect(served).toBeGreaterThanOrEqual(50);
      expect(served).toBeLessThanOrEqual(60 + 4 + 2);
    }
    // the workers that served: the retired ones (each served ≥ 50), plus those of the two running ones
    // that got a request — none, when the retirements took all 300 (e.g. 5 quotas of 60: CI saw it)
    const servedIds = labelValues(s, 'gunicorn_worker_requests_total', 'worker_id').length;
    const retiredServed = retired.reduce((n, x) => n + total(s, 'gunicorn_worker_requests_total', { worker_id: x.labels.worker_id! }), 0);
    expect(servedIds).toBeGreaterThanOrEqual(retired.length + (retiredServed < 300 ? 1 : 0));
    expect(servedIds).toBeLessThanOrEqual(retired.length + 2);
    await r.waitRunning(2);
  });
});
