/**
 * PROMETHEUS_MULTIPROC_DIR: independent preloaded processes (not a cluster) write their snapshots to
 * one directory; `prefork-otel exporter` (and the first of them to bind the port) serves the union.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FIXTURES, REGISTER_CJS, freePort, hit, labelValues, parseMetrics, scrape, scrapeText, select, startNode, tmpDir, total, value,
  waitFor, waitForHttp, type Proc, type Sample,
} from './helpers';

const EXPORTER = join(FIXTURES, 'exporter.cjs');

interface App { proc: Proc; port: number; pid: string; sent: number }

function requestsOf(s: Sample[], pid: string): number {
  return total(s, 'gunicorn_worker_requests_total', { worker_id: pid });
}

/** gunicorn_worker_requests_total as the process's file holds it now (read directly: no scrape asks for a fresh file) */
function requestsInFile(dir: string, pid: string): number {
  const name = readdirSync(dir).find((n) => n.endsWith(`_${pid}.json`))!;
  const f = JSON.parse(readFileSync(join(dir, name), 'utf8'));
  let n = 0;
  for (const sm of f.snapshot.scopeMetrics) {
    for (const m of sm.metrics) if (m.descriptor.name === 'gunicorn_worker_requests_total') for (const p of m.dataPoints) n += p.value;
  }
  return n;
}

