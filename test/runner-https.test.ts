/**
 * The runner's server settings with a Node meaning, for real: HTTPS (certificates made with
 * openssl here), client certificates (--cert-reqs / --ca-certs), gunicorn's request limits compared
 * with Debian's real gunicorn, --keep-alive for every worker class.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FIXTURES, freePort, stopChild, tmpDir, waitFor } from './helpers';
import { startRunner, type Runner } from './runner-helpers';

const APP = join(FIXTURES, 'runner-http.cjs');

let runner: Runner | undefined;
let gunicorn: ChildProcess | undefined;
afterEach(async () => {
  await runner?.stop();
  runner = undefined;
  await stopChild(gunicorn);
  gunicorn = undefined;
});

/** a CA, a server certificate for 127.0.0.1 signed by it, and a client certificate signed by it */
function makeCerts(dir: string) {
  const ossl = (...a: string[]) => execFileSync('openssl', a, { cwd: dir, stdio: 'pipe' });
  ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=test-ca');
  for (const name of ['server', 'client']) {
    ossl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name === 'server' ? '127.0.0.1' : 'client'}`);
    writeFileSync(join(dir, `${name}.ext`), name === 'server' ? 'subjectAltName=IP:127.0.0.1\n' : 'extendedKeyUsage=clientAuth\n');
    ossl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`);
  }
  const f = (n: string) => join(dir, n);
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key'), clientCert: f('client.pem'), clientKey: f('client.key') };
}

