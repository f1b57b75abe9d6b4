/**
 * The runner's access log, for real: gunicorn's format side by side with Debian's real gunicorn
 * (same requests, same format, TZ=UTC), one whole line per request across workers and gthread
 * threads, SIGUSR1 reopening after a logrotate-style rename (access and error log),
 * --forwarded-allow-ips and X-Forwarded-For, `-` = stdout, and no access log when unset.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FIXTURES, freePort, stopChild, tmpDir, waitFor } from './helpers';
import { startRunner, type Runner } from './runner-helpers';

const APP = join(FIXTURES, 'runner-http.cjs');
const GUNICORN = '/usr/lib/python3/dist-packages/gunicorn';

let runner: Runner | undefined;
let gunicorn: ChildProcess | undefined;
afterEach(async () => {
  await runner?.stop();
  runner = undefined;
  await stopChild(gunicorn);
  gunicorn = undefined;
});

/** one request with exactly these headers; resolves with the status */
function get(port: number, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<number> {
  return new Promise((resolve, reject) => {
    let status = 0;
    const req = request({ host: '127.0.0.1', port, path, method, headers: { connection: 'close', ...headers }, agent: false }, (res) => {
      status = res.statusCode ?? 0;
      res.resume();
      res.on('end', () => resolve(status));
    });
    // gunicorn 20.1 sends a body after a HEAD response's head: Node's client calls that a parse error, after the status
    req.on('error', (e) => (status ? resolve(status) : reject(e)));
    req.end();
  });
}

const lines = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : []);

const FULL = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" m=%(m)s U=%(U)s q=%(q)s H=%(H)s B=%(B)s T=%(T)s p=%(p)s i=%({x-req}i)s o=%({content-type}o)s e=%({wsgi.url_scheme}e)s x=%({nope}i)s %%';

/** the requests of the side-by-side comparison */
async function sendComparisonRequests(port: number): Promise<void> {
  expect(await get(port, '/a%20b/c?x=1&y=2', { authorization: `Basic ${Buffer.from('bob:pw').toString('base64')}`, referer: 'http://x/"q"', 'user-agent': 'agent "1"', 'x-req': 'yes' })).toBe(200);
  expect(await get(port, '/h', { 'user-agent': 'u' }, 'HEAD')).toBe(200);
  expect(await get(port, '/fail')).toBe(503);
}

describe('gunicorn\'s format', () => {
  it.each([
    ['the default format', undefined],
    ['every atom', FULL],
  ])('%s: the same line as Debian\'s gunicorn for the same requests (but the pid and the time)', async (_what, format) => {
    if (!existsSync(GUNICORN)) return expect.fail('python3-gunicorn is not installed (.ci/run installs it)');
    const dir = tmpDir();
    // the same app in WSGI: 'ok' / 'no' (503) with Content-Type text/plain, as test/fixtures/runner-http.cjs answers
    writeFileSync(join(dir, 'wsgiapp.py'), [
      'def app(environ, start_response):',
      '    fail = environ["PATH_INFO"] == "/fail"',
      '    body = b"no" if fail else b"ok"',
      '    start_response("503 Service Unavailable" if fail else "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])',
      '    return [body]',
      '',
    ].join('\n'));
    const fmt = format ? ['--access-logformat', format] : [];
    const gport = await freePort();
    const glog = join(dir, 'gunicorn.log');
    gunicorn = spawn('/usr/bin/python3', ['-m', 'gunicorn', '-b', `127.0.0.1:${gport}`, '--access-logfile', glog, ...fmt, '--chdir', dir, 'wsgiapp:app'], { env: { ...process.env, TZ: 'UTC' }, stdio: 'ignore' });
    const nlog = join(dir, 'node.log');
    runner = await startRunner(['--access-logfile', nlog, ...fmt, join(FIXTURES, 'runner-text.cjs')], { workers: 1, env: { TZ: 'UTC' } });
    await waitFor(() => get(gport, '/ready').then(() => true, () => undefined), 15_000, 'gunicorn up');
    // the /ready probes' lines are written (a loaded machine writes them a moment after the answer)
    await waitFor(() => lines(glog).length >= 1, 10_000, 'gunicorn\'s /ready line');
    const before = lines(glog).length;
    await sendComparisonRequests(gport);
    await sendComparisonRequests(runner.port);
    const g = await waitFor(() => (lines(glog).length === before + 3 ? lines(glog).slice(before) : undefined), 10_000, 'gunicorn\'s 3 lines');
    const n = await waitFor(() => (lines(nlog).length === 3 ? lines(nlog) : undefined), 10_000, 'our 3 lines');
    const stamp = /\[\d\d\/[A-Z][a-z]{2}\/\d{4}:\d\d:\d\d:\d\d \+0000\]/;
    const norm = (l: string) => l.replace(stamp, '[TIME]').replace(/p=<\d+>/, 'p=<PID>');
    for (const l of [...g, ...n]) expect(l).toMatch(stamp);
    expect(n.map(norm)).toEqual(g.map(norm));
    if (!format) expect(n[0]).toMatch(/^127\.0\.0\.1 - bob \[[^\]]+\] "GET \/a%20b\/c\?x=1&y=2 HTTP\/1\.1" 200 2 "http:\/\/x\/\\"q\\"" "agent \\"1\\""$/);
  }, 60_000);
});