describe('PROMETHEUS_MULTIPROC_DIR with three independent processes and the exporter', () => {
  const dir = tmpDir('prefork-otel-multiproc-');
  let apps: App[] = [];
  /** a fourth process: snapshots only at start and at exit, and it leaves the port to others */
  let quiet: App;
  let sharedPort: number;
  let exporterPort: number;
  let exporter: Proc;

  async function startApp(env: Record<string, string>): Promise<App> {
    const port = await freePort();
    const proc = startNode(['-r', REGISTER_CJS, join(FIXTURES, 'http-app.cjs')], {
      APP_PORT: String(port), PROMETHEUS_MULTIPROC_DIR: dir, PROMETHEUS_METRICS_PORT: String(sharedPort),
      PROMETHEUS_BIND_ADDRESS: '127.0.0.1', PREFORK_OTEL_SNAPSHOT_INTERVAL: '0.2', ...env,
    });
    await waitForHttp(`http://127.0.0.1:${port}/ready`);
    return { proc, port, pid: String(proc.child.pid), sent: 1 };
  }

  beforeAll(async () => {
    sharedPort = await freePort();
    exporterPort = await freePort();
    [apps, quiet] = await Promise.all([
      Promise.all([startApp({}), startApp({}), startApp({})]),
      startApp({ PREFORK_OTEL_SNAPSHOT_INTERVAL: '3600', OTEL_METRICS_EXPORTER: 'none' }),
    ]);
    exporter = startNode([EXPORTER, '--port', String(exporterPort), '--bind', '127.0.0.1', '--dir', dir]);
    await waitForHttp(`http://127.0.0.1:${exporterPort}/metrics`);
  });
  afterAll(async () => {
    await Promise.all([...apps.map((a) => a.proc.stop()), quiet?.proc.stop(), exporter?.stop()]);
  });

  it('the exporter serves the exact union; the process that bound the port first serves the same', async () => {
    const plan = [7, 11, 4];
    for (let i = 0; i < 3; i++) {
      const a = apps[i]!;
      for (let k = 0; k < plan[i]!; k++) await hit(`http://127.0.0.1:${a.port}/users/${k}`);
      await hit(`http://127.0.0.1:${a.port}/fail/x`);
      a.sent += plan[i]! + 1;
    }
    const expected = apps.reduce((n, a) => n + a.sent, 0) + quiet.sent;
    await waitFor(async () => {
      const s = await scrape(exporterPort);
      return [...apps, quiet].every((a) => requestsOf(s, a.pid) === a.sent);
    }, 15_000, 'every file written');
    // the quiet process's periodic write is an hour away, yet its file holds its /ready probe: a scrape
    // asks every process for a fresh file (SCRAPE_MARKER)
    expect(requestsInFile(dir, quiet.pid)).toBe(quiet.sent);
    const text = await scrapeText(exporterPort);
    const s = parseMetrics(text);
    for (let i = 0; i < 3; i++) {
      const a = apps[i]!;
      expect(value(s, 'gunicorn_worker_requests_total', { worker_id: a.pid, method: 'GET', endpoint: '/users/:id' })).toBe(plan[i]);
      expect(value(s, 'gunicorn_worker_failed_requests_total', { worker_id: a.pid, endpoint: '/fail/x', error_type: 'RequestError' })).toBe(1);
      expect(value(s, 'gunicorn_worker_uptime_seconds', { worker_id: a.pid })).toBeGreaterThan(0);
      expect(value(s, 'gunicorn_worker_memory_bytes', { worker_id: a.pid })).toBeGreaterThan(0);
    }
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(expected);
    expect(total(s, 'gunicorn_worker_request_duration_seconds_count')).toBe(expected);
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(check.stderr + check.stdout).toBe('');
    expect(check.status).toBe(0);

    // one of the three serves the union on the shared port (the quiet one left it to them)
    const viaApp = await scrape(sharedPort);
    const server = select(viaApp, 'target_info')[0]!.labels.process_pid!;
    expect(apps.map((a) => a.pid)).toContain(server);
    for (const a of apps) expect(requestsOf(viaApp, a.pid)).toBe(a.sent);
    // one file per process
    expect(readdirSync(dir).filter((n) => n.endsWith('.json')).map((n) => /_(\d+)\.json$/.exec(n)![1]).sort())
      .toEqual([...apps.map((a) => a.pid), quiet.pid].sort());
  });

  it('kill -9 of the serving process: its counters stay, its gauges go, another process takes the port', async () => {
    const server = select(await scrape(sharedPort), 'target_info')[0]!.labels.process_pid!;
    const victim = apps.find((a) => a.pid === server)!;
    await hit(`http://127.0.0.1:${victim.port}/users/last`);
    victim.sent += 1;
    await waitFor(async () => requestsOf(await scrape(exporterPort), victim.pid) === victim.sent, 15_000, 'victim file current');
    victim.proc.child.kill('SIGKILL');
    await victim.proc.exited;

    const s = await scrape(exporterPort);
    expect(requestsOf(s, victim.pid)).toBe(victim.sent);
    expect(total(s, 'gunicorn_worker_request_duration_seconds_count', { worker_id: victim.pid })).toBe(victim.sent);
    for (const name of ['gunicorn_worker_memory_bytes', 'gunicorn_worker_cpu_percent', 'gunicorn_worker_uptime_seconds', 'gunicorn_worker_state']) {
      expect(select(s, name, { worker_id: victim.pid })).toEqual([]);
    }
    // mark_process_dead: its file now says so, and holds no gauges
    const file = readdirSync(dir).find((n) => n.endsWith(`_${victim.pid}.json`))!;
    const content = JSON.parse(readFileSync(join(dir, file), 'utf8'));
    expect(content.dead).toBe(true);
    const kept = content.snapshot.scopeMetrics.flatMap((sm: { metrics: { dataPointType: number; isMonotonic?: boolean }[] }) => sm.metrics);
    expect(kept.length).toBeGreaterThan(0);
    // DataPointType: 0 HISTOGRAM, 3 SUM (monotonic: a counter); no GAUGE (2)
    for (const m of kept) expect(m.dataPointType === 0 || (m.dataPointType === 3 && m.isMonotonic === true)).toBe(true);

    const others = apps.filter((a) => a !== victim);
    const after = await waitFor(async () => {
      const x = await scrape(sharedPort);
      return select(x, 'target_info')[0]!.labels.process_pid !== victim.pid ? x : undefined;
    }, 15_000, 'another process serving the port');
    expect(others.map((a) => a.pid)).toContain(select(after, 'target_info')[0]!.labels.process_pid);
    for (const a of apps) expect(requestsOf(after, a.pid)).toBe(a.sent);
    apps = others;
  });

  it('SIGTERM: a process whose periodic snapshot is far away still writes its final counts', async () => {
    for (let k = 0; k < 5; k++) await hit(`http://127.0.0.1:${quiet.port}/items/${k}`);
    quiet.sent += 5;
    // no scrape in between (a scrape would ask for a fresh file): the file holds the count of the first test's scrape only
    expect(requestsInFile(dir, quiet.pid)).toBe(1);
    const end = await quiet.proc.stop('SIGTERM');
    expect(end.signal).toBe('SIGTERM'); // it still ends the way SIGTERM ends a process
    const s = await scrape(exporterPort);
    expect(requestsOf(s, quiet.pid)).toBe(quiet.sent);
    expect(value(s, 'gunicorn_worker_requests_total', { worker_id: quiet.pid, endpoint: '/items/:id' })).toBe(5);
    expect(select(s, 'gunicorn_worker_memory_bytes', { worker_id: quiet.pid })).toEqual([]);
  });

  it('process.exit(): the synchronous final write still carries every request, and the exit code is untouched', async () => {
    const port = await freePort();
    const script = `require('node:http').createServer((req, res) => {
      if (req.url === '/exit') { res.end('bye', () => setImmediate(() => process.exit(3))); return; }
      res.end('ok');
    }).listen(${port}, '127.0.0.1');`;
    const proc = startNode(['-r', REGISTER_CJS, '-e', script], {
      PROMETHEUS_MULTIPROC_DIR: dir, PREFORK_OTEL_SNAPSHOT_INTERVAL: '3600', OTEL_METRICS_EXPORTER: 'none',
    });
    try {
      await waitForHttp(`http://127.0.0.1:${port}/ready`);
      for (let k = 0; k < 8; k++) await hit(`http://127.0.0.1:${port}/orders/${k}`);
      const pid = String(proc.child.pid);
      await waitFor(() => readdirSync(dir).some((n) => n.endsWith(`_${pid}.json`)), 15_000, 'the start-up file');
      expect(requestsInFile(dir, pid)).toBe(0); // only the start-up file (and no scrape in between to refresh it)
      await hit(`http://127.0.0.1:${port}/exit`);
      expect((await proc.exited).code).toBe(3);
      const s = await scrape(exporterPort);
      expect(requestsOf(s, pid)).toBe(1 + 8 + 1);
      expect(value(s, 'gunicorn_worker_requests_total', { worker_id: pid, endpoint: '/orders/:id' })).toBe(8);
      expect(select(s, 'gunicorn_worker_uptime_seconds', { worker_id: pid })).toEqual([]);
    } finally {
      await proc.stop('SIGKILL');
    }
  });
});

