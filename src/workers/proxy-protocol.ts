/**
 * gunicorn's --proxy-protocol / --proxy-allow-from on the app's server: a connection may start with
 * a PROXY protocol header (v1 text `PROXY TCP4 src dst sport dport\r\n`, v2 binary), sent by the
 * load balancer in front; its client address becomes the connection's peer (`req.socket.remoteAddress`,
 * the access log's `%(h)s`). Parsed with proxy-protocol-js. As gunicorn:
 * - a connection without a header is served as plain HTTP (gunicorn 20.1 serves it: "HTTP and
 *   Proxy together");
 * - a header from a peer not in --proxy-allow-from → 403 Forbidden, connection closed;
 * - a malformed header → 400 Bad Request, connection closed (neither reaches the app, neither is a request).
 * Bounds: a v1 header is read up to 107 bytes, a v2 header up to 16 + 65535 bytes (its length
 * field), and all of it within HEADER_DEADLINE_MS of the accept; past either the connection is
 * answered 400 / closed. The header comes before the TLS handshake (as haproxy's `send-proxy` sends it).
 */
import net from 'node:net';
import { Command, IPv4ProxyAddress, IPv6ProxyAddress, V1ProxyProtocol, V2ProxyProtocol } from 'proxy-protocol-js';
import type { ProxyProtocolMode } from '../config/runner';

/** the longest v1 header, CRLF included (the PROXY protocol spec's 107) */
export const V1_MAX = 107;
/** the longest v2 header: 16 fixed bytes + a 16-bit length */
export const V2_MAX = 16 + 0xffff;
/** a connection that has not completed its first bytes / its header by then is closed */
export const HEADER_DEADLINE_MS = 5000;

const V1_SIG = Buffer.from('PROXY', 'latin1');
const V2_SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const kPeer = Symbol('prefork-otel.proxyPeer');

interface Peer { address: string; port: number; family: 'IPv4' | 'IPv6' }
type Peered = net.Socket & { [kPeer]?: Peer };

/** --proxy-allow-from: addresses and CIDR networks (IPv4-mapped IPv6 peers match their IPv4 form) */
class AllowList {
  private readonly all: boolean;
  private readonly list = new net.BlockList();
  constructor(ips: string[]) {
    this.all = ips.includes('*');
    for (const ip of ips) {
      if (ip === '*') continue;
      const [addr, bits] = ip.split('/') as [string, string | undefined];
      const type = net.isIPv6(addr) ? 'ipv6' : 'ipv4';
      if (bits !== undefined) this.list.addSubnet(addr, Number(bits), type);
      else this.list.addAddress(addr, type);
    }
  }
  allows(addr: string | undefined): boolean {
    if (this.all) return true;
    if (!addr) return false;
    if (addr.startsWith('::ffff:') && net.isIPv4(addr.slice(7))) addr = addr.slice(7);
    return this.list.check(addr, net.isIPv6(addr) ? 'ipv6' : 'ipv4');
  }
}

/** the peer of a socket as the PROXY header named it: remoteAddress / remotePort / remoteFamily of this socket instance */
function setPeer(sock: net.Socket, peer: Peer): void {
  (sock as Peered)[kPeer] = peer;
  Object.defineProperties(sock, {
    remoteAddress: { configurable: true, get: () => peer.address },
    remotePort: { configurable: true, get: () => peer.port },
    remoteFamily: { configurable: true, get: () => peer.family },
  });
}

/** a socket wrapping `raw` (the TLSSocket) reports the PROXY header's peer too */
export function carryProxyPeer(raw: net.Socket, wrapper: net.Socket): void {
  const peer = (raw as Peered)[kPeer];
  if (peer) setPeer(wrapper, peer);
}

/** gunicorn's util.write_error page, then the connection closes */
function refuse(sock: net.Socket, status: 400 | 403, message: string): void {
  const reason = status === 400 ? 'Bad Request' : 'Forbidden';
  const esc = message.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#x27;');
  const body = `<html>\n  <head>\n    <title>${reason}</title>\n  </head>\n  <body>\n    <h1><p>${reason}</p></h1>\n    ${esc}\n  </body>\n</html>\n`;
  sock.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  sock.destroySoon();
}

/** does `buf` start with (a prefix of) `sig`? */
function startsLike(buf: Buffer, sig: Buffer): boolean {
  const n = Math.min(buf.length, sig.length);
  return buf.compare(sig, 0, n, 0, n) === 0;
}

function ipv6(bytes: readonly number[]): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  return new URL(`http://[${groups.join(':')}]`).hostname.slice(1, -1);
}

type Step =
  | { kind: 'more' }
  | { kind: 'plain' }
  | { kind: 'header'; length: number; peer: Peer | undefined }
  | { kind: 'bad'; message: string };

const MORE: Step = { kind: 'more' };
const PLAIN: Step = { kind: 'plain' };

