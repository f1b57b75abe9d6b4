/**
 * The real PM2 (the `pm2` devDependency, 7.x), with PROMETHEUS_MULTIPROC_DIR as docs/cluster.md says:
 * cluster mode from an ecosystem file, fork mode with several instances and increment_var,
 * `pm2 start app -i N --node-args=…` with the env from the shell, and pm2-runtime. Then the same
 * promise (final counts flushed at the end) for a systemd-style single service and for Node as PID 1
 * of a pid namespace (a container's init), emulated with `unshare --pid --fork --mount-proc`.
 * Every PM2 daemon runs in its own temporary PM2_HOME and is killed in afterAll, even on failure.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FIXTURES, REGISTER_CJS, REGISTER_ESM, freePort, labelValues, parseMetrics, scrape, select, startNode, tmpDir, total, waitFor,
  waitForHttp, type Proc, type Sample,
} from './helpers';
import { PM2_RUNTIME_BIN, Pm2, freshGet, sendRequests } from './pm2-helpers';

const APP = join(FIXTURES, 'http-app.cjs');
const EXPORTER = join(FIXTURES, 'exporter.cjs');

/** The union on the metrics port, scraped on a new connection (any instance may answer). */
async function union(port: number): Promise<Sample[]> {
  const r = await freshGet(port, '/metrics');
  if (r.status !== 200) throw new Error(`scrape status ${r.status}: ${r.body.slice(0, 300)}`);
  return parseMetrics(r.body);
}

const requests = (s: Sample[], match: Record<string, string> = {}) => total(s, 'gunicorn_worker_requests_total', match);
const livePidsIn = (s: Sample[]) => labelValues(s, 'gunicorn_worker_uptime_seconds', 'worker_id');

/** Serve `dir` with `prefork-otel exporter` (after the app's processes are gone), scrape once, stop it. */
async function exporterScrape(dir: string): Promise<Sample[]> {
  const port = await freePort();
  const exporter = startNode([EXPORTER, '--port', String(port), '--bind', '127.0.0.1', '--dir', dir]);
  try {
    await waitForHttp(`http://127.0.0.1:${port}/metrics`);
    return await scrape(port);
  } finally {
    await exporter.stop();
  }
}

/** gunicorn_worker_requests_total summed over the directory's files as they are now (no scrape: nothing is refreshed) */
function requestsInFiles(dir: string): number {
  let n = 0;
  for (const name of readdirSync(dir).filter((x) => x.endsWith('.json'))) {
    const f = JSON.parse(readFileSync(join(dir, name), 'utf8'));
    for (const sm of f.snapshot.scopeMetrics) {
      for (const m of sm.metrics) if (m.descriptor.name === 'gunicorn_worker_requests_total') for (const p of m.dataPoints) n += p.value;
    }
  }
  return n;
}

/** `n` consecutive free ports (for increment_var); retries a few random bases. */
async function freePortRun(n: number): Promise<number> {
  const free = (p: number) => new Promise<boolean>((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(p, '127.0.0.1', () => s.close(() => resolve(true)));
  });
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    let ok = true;
    for (let i = 0; i < n && ok; i++) ok = await free(base + i);
    if (ok) return base;
  }
  throw new Error('no run of free ports');
}

/** The PM2 home's logs (daemon and instances): the preload must have nothing to say there. */
function pm2Logs(pm2: Pm2): string {
  let text = '';
  try { text += readFileSync(join(pm2.home, 'pm2.log'), 'utf8'); } catch { /* none */ }
  try {
    for (const f of readdirSync(join(pm2.home, 'logs'))) text += readFileSync(join(pm2.home, 'logs', f), 'utf8');
  } catch { /* none */ }
  return text;
}

function ecosystem(file: string, app: Record<string, unknown>): void {
  writeFileSync(file, `module.exports = { apps: [${JSON.stringify(app, null, 2)}] };\n`);
}

