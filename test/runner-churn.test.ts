/**
 * Zero failed requests through graceful stops (issue 8 item 3): real concurrent load against every
 * worker class — half the requests over keep-alive, half on fresh connections — while HUP, TTIN and
 * TTOU arrive and --max-requests with jitter recycles workers. No request may fail, and the total on
 * /metrics must equal the requests sent exactly. A graceful TERM finishes every request in flight.
 */
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { join } from 'node:path';
import { FIXTURES, total, waitFor } from './helpers';
import { churn } from './churn-client';
import { startRunner, type Runner } from './runner-helpers';

const APP = join(FIXTURES, 'runner-churn.cjs');
let r: Runner | undefined;
afterEach(async () => {
  await r?.stop();
  r = undefined;
});

const N = 1600;
const CLASSES: Array<[string, string[]]> = [
  ['sync', []],
  ['gthread', ['--threads', '2']],
  ['gevent', []],
];

describe.each(CLASSES)('-k %s under churn', (kind, extra) => {
  it('HUP, TTIN, TTOU and --max-requests recycling: 0 failed requests, exact totals', async () => {
    r = await startRunner(['-w', '2', '-k', kind, ...extra, '--max-requests', '120', '--max-requests-jitter', '60', APP], { workers: 2 });
    const runner = r;
    const signals: Record<number, NodeJS.Signals> = { 200: 'SIGHUP', 500: 'SIGTTIN', 800: 'SIGTTOU', 1100: 'SIGHUP' };
    const res = await churn(runner.port, N, 8, (i) => { const s = signals[i]; if (s) runner.signal(s); });
    expect(res.failures).toEqual({});
    expect(res.ok).toBe(N);
    // keep-alive really was exercised (sync closes every connection, as gunicorn's sync worker)
    if (kind !== 'sync') expect(res.reused).toBeGreaterThan(0);
    const s = await waitFor(async () => {
      const x = await runner.scrape();
      return total(x, 'gunicorn_worker_requests_total') === N ? x : undefined;
    }, 30_000, `gunicorn_worker_requests_total = ${N}`);
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(N);
  }, 120_000);

  it('a graceful TERM to the master finishes every request in flight', async () => {
    r = await startRunner(['-w', '2', '-k', kind, ...extra, APP], { workers: 2 });
    const port = r.port;
    const inflight = kind === 'sync' ? 2 : 6;
    const agent = new http.Agent({ keepAlive: true });
    const got = Array.from({ length: inflight }, (_, i) => new Promise<string>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port, path: `/slow?ms=1500&id=${i}`, agent: i % 2 ? agent : false }, (res) => {
        let body = '';
        res.on('data', (d) => { body += d; });
        res.on('end', () => resolve(`${res.statusCode} ${body}`));
      });
      req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    }));
    // every request is in progress in a worker before the TERM (the app prints a line as each starts)
    await waitFor(() => (r!.proc.stdout.match(/slow-start /g)?.length ?? 0) === inflight ? true : undefined, 10_000, `${inflight} requests in progress`);
    r.signal('SIGTERM');
    const results = await Promise.all(got);
    agent.destroy();
    expect(results).toEqual(Array.from({ length: inflight }, () => '200 slow'));
    const exit = await r.proc.exited;
    expect(exit.code).toBe(0);
    r = undefined;
  }, 60_000);
});