function httpsGet(port: number, path: string, opts: { ca: string; cert?: string; key?: string }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1', port, path, agent: false, ca: readFileSync(opts.ca),
      ...(opts.cert ? { cert: readFileSync(opts.cert), key: readFileSync(opts.key!) } : {}),
    }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('HTTPS: --certfile / --keyfile / --ca-certs / --cert-reqs / --ciphers', () => {
  it.each([
    ['sync', ['-k', 'sync', '-w', '2'], 2],
    ['gthread', ['-k', 'gthread', '--threads', '2'], 1],
    ['gevent', ['-k', 'gevent'], 1],
  ])('-k %s serves the app over HTTPS; the access log says https; plain HTTP is refused', async (_k, args, workers) => {
    const dir = tmpDir();
    const c = makeCerts(dir);
    const log = join(dir, 'access.log');
    runner = await startRunner(['--certfile', c.cert, '--keyfile', c.key, '--ciphers', 'ECDHE+AESGCM:ECDHE+CHACHA20', '--do-handshake-on-connect',
      '--access-logfile', log, '--access-logformat', '%({wsgi.url_scheme}e)s "%(r)s" %(s)s', ...args, APP], { workers });
    for (let i = 0; i < 5; i++) expect(await httpsGet(runner.port, `/s${i}`, { ca: c.ca })).toEqual({ status: 200, body: 'ok' });
    // plain HTTP to the TLS port: no response (the handshake fails), and the worker goes on serving
    await expect(fetch(runner.url('/plain'))).rejects.toThrow();
    expect(await httpsGet(runner.port, '/after', { ca: c.ca })).toEqual({ status: 200, body: 'ok' });
    const lines = await waitFor(() => {
      const l = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : [];
      return l.length === 6 ? l : undefined;
    }, 10_000, '6 access lines');
    expect(lines.sort()).toEqual(['https "GET /after HTTP/1.1" 200', ...[0, 1, 2, 3, 4].map((i) => `https "GET /s${i} HTTP/1.1" 200`)]);
    // the requests are counted like any other
    const s = await runner.scrape();
    expect(s.filter((x) => x.name === 'gunicorn_worker_requests_total').reduce((a, x) => a + x.value, 0)).toBe(6);
  }, 60_000);

  it('the master\'s `Listening at:` line says https:// for a TLS bind, as Debian\'s gunicorn 20.1 prints it (one line, comma-separated, unix: as is)', async () => {
    const dir = tmpDir();
    const c = makeCerts(dir);
    const ours = join(dir, 'ours.sock');
    runner = await startRunner(['--certfile', c.cert, '--keyfile', c.key, '-b', `unix:${ours}`, APP], { workers: 1 });
    const ourLine = /Listening at: (.*) \((\d+)\)$/m.exec(runner.proc.stderr);
    expect(ourLine?.[1]).toBe(`https://127.0.0.1:${runner.port},unix:${ours}`);
    expect(ourLine?.[2]).toBe(String(runner.proc.child.pid));
    // real gunicorn, the same kind of binds and the same certificate
    const port = await freePort();
    const theirs = join(dir, 'theirs.sock');
    writeFileSync(join(dir, 'wapp.py'), 'def app(environ, start_response):\n    start_response("200 OK", [])\n    return [b"ok"]\n');
    gunicorn = spawn('/usr/bin/python3', ['-m', 'gunicorn', '--certfile', c.cert, '--keyfile', c.key, '-b', `127.0.0.1:${port}`, '-b', `unix:${theirs}`, 'wapp:app'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    gunicorn.stderr!.on('data', (d) => { err += d; });
    const theirLine = await waitFor(() => /Listening at: (.*) \((\d+)\)$/m.exec(err) ?? undefined, 15_000, 'gunicorn\'s Listening line');
    expect(theirLine[1]).toBe(`https://127.0.0.1:${port},unix:${theirs}`);
  }, 60_000);

  it('--cert-reqs 2 --ca-certs: a client without a certificate is refused, one with a certificate the CA signed is served', async () => {
    const dir = tmpDir();
    const c = makeCerts(dir);
    runner = await startRunner(['--certfile', c.cert, '--keyfile', c.key, '--ca-certs', c.ca, '--cert-reqs', '2', '-k', 'gevent', APP], { workers: 1 });
    await expect(httpsGet(runner.port, '/', { ca: c.ca })).rejects.toThrow();
    expect(await httpsGet(runner.port, '/', { ca: c.ca, cert: c.clientCert, key: c.clientKey })).toEqual({ status: 200, body: 'ok' });
  }, 60_000);

  it('a key that does not match the certificate: the worker cannot boot, one line naming the files', async () => {
    const dir = tmpDir();
    const c = makeCerts(dir);
    const port = await freePort();
    const { spawnSync } = await import('node:child_process');
    const r = spawnSync(process.execPath, [join(FIXTURES, '..', '..', 'dist/cjs/cli.js'), '-b', `127.0.0.1:${port}`, '--certfile', c.cert, '--keyfile', c.clientKey, APP], {
      env: { ...process.env, NODE_OPTIONS: '', PROMETHEUS_METRICS_PORT: '0', PROMETHEUS_BIND_ADDRESS: '127.0.0.1' }, encoding: 'utf8', timeout: 30_000,
    });
    expect(r.stderr).toMatch(new RegExp(`prefork-otel: cannot use --certfile ${c.cert} / --keyfile ${c.clientKey}: .*key values mismatch`));
    expect(r.status).not.toBe(0);
  }, 60_000);
});

/** one raw request; resolves with the status line */
function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.end(text));
    let d = '';
    s.on('data', (c) => { d += c; });
    // a server that answers before it read the whole request may reset the connection: what arrived counts
    s.on('close', () => resolve(d ? d.split('\r\n')[0]! : 'NO RESPONSE'));
    s.on('error', () => undefined);
  });
}

const LIMITS = ['--limit-request-line', '100', '--limit-request-fields', '5'];
/** [what, request, our status line, gunicorn 20.1's] */
const CASES: Array<[string, string, string, string]> = [
  ['a request line of 100 bytes (the limit)', `GET /${'a'.repeat(86)} HTTP/1.1\r\nHost: x\r\n\r\n`, 'HTTP/1.1 200 OK', 'HTTP/1.1 200 OK'],
  ['a request line of 101 bytes', `GET /${'a'.repeat(87)} HTTP/1.1\r\nHost: x\r\n\r\n`, 'HTTP/1.1 400 Bad Request', 'HTTP/1.1 400 Bad Request'],
  ['5 header fields (the limit)', 'GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n', 'HTTP/1.1 200 OK', 'HTTP/1.1 200 OK'],
  // gunicorn 26 answers LimitRequestHeaders with 431 (workers/base.py); Debian's 20.1 still with 400
  ['6 header fields', 'GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n', 'HTTP/1.1 431 Request Header Fields Too Large', 'HTTP/1.1 400 Bad Request'],
  ['a 50-byte field (the limit, CRLF included)', `GET / HTTP/1.1\r\nHost: x\r\nXy: ${'v'.repeat(44)}\r\n\r\n`, 'HTTP/1.1 200 OK', 'HTTP/1.1 200 OK'],
  ['a 51-byte field', `GET / HTTP/1.1\r\nHost: x\r\nXy: ${'v'.repeat(45)}\r\n\r\n`, 'HTTP/1.1 431 Request Header Fields Too Large', 'HTTP/1.1 400 Bad Request'],
  ['a head far beyond the bound (Node\'s parser stops it)', `GET / HTTP/1.1\r\nHost: x\r\nXy: ${'v'.repeat(20_000)}\r\n\r\n`, 'HTTP/1.1 431 Request Header Fields Too Large', 'HTTP/1.1 400 Bad Request'],
];

