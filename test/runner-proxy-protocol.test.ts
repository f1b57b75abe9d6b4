/**
 * --proxy-protocol / --proxy-allow-from, for real: a real runner (-w 1, sync and gthread), raw TCP
 * clients sending PROXY protocol v1 text and v2 binary headers (built here by hand), the client
 * address from the header as the app's req.socket.remoteAddress and the access log's %(h)s, and
 * gunicorn 20.1's answers (checked against Debian's gunicorn with --proxy-protocol): no header →
 * served as plain HTTP; a malformed header → 400, closed; a header from a peer not in
 * --proxy-allow-from → 403, closed; neither of those reaches the app or counts as a request.
 */
import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FIXTURES, tmpDir, total, waitFor } from './helpers';
import { makeCerts } from './fixtures/certs';
import { startRunner, type Runner } from './runner-helpers';

const APP = join(FIXTURES, 'runner-peer.cjs');

let runner: Runner | undefined;
afterEach(async () => {
  await runner?.stop();
  runner = undefined;
});

/** connect, write the chunks one after another, read until the server closes */
function exchange(port: number, chunks: Buffer[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    s.setNoDelay(true);
    let out = '';
    s.on('data', (d) => { out += d.toString('latin1'); });
    s.on('error', reject);
    s.on('close', () => resolve(out));
    s.on('connect', () => {
      let i = 0;
      const next = () => { if (i < chunks.length) s.write(chunks[i++]!, () => setImmediate(next)); };
      next();
    });
  });
}

const req = (path: string, close = true) => Buffer.from(`GET ${path} HTTP/1.1\r\nHost: x\r\n${close ? 'Connection: close\r\n' : ''}\r\n`);
const v1 = (line: string) => Buffer.from(`${line}\r\n`, 'latin1');

/** a v2 header: signature, version 2 + command, family/transport, length, addresses (+ `extra` TLV bytes) */
function v2(opts: { command?: number; family: 'inet' | 'inet6'; src: number[]; dst: number[]; sport: number; dport: number; extra?: Buffer }): Buffer {
  const addr = Buffer.concat([Buffer.from(opts.src), Buffer.from(opts.dst), Buffer.from([opts.sport >> 8, opts.sport & 255, opts.dport >> 8, opts.dport & 255]), opts.extra ?? Buffer.alloc(0)]);
  const head = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20 | (opts.command ?? 1), opts.family === 'inet' ? 0x11 : 0x21, addr.length >> 8, addr.length & 255]);
  return Buffer.concat([head, addr]);
}

/** status codes and bodies of the responses in a raw exchange */
function responses(raw: string): Array<{ status: number; body: string }> {
  const out: Array<{ status: number; body: string }> = [];
  const re = /HTTP\/1\.1 (\d{3}) [^\r]*\r\n([\s\S]*?)\r\n\r\n/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(raw))) {
    const len = Number(/content-length: (\d+)/i.exec(m[2]!)?.[1] ?? NaN);
    let body: string;
    if (Number.isFinite(len)) body = raw.slice(re.lastIndex, re.lastIndex + len);
    else if (!/transfer-encoding: chunked/i.test(m[2]!)) body = '';
    else {
      // chunked: one chunk, then 0
      const c = /^([0-9a-f]+)\r\n/.exec(raw.slice(re.lastIndex))!;
      body = raw.slice(re.lastIndex + c[0].length, re.lastIndex + c[0].length + parseInt(c[1]!, 16));
    }
    out.push({ status: Number(m[1]), body });
  }
  return out;
}

const lines = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : []);
const requests = async (r: Runner) => total(await r.scrape(), 'gunicorn_worker_requests_total');