/** v1: `PROXY TCP4|TCP6 src dst sport dport\r\n` (gunicorn validates the same: the addresses' family, ports 0–65535) */
function v1(buf: Buffer): Step {
  const end = buf.indexOf('\r\n', 0, 'latin1');
  if (end < 0 || end + 2 > V1_MAX) {
    if (buf.length < V1_MAX && end < 0) return MORE;
    return { kind: 'bad', message: `Invalid PROXY line: '${buf.toString('latin1', 0, Math.min(buf.length, V1_MAX))}'` };
  }
  const line = buf.toString('latin1', 0, end + 2);
  const bad: Step = { kind: 'bad', message: `Invalid PROXY line: '${line.slice(0, -2)}'` };
  let p: V1ProxyProtocol;
  try { p = V1ProxyProtocol.parse(line); } catch { return bad; }
  const is = p.inetProtocol === 'TCP4' ? net.isIPv4 : p.inetProtocol === 'TCP6' ? net.isIPv6 : undefined;
  if (!is || !is(p.source.ipAddress) || !is(p.destination.ipAddress)) return bad;
  for (const port of [p.source.port, p.destination.port]) if (!(port >= 0 && port <= 65535)) return bad;
  return { kind: 'header', length: end + 2, peer: { address: p.source.ipAddress, port: p.source.port, family: p.inetProtocol === 'TCP4' ? 'IPv4' : 'IPv6' } };
}

/** v2: 12-byte signature, version/command, family/transport, 16-bit length, addresses (+ TLVs, skipped) */
function v2(buf: Buffer): Step {
  if (buf.length < 16) return MORE;
  const length = 16 + buf.readUInt16BE(14);
  if (buf.length < length) return MORE;
  let p: V2ProxyProtocol;
  try { p = V2ProxyProtocol.parse(new Uint8Array(buf.buffer, buf.byteOffset, length)); } catch (e) {
    return { kind: 'bad', message: `Invalid PROXY header: ${(e as { message?: string }).message ?? String(e)}` };
  }
  // LOCAL (the proxy's own health check), UNSPEC or UNIX addresses: the real peer stays
  if (p.command !== Command.PROXY) return { kind: 'header', length, peer: undefined };
  const a = p.proxyAddress;
  if (a instanceof IPv4ProxyAddress) return { kind: 'header', length, peer: { address: a.sourceAddress.address.join('.'), port: a.sourcePort, family: 'IPv4' } };
  if (a instanceof IPv6ProxyAddress) return { kind: 'header', length, peer: { address: ipv6(a.sourceAddress.address), port: a.sourcePort, family: 'IPv6' } };
  return { kind: 'header', length, peer: undefined };
}

function step(buf: Buffer, mode: ProxyProtocolMode): Step {
  const tryV2 = mode === 'v2' || mode === 'auto';
  const tryV1 = mode === 'v1' || mode === 'auto';
  const likeV2 = tryV2 && startsLike(buf, V2_SIG);
  const likeV1 = tryV1 && startsLike(buf, V1_SIG);
  if (likeV2 && buf.length >= V2_SIG.length) return v2(buf);
  if (likeV1 && buf.length >= V1_SIG.length) return v1(buf);
  return likeV1 || likeV2 ? MORE : PLAIN;
}

/**
 * Wrap the server's 'connection' listeners (http's parser setup, or serveTls's handshake): each
 * accepted socket is read until its first bytes show a header or not, the header is consumed, the
 * rest is put back (unshift) and the socket handed on.
 */
export function serveProxyProtocol(server: net.Server, mode: ProxyProtocolMode, allowIps: string[]): void {
  if (mode === 'off') return;
  const allow = new AllowList(allowIps);
  const inner = server.listeners('connection') as Array<(s: net.Socket) => void>;
  server.removeAllListeners('connection');
  server.on('connection', (raw: net.Socket) => {
    let buf: Buffer | undefined;
    // unref'd: a worker draining for exit does not wait for it
    const timer = setTimeout(() => raw.destroy(), HEADER_DEADLINE_MS).unref();
    const stop = () => {
      clearTimeout(timer);
      raw.off('data', onData);
      raw.off('end', onGone);
      raw.off('error', onGone);
      raw.off('close', stop);
    };
    const onGone = () => { stop(); raw.destroy(); };
    const onData = (chunk: Buffer) => {
      buf = buf ? Buffer.concat([buf, chunk]) : chunk;
      const s = step(buf, mode);
      if (s.kind === 'more') return;
      stop();
      // gunicorn checks the peer before it parses the line
      if (s.kind !== 'plain' && !allow.allows(raw.remoteAddress)) return refuse(raw, 403, 'Request forbidden');
      if (s.kind === 'bad') return refuse(raw, 400, s.message);
      let rest = buf;
      if (s.kind === 'header') {
        if (s.peer) setPeer(raw, s.peer);
        rest = buf.subarray(s.length);
      }
      buf = undefined;
      raw.pause();
      if (rest.length > 0) raw.unshift(rest);
      for (const l of inner) l.call(server, raw);
      raw.resume();
    };
    raw.on('data', onData);
    raw.once('end', onGone);
    raw.once('error', onGone);
    raw.once('close', stop);
  });
}
