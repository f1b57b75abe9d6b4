/**
 * The runner's process settings, for real: --user / --group / --umask drop privileges in the
 * workers after the master bound the socket (as root, to `nobody`), --preload loads the app in the
 * master and fails fast before forking, --reload / --reload-extra-file reload the workers gracefully
 * when a watched file changes, -D detaches.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, FIXTURES, freePort, tmpDir, waitFor } from './helpers';
import { startRunner, type Runner } from './runner-helpers';

const MARKER = join(FIXTURES, 'runner-marker.cjs');

let runner: Runner | undefined;
const daemons: number[] = [];
afterEach(async () => {
  await runner?.stop();
  runner = undefined;
  for (const pid of daemons.splice(0)) {
    try { process.kill(pid, 'SIGTERM'); } catch { continue; }
    await waitFor(() => (existsSync(`/proc/${pid}`) ? undefined : true), 20_000, `daemon ${pid} gone`).catch(() => process.kill(pid, 'SIGKILL'));
  }
});

function status(pid: string, field: string): string {
  return new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]!;
}

describe('--user / --group / --umask', () => {
  it('as root: the workers run as nobody:nogroup with the umask, the master stays root and keeps the port', async () => {
    if (process.getuid!() !== 0) return expect.fail('this test needs root (it switches the workers to nobody)');
    runner = await startRunner(['-w', '2', '--user', 'nobody', '--group', 'nogroup', '--umask', '0o027', MARKER], { workers: 2 });
    const pids = await runner.running();
    for (const pid of pids) {
      expect(status(pid, 'Uid').split(/\s+/)).toEqual(['65534', '65534', '65534', '65534']);
      expect(status(pid, 'Gid').split(/\s+/)).toEqual(['65534', '65534', '65534', '65534']);
      expect(status(pid, 'Groups').trim()).toBe('65534');
      expect(status(pid, 'Umask')).toBe('0027');
    }
    expect(status(String(runner.proc.child.pid), 'Uid').split(/\s+/)[0]).toBe('0');
    const r = await (await fetch(runner.url('/id'))).json() as { uid: number; gid: number; umask: number };
    expect(r).toMatchObject({ uid: 65534, gid: 65534, umask: 0o027 });
  });

  it('--user by uid with --initgroups (no --group): the user\'s primary group and its groups, none of root\'s', async () => {
    if (process.getuid!() !== 0) return expect.fail('this test needs root');
    runner = await startRunner(['--user', '65534', '--initgroups', MARKER], { workers: 1 });
    const [pid] = await runner.running();
    expect(status(pid!, 'Uid').split(/\s+/)[0]).toBe('65534');
    expect(status(pid!, 'Gid').split(/\s+/)[0]).toBe('65534');
    // nobody's groups from /etc/group (nogroup is its primary group; root's gid 0 is gone)
    expect(status(pid!, 'Groups').trim().split(/\s+/)).not.toContain('0');
  });
});

describe('--preload', () => {
  it('the master loads the app before forking (then each worker loads it again)', async () => {
    const dir = tmpDir();
    const mark = join(dir, 'loads.txt');
    runner = await startRunner(['--preload', '-w', '2', MARKER], { workers: 2, env: { MARK_FILE: mark } });
    const loads = readFileSync(mark, 'utf8').trim().split('\n');
    expect(loads[0]).toBe(`runner-master ${runner.proc.child.pid}`);
    expect(loads.slice(1).map((l) => l.split(' ')[0])).toEqual(['runner-worker', 'runner-worker']);
    expect(loads.slice(1).map((l) => l.split(' ')[1]).sort()).toEqual(await runner.running());
  });

  it('an app that throws at import: the master fails before forking any worker (exit 3, the stack in the log)', () => {
    const dir = tmpDir();
    const mark = join(dir, 'loads.txt');
    const r = spawnSync(process.execPath, [CLI, '--preload', '-w', '4', '-b', '127.0.0.1:0', MARKER], {
      env: { ...process.env, NODE_OPTIONS: '', BOOM: '1', MARK_FILE: mark, PROMETHEUS_METRICS_PORT: '0', PROMETHEUS_BIND_ADDRESS: '127.0.0.1' }, encoding: 'utf8', timeout: 30_000,
    });
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/\[ERROR\] Exception while loading the application \(--preload\)\nError: boom at import/);
    expect(r.stderr).not.toMatch(/Booting worker/);
    expect(readFileSync(mark, 'utf8').trim().split('\n')).toHaveLength(1);
  });
});

describe('--reload / --reload-extra-file', () => {
  it('changing the app file, then an extra file, reloads the workers gracefully (new pids, new code)', async () => {
    const dir = tmpDir();
    const app = join(dir, 'app.cjs');
    copyFileSync(MARKER, app);
    const extra = join(dir, 'settings.txt');
    writeFileSync(extra, 'one');
    runner = await startRunner(['--reload', '--reload-extra-file', extra, '-w', '2', app], { workers: 2, env: { REPLY: 'first' } });
    const first = await runner.running();
    expect(await (await fetch(runner.url('/'))).text()).toBe('first');
    writeFileSync(app, readFileSync(MARKER, 'utf8').replace("res.end(process.env.REPLY ?? 'ok')", "res.end('second')"));
    const second = await runner.waitRunning(2, first);
    expect(await (await fetch(runner.url('/'))).text()).toBe('second');
    expect(runner.proc.stderr).toMatch(new RegExp(`\\[INFO\\] Worker reloading: ${app.replace(/[.]/g, '\\.')} modified`));
    writeFileSync(extra, 'two');
    await runner.waitRunning(2, second);
    // graceful: the four old workers were retired for a reload (counted as each one leaves)
    const reloads = async () => (await runner!.scrape()).filter((x) => x.name === 'gunicorn_master_worker_restarts_total').reduce((a, x) => ({ ...a, [x.labels.reason!]: (a[x.labels.reason!] ?? 0) + x.value }), {} as Record<string, number>);
    expect(await waitFor(async () => { const r = await reloads(); return r.reload === 4 ? r : undefined; }, 20_000, '4 reload restarts')).toEqual({ reload: 4 });
  }, 60_000);
});

describe('-D / --daemon', () => {
  it('detaches: the command returns 0 at once, the daemon serves and writes its pid file', async () => {
    const dir = tmpDir();
    const pidfile = join(dir, 'app.pid');
    const port = await freePort();
    const r = spawnSync(process.execPath, [CLI, '-D', '-p', pidfile, '-b', `127.0.0.1:${port}`, MARKER], {
      env: { ...process.env, NODE_OPTIONS: '', PROMETHEUS_METRICS_PORT: String(await freePort()), PROMETHEUS_BIND_ADDRESS: '127.0.0.1' }, encoding: 'utf8', timeout: 30_000,
    });
    expect(r.status).toBe(0);
    const pid = await waitFor(() => (existsSync(pidfile) ? Number(readFileSync(pidfile, 'utf8')) : undefined), 15_000, 'pid file');
    daemons.push(pid);
    // not our child: its parent is not this test process, and it is the leader of its own session
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    expect(Number(stat[3])).not.toBe(process.pid);
    expect(Number(stat[3])).toBe(pid);
    expect(await waitFor(async () => { try { return await (await fetch(`http://127.0.0.1:${port}/`)).text(); } catch { return undefined; } }, 15_000, 'daemon serving')).toBe('ok');
  });
});
