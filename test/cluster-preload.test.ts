/**
 * The preload under node:cluster: the primary is the master (one aggregated endpoint), each cluster
 * worker a worker. Real primaries and workers, real HTTP, exact sums.
 */
import { spawnSync } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FIXTURES, REGISTER_CJS, REGISTER_ESM, freePort, labelValues, parseMetrics, scrape, scrapeText, select, startNode, total,
  value, waitFor, waitForHttp, type Proc, type Sample, livePids } from './helpers';

/** GET on a new connection each time (node:cluster hands out connections round-robin, so requests spread over workers). */
function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}


const WORKER_METRICS = [
  'gunicorn_worker_requests_total', 'gunicorn_worker_uptime_seconds', 'gunicorn_worker_memory_bytes',
  'gunicorn_worker_cpu_percent', 'gunicorn_worker_state', 'gunicorn_worker_request_duration_seconds_count',
];

function workerIds(s: Sample[], name = 'gunicorn_worker_uptime_seconds'): string[] {
  return labelValues(s, name, 'worker_id');
}

async function startCluster(args: string[], workers: number, env: Record<string, string> = {}) {
  const appPort = await freePort();
  const metricsPort = await freePort();
  const app = startNode(args, {
    APP_PORT: String(appPort), PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
    CLUSTER_WORKERS: String(workers), ...env,
  });
  await waitForHttp(`http://127.0.0.1:${metricsPort}/metrics`);
  // every worker is up and has answered the primary's collect request
  await waitFor(async () => livePids(app).length === workers
    && JSON.stringify(workerIds(await scrape(metricsPort))) === JSON.stringify(livePids(app)), 30_000, 'all workers in the scrape');
  await waitFor(async () => (await get(appPort, '/')).status === 200, 15_000, 'app port');
  return { app, appPort, metricsPort };
}

describe('node -r prefork-otel/register with a CommonJS node:cluster app (3 workers)', () => {
  let app: Proc;
  let appPort: number;
  let metricsPort: number;
  beforeAll(async () => {
    // no periodic pushes: what reaches the master arrives at scrape time or as a final snapshot
    ({ app, appPort, metricsPort } = await startCluster(['-r', REGISTER_CJS, join(FIXTURES, 'cluster-app.cjs')], 3,
      { PREFORK_OTEL_SNAPSHOT_INTERVAL: '600', PREFORK_OTEL_CPU_INTERVAL: '0.2', WORKER_HEAP_MB: '48' }));
  });
  afterAll(async () => { await app?.stop(); });

  it('serves one aggregated endpoint: the sum over workers equals the requests sent, one worker_id per worker pid, none for the primary', async () => {
    const before = total(await scrape(metricsPort), 'gunicorn_worker_requests_total');
    const sent = 45;
    const fails = 6;
    const paths = [...Array(sent - fails).fill('/'), ...Array(fails).fill('/fail')];
    for (let i = 0; i < paths.length; i += 9) await Promise.all(paths.slice(i, i + 9).map((p) => get(appPort, p)));

    const text = await scrapeText(metricsPort);
    const s = parseMetrics(text);
    expect(total(s, 'gunicorn_worker_requests_total') - before).toBe(sent);
    expect(total(s, 'gunicorn_worker_failed_requests_total', { endpoint: '/fail' })).toBe(fails);
    expect(total(s, 'gunicorn_worker_request_duration_seconds_count') - before).toBe(sent);
    // round-robin over new connections: more than one worker served
    expect(labelValues(s, 'gunicorn_worker_requests_total', 'worker_id').length).toBeGreaterThan(1);
    const pids = livePids(app);
    expect(pids).toHaveLength(3);
    expect(workerIds(s)).toEqual(pids);
    expect(workerIds(s, 'gunicorn_worker_memory_bytes')).toEqual(pids);
    expect(select(s, 'gunicorn_worker_state', { state: 'running' }).map((x) => x.labels.worker_id).sort()).toEqual(pids);
    for (const x of select(s, 'gunicorn_worker_requests_total')) expect(pids).toContain(x.labels.worker_id);
    const primary = String(app.child.pid);
    for (const name of WORKER_METRICS) expect(select(s, name, { worker_id: primary })).toEqual([]);
    expect(app.stderr).not.toMatch(/EADDRINUSE|in use/);

    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(check.stderr + check.stdout).toBe('');
    expect(check.status).toBe(0);
  });

  it("keeps the app's own IPC working: its handlers never see our messages", async () => {
    await scrape(metricsPort); // a scrape sends collect requests to every worker and gets snapshots back
    for (let i = 0; i < 6; i++) {
      const r = await get(appPort, '/ipc');
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body)).toMatchObject({ primaryForeign: 0, workerForeign: 0 });
    }
  });

  it('a worker disconnected by the primary sends a final snapshot: nothing it counted is lost, no restart recorded', async () => {
    const s0 = await scrape(metricsPort);
    const before = total(s0, 'gunicorn_worker_requests_total');
    const sent = 24;
    for (let i = 0; i < sent; i += 8) await Promise.all(Array.from({ length: 8 }, () => get(appPort, '/')));
    // the worker answering /retire asks the primary to disconnect it; no scrape in between, no pushes:
    // its requests since the last scrape can only arrive with its final snapshot
    const retired = (await get(appPort, '/retire')).body;
    await waitFor(() => new RegExp(`^exit ${retired} 0 null$`, 'm').test(app.stdout), 15_000, 'retired worker exit');
    await waitFor(() => livePids(app).length === 3, 15_000, 'replacement worker');

    const s = await scrape(metricsPort);
    expect(total(s, 'gunicorn_worker_requests_total') - before).toBe(sent + 1);
    expect(total(s, 'gunicorn_worker_requests_total', { worker_id: retired, endpoint: '/retire' })).toBe(1);
    expect(select(s, 'gunicorn_worker_memory_bytes', { worker_id: retired })).toEqual([]);
    expect(select(s, 'gunicorn_worker_uptime_seconds', { worker_id: retired })).toEqual([]);
    expect(select(s, 'gunicorn_master_worker_restarts_total', { worker_id: retired })).toEqual([]);
  });

  it('kill -9 of a worker: the restart is recorded (reason signal), its counters stay (retention), its gauges go', async () => {
    const s0 = await scrape(metricsPort);
    const before = total(s0, 'gunicorn_worker_requests_total');
    const victim = [...livePids(app)].sort((a, b) => total(s0, 'gunicorn_worker_requests_total', { worker_id: b })
      - total(s0, 'gunicorn_worker_requests_total', { worker_id: a }))[0]!;
    const victimCount = total(s0, 'gunicorn_worker_requests_total', { worker_id: victim });
    expect(victimCount).toBeGreaterThan(0);
    process.kill(Number(victim), 'SIGKILL');
    await waitFor(() => new RegExp(`^exit ${victim} null SIGKILL$`, 'm').test(app.stdout), 15_000, 'victim exit');
    await waitFor(async () => livePids(app).length === 3 && workerIds(await scrape(metricsPort)).length === 3, 15_000, 'replacement');

    const s = await scrape(metricsPort);
    expect(value(s, 'gunicorn_master_worker_restarts_total', { worker_id: victim, reason: 'signal' })).toBe(1);
    expect(total(s, 'gunicorn_master_worker_restarts_total')).toBe(1);
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(before);
    expect(total(s, 'gunicorn_worker_requests_total', { worker_id: victim })).toBe(victimCount);
    for (const name of ['gunicorn_worker_memory_bytes', 'gunicorn_worker_uptime_seconds', 'gunicorn_worker_state']) {
      expect(select(s, name, { worker_id: victim })).toEqual([]);
    }
    expect(workerIds(s)).toEqual(livePids(app));
  });

  it('a worker that runs out of heap (V8 aborts it) is recorded with reason oom', async () => {
    // /oom never answers: the worker serving it dies in the middle of it and the connection is reset
    await expect(get(appPort, '/oom')).rejects.toThrow();
    const pid = (await waitFor(() => /^exit (\d+) null SIGABRT$/m.exec(app.stdout), 30_000, 'abort'))[1]!;
    const s = await waitFor(async () => {
      const x = await scrape(metricsPort);
      return select(x, 'gunicorn_master_worker_restarts_total', { worker_id: pid }).length > 0 ? x : undefined;
    }, 15_000, 'restart recorded');
    expect(value(s, 'gunicorn_master_worker_restarts_total', { worker_id: pid, reason: 'oom' })).toBe(1);
    expect(total(s, 'gunicorn_master_worker_restarts_total', { reason: 'signal' })).toBe(1);
    expect(app.stderr).toMatch(/heap out of memory/);
  });
});