describe('one line per request', () => {
  it.each([
    ['-k sync, 3 workers', ['-w', '3', '-k', 'sync'], 3],
    ['-k gthread, 2 workers × 3 threads', ['-w', '2', '-k', 'gthread', '--threads', '3'], 2],
  ])('%s: every request is one whole line, none lost or interleaved', async (_what, args, workers) => {
    const dir = tmpDir();
    const file = join(dir, 'access.log');
    runner = await startRunner(['--access-logfile', file, '--access-logformat', '%(p)s "%(r)s" %(s)s %({x-n}i)s end', ...args, APP], { workers });
    const n = 600;
    let i = 0;
    const statuses = await Promise.all(Array.from({ length: 12 }, async () => {
      const out: number[] = [];
      while (i < n) {
        const k = i++;
        out.push(await get(runner!.port, `/x?${'q'.repeat(k % 300)}`, { 'x-n': String(k) }));
      }
      return out;
    }));
    expect(statuses.flat().filter((s) => s === 200)).toHaveLength(n);
    const got = await waitFor(() => (lines(file).length >= n ? lines(file) : undefined), 15_000, `${n} lines`);
    expect(got).toHaveLength(n);
    for (const l of got) expect(l).toMatch(/^<\d+> "GET \/x\?q* HTTP\/1\.1" 200 \d+ end$/);
    expect(new Set(got.map((l) => Number(/ (\d+) end$/.exec(l)![1]))).size).toBe(n);
    // more than one process wrote (requests spread over the workers)
    expect(new Set(got.map((l) => l.split(' ')[0])).size).toBeGreaterThan(1);
  }, 90_000);

  it('--access-logfile unset: no access log (nothing on stdout)', async () => {
    runner = await startRunner([APP], { workers: 1 });
    expect(await get(runner.port, '/')).toBe(200);
    expect(await get(runner.port, '/')).toBe(200);
    // a request after them proves they were served (and would have been logged) before we look
    expect(await get(runner.port, '/who')).toBe(200);
    expect(runner.proc.stdout).toBe('');
  });

  it('"-" writes to the runner\'s stdout, even when --error-logfile is a file', async () => {
    const dir = tmpDir();
    runner = await startRunner(['-w', '2', '--access-logfile', '-', '--error-logfile', join(dir, 'error.log'), APP], { workers: 2 });
    for (let k = 0; k < 5; k++) expect(await get(runner.port, `/n${k}`)).toBe(200);
    const out = await waitFor(() => (runner!.proc.stdout.split('\n').filter((l) => l).length === 5 ? runner!.proc.stdout : undefined), 10_000, '5 lines on stdout');
    expect(out.split('\n').filter((l) => l).map((l) => /"GET (\/n\d) HTTP\/1\.1" 200 2 "-" "-"$/.exec(l)?.[1]).sort()).toEqual(['/n0', '/n1', '/n2', '/n3', '/n4']);
    expect(readFileSync(join(dir, 'error.log'), 'utf8')).not.toMatch(/GET \/n/);
  });
});

