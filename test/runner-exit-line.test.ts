/**
 * The one line the runner's master logs when a worker dies (src/export/hub.ts workerExitLine), from
 * the hub's last snapshot of it: how it ended, uptime, requests served, last RSS and CPU, in flight.
 * Real runner, real requests; the lines are read from its log (stdout / stderr).
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FIXTURES, waitFor } from './helpers';
import { load, startRunner, type Runner } from './runner-helpers';

const APP = join(FIXTURES, 'runner-http.cjs');
const LINE = /Worker \(pid:(\d+)\) exited: (code \S+|signal \S+), uptime (\S+), (\d+) requests served, last RSS ([\d.]+) MB, CPU ([\d.]+)%, (\d+|unknown) in flight \(last snapshot ([\d.]+)s old\)/g;

function exitLines(r: Runner) {
  return [...`${r.proc.stdout}${r.proc.stderr}`.matchAll(LINE)].map((m) => ({
    pid: m[1]!, how: m[2]!, requests: Number(m[4]), rssMB: Number(m[5]), inFlight: m[7]!,
  }));
}

describe('the master\'s line for a worker that died', () => {
  let r: Runner | undefined;
  afterEach(async () => { await r?.stop(); r = undefined; });

  it('a recycled worker: code 0, exactly the requests it served, its RSS, none in flight', async () => {
    r = await startRunner(['-w', '1', '--max-requests', '5', '--max-requests-jitter', '0', APP], { workers: 1 });
    const [pid] = await r.running();
    expect(await load(r.url('/'), 5, 1)).toEqual(Array(5).fill(200));
    const line = await waitFor(() => exitLines(r!).find((l) => l.pid === pid), 20_000, 'the exit line');
    expect(line.how).toBe('code 0');
    expect(line.requests).toBe(5);
    expect(line.rssMB).toBeGreaterThan(10);
    expect(line.inFlight).toBe('0');
  });

  it('a worker killed with SIGKILL while it serves 2 slow requests: signal SIGKILL, 2 in flight', async () => {
    r = await startRunner(['-w', '1', '-k', 'gevent', APP], { workers: 1, env: { PREFORK_OTEL_SNAPSHOT_INTERVAL: '600' } });
    const [pid] = await r.running();
    expect(await load(r.url('/'), 3, 1)).toEqual(Array(3).fill(200));
    const slow = [fetch(r.url('/slow?ms=30000')).catch(() => undefined), fetch(r.url('/slow?ms=30000')).catch(() => undefined)];
    // wait until the app has both under way (each probe is a request of its own, counted)
    let probes = 0;
    await waitFor(async () => {
      probes++;
      return (await fetch(r!.url('/max')).then((x) => x.json() as Promise<{ max: number }>)).max === 2;
    }, 20_000, 'both slow requests under way');
    // a scrape now: the worker's answer carries its in-flight count and every finished request
    await r.scrape();
    process.kill(Number(pid), 'SIGKILL');
    const line = await waitFor(() => exitLines(r!).find((l) => l.pid === pid), 20_000, 'the exit line');
    expect(line.how).toBe('signal SIGKILL');
    expect(line.requests).toBe(3 + probes); // the three and the probes (a scrape is not a request; the slow two are unfinished)
    expect(line.inFlight).toBe('2');
    await Promise.all(slow);
  });
});