describe('--limit-request-line / --limit-request-fields / --limit-request-field-size, beside Debian\'s gunicorn', () => {
  it('the same boundaries as gunicorn; statuses as gunicorn 26 (400 for the line, 431 for fields)', async () => {
    const dir = tmpDir();
    writeFileSync(join(dir, 'wsgiapp.py'), 'def app(environ, start_response):\n    start_response("200 OK", [("Content-Length", "2")])\n    return [b"ok"]\n');
    runner = await startRunner([...LIMITS, '--limit-request-field-size', '50', APP], { workers: 1 });
    const ours: string[] = [];
    for (const [, req] of CASES) ours.push(await raw(runner.port, req));
    expect(ours).toEqual(CASES.map((c) => c[2]));
    if (!existsSync('/usr/lib/python3/dist-packages/gunicorn')) return expect.fail('python3-gunicorn is not installed (.ci/run installs it)');
    const gport = await freePort();
    gunicorn = spawn('/usr/bin/python3', ['-m', 'gunicorn', '-b', `127.0.0.1:${gport}`, ...LIMITS, '--limit-request-field_size', '50', '--chdir', dir, 'wsgiapp:app'], { stdio: 'ignore' });
    await waitFor(() => raw(gport, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n').then((l) => (l.startsWith('HTTP/1.1 200') ? true : undefined)), 15_000, 'gunicorn up');
    const theirs: string[] = [];
    for (const [, req] of CASES) theirs.push(await raw(gport, req));
    expect(theirs).toEqual(CASES.map((c) => c[3]));
    // accepted by both exactly where gunicorn accepts
    expect(ours.map((l) => l.endsWith('200 OK'))).toEqual(theirs.map((l) => l.endsWith('200 OK')));
  }, 60_000);
});

/** an idle keep-alive connection: resolves with how long the server kept it open after a response (ms) */
function keptOpenMs(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const s: Socket = connect(port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    let answeredAt = 0;
    s.on('data', () => { if (!answeredAt) answeredAt = Date.now(); });
    s.on('close', () => resolve(answeredAt ? Date.now() - answeredAt : -1));
    s.on('error', reject);
    s.setTimeout(20_000, () => s.destroy());
  });
}

describe('--keep-alive, every class', () => {
  it.each([
    ['gthread', ['-k', 'gthread', '--threads', '2']],
    ['gevent', ['-k', 'gevent']],
    ['eventlet', ['-k', 'eventlet']],
  ])('-k %s: an idle connection is closed after --keep-alive 1, and kept past it with --keep-alive 4', async (_k, args) => {
    runner = await startRunner(['--keep-alive', '1', ...args, APP], { workers: 1 });
    const short = await keptOpenMs(runner.port);
    await runner.stop();
    runner = await startRunner(['--keep-alive', '4', ...args, APP], { workers: 1 });
    const long = await keptOpenMs(runner.port);
    // the server closed both (not our 20 s guard); neither before its --keep-alive (lower bounds only: a busy machine is late, never early)
    expect(short).toBeGreaterThanOrEqual(900);
    expect(long).toBeGreaterThanOrEqual(3900);
    expect(long).toBeLessThan(19_000);
    expect(short).toBeLessThan(19_000);
  }, 60_000);

  it('-k sync: every response closes its connection (gunicorn\'s sync worker has no keep-alive); --keep-alive 0 does so for every class', async () => {
    runner = await startRunner(['-k', 'sync', '--keep-alive', '5', APP], { workers: 1 });
    expect(await keptOpenMs(runner.port)).toBeLessThan(1000);
    await runner.stop();
    runner = await startRunner(['-k', 'gevent', '--keep-alive', '0', APP], { workers: 1 });
    expect(await keptOpenMs(runner.port)).toBeLessThan(1000);
  }, 60_000);
});