describe('PM2 cluster mode with the ecosystem file of docs/cluster.md', () => {
  const work = tmpDir('prefork-otel-pm2-cluster-');
  const dir = join(work, 'metrics');
  const pm2 = new Pm2(work);
  let appPort: number;
  let metricsPort: number;
  /** requests sent so far, and each instance's count as last seen */
  let sent = 0;

  beforeAll(async () => {
    appPort = await freePort();
    metricsPort = await freePort();
    ecosystem(join(work, 'ecosystem.config.js'), {
      name: 'api', script: APP, exec_mode: 'cluster', instances: 2,
      node_args: `-r ${REGISTER_CJS}`, kill_timeout: 5000,
      env: {
        APP_PORT: String(appPort), PROMETHEUS_MULTIPROC_DIR: dir, PROMETHEUS_METRICS_PORT: String(metricsPort),
        PROMETHEUS_BIND_ADDRESS: '127.0.0.1', PREFORK_OTEL_SNAPSHOT_INTERVAL: '0.2',
      },
    });
    await pm2.run(['start', 'ecosystem.config.js']);
  });
  afterAll(async () => {
    await pm2.kill();
    rmSync(work, { recursive: true, force: true });
  });

  it('start: one endpoint on the configured port with every instance\'s exact counts', async () => {
    const pids = await waitFor(async () => { const p = await pm2.onlinePids('api'); return p.length === 2 ? p : undefined; }, 30_000, '2 online');
    await waitFor(async () => JSON.stringify(livePidsIn(await union(metricsPort))) === JSON.stringify(pids), 30_000, 'both instances in the union');
    await sendRequests(appPort, '/api', 20);
    sent = 20;
    const s = await waitFor(async () => { const x = await union(metricsPort); return requests(x) === sent ? x : undefined; }, 15_000, 'union of 20');
    // node:cluster round-robins connections: each instance served some, and the union names exactly them
    expect(labelValues(s, 'gunicorn_worker_requests_total', 'worker_id')).toEqual(pids);
    for (const p of pids) expect(requests(s, { worker_id: p })).toBeGreaterThan(0);
    expect(total(s, 'gunicorn_worker_request_duration_seconds_count')).toBe(sent);
    expect(readdirSync(dir).filter((n) => n.endsWith('.json')).map((n) => /_(\d+)\.json$/.exec(n)![1]).sort()).toEqual(pids);
    // the failure of issue 9: each instance warned and served its own metrics on the default port
    expect(pm2Logs(pm2)).not.toMatch(/prefork-otel: /);
  });

  it('pm2 reload: old pids keep their counts, new pids serve, the total stays exact', async () => {
    const before = await union(metricsPort);
    const old = await pm2.onlinePids('api');
    await pm2.run(['reload', 'api']);
    const fresh = await waitFor(async () => {
      const p = await pm2.onlinePids('api');
      return p.length === 2 && p.every((x) => !old.includes(x)) ? p : undefined;
    }, 30_000, 'two new pids');
    await waitFor(async () => JSON.stringify(livePidsIn(await union(metricsPort))) === JSON.stringify(fresh), 30_000, 'gauges of the new pids only');
    const mid = await union(metricsPort);
    for (const p of old) expect(requests(mid, { worker_id: p })).toBe(requests(before, { worker_id: p }));
    expect(requests(mid)).toBe(sent);
    await sendRequests(appPort, '/api', 10);
    sent += 10;
    const s = await waitFor(async () => { const x = await union(metricsPort); return requests(x) === sent ? x : undefined; }, 15_000, 'union after reload');
    for (const p of old) expect(requests(s, { worker_id: p })).toBe(requests(before, { worker_id: p }));
    expect(fresh.reduce((n, p) => n + requests(s, { worker_id: p }), 0)).toBe(10);
    for (const p of fresh) expect(requests(s, { worker_id: p })).toBeGreaterThan(0);
  });

  it('pm2 scale: up to 3 and down to 2; the counts of a removed instance stay', async () => {
    await pm2.run(['scale', 'api', '3']);
    const three = await waitFor(async () => { const p = await pm2.onlinePids('api'); return p.length === 3 ? p : undefined; }, 30_000, '3 online');
    const before = await waitFor(async () => {
      const x = await union(metricsPort);
      return JSON.stringify(livePidsIn(x)) === JSON.stringify(three) ? x : undefined;
    }, 30_000, '3 in the union');
    expect(requests(before)).toBe(sent);
    await sendRequests(appPort, '/api', 9);
    sent += 9;
    const s = await waitFor(async () => { const x = await union(metricsPort); return requests(x) === sent ? x : undefined; }, 15_000, 'union of 3');
    const delta = (p: string) => requests(s, { worker_id: p }) - requests(before, { worker_id: p });
    expect(three.reduce((n, p) => n + delta(p), 0)).toBe(9);
    for (const p of three) expect(delta(p)).toBeGreaterThan(0); // the new instance serves too

    await pm2.run(['scale', 'api', '2']);
    const two = await waitFor(async () => { const p = await pm2.onlinePids('api'); return p.length === 2 ? p : undefined; }, 30_000, '2 online');
    await waitFor(async () => JSON.stringify(livePidsIn(await union(metricsPort))) === JSON.stringify(two), 30_000, '2 in the union');
    const removed = three.filter((p) => !two.includes(p));
    expect(removed.length).toBe(1);
    const after = await union(metricsPort);
    expect(requests(after)).toBe(sent);
    expect(requests(after, { worker_id: removed[0]! })).toBe(requests(s, { worker_id: removed[0]! }));
  });

  it('kill -9 of an instance: PM2 restarts it, the total never moves backwards', async () => {
    const live = await pm2.onlinePids('api');
    const victim = live[0]!;
    const atKill = await union(metricsPort);
    expect(requests(atKill)).toBe(sent); // every file holds its counts already (the union is read from files)
    process.kill(Number(victim), 'SIGKILL');
    const seen: number[] = [];
    const replaced = await waitFor(async () => {
      const s = await union(metricsPort).catch(() => undefined);
      if (s) seen.push(requests(s));
      const p = await pm2.onlinePids('api');
      return p.length === 2 && !p.includes(victim) && s && JSON.stringify(livePidsIn(s)) === JSON.stringify(p) ? s : undefined;
    }, 30_000, 'the instance replaced');
    expect(seen.length).toBeGreaterThan(0);
    for (const n of seen) expect(n).toBe(sent);
    expect(requests(replaced, { worker_id: victim })).toBe(requests(atKill, { worker_id: victim }));
    expect(select(replaced, 'gunicorn_worker_memory_bytes', { worker_id: victim })).toEqual([]);
  });

  it('pm2 stop, then pm2 delete: the final counts of every instance are flushed and stay', async () => {
    const live = await pm2.onlinePids('api');
    await sendRequests(appPort, '/api', 6);
    sent += 6;
    // no wait for a periodic write: stop at once (PM2 sends SIGINT, the preload writes the final file)
    await pm2.run(['stop', 'api']);
    const s = await exporterScrape(dir);
    expect(requests(s)).toBe(sent);
    expect(total(s, 'gunicorn_worker_request_duration_seconds_count')).toBe(sent);
    expect(livePidsIn(s)).toEqual([]); // all ended: no gauges
    expect(live.every((p) => labelValues(s, 'gunicorn_worker_requests_total', 'worker_id').includes(p))).toBe(true);
    await pm2.run(['delete', 'api']);
    expect(await pm2.onlinePids('api')).toEqual([]);
    expect(requests(await exporterScrape(dir))).toBe(sent);
  });
});