describe('PM2-like cluster mode: a primary without the preload gives it to its node:cluster workers', () => {
  /** GET on a new connection, so node:cluster's round-robin spreads the scrapes over the workers */
  function fresh(port: number, path: string): Promise<string> {
    return new Promise((resolve, reject) => {
      request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { body += d; });
        res.on('end', () => resolve(body));
      }).on('error', reject).end();
    });
  }

  it('with PROMETHEUS_MULTIPROC_DIR every worker answers on the shared port with the same exact union', async () => {
    const dir = tmpDir('prefork-otel-pm2-');
    const appPort = await freePort();
    const metricsPort = await freePort();
    const app = startNode([join(FIXTURES, 'cluster-app.cjs')], {
      WORKER_PRELOAD: REGISTER_CJS, CLUSTER_WORKERS: '2', APP_PORT: String(appPort), PROMETHEUS_METRICS_PORT: String(metricsPort),
      PROMETHEUS_BIND_ADDRESS: '127.0.0.1', PROMETHEUS_MULTIPROC_DIR: dir, PREFORK_OTEL_SNAPSHOT_INTERVAL: '0.2',
    });
    try {
      await waitFor(() => app.stdout.match(/^forked /gm)?.length === 2, 15_000, 'forks');
      const pids = [...app.stdout.matchAll(/^forked (\d+)$/gm)].map((m) => m[1]!).sort();
      // both workers up (each has written its file) before any request, so both can get some
      await waitFor(async () => JSON.stringify(labelValues(parseMetrics(await fresh(metricsPort, '/metrics')), 'gunicorn_worker_uptime_seconds', 'worker_id'))
        === JSON.stringify(pids), 15_000, 'both workers in the union');
      expect(await fresh(appPort, '/pid')).not.toBe('');
      const sent = 1 + 20; // the probe, then 20
      for (let i = 0; i < 20; i++) await fresh(appPort, '/');
      await waitFor(async () => total(parseMetrics(await fresh(metricsPort, '/metrics')), 'gunicorn_worker_requests_total') === sent, 15_000, 'union');
      // scrape until each worker has answered at least once: every answer is the same exact union
      const answeredBy = new Set<string>();
      for (let i = 0; i < 40 && answeredBy.size < 2; i++) {
        const s = parseMetrics(await fresh(metricsPort, '/metrics'));
        answeredBy.add(select(s, 'target_info')[0]!.labels.process_pid!);
        expect(total(s, 'gunicorn_worker_requests_total')).toBe(sent);
        expect(labelValues(s, 'gunicorn_worker_requests_total', 'worker_id')).toEqual(pids);
        expect(labelValues(s, 'gunicorn_worker_uptime_seconds', 'worker_id')).toEqual(pids);
      }
      expect([...answeredBy].sort()).toEqual(pids);
      expect(app.stderr).toBe('');
    } finally {
      await app.stop();
    }
  });

  it('without it, each worker warns once that a scrape reaches one worker only', async () => {
    const appPort = await freePort();
    const app = startNode([join(FIXTURES, 'cluster-app.cjs')], {
      WORKER_PRELOAD: REGISTER_CJS, CLUSTER_WORKERS: '2', APP_PORT: String(appPort), PROMETHEUS_METRICS_PORT: String(await freePort()),
      PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
    });
    try {
      await waitFor(() => app.stderr.split('\n').filter((l) => l.includes('set PROMETHEUS_MULTIPROC_DIR')).length === 2, 15_000, 'warnings');
    } finally {
      await app.stop();
    }
  });
});

