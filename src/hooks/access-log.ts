/**
 * gunicorn's access log (`--access-logfile`, `--access-logformat`) for one event loop: fed by the
 * same node:diagnostics_channel events as the request observer (`http.server.request.start` /
 * `http.server.response.finish`), so any framework is logged without wrapping the app.
 *
 * Off the hot path: a finished request only appends (request, response, end time, duration) to
 * four arrays; the lines are formatted once per event-loop turn (setImmediate) and written in one
 * `write(2)` per batch. Every worker (and every gthread thread) opens the file itself with
 * O_APPEND, so a batch lands whole at the end of the file and lines of different workers never
 * interleave; on a pipe or terminal (`-`) a batch is cut at line boundaries into writes of at most
 * PIPE_BUF (4096) bytes, which the kernel keeps whole too. A line is never dropped: a full pipe is
 * retried, and what is pending when the process exits is written synchronously in 'exit'.
 *
 * Memory bound: pending entries are at most the requests finished within one event-loop turn.
 * SIGUSR1 (logrotate): `reopenAccessLogs()` in the worker's main thread reopens its logs and tells
 * the process's threads through a BroadcastChannel.
 */
import diagnostics from 'node:diagnostics_channel';
import { closeSync, fstatSync, openSync, writeSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { BroadcastChannel } from 'node:worker_threads';

const START = Symbol('prefork-otel.access.start');
const BYTES = Symbol('prefork-otel.access.bytes');
type Req = IncomingMessage & { [START]?: number; [BYTES]?: number };
type Res = ServerResponse & { _header?: string | null };
interface ChannelMessage { request: Req; response: Res; server: unknown }

export interface AccessLogOptions {
  /** `-` = stdout, else a file path */
  target: string;
  /** gunicorn's access_log_format (Python %-style with named atoms) */
  format: string;
  /** peers whose X-Forwarded-For is taken for %(h)s and whose secure scheme headers count; `*` = all */
  forwardedAllowIps: string[];
  /** header (upper case) → value meaning https, from a trusted peer */
  secureSchemeHeaders?: Record<string, string>;
  /** log only this server's requests (the app's), not other servers of the process */
  server?: unknown;
}

/** One request's facts, read lazily by the atoms at flush time. */
class Facts {
  req!: Req;
  res!: Res;
  end = 0;
  /** microseconds */
  dur = 0;
  constructor(private readonly log: AccessLog) {}
  get trusted(): boolean {
    return this.log.trusts(this.req.socket?.remoteAddress);
  }
  get remote(): string {
    const peer = this.req.socket?.remoteAddress ?? '-';
    const xff = reqHeader(this.req, 'x-forwarded-for');
    if (typeof xff === 'string' && xff !== '' && this.trusted) return xff.split(',')[0]!.trim();
    return peer;
  }
  get scheme(): string {
    if ((this.req.socket as { encrypted?: boolean } | undefined)?.encrypted) return 'https';
    const secure = this.log.opts.secureSchemeHeaders;
    if (secure && this.trusted) {
      for (const [h, v] of Object.entries(secure)) if (reqHeader(this.req, h.toLowerCase()) === v) return 'https';
    }
    return 'http';
  }
  get path(): string {
    const url = this.req.url ?? '';
    const q = url.indexOf('?');
    const p = q < 0 ? url : url.slice(0, q);
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  }
  get query(): string {
    const url = this.req.url ?? '';
    const q = url.indexOf('?');
    return q < 0 ? '' : url.slice(q + 1);
  }
  get protocol(): string {
    return `HTTP/${this.req.httpVersion}`;
  }
  /** body bytes sent: Content-Length when set, else the socket's bytes for this response less its header */
  get sent(): number {
    const res = this.res;
    const cl = outHeader(res, 'content-length');
    if (cl !== undefined && Number.isFinite(Number(cl))) return Number(cl);
    const written = (this.req.socket?.bytesWritten ?? 0) - (this.req[BYTES] ?? 0) - Buffer.byteLength(res._header ?? '');
    return Math.max(0, written);
  }
  get user(): string {
    const auth = reqHeader(this.req, 'authorization');
    if (!auth || !/^basic /i.test(auth)) return '-';
    const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    return i < 0 ? decoded || '-' : decoded.slice(0, i) || '-';
  }
  /** the WSGI environ gunicorn exposes as %({var}e)s (keys lower-cased, as gunicorn's lookup) */
  environ(key: string): string | undefined {
    const req = this.req;
    switch (key) {
      case 'remote_addr': return this.remote;
      case 'remote_port': return req.socket?.remotePort !== undefined ? String(req.socket.remotePort) : undefined;
      case 'server_name': return (reqHeader(req, 'host') ?? '').replace(/:\d+$/, '') || req.socket?.localAddress;
      case 'server_port': return req.socket?.localPort !== undefined ? String(req.socket.localPort) : undefined;
      case 'server_protocol': return this.protocol;
      case 'request_method': return req.method;
      case 'path_info': return this.path;
      case 'query_string': return this.query;
      case 'raw_uri': return req.url;
      case 'script_name': return '';
      case 'wsgi.url_scheme': return this.scheme;
      case 'content_type': return reqHeader(req, 'content-type');
      case 'content_length': return reqHeader(req, 'content-length');
      case 'server_software': return 'prefork-otel';
      default:
        if (key.startsWith('http_')) return reqHeader(req, key.slice(5).replace(/_/g, '-'));
        return undefined;
    }
  }
}

/** a response header as sent (writeHead(status, {…}) does not keep them for getHeader: read the head then) */
function outHeader(res: Res, name: string): string | undefined {
  const v = res.getHeader(name);
  if (v !== undefined) return header(v);
  const head = res._header;
  if (!head) return undefined;
  const lower = head.toLowerCase();
  const at = lower.indexOf(`\r\n${name}:`);
  if (at < 0) return undefined;
  const start = at + name.length + 3;
  return head.slice(start, head.indexOf('\r\n', start)).trim();
}

/**
 * A request header by lower-case name, from rawHeaders: reading req.headers would build the whole
 * headers object for requests whose app never looked at it. Repeated fields are joined with ", ".
 */
function reqHeader(req: IncomingMessage, name: string): string | undefined {
  const raw = req.rawHeaders;
  let out: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!;
    if (k.length === name.length && k.toLowerCase() === name) out = out === undefined ? raw[i + 1]! : `${out}, ${raw[i + 1]!}`;
  }
  return out;
}