describe('PM2 fork mode: 3 instances with increment_var, then pm2 delete', () => {
  const work = tmpDir('prefork-otel-pm2-fork-');
  const dir = join(work, 'metrics');
  const pm2 = new Pm2(work);
  afterAll(async () => {
    await pm2.kill();
    rmSync(work, { recursive: true, force: true });
  });

  it('each instance on its own app port, one metrics endpoint with exact counts, final counts after delete', async () => {
    const base = await freePortRun(3);
    const metricsPort = await freePort();
    ecosystem(join(work, 'ecosystem.config.js'), {
      name: 'forked', script: APP, exec_mode: 'fork', instances: 3, increment_var: 'APP_PORT',
      node_args: `-r ${REGISTER_CJS}`, kill_timeout: 5000,
      env: {
        APP_PORT: String(base), PROMETHEUS_MULTIPROC_DIR: dir, PROMETHEUS_METRICS_PORT: String(metricsPort),
        PROMETHEUS_BIND_ADDRESS: '127.0.0.1', PREFORK_OTEL_SNAPSHOT_INTERVAL: '0.2',
      },
    });
    await pm2.run(['start', 'ecosystem.config.js']);
    const pids = await waitFor(async () => { const p = await pm2.onlinePids('forked'); return p.length === 3 ? p : undefined; }, 30_000, '3 online');
    for (let i = 0; i < 3; i++) await waitForHttp(`http://127.0.0.1:${base + i}/ready`);
    // which pid listens where: each instance answers /ready itself; its pid is the one whose count grows
    const plan = [4, 5, 6];
    const byPort: string[] = [];
    let s: Sample[] = [];
    let expected = 3; // the three /ready probes
    for (let i = 0; i < 3; i++) {
      await sendRequests(base + i, '/work', plan[i]!);
      expected += plan[i]!;
      s = await waitFor(async () => { const x = await union(metricsPort); return requests(x) === expected ? x : undefined; }, 15_000, `union after port ${i}`);
      const owner = pids.find((p) => requests(s, { worker_id: p, endpoint: '/work' }) === plan[i] && !byPort.includes(p));
      expect(owner).toBeDefined();
      byPort.push(owner!);
    }
    expect([...byPort].sort()).toEqual(pids);
    expect(livePidsIn(s)).toEqual(pids);
    for (let i = 0; i < 3; i++) expect(requests(s, { worker_id: byPort[i]!, endpoint: '/work' })).toBe(plan[i]);

    await sendRequests(base + 2, '/last', 2);
    expected += 2;
    await pm2.run(['delete', 'forked']);
    const end = await exporterScrape(dir);
    expect(requests(end)).toBe(expected);
    expect(requests(end, { worker_id: byPort[2]!, endpoint: '/last' })).toBe(2);
    expect(livePidsIn(end)).toEqual([]);
    expect(pm2Logs(pm2)).not.toMatch(/prefork-otel: /);
  });
});

