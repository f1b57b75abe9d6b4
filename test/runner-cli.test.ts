/**
 * The runner's command line and APP kinds, for real: user errors are one line with exit 2 (1 for an
 * address in use); Express / Fastify factory / Koa (ESM) / a script that calls listen() itself;
 * unix sockets; the -c config file with every hook; precedence defaults < file < env < CLI; the
 * scrape passes `promtool check metrics`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, FIXTURES, REGISTER_CJS, freePort, labelValues, scrape, scrapeText, select, tmpDir, total, value, waitFor } from './helpers';
import { load, startRunner, type Runner } from './runner-helpers';

const HTTP_APP = join(FIXTURES, 'runner-http.cjs');

function run(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    env: { ...process.env, NODE_OPTIONS: '', PROMETHEUS_METRICS_PORT: '0', PROMETHEUS_BIND_ADDRESS: '127.0.0.1', ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function listening(port: number): Promise<Server> {
  return new Promise((resolve) => {
    const s = createServer().listen(port, '127.0.0.1', () => resolve(s));
  });
}

let runner: Runner | undefined;
afterEach(async () => {
  await runner?.stop();
  runner = undefined;
});

describe('user errors: one line, no stack, exit 2', () => {
  it.each([
    [['--bogus', HTTP_APP], /^prefork-otel: unknown option --bogus in the command line/],
    [['-w', 'abc', HTTP_APP], /^prefork-otel: invalid --workers="abc": expected an integer from 1 to 1024$/],
    [['-w', '0', HTTP_APP], /^prefork-otel: invalid --workers="0": expected an integer from 1 to 1024$/],
    [['-k', 'turbo', HTTP_APP], /^prefork-otel: invalid --worker-class="turbo": expected one of sync, PrometheusWorker, gthread/],
    [['-b', 'localhost:99999', HTTP_APP], /^prefork-otel: invalid --bind="localhost:99999": expected HOST:PORT/],
    [['--timeout=-1', HTTP_APP], /^prefork-otel: invalid --timeout="-1": must be ≥ 0 \(a number from 0 to 86400 seconds\)$/],
    [['-w', '-1', HTTP_APP], /^prefork-otel: invalid --workers="-1": must be ≥ 1 \(an integer from 1 to 1024\)$/],
    [['--threads', '2.5', HTTP_APP], /^prefork-otel: invalid --threads="2.5"/],
    [['-w'], /^prefork-otel: option -w, --workers <value> in the command line needs a value/],
    [[], /^prefork-otel: missing APP: usage: prefork-otel \[OPTIONS\] APP/],
    [[HTTP_APP, HTTP_APP], /^prefork-otel: invalid APP=/],
    [['-c', 'nope.js', HTTP_APP], /^prefork-otel: config file not found: "nope.js"/],
    [['-e', 'NOEQUALS', HTTP_APP], /^prefork-otel: invalid --env="NOEQUALS": expected KEY=VALUE$/],
  ])('%j', (args, message) => {
    const r = run(args);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr.trimEnd()).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.code).toBe(2);
  });

  it('a missing APP file: one line, exit 3 (gunicorn\'s WORKER_BOOT_ERROR for a module it cannot import)', () => {
    const r = run(['nope/missing-app.js']);
    expect(r.stderr).toMatch(/^prefork-otel: APP module not found: "nope\/missing-app.js" \(looked for .*\): expected a \.js, \.cjs or \.mjs file\n$/);
    expect(r.code).toBe(3);
  });

  it('a bad environment value and a bad config-file value name their source', () => {
    const env = run([HTTP_APP], { GUNICORN_WORKERS: 'many' });
    expect(env.stderr).toBe('prefork-otel: invalid GUNICORN_WORKERS="many": expected an integer from 1 to 1024\n');
    expect(env.code).toBe(2);
    const cmd = run([HTTP_APP], { GUNICORN_CMD_ARGS: '--timeout=soon' });
    expect(cmd.stderr).toBe('prefork-otel: invalid --timeout (in GUNICORN_CMD_ARGS)="soon": expected a number from 0 to 86400 seconds\n');
    const dir = tmpDir();
    const bad = join(dir, 'bad.json');
    execFileSync('sh', ['-c', `echo '{"workers": 2, "wrokers": 3}' > ${bad}`]);
    const file = run(['-c', bad, HTTP_APP]);
    expect(file.stderr).toMatch(/^prefork-otel: unknown setting "wrokers" in config file .*bad\.json: expected one of bind, workers,/);
    expect(file.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(file.code).toBe(2);
  });

  it('an address in use: tried 5 times 1 s apart with gunicorn\'s lines, then one line, exit 1 (the app socket); the metrics port: one line', async () => {
    const port = await freePort();
    const busy = await listening(port);
    try {
      const r = run(['-b', `127.0.0.1:${port}`, HTTP_APP]);
      const lines = r.stderr.trimEnd().split('\n').map((l) => l.replace(/^\[[^\]]+\] \[\d+\] /, ''));
      expect(lines).toEqual([
        ...Array.from({ length: 5 }, () => [`[ERROR] Connection in use: ('127.0.0.1', ${port})`, '[ERROR] Retrying in 1 second.']).flat(),
        `[ERROR] Can't connect to ('127.0.0.1', ${port})`,
        `prefork-otel: connection in use: --bind 127.0.0.1:${port} (EADDRINUSE): stop the other server or choose another address`,
      ]);
      expect(r.code).toBe(1);
      const m = run(['-b', `127.0.0.1:${await freePort()}`, HTTP_APP], { PROMETHEUS_METRICS_PORT: String(port) });
      expect(m.stderr).toMatch(/^prefork-otel: metrics port in use: PROMETHEUS_BIND_ADDRESS:PROMETHEUS_METRICS_PORT=127.0.0.1:\d+ \(EADDRINUSE\)/);
      expect(m.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(m.code).toBe(1);
    } finally {
      busy.close();
    }
  });

  it('an app that exports nothing usable: one line, exit 4 (gunicorn\'s APP_LOAD_ERROR), also for --check-config', () => {
    const c = run(['--check-config', '-t', '1', join(FIXTURES, 'runner-empty.cjs')]);
    expect(c.stderr).toMatch(/^prefork-otel: APP .*runner-empty\.cjs: expected a request listener/);
    expect(c.code).toBe(4);
    expect(run(['--check-config', HTTP_APP]).code).toBe(0);
    const r = run(['-t', '1', '-b', '127.0.0.1:0', 'test/fixtures/runner-empty.cjs:nothing']);
    expect(r.stderr).toMatch(/prefork-otel: APP test\/fixtures\/runner-empty\.cjs:nothing: the module has no export named "nothing"\n/);
    expect(r.code).toBe(4);
  });

  it('--version, --help', () => {
    const v = run(['--version']);
    expect(v.stdout).toMatch(/^prefork-otel \d+\.\d+\.\d+\n$/);
    expect(v.code).toBe(0);
    const h = run(['-h']);
    for (const flag of ['--workers', '--worker-class', '--threads', '--worker-connections', '--bind', '--timeout', '--graceful-timeout',
      '--max-requests', '--max-requests-jitter', '--config', '--pid', '--name', '--log-level', '--check-config', '--version']) {
      expect(h.stdout).toContain(flag);
    }
    expect(h.code).toBe(0);
  });

  it('precedence: defaults < config file < environment < command line', () => {
    const cfg = join(FIXTURES, 'runner-hooks.cjs');
    const show = (args: string[], env: Record<string, string> = {}) => {
      const r = run(['--print-config', ...args, HTTP_APP], env);
      expect(r.code).toBe(0);
      return JSON.parse(r.stdout) as { workers: number; timeout: number; workerClass: string; hooks: string[]; bind: unknown[] };
    };
    expect(show([]).workers).toBe(1);
    expect(show([], { WEB_CONCURRENCY: '3' }).workers).toBe(3);
    const file = show(['-c', cfg]);
    expect([file.workers, file.timeout, file.workerClass]).toEqual([2, 10, 'gevent']);
    expect(file.hooks).toContain('post_request');
    expect(show(['-c', cfg], { GUNICORN_WORKERS: '3' }).workers).toBe(3);
    const cmdArgs = show(['-c', cfg], { GUNICORN_WORKERS: '3', GUNICORN_CMD_ARGS: '--workers=4 --timeout 7' });
    expect([cmdArgs.workers, cmdArgs.timeout]).toEqual([4, 7]);
    const cli = show(['-c', cfg, '-w', '5', '-t', '9', '-k', 'PrometheusThreadWorker'], { GUNICORN_WORKERS: '3', GUNICORN_CMD_ARGS: '--workers=4' });
    expect([cli.workers, cli.timeout, cli.workerClass]).toEqual([5, 9, 'gthread']);
    // gunicorn: sync with more than one thread is gthread
    expect(show(['--threads', '4']).workerClass).toBe('gthread');
    expect(show(['-b', 'unix:/tmp/x.sock', '-b', '[::1]:8080', '-b', 'fd://3']).bind).toEqual([
      { kind: 'unix', path: '/tmp/x.sock' }, { kind: 'tcp', host: '::1', port: 8080 }, { kind: 'fd', fd: 3 },
    ]);
  });
});

describe('APP kinds', () => {
  it('an Express app module, on a TCP and a unix socket at once; the scrape passes promtool', async () => {
    const sock = join(tmpDir(), 'app.sock');
    runner = await startRunner(['-w', '2', '-k', 'gevent', '-b', `unix:${sock}`, join(FIXTURES, 'runner-express.cjs')], { workers: 2 });
    expect(await load(runner.url('/users/7'), 20, 4)).toEqual(Array(20).fill(200));
    for (let i = 0; i < 5; i++) {
      const status = await new Promise<number>((resolve, reject) => {
        request({ socketPath: sock, path: `/users/${i}`, method: 'GET' }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode!)); })
          .on('error', reject).end();
      });
      expect(status).toBe(200);
    }
    expect(await load(runner.url('/boom'), 3, 1)).toEqual([500, 500, 500]);
    const s = await runner.scrape();
    expect(total(s, 'gunicorn_worker_requests_total', { method: 'GET', endpoint: '/users/:id' })).toBe(25);
    expect(total(s, 'gunicorn_worker_failed_requests_total', { endpoint: '/boom', error_type: 'RequestError' })).toBe(3);
    const text = await scrapeText(runner.metricsPort);
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(check.stdout + check.stderr).toBe('');
    expect(check.status).toBe(0);
  });

  it('a factory of a Fastify instance (CommonJS) and a Koa app (ES module default export)', async () => {
    runner = await startRunner(['-w', '2', join(FIXTURES, 'runner-fastify.cjs')], { workers: 2 });
    expect(await load(runner.url('/items/9'), 10, 2)).toEqual(Array(10).fill(200));
    expect(await load(runner.url('/items'), 4, 2, { method: 'POST' })).toEqual(Array(4).fill(201));
    let s = await runner.scrape();
    expect(total(s, 'gunicorn_worker_requests_total', { endpoint: '/items/:itemId' })).toBe(10);
    expect(total(s, 'gunicorn_worker_requests_total', { method: 'POST', endpoint: '/items' })).toBe(4);
    await runner.stop();
    runner = await startRunner(['-w', '2', '-k', 'gthread', '--threads', '2', join(FIXTURES, 'runner-koa.mjs')], { workers: 2 });
    expect(await load(runner.url('/orders/31'), 12, 3)).toEqual(Array(12).fill(200));
    s = await runner.scrape();
    expect(total(s, 'gunicorn_worker_requests_total', { endpoint: '/orders/:orderId' })).toBe(12);
  });

  it('an unmodified ES-module script that calls listen() itself: the runner\'s --bind wins', async () => {
    const own = await freePort();
    runner = await startRunner(['-w', '2', join(FIXTURES, 'runner-listen.mjs')], { workers: 2, env: { SCRIPT_PORT: String(own) } });
    const r = await fetch(runner.url('/hello'));
    expect(await r.text()).toBe('script GET /hello');
    expect(r.headers.get('x-script-port')).toBe(String(runner.port));
    // its listen callback ran, with the runner's address; its own port was never bound
    await waitFor(() => runner!.proc.stdout.split('\n').filter((l) => l === `script listening on ${runner!.port}`).length === 2, 10_000, 'both listen callbacks');
    await expect(fetch(`http://127.0.0.1:${own}/`)).rejects.toThrow();
    expect(await load(runner.url('/x/1'), 9, 3)).toEqual(Array(9).fill(200));
    expect(total(await runner.scrape(), 'gunicorn_worker_requests_total')).toBe(10);
  });
});

describe('the preload inherited through NODE_OPTIONS', () => {
  it('stays out of the runner\'s master and workers: one endpoint, exact counts, no port clash', async () => {
    runner = await startRunner(['-w', '2', join(FIXTURES, 'runner-http.cjs')], { workers: 2, env: { NODE_OPTIONS: `-r ${REGISTER_CJS}` } });
    expect(await load(runner.url('/a/1'), 14, 2)).toEqual(Array(14).fill(200));
    const s = await runner.scrape();
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(14);
    expect(labelValues(s, 'gunicorn_worker_uptime_seconds', 'worker_id').sort()).toEqual(await runner.running());
    expect(runner.proc.stderr).not.toMatch(/in use|EADDRINUSE/);
  });
});

describe('-c config file hooks', () => {
  it('calls every hook with Node equivalents of gunicorn\'s arguments, ours first', async () => {
    const hookLog = join(tmpDir(), 'hooks.log');
    runner = await startRunner(['-c', join(FIXTURES, 'runner-hooks.cjs'), HTTP_APP], { workers: 2, env: { HOOK_LOG: hookLog } });
    const master = String(runner.proc.child.pid);
    const first = await runner.running();
    expect(await load(runner.url('/fail'), 3, 1)).toEqual([503, 503, 503]);
    runner.signal('SIGTTIN');
    await runner.waitRunning(3);
    const three = await runner.running();
    runner.signal('SIGHUP'); // the config file says 2 workers: a reload goes back to 2
    await runner.waitRunning(2, three);
    await waitFor(async () => total(await runner!.scrape(), 'gunicorn_master_worker_restarts_total', { reason: 'reload' }) === 3, 20_000, 'three reloads');
    const s = await runner.scrape();
    expect(value(s, 'gunicorn_master_signals_total', { signal: 'ttin', action: 'scale_up' })).toBe(1);
    expect(labelValues(s, 'gunicorn_master_worker_restarts_total', 'worker_id')).toEqual([...three].sort());
    const exit = await runner.stop();
    runner = undefined;
    expect(exit).toEqual({ code: 0, signal: null });

    const lines = readFileSync(hookLog, 'utf8').trim().split('\n');
    const named = (name: string) => lines.filter((l) => l.startsWith(`${name} `));
    expect(named('on_starting')).toEqual([`on_starting ${master} function`]);
    expect(named('when_ready')).toEqual([`when_ready ${master} 2`]);
    expect(named('on_reload')).toEqual([`on_reload ${master}`]);
    expect(named('nworkers_changed')).toEqual(['nworkers_changed 3 2', 'nworkers_changed 2 3']);
    expect(named('pre_fork')).toHaveLength(5);
    expect(named('post_fork')).toHaveLength(5);
    for (const l of named('post_fork')) expect(l.endsWith(` ${master}`)).toBe(true);
    // our post_worker_init (state running) ran before the user's
    expect(named('post_worker_init')).toHaveLength(5);
    for (const l of named('post_worker_init')) expect(l.endsWith(' running')).toBe(true);
    expect(named('pre_request').map((l) => l.split(' ').slice(2).join(' '))).toEqual(['GET /fail', 'GET /fail', 'GET /fail']);
    expect(named('post_request').map((l) => l.split(' ').slice(2).join(' '))).toEqual(['503 number', '503 number', '503 number']);
    expect(named('worker_exit')).toHaveLength(5);
    for (const l of named('worker_exit')) expect(l.endsWith(' stopping')).toBe(true);
    const exits = named('child_exit');
    expect(exits.filter((l) => l.endsWith(' reload')).map((l) => l.split(' ')[1]).sort()).toEqual([...three].sort());
    expect(exits.filter((l) => l.endsWith(' none'))).toHaveLength(2);
    expect(exits).toHaveLength(5);
    expect(first.every((p) => three.includes(p))).toBe(true);
    expect(named('on_exit')).toEqual([`on_exit ${master}`]);
    expect(lines.at(-1)).toBe(`on_exit ${master}`);
  });
});

describe('WINCH, USR1, QUIT', () => {
  it('WINCH is ignored (not daemonized, as gunicorn); USR1 reopens the log file; QUIT stops fast', async () => {
    const dir = tmpDir();
    const logFile = join(dir, 'runner.log');
    runner = await startRunner(['-w', '2', '--error-logfile', logFile, '--pid', join(dir, 'runner.pid'), HTTP_APP], { workers: 2 });
    expect(readFileSync(join(dir, 'runner.pid'), 'utf8')).toBe(`${runner.proc.child.pid}\n`);
    expect(await load(runner.url('/'), 6, 2)).toEqual(Array(6).fill(200));
    const before = await runner.running();
    runner.signal('SIGWINCH');
    let s = await waitFor(async () => {
      const x = await runner!.scrape();
      return value(x, 'gunicorn_master_signals_total', { signal: 'winch', action: 'ignored' }) === 1 ? x : undefined;
    }, 10_000, 'WINCH counted');
    // handled (counted) and nothing changed: the same two workers serve
    expect(await runner.running()).toEqual(before);
    expect(await load(runner.url('/'), 4, 2)).toEqual(Array(4).fill(200));
    s = await runner.scrape();
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(10);
    expect(total(s, 'gunicorn_master_worker_restarts_total')).toBe(0);
    // logrotate: move the file away, USR1, the master writes to a new file of the same name
    execFileSync('mv', [logFile, `${logFile}.1`]);
    runner.signal('SIGUSR1');
    await waitFor(() => { try { return readFileSync(logFile, 'utf8').includes('Log file reopened'); } catch { return false; } }, 10_000, 'reopened log');
    expect(readFileSync(`${logFile}.1`, 'utf8')).toContain('Booting worker with pid');
    expect(readFileSync(`${logFile}.1`, 'utf8')).toContain('[INFO] Handling signal: winch');
    s = await runner.scrape();
    expect(value(s, 'gunicorn_master_signals_total', { signal: 'usr1', action: 'reopen_logs' })).toBe(1);
    // the inspector did not start on USR1 (workers and master handle it)
    expect(runner.proc.stderr).not.toContain('Debugger listening');
    const exit = await runner.proc.stop('SIGQUIT');
    runner = undefined;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(readFileSync(logFile, 'utf8')).toContain('Shutting down: Master');
    expect(() => readFileSync(join(dir, 'runner.pid'))).toThrow();
  });
});


describe('USR2 upgrade, and a master that dies', () => {
  it('USR2 starts a new master on the same sockets (pid file FILE.2); after the old one stops, the new one is promoted and serves alone', async () => {
    const dir = tmpDir();
    const pidfile = join(dir, 'master.pid');
    runner = await startRunner(['-w', '1', '--pid', pidfile, HTTP_APP], { workers: 1 });
    const { port, metricsPort } = runner;
    const oldPid = runner.proc.child.pid!;
    runner.signal('SIGUSR2');
    // gunicorn's scheme: the new master writes FILE.2; FILE keeps the old master's pid
    const newPid = await waitFor(() => {
      try {
        return Number(readFileSync(`${pidfile}.2`, 'utf8'));
      } catch { return undefined; }
    }, 20_000, 'the new master\'s pid file');
    try {
      expect(newPid).not.toBe(oldPid);
      expect(readFileSync(pidfile, 'utf8')).toBe(`${oldPid}\n`);
      expect(value(await runner.scrape(), 'gunicorn_master_signals_total', { signal: 'usr2', action: 'upgrade' })).toBe(1);
      // both generations accept on the one socket
      const seen = new Set<number>();
      await waitFor(async () => {
        seen.add(((await (await fetch(runner!.url('/who'))).json()) as { pid: number }).pid);
        return seen.size >= 2;
      }, 20_000, 'workers of both masters answering');
      // gunicorn's upgrade: then stop the old master
      expect(await runner.stop()).toEqual({ code: 0, signal: null });
      runner = undefined;
      // promoted once its parent is gone: FILE.2 becomes FILE
      await waitFor(() => { try { return readFileSync(pidfile, 'utf8') === `${newPid}\n`; } catch { return false; } }, 10_000, 'the promoted pid file');
      expect(() => readFileSync(`${pidfile}.2`)).toThrow();
      expect(await load(`http://127.0.0.1:${port}/`, 10, 2)).toEqual(Array(10).fill(200));
      // the new master takes the metrics port over once the old one released it
      const s = await waitFor(async () => {
        const x = await scrape(metricsPort).catch(() => undefined);
        return x && total(x, 'gunicorn_worker_requests_total', { endpoint: '/' }) === 10 ? x : undefined;
      }, 20_000, 'the new master\'s endpoint');
      expect(select(s, 'gunicorn_master_signals_total')).toEqual([]);
    } finally {
      try { process.kill(newPid, 'SIGTERM'); } catch { /* gone */ }
      await waitFor(() => { try { process.kill(newPid, 0); return false; } catch { return true; } }, 20_000, 'the new master to exit');
    }
  });

  it('workers leave when their master is killed (no orphans)', async () => {
    runner = await startRunner(['-w', '2', HTTP_APP], { workers: 2 });
    const pids = (await runner.running()).map(Number);
    runner.proc.child.kill('SIGKILL');
    await runner.proc.exited;
    runner = undefined;
    await waitFor(() => pids.every((p) => { try { process.kill(p, 0); return false; } catch { return true; } }), 20_000, 'the workers to exit');
  });
});
