/**
 * The runner's master next to real gunicorn (Debian's python3-gunicorn 20.1, `/usr/bin/python3 -m
 * gunicorn`, with a tiny WSGI app in a temp dir): the same signals and failures on both, compared on
 * what an operator sees — worker pids after the signal, the client's result, the exact log lines
 * (timestamps and pids normalised), the exit code.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { CLI, FIXTURES, freePort, ROOT, tmpDir, total, value, waitFor } from './helpers';
import { logLines, startRunner, type Runner } from './runner-helpers';

const PYTHON = '/usr/bin/python3';
const APP = join(FIXTURES, 'runner-http.cjs');

/** the same endpoints as runner-http.cjs, for gunicorn */
const WSGI = `
import os, time
def application(environ, start_response):
    path = environ.get('PATH_INFO', '/')
    qs = dict(p.split('=') for p in environ.get('QUERY_STRING', '').split('&') if '=' in p)
    if path == '/slow':
        time.sleep(int(qs.get('ms', '0')) / 1000.0)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
`;

interface Server2 {
  child: ChildProcess;
  readonly out: string;
  exited: Promise<number | null>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => { for (const c of live) try { c.kill('SIGKILL'); } catch { /* gone */ } });

/** spawn a process, collect stdout + stderr (gunicorn and the runner both log to stderr) */
function launch(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}): Server2 {
  const child = spawn(cmd, args, { cwd, env: { ...process.env, NODE_OPTIONS: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let out = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { out += d; });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => { live.delete(child); resolve(code); }));
  return { child, get out() { return out; }, exited };
}

function gunicornDir(extra: Record<string, string> = {}): string {
  const dir = tmpDir('prefork-otel-gunicorn-');
  writeFileSync(join(dir, 'app.py'), WSGI);
  for (const [name, text] of Object.entries(extra)) writeFileSync(join(dir, name), text);
  return dir;
}

function gunicorn(args: string[], dir: string): Server2 {
  return launch(PYTHON, ['-m', 'gunicorn', ...args], dir);
}

/** the runner's command (its stderr holds the master's and the workers' log lines) */
function runner(args: string[], env: Record<string, string> = {}): Server2 {
  return launch(process.execPath, [CLI, ...args], ROOT, { PROMETHEUS_METRICS_PORT: '0', PROMETHEUS_BIND_ADDRESS: '127.0.0.1', ...env });
}


/** the process's children (its workers) */
function children(pid: number): string[] {
  return spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).sort();
}

async function get(url: string, ms = 10_000): Promise<number> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(ms) });
    await r.arrayBuffer();
    return r.status;
  } catch {
    return 0;
  }
}

function pidGone(pid: number): boolean {
  try { process.kill(pid, 0); return false; } catch { return true; }
}

