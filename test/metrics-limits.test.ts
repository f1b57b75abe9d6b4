/**
 * The metrics server's bounds, for real: a runner master under `ulimit -n 256` flooded with 400
 * half-open connections to its metrics port keeps its descriptors (connection limit), still forks a
 * replacement for a killed worker, the app keeps serving, and the endpoint answers again once the
 * flood stops (the header timeout closes the half-open connections; no client has to hang up).
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, FIXTURES, freePort, hit, scrape, select, waitFor } from './helpers';

const MAX_CONNECTIONS = 64; // METRICS_MAX_CONNECTIONS, the default
const FLOOD = 400;

/** the pids whose parent is `pid` (from /proc, no ps needed) */
function children(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(d));
    } catch { /* gone */ }
  }
  return out.sort();
}
const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

/** keeps `n` connections to `port` open, half of them with half a request, reopening any the server closes */
function flood(port: number, n: number) {
  const open = new Set<Socket>();
  let stopped = false;
  let dropped = 0;
  let i = 0;
  const one = () => {
    if (stopped) return;
    const s = connect(port, '127.0.0.1');
    const half = i++ % 2 === 0;
    s.on('connect', () => { if (half) s.write('GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n'); });
    s.on('error', () => undefined);
    s.on('close', () => {
      open.delete(s);
      dropped++;
      if (!stopped) setImmediate(one);
    });
    open.add(s);
  };
  for (let k = 0; k < n; k++) one();
  return {
    get dropped() { return dropped; },
    stop() {
      stopped = true;
      for (const s of open) s.destroy();
    },
  };
}

describe('the metrics port under a connection flood with ulimit -n 256', () => {
  let master: ReturnType<typeof spawn> | undefined;
  afterAll(async () => {
    if (master && master.exitCode === null) {
      const gone = new Promise((r) => master!.once('exit', r));
      master.kill('SIGTERM');
      const t = setTimeout(() => master!.kill('SIGKILL'), 20_000);
      await gone;
      clearTimeout(t);
    }
  });

  it('holds at most the limit, still forks a replacement worker, the app serves, the endpoint recovers', async () => {
    const port = await freePort();
    const metricsPort = await freePort();
    const cmd = `ulimit -n 256; exec "${process.execPath}" "${CLI}" -b 127.0.0.1:${port} -w 2 "${join(FIXTURES, 'runner-http.cjs')}"`;
    const m = spawn('bash', ['-c', cmd], {
      env: { ...process.env, NODE_OPTIONS: '', PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    master = m;
    let stderr = '';
    m.stderr!.on('data', (d) => { stderr += d; });
    process.on('exit', () => m.kill('SIGKILL'));
    const running = async () => select(await scrape(metricsPort), 'gunicorn_worker_state', { state: 'running' }).map((s) => Number(s.labels.worker_id)).sort();
    const before: number[] = await waitFor(async () => {
      if (m.exitCode !== null) throw new Error(`runner exited ${m.exitCode}: ${stderr}`);
      const r = await running();
      return r.length === 2 ? r : undefined;
    }, 30_000, 'two workers running') as number[];
    expect(readFileSync(`/proc/${m.pid}/limits`, 'utf8')).toMatch(/Max open files\s+256\s/);
    const baseline = fds(m.pid!);

    const f = flood(metricsPort, FLOOD);
    try {
      // the limit is full and the server drops the rest as it accepts them
      await waitFor(() => f.dropped >= FLOOD, 30_000, `${FLOOD} connections dropped by the full server`);
      const held = fds(m.pid!);
      expect(held).toBeLessThanOrEqual(baseline + MAX_CONNECTIONS + 2);
      expect(held).toBeLessThan(256 - 20);

      // a worker dies while the flood goes on: the master forks its replacement
      process.kill(before[0]!, 'SIGKILL');
      const after = await waitFor(() => {
        const c = children(m.pid!).filter((p) => p !== before[0]);
        return c.length === 2 && !c.includes(before[0]!) ? c : undefined;
      }, 30_000, 'a replacement worker forked');
      expect(after).toContain(before[1]);
      const statuses = await Promise.all(Array.from({ length: 20 }, () => hit(`http://127.0.0.1:${port}/who`)));
      expect(statuses).toEqual(Array(20).fill(200));
      expect(fds(m.pid!)).toBeLessThanOrEqual(baseline + MAX_CONNECTIONS + 4);
    } finally {
      f.stop();
    }
    expect(stderr).not.toMatch(/EMFILE|spawn .*error/i);
    // the endpoint answers again and shows the replacement running
    const now = await waitFor(async () => {
      const r = await running();
      return r.length === 2 && !r.includes(before[0]!) ? r : undefined;
    }, 30_000, 'the endpoint serving two running workers again');
    expect(now).toContain(before[1]);
    expect(m.exitCode).toBeNull();
  }, 120_000);

  it('a connection that sends nothing, or half a request, is closed by the server (header timeout), not kept open', async () => {
    const port = await freePort();
    const metricsPort = await freePort();
    const m = spawn(process.execPath, [CLI, '-b', `127.0.0.1:${port}`, '-w', '1', join(FIXTURES, 'runner-http.cjs')], {
      env: { ...process.env, NODE_OPTIONS: '', PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1' },
      stdio: ['ignore', 'ignore', 'ignore'],
    });
    master = m;
    try {
      await waitFor(async () => (await scrape(metricsPort)).length > 0, 30_000, 'endpoint up');
      const closedByServer = (payload: string) => new Promise<boolean>((resolve) => {
        const s = connect(metricsPort, '127.0.0.1', () => { if (payload) s.write(payload); });
        s.on('error', () => undefined);
        s.on('end', () => resolve(true)); // the server's FIN
        s.on('close', () => resolve(true));
        setTimeout(() => { s.destroy(); resolve(false); }, 60_000).unref();
      });
      const [silent, half] = await Promise.all([closedByServer(''), closedByServer('GET /metrics HTTP/1.1\r\nHost: x\r\n')]);
      expect(silent).toBe(true);
      expect(half).toBe(true);
    } finally {
      m.kill('SIGTERM');
    }
  }, 90_000);
});
