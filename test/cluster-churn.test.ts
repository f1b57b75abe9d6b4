/**
 * Graceful stops under the node:cluster preload lose no request: a real node:cluster app run with
 * `node -r dist/cjs/register.js`, whose primary replaces its workers with `worker.disconnect()`
 * (rolling restarts on SIGHUP, workers retiring after ~MAXREQ requests) under concurrent load, half
 * over keep-alive and half on fresh connections. Bare Node loses ~0.5–1 % of such requests to
 * ECONNRESET (http.Server.close() destroys idle keep-alive sockets; measured in
 * /work/notes/cluster-drain.md, not tested: that is Node's behaviour); under the preload: 0.
 */
import http from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { churn } from './churn-client';
import {
  FIXTURES, REGISTER_CJS, freePort, livePids, scrape, startNode, total, waitFor, waitForHttp, type Proc,
} from './helpers';

const APP = join(FIXTURES, 'cluster-churn.cjs');
let app: Proc | undefined;
afterEach(async () => { await app?.stop('SIGKILL'); app = undefined; });

async function start(workers: number, env: Record<string, string> = {}) {
  const appPort = await freePort();
  const metricsPort = await freePort();
  app = startNode(['-r', REGISTER_CJS, APP], {
    APP_PORT: String(appPort), PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
    CLUSTER_WORKERS: String(workers), ...env,
  });
  const a = app;
  await waitForHttp(`http://127.0.0.1:${metricsPort}/metrics`);
  await waitFor(() => livePids(a).length === workers, 30_000, 'workers forked');
  // every worker listens: each answers on the app port (round-robin over fresh connections)
  const seen = new Set<string>();
  await waitFor(async () => {
    const r = await churn(appPort, workers, 1);
    for (const p of r.pids) seen.add(p);
    return livePids(a).every((p) => seen.has(p));
  }, 30_000, 'every worker serving');
  return { app: a, appPort, metricsPort, warmup: () => total0(metricsPort) };
}

const total0 = async (metricsPort: number) => total(await scrape(metricsPort), 'gunicorn_worker_requests_total');

/** GET `path` on its own connection, or over `agent`; resolves with the status or the error code */
function get(port: number, path: string, agent: http.Agent | false): Promise<string> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(String(res.statusCode)));
      res.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    req.end();
  });
}

