/**
 * INT / QUIT are fast (issue 11 item 4): gunicorn cuts requests in progress at once, even a
 * CPU-bound one. Here a request busy-loops for 20 s; after SIGINT (or SIGQUIT) to the master, the
 * client is disconnected and the runner has exited long before that request would have ended.
 */
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { join } from 'node:path';
import { FIXTURES, waitFor } from './helpers';
import { startRunner, type Runner } from './runner-helpers';

const APP = join(FIXTURES, 'runner-churn.cjs');
const BLOCK_MS = 20_000;
let r: Runner | undefined;
afterEach(async () => {
  await r?.stop();
  r = undefined;
});

describe.each([
  ['sync', [], 'SIGINT'],
  ['gevent', [], 'SIGINT'],
  ['sync', [], 'SIGQUIT'],
  ['gthread', ['--threads', '2'], 'SIGINT'],
] as Array<[string, string[], NodeJS.Signals]>)('-k %s, %s during a busy-looping request', (kind, extra, sig) => {
  it('cuts the request and exits well before the request would have ended', async () => {
    r = await startRunner(['-w', '1', '-k', kind, ...extra, APP], { workers: 1 });
    const t0 = Date.now();
    const result = new Promise<string>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: r!.port, path: `/block?ms=${BLOCK_MS}`, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(`status ${res.statusCode}`));
      });
      req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    await waitFor(() => r!.proc.stdout.includes('block-start') || undefined, 10_000, 'the request busy in the worker');
    r.signal(sig);
    const got = await result;
    if (!/^(ECONNRESET|socket hang up)$/.test(got)) console.log(r.proc.stderr);
    expect(got).toMatch(/^(ECONNRESET|socket hang up)$/);
    const exit = await r.proc.exited;
    const elapsed = Date.now() - t0;
    // the request would have answered after BLOCK_MS; half of it is a bound no loaded machine reaches
    expect(elapsed).toBeLessThan(BLOCK_MS / 2);
    expect(exit.code === 0 || exit.signal !== null).toBe(true);
    r = undefined;
  }, 60_000);
});
