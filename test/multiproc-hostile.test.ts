/**
 * PROMETHEUS_MULTIPROC_DIR as untrusted input: what other processes and users may leave in the
 * directory (a FIFO named *.json, a /dev/zero symlink, garbage, a truncated file, a file of valid shape
 * with `dataPoints: null`, an unreadable file, a huge file) costs that file only — every scrape stays
 * 200 with the exact counts of the honest processes, answers before a generous deadline, each bad file
 * is named once on stderr, and the app's own threadpool work keeps answering. Then the writer's side:
 * a full disk (a private tmpfs in a mount namespace), links planted at temp names, the directory check
 * at start, and file modes from the umask.
 */
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync, chownSync, lchownSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLI, FIXTURES, REGISTER_CJS, freePort, parseMetrics, startNode, tmpDir, total, waitFor, waitForHttp, type Proc, type Sample,
} from './helpers';

const FS_APP = join(FIXTURES, 'fs-app.cjs');
const EXPORTER = join(FIXTURES, 'exporter.cjs');
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const NOBODY = 65534;

/** A scrape that must answer 200 before a generous deadline (no wall-clock assertion beyond that). */
async function scrapeOk(port: number): Promise<Sample[]> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(15_000) });
  const body = await r.text();
  if (r.status !== 200) throw new Error(`scrape status ${r.status}: ${body.slice(0, 300)}`);
  return parseMetrics(body);
}

async function get(port: number, path: string): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(15_000) });
  return r.text();
}

const requests = (s: Sample[], match: Record<string, string> = {}) => total(s, 'gunicorn_worker_requests_total', match);