describe('node --import prefork-otel/register with an ES-module node:cluster app (2 workers)', () => {
  let app: Proc;
  let appPort: number;
  let metricsPort: number;
  beforeAll(async () => {
    ({ app, appPort, metricsPort } = await startCluster(['--import', REGISTER_ESM, join(FIXTURES, 'cluster-app.mjs')], 2));
  });
  afterAll(async () => { await app?.stop(); });

  it('aggregates both workers exactly and exports nothing of the primary as a worker', async () => {
    const before = total(await scrape(metricsPort), 'gunicorn_worker_requests_total');
    // each response names the worker pid that served it: the per-worker counts must match exactly
    const served = new Map<string, number>();
    for (let i = 0; i < 30; i += 10) {
      for (const r of await Promise.all(Array.from({ length: 10 }, () => get(appPort, '/esm')))) served.set(r.body, (served.get(r.body) ?? 0) + 1);
    }
    const s = await scrape(metricsPort);
    expect(total(s, 'gunicorn_worker_requests_total') - before).toBe(30);
    const pids = livePids(app);
    expect(workerIds(s)).toEqual(pids);
    expect(labelValues(s, 'gunicorn_worker_requests_total', 'worker_id').filter((id) => select(s, 'gunicorn_worker_requests_total', { worker_id: id, endpoint: '/esm' }).length > 0))
      .toEqual([...served.keys()].sort());
    for (const [pid, n] of served) expect(value(s, 'gunicorn_worker_requests_total', { worker_id: pid, endpoint: '/esm' })).toBe(n);
    for (const name of WORKER_METRICS) expect(select(s, name, { worker_id: String(app.child.pid) })).toEqual([]);
  });
  it('SIGTERM to the primary (no handler of the app): it dies by the signal and every worker ends cleanly, no crash', async () => {
    const workers = livePids(app);
    expect(workers.length).toBe(2);
    const ended = await app.stop('SIGTERM');
    expect(ended.signal).toBe('SIGTERM');
    const alive = (pid: string) => { try { process.kill(Number(pid), 0); return true; } catch { return false; } };
    await waitFor(() => workers.every((pid) => !alive(pid)), 15_000, 'workers gone after their primary');
    // the workers used to crash with ERR_INTERNAL_ASSERTION when the channel closed under our deferred disconnect
    expect(app.stderr).not.toMatch(/ERR_INTERNAL_ASSERTION|EPIPE|Error/);
  });
});
