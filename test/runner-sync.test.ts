/**
 * -k sync accepts only when free (issue 11 item 2): a busy sync worker holds no listening socket,
 * so a connection that arrives meanwhile goes to an idle worker instead of waiting behind the
 * request in progress; a draining worker takes no new connection. Asserted on which worker served
 * each request and on the two requests being in progress at the same time — not on wall-clock.
 */
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { join } from 'node:path';
import { FIXTURES, waitFor } from './helpers';
import { startRunner, type Runner } from './runner-helpers';

const APP = join(FIXTURES, 'runner-churn.cjs');
let r: Runner | undefined;
afterEach(async () => {
  await r?.stop();
  r = undefined;
});

interface Pending { done: boolean; result: Promise<{ status: number; pid: string }> }

function get(port: number, path: string): Pending {
  const p: Pending = { done: false, result: undefined as never };
  p.result = new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      res.on('end', () => { p.done = true; resolve({ status: res.statusCode!, pid: String(res.headers['x-pid']) }); });
    });
    req.on('error', () => { p.done = true; resolve({ status: 0, pid: '' }); });
  });
  return p;
}

/** the pids in the app's "slow-start PID ID" lines for request ids `ids` */
function starts(out: string, ids: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const [, pid, id] of out.matchAll(/slow-start (\d+) (\S+)/g)) if (ids.includes(id!)) m.set(id!, pid!);
  return m;
}

describe('-w 2 -k sync: connections go to the free worker', () => {
  it('two concurrent 1 s requests run at the same time, one in each worker (5 rounds)', async () => {
    r = await startRunner(['-w', '2', '-k', 'sync', APP], { workers: 2 });
    const runner = r;
    for (let round = 0; round < 5; round++) {
      const ids = [`a${round}`, `b${round}`];
      const reqs = ids.map((id) => get(runner.port, `/slow?ms=1000&id=${id}`));
      // both requests are in progress at once: both have started before either has finished
      const started = await waitFor(() => {
        const s = starts(runner.proc.stdout, ids);
        if (reqs.some((q) => q.done) && s.size < 2) throw new Error(`round ${round}: a request finished before the other started (served one after the other)`);
        return s.size === 2 ? s : undefined;
      }, 10_000, `round ${round}: both requests in progress`);
      const results = await Promise.all(reqs.map((q) => q.result));
      expect(results.map((x) => x.status)).toEqual([200, 200]);
      expect(new Set(results.map((x) => x.pid)).size).toBe(2);
      expect([...started.values()].sort()).toEqual(results.map((x) => x.pid).sort());
    }
  }, 60_000);

  it('a worker draining after TERM takes no new connection: the probe is served by the other worker at once', async () => {
    r = await startRunner(['-w', '2', '-k', 'sync', APP], { workers: 2 });
    const runner = r;
    const slow = get(runner.port, '/slow?ms=3000&id=drain');
    const busy = await waitFor(() => starts(runner.proc.stdout, ['drain']).get('drain'), 10_000, 'the slow request in progress');
    process.kill(Number(busy), 'SIGTERM');
    await waitFor(() => runner.proc.stderr.includes(`Worker (pid:${busy}) is leaving`) ? true : undefined, 10_000, 'the worker leaving');
    const probes = await Promise.all([0, 1, 2].map(() => get(runner.port, '/').result));
    // the probes finished while the slow request (in the draining worker) is still in progress
    expect(slow.done).toBe(false);
    for (const p of probes) {
      expect(p.status).toBe(200);
      expect(p.pid).not.toBe(busy);
    }
    expect(await slow.result).toEqual({ status: 200, pid: busy });
  }, 60_000);
});