describe('hostile files in the directory', () => {
  const dir = tmpDir('prefork-otel-hostile-');
  const metricsPort = { value: 0 };
  let apps: { proc: Proc; port: number; pid: string; sent: number }[] = [];
  let exporter: Proc | undefined;
  let exporterPort = 0;
  const planted: Record<string, string> = {};

  beforeAll(async () => {
    chmodSync(dir, 0o1777); // sticky and world-writable like /tmp: the exporter runs as another user below
    metricsPort.value = await freePort();
    apps = await Promise.all([0, 1].map(async () => {
      const port = await freePort();
      const proc = startNode(['-r', REGISTER_CJS, FS_APP], {
        APP_PORT: String(port), PROMETHEUS_MULTIPROC_DIR: dir, PROMETHEUS_METRICS_PORT: String(metricsPort.value),
        PROMETHEUS_BIND_ADDRESS: '127.0.0.1', PREFORK_OTEL_SNAPSHOT_INTERVAL: '0.2',
      });
      await waitForHttp(`http://127.0.0.1:${port}/ready`);
      return { proc, port, pid: String(proc.child.pid), sent: 1 };
    }));
    // a valid file to make bad ones from
    const honest = await waitFor(() => readdirSync(dir).find((n) => n.endsWith(`_${apps[0]!.pid}.json`)), 15_000, 'a start-up file');
    const template = JSON.parse(readFileSync(join(dir, honest), 'utf8'));
    const fake = (pid: number, edit: (f: any) => void = () => undefined) => {
      const f = structuredClone(template);
      f.instance = 'planted-host';
      f.pid = pid;
      f.snapshot.pid = pid;
      f.writtenAt = Date.now();
      edit(f);
      return { name: `planted-host_${pid}.json`, f };
    };
    // a FIFO named *.json: with no writer, a blocking open() would hang a threadpool thread forever
    expect(spawnSync('mkfifo', [join(dir, 'fifo.json')]).status).toBe(0);
    planted['fifo.json'] = 'a FIFO';
    // a symlink to /dev/zero: an endless file
    symlinkSync('/dev/zero', join(dir, 'zero.json'));
    planted['zero.json'] = 'a symbolic link';
    // valid shape, bad content
    const nul = fake(4000001, (f) => { f.snapshot.scopeMetrics.find((sm: any) => sm.metrics.length > 0).metrics[0].dataPoints = null; });
    writeFileSync(join(dir, nul.name), JSON.stringify(nul.f));
    planted[nul.name] = 'dataPoints is not an array';
    // garbage, and a truncated file
    writeFileSync(join(dir, 'garbage.json'), Buffer.from([0xff, 0x00, 0x7b, 0x22, 0xfe, 0x10, 0x0a]));
    planted['garbage.json'] = 'not JSON';
    const cut = fake(4000002);
    const text = JSON.stringify(cut.f);
    writeFileSync(join(dir, cut.name), text.slice(0, Math.floor(text.length / 2)));
    planted[cut.name] = 'not JSON';
    // a file that claims counts under another process's name
    const liar = fake(4000004);
    writeFileSync(join(dir, 'planted-host_1234.json'), JSON.stringify(liar.f));
    planted['planted-host_1234.json'] = 'its name does not match';
    // unreadable (mode 000, written by another user with umask 077): root can still read it — the
    // exporter below runs as nobody, for whom it is unreadable; its content is valid but carries no counts
    const locked = fake(4000003, (f) => { for (const sm of f.snapshot.scopeMetrics) sm.metrics = []; });
    writeFileSync(join(dir, locked.name), JSON.stringify(locked.f), { mode: 0o000 });
    if (isRoot) chownSync(join(dir, locked.name), 1, 1);
    // huge (sparse: 1 GiB that costs no disk)
    writeFileSync(join(dir, 'huge.json'), '');
    truncateSync(join(dir, 'huge.json'), 1 << 30);
    planted['huge.json'] = 'more than the limit';
    // a directory
    mkdirSync(join(dir, 'sub.json'));
    planted['sub.json'] = 'a directory';

    exporterPort = await freePort();
    // the exporter as another user (root ignores file modes): nobody, when we are root
    const args = [EXPORTER, '--port', String(exporterPort), '--bind', '127.0.0.1', '--dir', dir];
    exporter = isRoot
      ? startNode(['-e', `process.setgid(${NOBODY}); process.setgroups([]); process.setuid(${NOBODY}); process.argv.splice(1, 0, ${JSON.stringify(EXPORTER)}); require(${JSON.stringify(EXPORTER)})`, '--', ...args.slice(1)])
      : startNode(args);
    await waitForHttp(`http://127.0.0.1:${exporterPort}/metrics`);
  });
  afterAll(async () => {
    await Promise.all([...apps.map((a) => a.proc.stop()), exporter?.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('every scrape (app endpoint and exporter) is 200 with the exact counts of the honest processes', async () => {
    for (const a of apps) {
      for (let k = 0; k < 5 + Number(a === apps[1]); k++) await get(a.port, `/items/${k}`);
      a.sent += 5 + Number(a === apps[1]);
    }
    const expected = apps.reduce((n, a) => n + a.sent, 0);
    // more scrapes than libuv has threads (4): a FIFO read that blocked would have exhausted the pool
    for (let i = 0; i < 8; i++) {
      for (const port of [metricsPort.value, exporterPort]) {
        const s = await waitFor(async () => {
          const x = await scrapeOk(port);
          return apps.every((a) => requests(x, { worker_id: a.pid }) === a.sent) ? x : undefined;
        }, 15_000, `exact counts on ${port}`);
        expect(requests(s)).toBe(expected);
        expect(total(s, 'gunicorn_worker_request_duration_seconds_count')).toBe(expected);
      }
    }
    // the app's own threadpool work still answers
    for (const a of apps) expect(await get(a.port, '/fs')).toMatch(/^\d+ \d+$/);
    for (const a of apps) a.sent += 1;
  });

  it('each bad file is named once (rate-limited) by the process that serves, with the reason', async () => {
    const serving = apps.map((a) => a.proc).find((p) => p.stderr.includes('multiproc file skipped'))!;
    expect(serving).toBeDefined();
    for (const [name, why] of Object.entries(planted)) {
      const lines = serving.stderr.split('\n').filter((l) => l.includes(`multiproc file skipped: ${join(dir, name)}: `));
      expect(lines.length, `${name}: ${serving.stderr}`).toBe(1);
      expect(lines[0]).toContain(why);
    }
    // the exporter (another user) also cannot read the locked file, and says so once
    if (isRoot) {
      const locked = exporter!.stderr.split('\n').filter((l) => l.includes('planted-host_4000003.json'));
      expect(locked).toEqual([`prefork-otel: multiproc file skipped: ${join(dir, 'planted-host_4000003.json')}: cannot open (EACCES)`]);
    }
    expect(serving.stderr).not.toMatch(/at .*\.js:\d+/); // no stack trace
  });
});

describe('the writer: full disk, planted links, the directory check, file modes', () => {
  const canMountNs = isRoot && spawnSync('unshare', ['--mount', 'true']).status === 0;

  it.skipIf(!canMountNs)('ENOSPC (a full tmpfs): one warning, the endpoint keeps serving this process\'s exact counts', async () => {
    const dir = tmpDir('prefork-otel-enospc-');
    const appPort = await freePort();
    const metricsPort = await freePort();
    // a private mount namespace: the 64 KiB tmpfs disappears with the process
    const script = `mount -t tmpfs -o size=64k tmpfs "$DIR" && (cat /dev/zero > "$DIR/fill" 2>/dev/null; true) && exec "$NODE" -r "$REGISTER" "$APP"`;
    const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], {
      env: {
        ...process.env, NODE_OPTIONS: '', DIR: dir, NODE: process.execPath, REGISTER: REGISTER_CJS, APP: FS_APP,
        APP_PORT: String(appPort), PROMETHEUS_MULTIPROC_DIR: dir, PROMETHEUS_METRICS_PORT: String(metricsPort),
        PROMETHEUS_BIND_ADDRESS: '127.0.0.1', PREFORK_OTEL_SNAPSHOT_INTERVAL: '0.1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr!.on('data', (d) => { err += d; });
    try {
      await waitForHttp(`http://127.0.0.1:${appPort}/ready`, 20_000);
      for (let k = 0; k < 9; k++) await get(appPort, '/x');
      for (let i = 0; i < 5; i++) {
        const s = await scrapeOk(metricsPort);
        // unshare and sh exec: the node process has unshare's pid; 1 /ready + 9
        expect(requests(s, { worker_id: String(child.pid) })).toBe(10);
        expect(requests(s)).toBe(10);
      }
      const lines = err.split('\n').filter((l) => l.includes('cannot write'));
      expect(lines.length, err).toBe(1);
      expect(lines[0]).toContain('(ENOSPC)');
    } finally {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    }
  });

  /** Run a fixture that drives a MultiprocWriter (MP = the built module) in a fresh directory; what it printed, its pid and what it left. */
  function writerFixture(fixture: string): { status: number | null; stdout: string; pid: number; names: string[] } {
    const dir = tmpDir('prefork-otel-writer-');
    try {
      const r = spawnSync(process.execPath, [join(FIXTURES, fixture)], {
        env: { ...process.env, NODE_OPTIONS: '', MP: join(REGISTER_CJS, '../export/multiproc.js'), DIR: dir }, encoding: 'utf8', timeout: 30_000,
      });
      return { status: r.status, stdout: r.stdout, pid: r.pid, names: readdirSync(dir) };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('an exit in the middle of an asynchronous write leaves no temporary file behind', () => {
    // the exit's synchronous final write used to leave the cut-short write's .tmp file in the shared directory
    const r = writerFixture('multiproc-exit-mid-write.cjs');
    expect(r.status).toBe(0);
    // the race really happened: the asynchronous write's temporary file existed at the exit
    expect(r.stdout).toBe('tmp before exit: 1\n');
    // only the final file: nothing else, in particular no `.…tmp`
    expect(r.names).toHaveLength(1);
    expect(r.names[0]!.endsWith(`_${r.pid}.json`)).toBe(true);
  });

  it('close() (run before a signal is re-raised, when no exit hook runs) stops the writes and leaves no temporary file', () => {
    const r = writerFixture('multiproc-close.cjs');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ tmpAtClose: 0, rewritten: false, files: 1 });
    expect(r.names).toHaveLength(1);
  });

  it('links planted at the temporary names of the old predictable scheme are never followed', async () => {
    const dir = tmpDir('prefork-otel-tmplink-');
    const victim = join(tmpDir('prefork-otel-victim-'), 'secret');
    writeFileSync(victim, 'root only\n', { mode: 0o600 });
    const appPort = await freePort();
    const proc = startNode(['-r', REGISTER_CJS, FS_APP], {
      APP_PORT: String(appPort), PROMETHEUS_MULTIPROC_DIR: dir, PREFORK_OTEL_SNAPSHOT_INTERVAL: '0.05', OTEL_METRICS_EXPORTER: 'none',
    });
    try {
      await waitForHttp(`http://127.0.0.1:${appPort}/ready`);
      // the start-up file is written asynchronously: it may land just after the first answer
      const name = await waitFor(() => readdirSync(dir).find((n) => n.endsWith(`_${proc.child.pid}.json`)), 15_000, 'the start-up file');
      const links = new Set<string>();
      for (let seq = 1; seq <= 300; seq++) {
        const link = `.${name}.${proc.child.pid}.${seq}.tmp`;
        try { symlinkSync(victim, join(dir, link)); links.add(link); } catch { /* taken */ }
      }
      const first = JSON.parse(readFileSync(join(dir, name), 'utf8')).writtenAt;
      await waitFor(() => JSON.parse(readFileSync(join(dir, name), 'utf8')).writtenAt > first + 300, 15_000, 'several more writes');
      expect(readFileSync(victim, 'utf8')).toBe('root only\n');
      await proc.stop();
      expect(readFileSync(victim, 'utf8')).toBe('root only\n');
      // our temp files do not linger either: only the planted links and our file
      expect(readdirSync(dir).filter((n) => !links.has(n))).toEqual([name]);
    } finally {
      await proc.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!isRoot)('a directory others can write to that we do not own: one line, exit 2 (preload and exporter); sticky is accepted', async () => {
    const base = tmpDir('prefork-otel-dircheck-');
    const open = join(base, 'open');
    mkdirSync(open);
    chownSync(open, NOBODY, NOBODY);
    chmodSync(open, 0o777);
    const r = spawnSync(process.execPath, ['-r', REGISTER_CJS, '-e', 'setTimeout(() => {}, 10)'], {
      env: { ...process.env, NODE_OPTIONS: '', PROMETHEUS_MULTIPROC_DIR: open, OTEL_METRICS_EXPORTER: 'none' }, encoding: 'utf8', timeout: 20_000,
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(`prefork-otel: invalid PROMETHEUS_MULTIPROC_DIR=${JSON.stringify(open)}: owned by uid ${NOBODY}, not by us (uid 0), and not sticky: `
      + 'others could replace our files; use a directory owned by the user the processes run as (docs/cluster.md)\n');
    const e = spawnSync(process.execPath, [CLI, 'exporter', '--dir', open, '--port', '0'], { env: { ...process.env, NODE_OPTIONS: '' }, encoding: 'utf8', timeout: 20_000 });
    expect(e.status).toBe(2);
    expect(e.stderr.trim().split('\n')).toHaveLength(1);
    expect(e.stderr).toContain('invalid --dir=');

    // a link to a good directory, but the link is someone else's: refused
    const mine = join(base, 'mine');
    mkdirSync(mine);
    const link = join(base, 'link');
    symlinkSync(mine, link);
    lchownSync(link, NOBODY, NOBODY);
    const l = spawnSync(process.execPath, ['-r', REGISTER_CJS, '-e', ''], {
      env: { ...process.env, NODE_OPTIONS: '', PROMETHEUS_MULTIPROC_DIR: link, OTEL_METRICS_EXPORTER: 'none' }, encoding: 'utf8', timeout: 20_000,
    });
    expect(l.status).toBe(2);
    expect(l.stderr).toContain(`a symbolic link owned by uid ${NOBODY}`);

    // sticky (like /tmp), not ours: accepted
    chmodSync(open, 0o1777);
    const ok = spawnSync(process.execPath, ['-r', REGISTER_CJS, '-e', 'setTimeout(() => {}, 10)'], {
      env: { ...process.env, NODE_OPTIONS: '', PROMETHEUS_MULTIPROC_DIR: open, OTEL_METRICS_EXPORTER: 'none' }, encoding: 'utf8', timeout: 20_000,
    });
    // accepted: nothing on stderr but the start line OTEL_METRICS_EXPORTER=none asks for (docs/opentelemetry-coexistence.md)
    expect(ok.stderr).toBe('prefork-otel: metrics endpoint off (OTEL_METRICS_EXPORTER=none; PREFORK_OTEL_EXPORTER takes precedence for prefork-otel alone)\n');
    expect(ok.status).toBe(0);
    expect(readdirSync(open).filter((n) => n.endsWith('.json'))).toHaveLength(1);
    rmSync(base, { recursive: true, force: true });
  });

  it('file modes are what the umask gives (077 → 0600, 022 → 0644)', () => {
    const dir = tmpDir('prefork-otel-umask-');
    for (const [mask, mode] of [['077', 0o600], ['022', 0o644]] as const) {
      const r = spawnSync('sh', ['-c', `umask ${mask}; exec "$0" -r "$1" -e 'process.exit(0)'`, process.execPath, REGISTER_CJS], {
        env: { ...process.env, NODE_OPTIONS: '', PROMETHEUS_MULTIPROC_DIR: dir, OTEL_METRICS_EXPORTER: 'none' }, encoding: 'utf8', timeout: 20_000,
      });
      expect(r.status, r.stderr).toBe(0);
      const file = readdirSync(dir).find((n) => n.endsWith(`_${r.pid}.json`))!;
      expect(statSync(join(dir, file)).mode & 0o777).toBe(mode);
    }
    rmSync(dir, { recursive: true, force: true });
  });
});