function header(v: string | string[] | number | undefined): string | undefined {
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join(', ') : String(v);
}

type Atom = (f: Facts) => string | number | undefined;

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const p2 = (n: number) => (n < 10 ? `0${n}` : String(n));

/** `[02/Dec/2026:01:02:03 +0000]`: Apache's common log time, local time zone (gunicorn's strftime) */
let clfSecond = -1;
let clfText = '';
export function clfTime(ms: number): string {
  const sec = Math.floor(ms / 1000);
  if (sec === clfSecond) return clfText;
  clfSecond = sec;
  clfText = formatClf(ms);
  return clfText;
}

function formatClf(ms: number): string {
  const d = new Date(ms);
  const off = -d.getTimezoneOffset();
  const tz = `${off >= 0 ? '+' : '-'}${p2(Math.floor(Math.abs(off) / 60))}${p2(Math.abs(off) % 60)}`;
  return `[${p2(d.getDate())}/${MONTHS[d.getMonth()]}/${d.getFullYear()}:${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())} ${tz}]`;
}

/** gunicorn's atoms (glogging.Logger.atoms) */
const ATOMS: Record<string, Atom> = {
  h: (f) => f.remote,
  l: () => '-',
  u: (f) => f.user,
  t: (f) => clfTime(f.end),
  r: (f) => `${f.req.method} ${f.req.url} ${f.protocol}`,
  s: (f) => f.res.statusCode,
  m: (f) => f.req.method,
  U: (f) => f.path,
  q: (f) => f.query,
  H: (f) => f.protocol,
  b: (f) => String(f.sent),
  B: (f) => f.sent,
  f: (f) => reqHeader(f.req, 'referer') ?? '-',
  a: (f) => reqHeader(f.req, 'user-agent') ?? '-',
  T: (f) => Math.floor(f.dur / 1e6),
  D: (f) => Math.floor(f.dur),
  M: (f) => Math.floor(f.dur / 1e3),
  L: (f) => `${Math.floor(f.dur / 1e6)}.${String(Math.floor(f.dur % 1e6)).padStart(6, '0')}`,
  p: () => `<${process.pid}>`,
};