describe('pm2 start app -i 2 --node-args="-r prefork-otel/register" with the env from the shell', () => {
  const work = tmpDir('prefork-otel-pm2-cli-');
  const dir = join(work, 'metrics');
  const pm2 = new Pm2(work);
  afterAll(async () => {
    await pm2.kill();
    rmSync(work, { recursive: true, force: true });
  });

  it('both instances in one exact union on the port the shell set', async () => {
    const appPort = await freePort();
    const metricsPort = await freePort();
    await pm2.run(['start', APP, '-i', '2', '--name', 'cli', `--node-args=-r ${REGISTER_CJS}`], {
      APP_PORT: String(appPort), PROMETHEUS_MULTIPROC_DIR: dir, PROMETHEUS_METRICS_PORT: String(metricsPort),
      PROMETHEUS_BIND_ADDRESS: '127.0.0.1', PREFORK_OTEL_SNAPSHOT_INTERVAL: '0.2',
    });
    const pids = await waitFor(async () => { const p = await pm2.onlinePids('cli'); return p.length === 2 ? p : undefined; }, 30_000, '2 online');
    await waitFor(async () => JSON.stringify(livePidsIn(await union(metricsPort))) === JSON.stringify(pids), 30_000, 'both in the union');
    await sendRequests(appPort, '/cli', 12);
    const s = await waitFor(async () => { const x = await union(metricsPort); return requests(x) === 12 ? x : undefined; }, 15_000, 'union of 12');
    expect(labelValues(s, 'gunicorn_worker_requests_total', 'worker_id')).toEqual(pids);
    await pm2.run(['delete', 'cli']);
    expect(requests(await exporterScrape(dir))).toBe(12);
    expect(pm2Logs(pm2)).not.toMatch(/prefork-otel: /);
  });
});

describe('pm2-runtime (PM2 in the foreground, as in a container)', () => {
  const work = tmpDir('prefork-otel-pm2-runtime-');
  const dir = join(work, 'metrics');
  const pm2 = new Pm2(work);
  let runtime: Proc | undefined;
  afterAll(async () => {
    await runtime?.stop('SIGKILL');
    await pm2.kill();
    rmSync(work, { recursive: true, force: true });
  });

  it('cluster instances in one exact union; SIGINT to pm2-runtime flushes every final count', async () => {
    const appPort = await freePort();
    const metricsPort = await freePort();
    ecosystem(join(work, 'ecosystem.config.js'), {
      name: 'rt', script: APP, exec_mode: 'cluster', instances: 2, node_args: `-r ${REGISTER_CJS}`, kill_timeout: 5000,
      env: {
        APP_PORT: String(appPort), PROMETHEUS_MULTIPROC_DIR: dir, PROMETHEUS_METRICS_PORT: String(metricsPort),
        PROMETHEUS_BIND_ADDRESS: '127.0.0.1', PREFORK_OTEL_SNAPSHOT_INTERVAL: '0.2',
      },
    });
    runtime = startNode([PM2_RUNTIME_BIN, 'start', 'ecosystem.config.js'], { PM2_HOME: pm2.home }, { cwd: work });
    const pids = await waitFor(async () => {
      if (runtime!.child.exitCode !== null) throw new Error(`pm2-runtime exited: ${runtime!.stderr}`);
      const s = await union(metricsPort);
      return livePidsIn(s).length === 2 ? livePidsIn(s) : undefined;
    }, 30_000, 'two instances in the union');
    await sendRequests(appPort, '/rt', 10);
    const s = await waitFor(async () => { const x = await union(metricsPort); return requests(x) === 10 ? x : undefined; }, 15_000, 'union of 10');
    expect(labelValues(s, 'gunicorn_worker_requests_total', 'worker_id')).toEqual(pids);
    await sendRequests(appPort, '/rt', 4);
    const end = await runtime.stop('SIGINT', 20_000);
    expect(end.signal === null ? end.code : end.signal).not.toBe('SIGKILL');
    const final = await exporterScrape(dir);
    expect(requests(final)).toBe(14);
    expect(livePidsIn(final)).toEqual([]);
  });
});