describe('multiproc user errors', () => {
  it('an unwritable PROMETHEUS_MULTIPROC_DIR stops the preloaded process with one line', async () => {
    const base = tmpDir();
    const notADir = join(base, 'file');
    writeFileSync(notADir, 'x');
    const app = startNode(['-r', REGISTER_CJS, join(FIXTURES, 'http-app.cjs')], {
      APP_PORT: String(await freePort()), PROMETHEUS_MULTIPROC_DIR: join(notADir, 'sub'),
    });
    const end = await app.exited;
    expect(end.code).not.toBe(0);
    expect(app.stderr.trim().split('\n')).toHaveLength(1);
    expect(app.stderr).toMatch(/^prefork-otel: invalid PROMETHEUS_MULTIPROC_DIR=".*\/file\/sub": expected a writable directory/);
  });

  it('the exporter: an unwritable --dir, an unknown flag, a bad port → one line, exit 2', async () => {
    const base = tmpDir();
    writeFileSync(join(base, 'file'), 'x');
    const cases: Array<[string[], RegExp]> = [
      [['--dir', join(base, 'file', 'sub')], /^prefork-otel: invalid --dir=".*": expected a writable directory/],
      [['--dir', base, '--frobnicate'], /^prefork-otel exporter: unknown option "--frobnicate": expected one of --port, --bind, --dir, --path, --help$/],
      [['--dir', base, '--port', '70000'], /^prefork-otel: invalid --port="70000": expected an integer from 0 to 65535$/],
      [['--dir', base, '--port'], /^prefork-otel exporter: option --port needs a value$/],
      [['--dir', base, 'extra'], /^prefork-otel exporter: unexpected argument "extra"/],
    ];
    await Promise.all(cases.map(async ([args, message]) => {
      const p = startNode([EXPORTER, ...args]);
      const end = await p.exited;
      expect(end.code, args.join(' ')).toBe(2);
      expect(p.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(p.stderr.trim(), args.join(' ')).toMatch(message);
    }));
  });
});