describe('node:cluster preload: worker.disconnect() under load loses nothing', () => {
  it('rolling restarts and retiring workers under 2,400 requests (half keep-alive): 0 failed, totals exact, no restart counted', async () => {
    const N = 2400;
    const { app, appPort, metricsPort, warmup } = await start(3, { MAXREQ: '150', PREFORK_OTEL_SNAPSHOT_INTERVAL: '600' });
    const before = await warmup();
    const firstWorkers = livePids(app);
    const hups = new Set([300, 900, 1500, 2100]);
    const r = await churn(appPort, N, 8, (i) => { if (hups.has(i)) app.child.kill('SIGHUP'); });
    expect(r.failures).toEqual({});
    expect([r.sent, r.ok]).toEqual([N, N]);
    expect(r.reused).toBeGreaterThan(N / 4); // keep-alive sockets really were reused, across the replacements
    // the workers really were replaced, with worker.disconnect(): the draining ones end (their idle
    // keep-alive sockets close at the keep-alive timeout), none of the first ones is left
    await waitFor(() => livePids(app).length === 3, 30_000, 'replaced workers exited');
    const exited = [...app.stdout.matchAll(/^exit (\d+) (\S+) (\S+)$/gm)];
    expect(firstWorkers.every((p) => !livePids(app).includes(p))).toBe(true);
    expect(exited.length).toBeGreaterThanOrEqual(12); // 4 rolling restarts of 3, plus the retirements
    expect(exited.every((m) => m[2] === '0' && m[3] === 'null')).toBe(true);
    // every request counted once: the exited workers' final snapshots are in the primary's totals
    await waitFor(async () => (await total0(metricsPort)) === before + N, 15_000, 'final snapshots in the totals');
    const s = await scrape(metricsPort);
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(before + N);
    // asked-for exits (the app's own worker.disconnect()) are not restarts
    expect(total(s, 'gunicorn_master_worker_restarts_total')).toBe(0);
  }, 120_000);

  it('SIGTERM to the primary (no handler of the app): every in-flight request finishes, then it ends by the signal', async () => {
    const { app, appPort } = await start(2);
    const workers = livePids(app);
    const keepAlive = new http.Agent({ keepAlive: true });
    // 6 slow requests in flight, half over keep-alive (whose sockets then sit idle in a draining worker)
    const inflight = Array.from({ length: 6 }, (_, i) => get(appPort, '/slow?ms=1500', i % 2 === 0 ? keepAlive : false));
    await waitFor(() => (app.stdout.match(/^start \d+$/gm) ?? []).length === 6, 15_000, 'six requests in flight');
    const ended = app.stop('SIGTERM', 40_000);
    expect(await Promise.all(inflight)).toEqual(Array(6).fill('200'));
    expect((await ended).signal).toBe('SIGTERM');
    const alive = (pid: string) => { try { process.kill(Number(pid), 0); return true; } catch { return false; } };
    await waitFor(() => workers.every((p) => !alive(p)), 15_000, 'workers gone');
    // they left by the graceful path (exit code 0, reported to the primary before it ended)
    for (const p of workers) expect(app.stdout).toMatch(new RegExp(`^exit ${p} 0 null$`, 'm'));
    expect(app.stderr).not.toMatch(/ERR_INTERNAL_ASSERTION|EPIPE|Error/);
    keepAlive.destroy();
  }, 60_000);

  it('SIGTERM to the whole process group (primary and workers at once): every in-flight request finishes', async () => {
    const { app, appPort } = await start(2);
    const workers = livePids(app);
    const keepAlive = new http.Agent({ keepAlive: true });
    const inflight = Array.from({ length: 6 }, (_, i) => get(appPort, '/slow?ms=1500', i % 2 === 0 ? keepAlive : false));
    await waitFor(() => (app.stdout.match(/^start \d+$/gm) ?? []).length === 6, 15_000, 'six requests in flight');
    // what systemd's KillMode=control-group and a terminal's Ctrl-C do: everyone gets the signal
    for (const p of workers) process.kill(Number(p), 'SIGTERM');
    const ended = app.stop('SIGTERM', 40_000);
    expect(await Promise.all(inflight)).toEqual(Array(6).fill('200'));
    expect((await ended).signal).toBe('SIGTERM');
    const alive = (pid: string) => { try { process.kill(Number(pid), 0); return true; } catch { return false; } };
    await waitFor(() => workers.every((p) => !alive(p)), 15_000, 'workers gone');
    expect(app.stderr).not.toMatch(/ERR_INTERNAL_ASSERTION|EPIPE|Error/);
    keepAlive.destroy();
  }, 60_000);

  it('SIGTERM to one worker (no handler of the app): it serves what it accepted, leaves, and is counted as a restart (signal)', async () => {
    const { app, appPort, metricsPort } = await start(2, { PREFORK_OTEL_SNAPSHOT_INTERVAL: '600' });
    const [victim] = livePids(app);
    const keepAlive = new http.Agent({ keepAlive: true });
    const inflight = Array.from({ length: 6 }, (_, i) => get(appPort, '/slow?ms=1500', i % 2 === 0 ? keepAlive : false));
    await waitFor(() => (app.stdout.match(/^start \d+$/gm) ?? []).length === 6, 15_000, 'six requests in flight');
    process.kill(Number(victim), 'SIGTERM');
    expect(await Promise.all(inflight)).toEqual(Array(6).fill('200'));
    await waitFor(() => new RegExp(`^exit ${victim} `, 'm').test(app.stdout), 15_000, 'the worker exited');
    expect(app.stdout).toMatch(new RegExp(`^exit ${victim} null SIGTERM$`, 'm'));
    await waitFor(async () => total(await scrape(metricsPort), 'gunicorn_master_worker_restarts_total', { worker_id: victim!, reason: 'signal' }) === 1,
      15_000, 'restart recorded');
    keepAlive.destroy();
  }, 60_000);
});