describe('a systemd-style single service: node --import prefork-otel/register as the main process', () => {
  it('SIGTERM (systemctl stop): the final file holds every request, and the process ends by SIGTERM', async () => {
    const dir = tmpDir('prefork-otel-systemd-');
    const appPort = await freePort();
    const proc = startNode(['--import', REGISTER_ESM, APP], {
      APP_PORT: String(appPort), PROMETHEUS_MULTIPROC_DIR: dir, PREFORK_OTEL_SNAPSHOT_INTERVAL: '3600', OTEL_METRICS_EXPORTER: 'none',
    });
    try {
      await waitForHttp(`http://127.0.0.1:${appPort}/ready`);
      await sendRequests(appPort, '/svc', 7);
      expect(requestsInFiles(dir)).toBe(0); // only the start-up file so far (read directly: a scrape would refresh it)
      const end = await proc.stop('SIGTERM');
      expect(end.signal).toBe('SIGTERM'); // systemd sees the normal end of a stopped service
      expect(requests(await exporterScrape(dir), { endpoint: '/svc' })).toBe(7);
    } finally {
      await proc.stop('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** Can we make a pid namespace here? (root, and util-linux's unshare) */
function canUnshare(): boolean {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return false;
  const r = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true'], { timeout: 10_000 });
  return r.status === 0;
}

describe.skipIf(!canUnshare())('Node as PID 1 of a pid namespace (a container\'s init), emulated with unshare', () => {
  let child: ChildProcess | undefined;
  afterAll(() => {
    try { child?.kill('SIGKILL'); } catch { /* gone */ }
  });

  it('SIGTERM from outside (docker stop) ends PID 1 after the final flush, instead of being ignored', async () => {
    const dir = tmpDir('prefork-otel-pid1-');
    const appPort = await freePort();
    child = spawn('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child', process.execPath, '--import', REGISTER_ESM, APP], {
      env: { ...process.env, NODE_OPTIONS: '', APP_PORT: String(appPort), PROMETHEUS_MULTIPROC_DIR: dir, PREFORK_OTEL_SNAPSHOT_INTERVAL: '3600', OTEL_METRICS_EXPORTER: 'none' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr!.on('data', (d) => { err += d; });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child!.once('exit', (code, signal) => r({ code, signal })));
    try {
      await waitForHttp(`http://127.0.0.1:${appPort}/ready`, 20_000);
      // the node process: unshare's child, which is pid 1 in its namespace
      const nodePid = Number(readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
      expect(readFileSync(`/proc/${nodePid}/status`, 'utf8')).toMatch(/^NSpid:\s+\d+\s+1$/m);
      await waitFor(() => readdirSync(dir).some((n) => n.endsWith('_1.json')), 15_000, 'the file of pid 1');
      await sendRequests(appPort, '/pid1', 5);
      process.kill(nodePid, 'SIGTERM');
      const end = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(r, 20_000, 'hung'))]);
      expect(end).not.toBe('hung');
      expect(end).toEqual({ code: 128 + 15, signal: null }); // unshare passes on PID 1's exit status: 143, as a shell reports SIGTERM
      const s = await exporterScrape(dir);
      expect(requests(s, { endpoint: '/pid1' })).toBe(5);
      expect(livePidsIn(s)).toEqual([]);
      // nothing on stderr but the start line that OTEL_METRICS_EXPORTER=none asks for (docs/opentelemetry-coexistence.md)
      expect(err).toBe('prefork-otel: metrics endpoint off (OTEL_METRICS_EXPORTER=none; PREFORK_OTEL_EXPORTER takes precedence for prefork-otel alone)\n');
    } finally {
      try { child.kill('SIGKILL'); } catch { /* gone */ }
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