describe.each([
  // sync serves one request per connection (gunicorn's sync worker: no keep-alive), gthread keeps it alive
  ['sync', ['-k', 'sync'], false],
  ['gthread', ['-k', 'gthread', '--threads', '2'], true],
] as const)('--proxy-protocol, %s', (_kind, klass, keepAlive) => {
  it('v1 and v2 headers: the client address is the peer (app, access log); no header: plain HTTP; a bad header: 400; counts exact', async () => {
    const log = join(tmpDir(), 'access.log');
    runner = await startRunner(['-w', '1', ...klass, '--proxy-protocol', '--access-logfile', log, APP], { workers: 1 });
    const port = runner.port;

    // v1, header and request in one write
    expect(responses(await exchange(port, [Buffer.concat([v1('PROXY TCP4 203.0.113.7 127.0.0.1 5555 8000'), req('/v1')])]))).toEqual([{ status: 200, body: '203.0.113.7 5555' }]);
    // v1 split inside the header, then two pipelined requests on the same connection: both from the header's client
    // (sync: one request, as gunicorn's sync worker serves one per connection; a pipelined second one is
    // counted by the serving loop but never answered — a serving-loop matter, not the PROXY header's)
    const tail = keepAlive ? [Buffer.from('st: x\r\n\r\n'), req('/b')] : [Buffer.from('st: x\r\nConnection: close\r\n\r\n')];
    const split = await exchange(port, [Buffer.from('PROX'), Buffer.from('Y TCP6 2001:db8::7 ::1 6000 80\r\nGET /a HTTP/1.1\r\nHo'), ...tail]);
    const ok6 = { status: 200, body: '2001:db8::7 6000' };
    expect(responses(split)).toEqual(keepAlive ? [ok6, ok6] : [ok6]);
    // v2 IPv4, with a TLV after the addresses (skipped)
    const tlv = Buffer.from([0x04, 0x00, 0x02, 0xab, 0xcd]);
    expect(responses(await exchange(port, [Buffer.concat([v2({ family: 'inet', src: [198, 51, 100, 9], dst: [127, 0, 0, 1], sport: 4444, dport: 8000, extra: tlv }), req('/v2')])]))).toEqual([{ status: 200, body: '198.51.100.9 4444' }]);
    // v2 IPv6
    const src6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42];
    expect(responses(await exchange(port, [v2({ family: 'inet6', src: src6, dst: [...Array(15).fill(0), 1], sport: 7000, dport: 80 }), req('/v2-6')]))).toEqual([{ status: 200, body: '2001:db8::42 7000' }]);
    // v2 LOCAL (a proxy's health check): the real peer stays
    const local = responses(await exchange(port, [Buffer.concat([v2({ command: 0, family: 'inet', src: [1, 2, 3, 4], dst: [5, 6, 7, 8], sport: 1, dport: 2 }), req('/local')])]));
    expect(local.map((r) => [r.status, r.body.split(' ')[0]])).toEqual([[200, '127.0.0.1']]);
    // no header: served as plain HTTP with the real peer (gunicorn 20.1 does the same)
    const plain = responses(await exchange(port, [req('/plain')]));
    expect(plain.map((r) => [r.status, r.body.split(' ')[0]])).toEqual([[200, '127.0.0.1']]);

    // bad headers: 400 (gunicorn's "Invalid PROXY line"), the connection closed, the app never called
    for (const bad of [
      v1('PROXY TCP4 nope 127.0.0.1 5555 8000'),
      v1('PROXY TCP4 203.0.113.7 127.0.0.1 70000 8000'),
      v1('PROXY TCP6 203.0.113.7 127.0.0.1 1 2'),
      v1('PROXY UNKNOWN'),
      // longer than v1's 107-byte bound, no CRLF within it
      Buffer.from(`PROXY TCP4 ${'1'.repeat(200)}`),
      // v2 with version 1 in the version nibble
      Buffer.concat([v2({ family: 'inet', src: [1, 1, 1, 1], dst: [2, 2, 2, 2], sport: 1, dport: 2 }).fill(0x11, 12, 13)]),
    ]) {
      const r = responses(await exchange(port, [Buffer.concat([bad, req('/never')])]));
      expect(r.map((x) => x.status), bad.toString('latin1')).toEqual([400]);
      expect(r[0]!.body).toMatch(/Bad Request/);
    }

    // exactly the requests served: access log lines (first field = the header's client) and the counter
    const hosts = ['203.0.113.7', '2001:db8::7', ...(keepAlive ? ['2001:db8::7'] : []), '198.51.100.9', '2001:db8::42', '127.0.0.1', '127.0.0.1'];
    const paths = ['/v1', '/a', ...(keepAlive ? ['/b'] : []), '/v2', '/v2-6', '/local', '/plain'];
    await waitFor(() => (lines(log).length >= hosts.length ? true : undefined), 15_000, `${hosts.length} access log lines`);
    // (host, path) per line; gthread's threads each write their own lines, so the order across threads is not the requests'
    const seen = lines(log).map((l) => `${l.split(' ')[0]} ${/"GET (\S+)/.exec(l)![1]}`).sort();
    expect(seen).toEqual(hosts.map((h, i) => `${h} ${paths[i]}`).sort());
    await waitFor(async () => ((await requests(runner!)) === hosts.length ? true : undefined), 15_000, `requests_total = ${hosts.length}`);
    expect(lines(log)).toHaveLength(hosts.length);
  }, 60_000);

  it('a peer not in --proxy-allow-from: its PROXY header → 403, closed; without a header it is served (as gunicorn)', async () => {
    const log = join(tmpDir(), 'access.log');
    runner = await startRunner(['-w', '1', ...klass, '--proxy-protocol', 'v1', '--proxy-allow-from', '10.9.9.9', '--access-logfile', log, APP], { workers: 1 });
    const forbidden = responses(await exchange(runner.port, [Buffer.concat([v1('PROXY TCP4 203.0.113.7 127.0.0.1 5555 8000'), req('/never')])]));
    expect(forbidden.map((r) => r.status)).toEqual([403]);
    expect(forbidden[0]!.body).toMatch(/Request forbidden/);
    const plain = responses(await exchange(runner.port, [req('/plain')]));
    expect(plain.map((r) => [r.status, r.body.split(' ')[0]])).toEqual([[200, '127.0.0.1']]);
    await waitFor(async () => ((await requests(runner!)) === 1 ? true : undefined), 15_000, 'requests_total = 1');
    await waitFor(() => (lines(log).length >= 1 ? true : undefined), 15_000, 'the access log line');
    expect(lines(log).map((l) => l.split(' ')[0])).toEqual(['127.0.0.1']);
  }, 60_000);
});

