/**
 * --timeout per worker class (issue 11 item 3), the way gunicorn's operators expect it; see the
 * table in docs/runner.md. sync: a request that outlives --timeout gets the worker killed and its
 * client disconnected, even when it only waits on a timer.
 */
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { join } from 'node:path';
import { FIXTURES, select, total, value, waitFor } from './helpers';
import { startRunner, type Runner } from './runner-helpers';

const APP = join(FIXTURES, 'runner-churn.cjs');
let r: Runner | undefined;
afterEach(async () => {
  await r?.stop();
  r = undefined;
});

/** GET path; resolves with the status, or the network error's code when the connection dies */
function get(port: number, path: string): Promise<string> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(String(res.statusCode)));
      res.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

describe.each([
  ['--abort-on-timeout true (the worker aborts itself: the request counts, TimeoutError)', [], 1],
  ['--abort-on-timeout false (the master kills the worker)', ['--abort-on-timeout', 'false'], 0],
] as Array<[string, string[], number]>)('-k sync --timeout 2, a request that only waits (timer) %s', (_n, extra, counted) => {
  it('outliving --timeout: the client is disconnected, WORKER TIMEOUT, the worker replaced with reason timeout', async () => {
    r = await startRunner(['-w', '1', '-k', 'sync', '--timeout', '2', ...extra, APP], { workers: 1 });
    const [pid] = await r.running();
    expect(await get(r.port, '/')).toBe('200');
    // in the master's hands before the kill (a killed worker's counts are those of its last snapshot)
    await waitFor(async () => total(await r!.scrape(), 'gunicorn_worker_requests_total') === 1 || undefined, 10_000, 'the first request scraped');
    // 20 s of waiting on a timer, the event loop free all along
    const result = await get(r.port, '/slow?ms=20000&id=t');
    expect(result).toMatch(/^(ECONNRESET|socket hang up)$/);
    await r.waitRunning(1, [pid!]);
    const s = await waitFor(async () => {
      const x = await r!.scrape();
      return total(x, 'gunicorn_master_worker_restarts_total') === 1 ? x : undefined;
    }, 20_000, 'the restart');
    expect(value(s, 'gunicorn_master_worker_restarts_total', { worker_id: pid!, reason: 'timeout' })).toBe(1);
    expect(r.proc.stderr).toContain(`WORKER TIMEOUT (pid:${pid})`);
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(1 + counted);
    expect(select(s, 'gunicorn_worker_failed_requests_total', { endpoint: '/slow', error_type: 'TimeoutError' }).length).toBe(counted);
  }, 60_000);
});

describe('-k sync --timeout 3: a request shorter than --timeout', () => {
  it('waiting 2 s is served, no restart', async () => {
    r = await startRunner(['-w', '1', '-k', 'sync', '--timeout', '3', APP], { workers: 1 });
    expect(await get(r.port, '/slow?ms=2000&id=ok')).toBe('200');
    expect(total(await r.scrape(), 'gunicorn_master_worker_restarts_total')).toBe(0);
  }, 30_000);
});

describe('-k gthread --threads 2 --timeout 2: one thread blocked past --timeout', () => {
  it('ends that thread only: the other thread\'s requests in progress finish (200), the worker leaves with reason timeout', async () => {
    r = await startRunner(['-w', '1', '-k', 'gthread', '--threads', '2', '--timeout', '2', APP], { workers: 1 });
    const runner = r;
    const [pid] = await runner.running();
    const blocked = get(runner.port, '/block?ms=20000');
    await waitFor(() => runner.proc.stdout.includes('block-start') || undefined, 10_000, 'one thread blocked');
    // the blocked thread cannot accept: these go to the other thread, and outlast the timeout
    const slow = [0, 1, 2].map((i) => get(runner.port, `/slow?ms=3500&id=g${i}`));
    await waitFor(() => (runner.proc.stdout.match(/slow-start \d+ g/g)?.length ?? 0) === 3 || undefined, 10_000, 'three requests in progress on the other thread');
    expect(await blocked).toMatch(/^(ECONNRESET|socket hang up)$/);
    expect(await Promise.all(slow)).toEqual(['200', '200', '200']);
    await runner.waitRunning(1, [pid!]);
    const s = await waitFor(async () => {
      const x = await runner.scrape();
      return total(x, 'gunicorn_master_worker_restarts_total') === 1 ? x : undefined;
    }, 20_000, 'the restart');
    expect(value(s, 'gunicorn_master_worker_restarts_total', { worker_id: pid!, reason: 'timeout' })).toBe(1);
    expect(runner.proc.stderr).toContain(`WORKER TIMEOUT (pid:${pid})`);
    // the blocked request failed with TimeoutError, the three others succeeded
    expect(total(s, 'gunicorn_worker_requests_total', { worker_id: pid! })).toBe(4);
    expect(total(s, 'gunicorn_worker_failed_requests_total', { worker_id: pid!, error_type: 'TimeoutError' })).toBe(1);
  }, 60_000);
});