function atomFor(name: string): Atom {
  const m = /^\{(.*)\}([ioe])$/i.exec(name);
  if (m) {
    const key = m[1]!.toLowerCase();
    const kind = m[2]!.toLowerCase();
    if (kind === 'i') return (f) => reqHeader(f.req, key);
    if (kind === 'o') return (f) => outHeader(f.res, key);
    return (f) => f.environ(key);
  }
  return ATOMS[name] ?? (() => undefined);
}

/** The format compiled once into literal text and atoms; `%%` is a percent sign. */
export function compileFormat(format: string): (f: Facts) => string {
  const parts: Array<string | { atom: Atom; int: boolean }> = [];
  const re = /%%|%\(([^)]*)\)[-#0 +]*\d*(?:\.\d+)?([sdirf])/g;
  let last = 0;
  for (let m = re.exec(format); m; m = re.exec(format)) {
    parts.push(format.slice(last, m.index));
    last = re.lastIndex;
    if (m[0] === '%%') parts.push('%');
    else parts.push({ atom: atomFor(m[1]!), int: m[2] === 'd' || m[2] === 'i' });
  }
  parts.push(format.slice(last));
  return (f) => {
    let out = '';
    for (const p of parts) {
      if (typeof p === 'string') {
        out += p;
        continue;
      }
      const v = p.atom(f);
      if (v === undefined) out += '-';
      else if (typeof v === 'number') out += p.int ? String(Math.trunc(v)) : String(v);
      // gunicorn's SafeAtoms: a double quote in a value is escaped
      else out += v.includes('"') ? v.replace(/"/g, '\\"') : v;
    }
    return out;
  };
}

const PIPE_BUF = 4096;
const live = new Set<AccessLog>();
let channel: BroadcastChannel | undefined;

/** the process's threads reopen their logs when the main thread says so (SIGUSR1) */
function listenForReopen(): void {
  if (channel) return;
  channel = new BroadcastChannel('prefork-otel.access-log');
  channel.onmessage = () => { for (const l of live) l.reopen(); };
  channel.unref();
}

/** SIGUSR1 in a worker's main thread: reopen this thread's access logs and tell the threads (gthread) */
export function reopenAccessLogs(): void {
  for (const l of live) l.reopen();
  const c = new BroadcastChannel('prefork-otel.access-log');
  c.postMessage('reopen');
  c.close();
}

export class AccessLog {
  private fd = -1;
  private regular = true;
  private readonly line: (f: Facts) => string;
  private readonly reqs: Req[] = [];
  private readonly ress: Res[] = [];
  private readonly ends: number[] = [];
  private readonly durs: number[] = [];
  private scheduled = false;
  private readonly facts = new Facts(this);
  private readonly trustAll: boolean;
  private readonly trusted: Set<string>;
  private readonly onStart = (m: unknown) => {
    const req = (m as ChannelMessage).request;
    req[START] = performance.now();
    req[BYTES] = req.socket?.bytesWritten ?? 0;
  };
  private readonly onFinish = (m: unknown) => {
    const msg = m as ChannelMessage;
    if (this.opts.server !== undefined && msg.server !== this.opts.server) return;
    const t0 = msg.request[START];
    // the peer's address, read (and cached by net.Socket) while the connection is still open
    void msg.request.socket?.remoteAddress;
    this.reqs.push(msg.request);
    this.ress.push(msg.response);
    this.ends.push(Date.now());
    this.durs.push(t0 === undefined ? 0 : (performance.now() - t0) * 1000);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  };
  private readonly onExit = () => this.flush();

  constructor(readonly opts: AccessLogOptions) {
    this.line = compileFormat(opts.format);
    this.trustAll = opts.forwardedAllowIps.includes('*');
    this.trusted = new Set(opts.forwardedAllowIps);
    this.open();
  }

  trusts(addr: string | undefined): boolean {
    if (this.trustAll) return true;
    if (!addr) return false;
    return this.trusted.has(addr) || (addr.startsWith('::ffff:') && isIP(addr.slice(7)) === 4 && this.trusted.has(addr.slice(7)));
  }

  start(): this {
    diagnostics.subscribe('http.server.request.start', this.onStart);
    diagnostics.subscribe('http.server.response.finish', this.onFinish);
    process.on('exit', this.onExit);
    live.add(this);
    listenForReopen();
    return this;
  }

  stop(): void {
    this.flush();
    diagnostics.unsubscribe('http.server.request.start', this.onStart);
    diagnostics.unsubscribe('http.server.response.finish', this.onFinish);
    process.off('exit', this.onExit);
    live.delete(this);
    if (this.fd > 2) closeSync(this.fd);
    this.fd = -1;
  }

  private open(): void {
    this.fd = this.opts.target === '-' ? 1 : openSync(this.opts.target, 'a');
    try {
      this.regular = fstatSync(this.fd).isFile();
    } catch {
      this.regular = false;
    }
  }

  /** after logrotate moved the file: write the next lines to a new file of the same name */
  reopen(): void {
    if (this.opts.target === '-') return;
    this.flush();
    const old = this.fd;
    try {
      this.open();
      if (old > 2) closeSync(old);
    } catch {
      this.fd = old;
    }
  }

  /** format and write every pending line (once per event-loop turn, and at exit) */
  readonly flush = (): void => {
    this.scheduled = false;
    const n = this.reqs.length;
    if (n === 0) return;
    const f = this.facts;
    let text = '';
    for (let i = 0; i < n; i++) {
      f.req = this.reqs[i]!;
      f.res = this.ress[i]!;
      f.end = this.ends[i]!;
      f.dur = this.durs[i]!;
      let line: string;
      try {
        line = this.line(f);
      } catch (e) {
        line = `prefork-otel: access log format failed: ${(e as Error)?.message ?? e}`;
      }
      text += line + '\n';
    }
    this.reqs.length = 0;
    this.ress.length = 0;
    this.ends.length = 0;
    this.durs.length = 0;
    this.write(Buffer.from(text));
  };

  private write(buf: Buffer): void {
    if (this.fd < 0) return;
    if (this.regular || buf.length <= PIPE_BUF) return this.writeAll(buf);
    // a pipe or a terminal: whole lines, at most PIPE_BUF bytes per write (atomic among writers)
    let start = 0;
    while (start < buf.length) {
      let end = Math.min(buf.length, start + PIPE_BUF);
      if (end < buf.length) {
        const nl = buf.lastIndexOf(0x0a, end - 1);
        end = nl >= start ? nl + 1 : buf.indexOf(0x0a, end) + 1 || buf.length;
      }
      this.writeAll(buf.subarray(start, end));
      start = end;
    }
  }

  private writeAll(buf: Buffer): void {
    let off = 0;
    let spins = 0;
    while (off < buf.length) {
      try {
        off += writeSync(this.fd, buf, off, buf.length - off);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        // a full non-blocking pipe: wait for the reader (bounded: ~10 s, then the batch is given up)
        if (code === 'EAGAIN' && spins++ < 10_000) {
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
          continue;
        }
        return;
      }
    }
  }
}
