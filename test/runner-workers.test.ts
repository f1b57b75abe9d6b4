/**
 * The runner's worker classes, for real: `prefork-otel -w 4 -k CLASS`, load over the shared socket,
 * and the master's one scrape endpoint must count every request exactly, under four worker_ids.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FIXTURES, labelValues, select, total, value } from './helpers';
import { load, startRunner, type Runner } from './runner-helpers';
import { join } from 'node:path';

const APP = join(FIXTURES, 'runner-http.cjs');
let runner: Runner | undefined;
afterEach(async () => {
  await runner?.stop();
  runner = undefined;
});

describe.each([
  ['sync', []],
  ['gthread', ['--threads', '2']],
  ['eventlet', []],
  ['gevent', []],
] as Array<[string, string[]]>)('-w 4 -k %s', (kind, extra) => {
  it('counts every request exactly, under exactly 4 worker_ids, with the state, uptime and memory of each', async () => {
    runner = await startRunner(['-w', '4', '-k', kind, ...extra, '--timeout', '10', APP], { workers: 4 });
    const pids = await runner.running();
    const statuses = [
      ...await load(runner.url('/'), 150, 12),
      ...await load(runner.url('/fail'), 10, 4),
      ...await load(runner.url('/users/42'), 20, 4, { method: 'POST' }),
    ];
    expect(statuses.filter((s) => s === 0)).toEqual([]);
    const s = await runner.scrape();
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(180);
    expect(total(s, 'gunicorn_worker_requests_total', { method: 'GET', endpoint: '/' })).toBe(150);
    expect(total(s, 'gunicorn_worker_requests_total', { method: 'POST', endpoint: '/users/:id' })).toBe(20);
    expect(total(s, 'gunicorn_worker_failed_requests_total', { endpoint: '/fail', error_type: 'RequestError' })).toBe(10);
    expect(total(s, 'gunicorn_worker_request_duration_seconds_count')).toBe(180);
    expect(labelValues(s, 'gunicorn_worker_state', 'worker_id')).toEqual(pids);
    expect(pids).toHaveLength(4);
    for (const pid of pids) {
      expect(value(s, 'gunicorn_worker_uptime_seconds', { worker_id: pid })).toBeGreaterThan(0);
      expect(value(s, 'gunicorn_worker_memory_bytes', { worker_id: pid })).toBeGreaterThan(1024 * 1024);
    }
    // every series carries exactly the reference's labels (no thread or scope labels)
    for (const x of select(s, 'gunicorn_worker_requests_total')) expect(Object.keys(x.labels).sort()).toEqual(['endpoint', 'method', 'worker_id']);
    expect(labelValues(s, 'gunicorn_worker_requests_total', 'worker_id').every((p) => pids.includes(p))).toBe(true);
  });
});

describe('worker class semantics', () => {
  it('sync serves one request at a time per process and drops none of the waiting ones', async () => {
    runner = await startRunner(['-w', '1', '-k', 'sync', APP], { workers: 1 });
    const statuses = await load(runner.url('/slow?ms=150'), 6, 6);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200]);
    const max = await (await fetch(runner.url('/max'))).json() as { max: number };
    expect(max.max).toBe(1);
    expect(total(await runner.scrape(), 'gunicorn_worker_requests_total')).toBe(7);
  });

  it('gevent keeps at most --worker-connections open at once; the others wait, none dropped', async () => {
    runner = await startRunner(['-w', '1', '-k', 'gevent', '--worker-connections', '2', '--keep-alive', '0', APP], { workers: 1 });
    const statuses = await load(runner.url('/slow?ms=150'), 8, 8);
    expect(statuses).toEqual(Array(8).fill(200));
    const max = await (await fetch(runner.url('/max'))).json() as { max: number };
    expect(max.max).toBe(2);
  });

  it('gthread serves from several threads of one process, all under its one worker_id', async () => {
    runner = await startRunner(['-w', '1', '-k', 'gthread', '--threads', '3', APP], { workers: 1 });
    const [pid] = await runner.running();
    const seen = new Set<number>();
    for (let i = 0; i < 60 && seen.size < 2; i++) {
      const who = await Promise.all(Array.from({ length: 6 }, async () => (await (await fetch(runner!.url('/who'))).json()) as { pid: number; thread: number }));
      for (const w of who) {
        expect(String(w.pid)).toBe(pid);
        seen.add(w.thread);
      }
    }
    expect(seen.size).toBeGreaterThanOrEqual(2);
    const s = await runner.scrape();
    expect(labelValues(s, 'gunicorn_worker_requests_total', 'worker_id')).toEqual([pid]);
    // one series per (method, endpoint): the threads' counts are summed, not listed side by side
    expect(select(s, 'gunicorn_worker_requests_total', { endpoint: '/who' })).toHaveLength(1);
  });
});