async function stopBoth(...ps: Array<{ child: ChildProcess; exited: Promise<unknown> } | undefined>): Promise<void> {
  for (const p of ps) if (p && p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
  await Promise.all(ps.map(async (p) => {
    if (!p) return;
    const t = setTimeout(() => p.child.kill('SIGKILL'), 20_000);
    await p.exited;
    clearTimeout(t);
  }));
}

describe('-w 2 side by side with gunicorn 20.1: WINCH, HUP, kill -9 of a worker', () => {
  let g: Server2;
  let gPort: number;
  let r: Runner;

  beforeAll(async () => {
    gPort = await freePort();
    g = gunicorn(['-w', '2', '-b', `127.0.0.1:${gPort}`, 'app:application'], gunicornDir());
    r = await startRunner(['-w', '2', APP], { workers: 2 });
    await waitFor(() => children(g.child.pid!).length === 2 && logLines(g.out).filter((l) => l.msg.startsWith('Booting worker')).length === 2, 20_000, 'gunicorn\'s two workers');
  });
  afterAll(async () => {
    await stopBoth(g, r?.proc);
  });

  it('"Booting worker with pid: N" is logged by the worker itself (under pid N) on both', () => {
    for (const out of [g.out, r.proc.stderr]) {
      const boots = logLines(out).filter((l) => l.msg.startsWith('Booting worker with pid: '));
      expect(boots).toHaveLength(2);
      for (const b of boots) expect(b).toEqual({ pid: b.msg.slice('Booting worker with pid: '.length), level: 'INFO', msg: b.msg });
    }
  });

  it('WINCH (not daemonized) is ignored by both: the same workers keep serving', async () => {
    const gBefore = children(g.child.pid!);
    const rBefore = children(r.proc.child.pid!);
    expect(rBefore).toEqual(await r.running());
    g.child.kill('SIGWINCH');
    r.signal('SIGWINCH');
    // the signal was handled by both (and counted, with what the runner did: nothing)
    for (const [out, pid] of [[g, g.child.pid], [r.proc, r.proc.child.pid]] as const) {
      await waitFor(() => logLines('out' in out ? out.out : out.stderr).some((l) => l.pid === String(pid) && l.msg === 'Handling signal: winch'), 10_000, 'WINCH handled');
    }
    await waitFor(async () => value(await r.scrape(), 'gunicorn_master_signals_total', { signal: 'winch', action: 'ignored' }) === 1, 10_000, 'WINCH counted');
    // every request is answered, by the same workers as before
    const statuses = await Promise.all([...Array(4)].map(() => get(`http://127.0.0.1:${gPort}/`)).concat([...Array(4)].map(() => get(r.url('/')))));
    expect(statuses).toEqual(Array(8).fill(200));
    expect(children(g.child.pid!)).toEqual(gBefore);
    expect(children(r.proc.child.pid!)).toEqual(rBefore);
    expect(await r.running()).toEqual(rBefore);
    expect(total(await r.scrape(), 'gunicorn_master_worker_restarts_total')).toBe(0);
  });

  it('HUP: both log "Hang up: Master" under the master\'s pid and replace both workers', async () => {
    const gOld = children(g.child.pid!);
    const rOld = await r.running();
    g.child.kill('SIGHUP');
    r.signal('SIGHUP');
    await r.waitRunning(2, rOld);
    await waitFor(() => { const c = children(g.child.pid!); return c.length === 2 && !c.some((p) => gOld.includes(p)); }, 20_000, 'gunicorn\'s new workers');
    for (const [out, pid] of [[g.out, g.child.pid], [r.proc.stderr, r.proc.child.pid]] as const) {
      // the master's own lines (a worker's may interleave)
      const lines = logLines(out).filter((l) => l.pid === String(pid));
      const hup = lines.findIndex((l) => l.msg === 'Handling signal: hup');
      expect(hup).toBeGreaterThanOrEqual(0);
      expect(lines[hup + 1]).toEqual({ pid: String(pid), level: 'INFO', msg: 'Hang up: Master' });
    }
  });

  it('kill -9 of a worker: both log "Worker with pid N was terminated due to signal 9" (WARNING, the master) and replace it', async () => {
    const [gVictim] = children(g.child.pid!);
    const [rVictim] = await r.running();
    process.kill(Number(gVictim), 'SIGKILL');
    process.kill(Number(rVictim), 'SIGKILL');
    await r.waitRunning(2, [rVictim!]);
    await waitFor(() => { const c = children(g.child.pid!); return c.length === 2 && !c.includes(gVictim!); }, 20_000, 'gunicorn\'s replacement');
    for (const [out, pid, victim] of [[g.out, g.child.pid, gVictim], [r.proc.stderr, r.proc.child.pid, rVictim]] as const) {
      expect(logLines(out)).toContainEqual({ pid: String(pid), level: 'WARNING', msg: `Worker with pid ${victim} was terminated due to signal 9` });
    }
    // a SIGKILL the master did not send: the runner adds gunicorn ≥ 21's hint (20.1 has none)
    expect(logLines(r.proc.stderr)).toContainEqual({ pid: String(r.proc.child.pid), level: 'ERROR', msg: `Worker (pid:${rVictim}) was sent SIGKILL! Perhaps out of memory?` });
    expect(value(await r.scrape(), 'gunicorn_master_worker_restarts_total', { worker_id: rVictim!, reason: 'signal' })).toBe(1);
  });
});

describe('boot failures: the same exit codes as gunicorn (3: worker boot error, 4: app load error)', () => {
  const THROWS_PY = 'raise RuntimeError("boom at import")\n';
  const THROWS_JS = 'throw new Error("boom at import");\n';

  it.each([
    ['the app throws at import', 'bad:application', 'bad.cjs', 3, 'Worker failed to boot.'],
    ['the app has no such attribute', 'app:nothing', 'runner-http.cjs:nothing', 4, 'App failed to load.'],
  ])('%s (gunicorn %s, the runner %s): exit %i after "Shutting down: Master", "Reason: %s"', async (_what, gApp, rApp, code, reason) => {
    const dir = gunicornDir({ 'bad.py': THROWS_PY, 'bad.cjs': THROWS_JS });
    const g = gunicorn(['-w', '1', '-b', `127.0.0.1:${await freePort()}`, gApp], dir);
    const app = rApp === 'bad.cjs' ? join(dir, 'bad.cjs') : join(FIXTURES, rApp);
    const r = runner(['-w', '1', '-b', `127.0.0.1:${await freePort()}`, app]);
    const [gCode, rCode] = await Promise.all([g.exited, r.exited]);
    expect([gCode, rCode]).toEqual([code, code]);
    for (const [out, pid] of [[g.out, g.child.pid], [r.out, r.child.pid]] as const) {
      const tail = logLines(out).filter((l) => l.pid === String(pid)).slice(-2);
      expect(tail).toEqual([
        { pid: String(pid), level: 'INFO', msg: 'Shutting down: Master' },
        { pid: String(pid), level: 'INFO', msg: `Reason: ${reason}` },
      ]);
    }
  });

  it('a missing app module: exit 3 on both (the runner says so in one line before it starts)', async () => {
    const dir = gunicornDir();
    const g = gunicorn(['-w', '1', '-b', `127.0.0.1:${await freePort()}`, 'nosuchmodule:application'], dir);
    const r = runner(['-w', '1', '-b', `127.0.0.1:${await freePort()}`, join(dir, 'nosuchmodule.js')]);
    const [gCode, rCode] = await Promise.all([g.exited, r.exited]);
    expect([gCode, rCode]).toEqual([3, 3]);
    expect(r.out).toMatch(/^prefork-otel: APP module not found: ".*nosuchmodule\.js" \(looked for .*\): expected a \.js, \.cjs or \.mjs file\n$/);
  });
});

describe('an address in use, side by side', () => {
  let busy: Server;
  afterAll(() => { busy?.close(); });

  it('both try 5 times, 1 s apart, with the same lines, then exit 1', async () => {
    const port = await freePort();
    busy = await new Promise<Server>((resolve) => { const s = createServer().listen(port, '127.0.0.1', () => resolve(s)); });
    const g = gunicorn(['-w', '1', '-b', `127.0.0.1:${port}`, 'app:application'], gunicornDir());
    const r = runner(['-w', '1', '-b', `127.0.0.1:${port}`, APP]);
    const [gCode, rCode] = await Promise.all([g.exited, r.exited]);
    expect([gCode, rCode]).toEqual([1, 1]);
    const shape = (out: string) => logLines(out).filter((l) => l.level === 'ERROR').map((l) => `[${l.level}] ${l.msg}`);
    const expected = [
      ...Array.from({ length: 5 }, () => [`[ERROR] Connection in use: ('127.0.0.1', ${port})`, '[ERROR] Retrying in 1 second.']).flat(),
      `[ERROR] Can't connect to ('127.0.0.1', ${port})`,
    ];
    expect(shape(g.out)).toEqual(expected);
    expect(shape(r.out)).toEqual(expected);
    // and the runner's own one line last
    expect(r.out.trimEnd().split('\n').at(-1)).toBe(`prefork-otel: connection in use: --bind 127.0.0.1:${port} (EADDRINUSE): stop the other server or choose another address`);
  });
});

describe('-k sync --timeout 2: a request that waits (on a timer) past --timeout, side by side', () => {
  it('both kill the worker: "WORKER TIMEOUT (pid:N)" (CRITICAL, the master), the client is disconnected, a new worker boots', async () => {
    const gPort = await freePort();
    const g = gunicorn(['-w', '1', '-k', 'sync', '-t', '2', '-b', `127.0.0.1:${gPort}`, 'app:application'], gunicornDir());
    const r = await startRunner(['-w', '1', '-k', 'sync', '-t', '2', APP], { workers: 1 });
    try {
      await waitFor(() => children(g.child.pid!).length === 1, 20_000, 'gunicorn\'s worker');
      const [gWorker] = children(g.child.pid!);
      const [rWorker] = await r.running();
      expect(await get(`http://127.0.0.1:${gPort}/`)).toBe(200);
      expect(await get(r.url('/'))).toBe(200);
      // 20 s of waiting, never blocking: both cut it off after --timeout (the client sees the connection end)
      const [gStatus, rStatus] = await Promise.all([get(`http://127.0.0.1:${gPort}/slow?ms=20000`, 15_000), get(r.url('/slow?ms=20000'), 15_000)]);
      expect([gStatus, rStatus]).toEqual([0, 0]);
      // the client can see the connection end (the worker's watchdog killed it) a moment before the
      // master has read the worker's report and logged: wait for the line, then check it exactly
      for (const [out, pid, worker] of [[() => g.out, g.child.pid, gWorker], [() => r.proc.stderr, r.proc.child.pid, rWorker]] as const) {
        const line = { pid: String(pid), level: 'CRITICAL', msg: `WORKER TIMEOUT (pid:${worker})` };
        await waitFor(() => logLines(out()).some((l) => l.pid === line.pid && l.level === line.level && l.msg === line.msg), 10_000, `${line.msg} from the master`).catch(() => undefined);
        expect(logLines(out())).toContainEqual(line);
      }
      await r.waitRunning(1, [rWorker!]);
      await waitFor(() => { const c = children(g.child.pid!); return c.length === 1 && c[0] !== gWorker; }, 20_000, 'gunicorn\'s new worker');
      expect(value(await r.scrape(), 'gunicorn_master_worker_restarts_total', { worker_id: rWorker!, reason: 'timeout' })).toBe(1);
      // the master killed it: no out-of-memory hint
      expect(r.proc.stderr).not.toContain('Perhaps out of memory');
      expect(await get(`http://127.0.0.1:${gPort}/`)).toBe(200);
      expect(await get(r.url('/'))).toBe(200);
    } finally {
      await stopBoth(g, r.proc);
    }
  });
});

describe('USR2 with --pid FILE, side by side', () => {
  it('the new master writes FILE.2; when the old one exits it is promoted ("Master has been promoted.") and FILE holds its pid', async () => {
    const gDir = gunicornDir();
    const rDir = tmpDir();
    const gPort = await freePort();
    const g = gunicorn(['-w', '1', '-b', `127.0.0.1:${gPort}`, '--pid', join(gDir, 'app.pid'), 'app:application'], gDir);
    const r = await startRunner(['-w', '1', '--pid', join(rDir, 'app.pid'), APP], { workers: 1 });
    const news: number[] = [];
    try {
      await waitFor(() => children(g.child.pid!).length === 1, 20_000, 'gunicorn\'s worker');
      const pair = [[g.child, join(gDir, 'app.pid'), () => g.out], [r.proc.child, join(rDir, 'app.pid'), () => r.proc.stderr]] as const;
      for (const [child, file] of pair) {
        expect(readFileSync(file, 'utf8').trim()).toBe(String(child.pid));
        child.kill('SIGUSR2');
      }
      for (const [child, file] of pair) {
        const next = await waitFor(() => { try { return Number(readFileSync(`${file}.2`, 'utf8')) || undefined; } catch { return undefined; } }, 20_000, 'FILE.2');
        news.push(next);
        expect(next).not.toBe(child.pid);
        expect(readFileSync(file, 'utf8').trim()).toBe(String(child.pid));
      }
      // both generations' workers up; then the old masters stop
      await waitFor(() => logLines(g.out).filter((l) => l.msg.startsWith('Booting worker')).length === 2, 20_000, 'gunicorn\'s second generation');
      await waitFor(() => logLines(r.proc.stderr).filter((l) => l.msg.startsWith('Booting worker')).length === 2, 20_000, 'the runner\'s second generation');
      await stopBoth(g, r.proc);
      for (const [i, [, file, out]] of pair.entries()) {
        await waitFor(() => { try { return Number(readFileSync(file, 'utf8')) === news[i]; } catch { return false; } }, 20_000, 'FILE promoted');
        expect(existsSync(`${file}.2`)).toBe(false);
        await waitFor(() => logLines(out()).some((l) => l.pid === String(news[i]) && l.level === 'INFO' && l.msg === 'Master has been promoted.'), 10_000, 'the promotion line');
      }
      // the promoted masters serve
      expect(await get(`http://127.0.0.1:${gPort}/`)).toBe(200);
      expect(await get(r.url('/'))).toBe(200);
    } finally {
      for (const pid of news) try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
      await waitFor(() => news.every(pidGone), 30_000, 'the new masters to exit');
      await stopBoth(g, r.proc);
    }
  });
});