describe('--proxy-protocol with HTTPS, modes, and the header deadline', () => {
  it('the PROXY header comes before the TLS handshake; its client is the peer of the HTTPS request', async () => {
    const certs = makeCerts();
    const log = join(tmpDir(), 'access.log');
    runner = await startRunner(['-w', '1', '--proxy-protocol', 'v2', '--certfile', certs.f('server.crt'), '--keyfile', certs.f('server.key'), '--access-logfile', log, APP], { workers: 1 });
    const raw = await new Promise<string>((resolve, reject) => {
      const sock = connect(runner!.port, '127.0.0.1', () => {
        sock.write(v2({ family: 'inet', src: [192, 0, 2, 33], dst: [127, 0, 0, 1], sport: 3333, dport: 443 }));
        const t = tlsConnect({ socket: sock, ca: certs.read('ca.crt'), servername: 'localhost' }, () => t.end(req('/tls')));
        let out = '';
        t.on('data', (d) => { out += d.toString('latin1'); });
        t.on('error', reject);
        t.on('close', () => resolve(out));
      });
      sock.on('error', reject);
    });
    expect(responses(raw)).toEqual([{ status: 200, body: '192.0.2.33 3333' }]);
    await waitFor(() => (lines(log).length >= 1 ? true : undefined), 15_000, 'the access log line');
    expect(lines(log)[0]).toMatch(/^192\.0\.2\.33 /);
    await waitFor(async () => ((await requests(runner!)) === 1 ? true : undefined), 15_000, 'requests_total = 1');
  }, 60_000);

  it('v1 mode does not read a v2 header (Node\'s parser refuses the bytes); a silent connection is closed by the header deadline', async () => {
    runner = await startRunner(['-w', '1', '-k', 'sync', '--proxy-protocol', 'v1', APP], { workers: 1 });
    const r = responses(await exchange(runner.port, [Buffer.concat([v2({ family: 'inet', src: [1, 1, 1, 1], dst: [2, 2, 2, 2], sport: 1, dport: 2 }), req('/never')])]));
    expect(r.map((x) => x.status)).toEqual([400]);
    // a connection that sends nothing is closed by the server (HEADER_DEADLINE_MS, 5 s), not held forever
    const closedByServer = await new Promise<boolean>((resolve, reject) => {
      const s = connect(runner!.port, '127.0.0.1');
      const guard = setTimeout(() => { s.destroy(); resolve(false); }, 30_000);
      s.on('error', reject);
      s.on('close', () => { clearTimeout(guard); resolve(true); });
    });
    expect(closedByServer).toBe(true);
    // and the sync worker's one slot is free again
    expect(responses(await exchange(runner.port, [req('/after')])).map((x) => x.status)).toEqual([200]);
    await waitFor(async () => ((await requests(runner!)) === 1 ? true : undefined), 15_000, 'requests_total = 1');
  }, 60_000);

  it('bounds: the largest v2 header (16 + 65535 bytes) is read whole; one whose bytes never all arrive is closed by the deadline', async () => {
    runner = await startRunner(['-w', '1', '-k', 'sync', '--proxy-protocol', 'auto', APP], { workers: 1 });
    // 12 address bytes + one TLV (3-byte head + 65520 bytes) = 65535: the length field's maximum
    const tlv = Buffer.concat([Buffer.from([0xe0, 0xff, 0xf0]), Buffer.alloc(65520, 0x61)]);
    const max = v2({ family: 'inet', src: [203, 0, 113, 99], dst: [127, 0, 0, 1], sport: 65535, dport: 80, extra: tlv });
    expect(max.length).toBe(16 + 65535);
    // sent in pieces, the request after it
    const pieces = [max.subarray(0, 10), max.subarray(10, 30_000), max.subarray(30_000), req('/max')];
    expect(responses(await exchange(runner.port, pieces))).toEqual([{ status: 200, body: '203.0.113.99 65535' }]);
    // a header announcing 65535 bytes that sends 100 and stops: nothing is answered, the server closes it
    expect(await exchange(runner.port, [max.subarray(0, 100)])).toBe('');
    expect(responses(await exchange(runner.port, [req('/after')])).map((x) => x.status)).toEqual([200]);
    await waitFor(async () => ((await requests(runner!)) === 2 ? true : undefined), 15_000, 'requests_total = 2');
  }, 60_000);
});