describe('SIGUSR1 reopens the files (logrotate)', () => {
  it.each([
    ['-k sync', ['-w', '2']],
    ['-k gthread', ['-w', '1', '-k', 'gthread', '--threads', '2']],
  ])('%s: access lines go to the new file after rename + USR1; the error log too', async (_what, args) => {
    const dir = tmpDir();
    const file = join(dir, 'access.log');
    const errors = join(dir, 'error.log');
    runner = await startRunner(['--access-logfile', file, '--error-logfile', errors, ...args, APP], { workers: Number(args[1]) });
    for (let k = 0; k < 10; k++) expect(await get(runner.port, `/before${k}`)).toBe(200);
    await waitFor(() => (lines(file).length === 10 ? true : undefined), 10_000, '10 lines before');
    renameSync(file, `${file}.1`);
    renameSync(errors, `${errors}.1`);
    runner.signal('SIGUSR1');
    await waitFor(() => (existsSync(errors) && /Log file reopened/.test(readFileSync(errors, 'utf8')) ? true : undefined), 10_000, 'error log reopened');
    await waitFor(() => (existsSync(file) ? true : undefined), 10_000, 'access log reopened by the workers');
    // every worker (and gthread thread) has reopened: no worker process holds the renamed file open any more
    // (its fds, in /proc), and each holds the new one — not only the first worker to get the signal
    const old = statSync(`${file}.1`).ino;
    const fresh = statSync(file).ino;
    const workers = await runner.running();
    const held = (pid: string) => readdirSync(`/proc/${pid}/fd`).map((fd) => {
      try { return statSync(`/proc/${pid}/fd/${fd}`).ino; } catch { return 0; }
    });
    await waitFor(() => workers.every((pid) => { const h = held(pid); return !h.includes(old) && h.includes(fresh); }) || undefined,
      10_000, 'every worker holds the new access log, none the old');
    const after = 20;
    for (let k = 0; k < after; k++) expect(await get(runner.port, `/after${k}`)).toBe(200);
    await waitFor(() => (lines(file).length + lines(`${file}.1`).length === 10 + after ? true : undefined), 10_000, 'all lines');
    expect(lines(`${file}.1`).filter((l) => /before/.test(l))).toHaveLength(10);
    expect(lines(file).every((l) => /GET \/after\d+ /.test(l))).toBe(true);
    expect(lines(file).length).toBe(after);
  }, 60_000);
});

describe('--forwarded-allow-ips', () => {
  it.each([
    ['the default (127.0.0.1,::1) trusts this peer: h is the client from X-Forwarded-For', [], '203.0.113.7'],
    ['"*" trusts every peer', ['--forwarded-allow-ips', '*'], '203.0.113.7'],
    ['another address: h stays the peer', ['--forwarded-allow-ips', '10.1.2.3'], '127.0.0.1'],
  ])('%s', async (_what, args, h) => {
    const dir = tmpDir();
    const file = join(dir, 'access.log');
    runner = await startRunner(['--access-logfile', file, '--access-logformat', '%(h)s %({wsgi.url_scheme}e)s', ...args, APP], { workers: 1 });
    expect(await get(runner.port, '/', { 'x-forwarded-for': '203.0.113.7, 10.0.0.1', 'x-forwarded-proto': 'https' })).toBe(200);
    const got = await waitFor(() => (lines(file).length === 1 ? lines(file) : undefined), 10_000, '1 line');
    expect(got).toEqual([`${h} ${h === '127.0.0.1' ? 'http' : 'https'}`]);
  });
});

