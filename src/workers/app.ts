/**
 * Loading the APP in a worker: a module exporting a request listener ((req, res), an Express app, a
 * Koa app.callback()), a Koa app, a Fastify instance, an http.Server, or a factory of one; or an
 * unmodified script that calls listen() itself. The result is always the http.Server the worker
 * serves on the runner's sockets.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import { isMainThread } from 'node:worker_threads';
import { ConfigError } from '../config';
import { dynamicImport, SERVE_ENV } from '../config/boot';
import type { AppSpec, ServeSettings } from '../config/runner';
import { ownServers } from '../export/server';
import { AccessLog } from '../hooks/access-log';
import { APP_LOAD_ERROR, WORKER_BOOT_ERROR } from './protocol';
import { carryProxyPeer, serveProxyProtocol } from './proxy-protocol';

/** The app could not be turned into a server: one line, exit APP_LOAD_ERROR. */
export function appError(spec: AppSpec, what: string): ConfigError {
  return new ConfigError(`prefork-otel: APP ${spec.raw}: ${what}`, APP_LOAD_ERROR);
}

const LISTEN = net.Server.prototype.listen;

/** the port a listen() call asks for (listen(port, …), listen({ port }), listen('8000')), else undefined */
function askedPort(args: unknown[]): number | undefined {
  const a = args[0];
  const p = a !== null && typeof a === 'object' ? (a as { port?: unknown }).port : a;
  const n = typeof p === 'number' ? p : typeof p === 'string' && /^\d+$/.test(p) ? Number(p) : NaN;
  return Number.isInteger(n) && n > 0 ? n : undefined;
}

interface Held { server: net.Server; args: unknown[]; port: number | undefined }

/**
 * While the app loads, every listen() called on an http(s).Server is held, not performed. When the
 * module has loaded, one of them is the app's server (pick()): the one that asked for a port of the
 * runner's --bind; else, for a module exporting its app, the one serving that export (or none: the
 * export is served); else the last one. It is handed to the runner, which listens on its own --bind
 * sockets instead ("the runner's bind wins"), and its listen callback runs on the runner's
 * 'listening'. Every other held listen() is then performed as the app asked (an OpenTelemetry
 * Prometheus exporter, an admin server), so it binds its own port in each worker; its requests are
 * not the worker's (not counted, no hooks, no --max-requests). With none held,
 * the first listen() that comes later (after an await) is the app's. listen() on non-HTTP servers is
 * never held.
 */
/**
 * node:https (with node:tls, ≈ 1.2 MB of heap) is loaded only when a server that is not an
 * http.Server listens: an HTTPS app has loaded it already; a plain HTTP app never does.
 */
function isHttpsServer(s: net.Server): boolean {
  return s instanceof (require('node:https') as typeof import('node:https')).Server;
}

class ListenInterceptor {
  server: net.Server | undefined;
  private held: Held[] = [];
  private waiters: Array<(s: net.Server) => void> = [];
  /** `listenOthers`: perform the other held listen() calls (in a worker; not in the master's --preload / --check-config) */
  constructor(private readonly bindPorts: readonly number[], private readonly listenOthers: boolean) {}

  install(): void {
    const self = this;
    net.Server.prototype.listen = function patchedListen(this: net.Server, ...args: unknown[]) {
      if (self.server === undefined && (this instanceof http.Server || isHttpsServer(this))) {
        self.held.push({ server: this, args, port: askedPort(args) });
        if (self.waiters.length > 0) self.pick();
        return this;
      }
      return LISTEN.apply(this, args as never);
    } as typeof LISTEN;
  }

  /**
   * Choose the app's server among the held listen() calls; perform the others; stop intercepting.
   * `servesExport` (the module exports an app it can be told by): the app's server is the held one
   * that serves it, else none (every held one is a side server and the export is served).
   */
  pick(servesExport?: (s: net.Server) => boolean): net.Server | undefined {
    if (this.server !== undefined || this.held.length === 0) return this.server;
    this.restore();
    const held = this.held;
    this.held = [];
    const app = held.find((h) => h.port !== undefined && this.bindPorts.includes(h.port))
      ?? (servesExport ? held.find((h) => servesExport(h.server)) : held[held.length - 1]);
    for (const h of held) {
      if (h === app || !this.listenOthers) continue;
      ownServers.add(h.server); // not the worker's traffic: not counted, no pre/post_request, no --max-requests
      LISTEN.apply(h.server, h.args as never);
    }
    if (app === undefined) return undefined;
    this.server = app.server;
    const cb = [...app.args].reverse().find((a) => typeof a === 'function') as (() => void) | undefined;
    if (cb) app.server.once('listening', cb);
    for (const w of this.waiters) w(app.server);
    return app.server;
  }

  restore(): void {
    if (net.Server.prototype.listen !== LISTEN) net.Server.prototype.listen = LISTEN;
  }

  wait(ms: number): Promise<net.Server | undefined> {
    if (this.server) return Promise.resolve(this.server);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(undefined), ms);
      this.waiters.push((s) => { clearTimeout(t); resolve(s); });
    });
  }
}

type Any = Record<string, unknown> & ((...a: unknown[]) => unknown);

function isFastify(x: Any): boolean {
  return typeof x.ready === 'function' && x.server instanceof net.Server && typeof x.route === 'function';
}

function isKoa(x: Any): boolean {
  return typeof x.callback === 'function' && typeof x.use === 'function' && typeof x.listen === 'function' && x.server === undefined;
}

/**
 * For an export that is itself the app (an http.Server, a Fastify instance, a request listener such
 * as an Express app): whether a server serves it. Undefined for what cannot be told that way (a Koa
 * app, whose listen() wraps a fresh callback; a factory): then the last held listen() is the app's.
 */
function exportMatcher(x: unknown): ((s: net.Server) => boolean) | undefined {
  if (x instanceof net.Server) return (s) => s === x;
  if (!x || (typeof x !== 'object' && typeof x !== 'function')) return undefined;
  const v = x as Any;
  if (isFastify(v)) return (s) => s === v.server;
  if (typeof v === 'function' && v.length >= 2 && !isKoa(v)) return (s) => s.listeners('request').includes(v);
  return undefined;
}

/** An exported value → the server to run. */
async function toServer(spec: AppSpec, x: unknown, callIt: boolean, depth = 0): Promise<net.Server> {
  if (x instanceof net.Server) return x;
  if (x && (typeof x === 'object' || typeof x === 'function')) {
    const v = x as Any;
    if (isFastify(v)) {
      await (v.ready as () => Promise<unknown>)();
      return v.server as net.Server;
    }
    if (isKoa(v)) return http.createServer((v.callback as () => http.RequestListener)());
    if (typeof v === 'function') {
      if ((callIt || v.length === 0) && depth < 2) return toServer(spec, await v(), false, depth + 1);
      if (v.length >= 2) return http.createServer(v as unknown as http.RequestListener);
      throw appError(spec, `the export is a function of ${v.length} argument(s): expected a (req, res) listener, or write ${spec.path.split('/').pop()}:${spec.exportName ?? 'name'}() to call it as a factory`);
    }
  }
  throw appError(spec, `expected a request listener, an Express/Koa/Fastify app, an http.Server or a factory of one, got ${x === null ? 'null' : typeof x}`);
}

function pickExport(ns: Record<string, unknown>, spec: AppSpec): unknown {
  const dflt = ns.default as Record<string, unknown> | undefined;
  if (spec.exportName !== undefined) {
    const v = ns[spec.exportName] ?? (dflt && typeof dflt === 'object' ? dflt[spec.exportName] : undefined)
      ?? (typeof dflt === 'function' ? (dflt as unknown as Record<string, unknown>)[spec.exportName] : undefined);
    if (v === undefined) throw appError(spec, `the module has no export named ${JSON.stringify(spec.exportName)}`);
    return v;
  }
  if (typeof dflt === 'function' || dflt instanceof net.Server) return dflt;
  for (const name of ['app', 'application', 'server']) {
    const v = ns[name] ?? (dflt && typeof dflt === 'object' ? dflt[name] : undefined);
    if (v !== undefined) return v;
  }
  if (dflt && typeof dflt === 'object' && Object.keys(dflt).length > 0) return dflt;
  return undefined;
}

/**
 * Import the APP (CommonJS or ES module) and return the server to run. An exception thrown by the
 * app's own code propagates (its stack is the app's bug report); what we cannot use is a one-line
 * ConfigError with exit code APP_LOAD_ERROR. A script that calls listen() later (after an await)
 * is waited for up to `waitMs`. `listenSideServers: false` (the master's --preload, --check-config):
 * the app's other servers are not bound either (they would hold the ports the workers' copies need).
 */
export async function loadApp(spec: AppSpec, waitMs: number, opts: { listenSideServers?: boolean } = {}): Promise<net.Server> {
  const server = await importApp(spec, waitMs, opts.listenSideServers ?? true);
  const serve = serveSettings();
  if (serve) applyServeSettings(server, serve);
  return server;
}

async function importApp(spec: AppSpec, waitMs: number, listenSideServers: boolean): Promise<net.Server> {
  const interceptor = new ListenInterceptor(serveSettings()?.bindPorts ?? [], listenSideServers);
  interceptor.install();
  let ns: Record<string, unknown>;
  try {
    ns = await dynamicImport(pathToFileURL(spec.path).href) as Record<string, unknown>;
  } catch (e) {
    interceptor.restore();
    throw e;
  }
  try {
    const picked = pickExport(ns, spec);
    const listened = interceptor.pick(exportMatcher(picked));
    if (spec.exportName === undefined && listened) return listened;
    if (picked !== undefined) return await toServer(spec, picked, spec.call);
    const late = await interceptor.wait(waitMs);
    if (late) return late;
    throw appError(spec, `exports no request listener, Express/Koa/Fastify app, http.Server or factory, and did not call listen() within ${Math.round(waitMs / 1000)} s`);
  } finally {
    interceptor.restore();
  }
}

/** the runner's serving settings (set by the runner's entry point; absent in --check-config and outside the runner) */
export function serveSettings(env: Record<string, string | undefined> = process.env): ServeSettings | undefined {
  const raw = env[SERVE_ENV];
  return raw ? (JSON.parse(raw) as ServeSettings) : undefined;
}

/**
 * --user / --group / --umask / --initgroups, in a worker process once its sockets are received
 * (they were bound by the master): gunicorn's set_owner_process. Only the main thread can.
 */
export function dropPrivileges(s: ServeSettings | undefined = serveSettings()): void {
  if (!s || !isMainThread) return;
  try {
    if (s.umask !== undefined) process.umask(s.umask);
    if (s.group !== undefined || s.user !== undefined) {
      const gid = s.group ?? process.getgid!();
      if (s.initgroups && s.userName) (process as unknown as { initgroups(u: string, g: number): void }).initgroups(s.userName, gid);
      else if (process.getuid!() === 0) process.setgroups!([gid]);
      if (s.group !== undefined) process.setgid!(s.group);
      if (s.user !== undefined) process.setuid!(s.user);
    }
  } catch (e) {
    throw new ConfigError(`prefork-otel: cannot switch the worker to user ${s.userName ?? s.user ?? '-'} / group ${s.group ?? '-'}: ${(e as Error).message} (--user/--group need the master to run as root)`, WORKER_BOOT_ERROR);
  }
}

/** Serving settings on the app's server: PROXY protocol, HTTPS, gunicorn's request limits, the access log. */
export function applyServeSettings(server: net.Server, s: ServeSettings): void {
  if (s.tls) serveTls(server, s.tls);
  // after serveTls, so it runs first: the PROXY header precedes the TLS handshake
  if (s.proxyProtocol && s.proxyProtocol !== 'off') serveProxyProtocol(server, s.proxyProtocol, s.proxyAllowIps);
  applyLimits(server as http.Server, s);
  if (s.accessLog) {
    new AccessLog({ target: s.accessLog, format: s.accessLogFormat, forwardedAllowIps: s.forwardedAllowIps, secureSchemeHeaders: s.secureSchemeHeaders, server }).start();
  }
}

/**
 * HTTPS on the app's own server, whatever made it (Express, Fastify, a script's http.Server): each
 * accepted connection is wrapped in a server-side TLSSocket (node:tls, as node:https does) and
 * handed to the server's HTTP connection handling once the handshake is done. --cert-reqs 2
 * rejects clients without a certificate --ca-certs verifies; 1 asks for one and rejects only a bad one.
 */
function serveTls(server: net.Server, t: NonNullable<ServeSettings['tls']>): void {
  const tls = require('node:tls') as typeof import('node:tls'); // only with --certfile (see isHttpsServer)
  let context: import('node:tls').SecureContext;
  try {
    context = tls.createSecureContext({
      cert: readFileSync(t.certfile), key: readFileSync(t.keyfile),
      ...(t.caCerts ? { ca: readFileSync(t.caCerts) } : {}), ...(t.ciphers ? { ciphers: t.ciphers } : {}),
    });
  } catch (e) {
    throw new ConfigError(`prefork-otel: cannot use --certfile ${t.certfile} / --keyfile ${t.keyfile}${t.caCerts ? ` / --ca-certs ${t.caCerts}` : ''}${t.ciphers ? ` / --ciphers ${t.ciphers}` : ''}: ${(e as Error).message}`, WORKER_BOOT_ERROR);
  }
  const inner = server.listeners('connection') as Array<(s: net.Socket) => void>;
  server.removeAllListeners('connection');
  server.on('connection', (raw: net.Socket) => {
    const sock = new tls.TLSSocket(raw, { isServer: true, secureContext: context, requestCert: t.certReqs > 0, rejectUnauthorized: t.certReqs === 2 });
    carryProxyPeer(raw, sock);
    const fail = () => { sock.destroy(); raw.destroy(); };
    sock.once('error', fail);
    sock.once('secure', () => {
      if (t.certReqs === 1 && !sock.authorized && Object.keys(sock.getPeerCertificate() ?? {}).length > 0) return fail();
      sock.off('error', fail);
      for (const l of inner) l.call(server, sock as unknown as net.Socket);
    });
  });
}

/**
 * gunicorn's --limit-request-line / --limit-request-fields / --limit-request-field-size. Node's
 * parser bounds the whole head (maxHeaderSize, answered 431 by Node itself) at gunicorn's own
 * buffer bound; the request line and each field are checked before the app sees the request:
 * a longer line → 400 (gunicorn's LimitRequestLine), too many or too long fields → 431.
 */
function applyLimits(server: http.Server, s: ServeSettings): void {
  const line = s.limitRequestLine > 0 ? Math.min(s.limitRequestLine, 8190) : 0;
  const fields = s.limitRequestFields > 0 ? Math.min(s.limitRequestFields, 32768) : 32768;
  const fieldSize = s.limitRequestFieldSize > 0 ? s.limitRequestFieldSize : 8190;
  // the head's bound (bytes): request line + every field + CRLFs (gunicorn's max_buffer_headers + line)
  (server as unknown as { maxHeaderSize: number }).maxHeaderSize = (line || 8190) + 2 + fields * (fieldSize + 2) + 2;
  server.maxHeadersCount = fields + 1;
  const inner = server.listeners('request') as Array<(req: http.IncomingMessage, res: http.ServerResponse) => void>;
  server.removeAllListeners('request');
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (line > 0 && (req.method?.length ?? 0) + (req.url?.length ?? 0) + 10 > line) {
      return reject(res, 400, 'Bad Request', `limit request line: ${(req.method?.length ?? 0) + (req.url?.length ?? 0) + 10} > ${line}`);
    }
    const raw = req.rawHeaders;
    if (raw.length / 2 > fields) return reject(res, 431, 'Request Header Fields Too Large', "Error parsing headers: 'limit request headers fields'");
    for (let i = 0; i < raw.length; i += 2) {
      // gunicorn counts the line as sent plus its CRLF: "Name: value\r\n"
      if (raw[i]!.length + raw[i + 1]!.length + 4 > fieldSize) {
        return reject(res, 431, 'Request Header Fields Too Large', "Error parsing headers: 'limit request headers fields size'");
      }
    }
    for (const l of inner) l.call(server, req, res);
  });
}

/** gunicorn's util.write_error: a small HTML page, and the connection closes */
function reject(res: http.ServerResponse, status: number, reason: string, message: string): void {
  const body = `<html>\n  <head>\n    <title>${reason}</title>\n  </head>\n  <body>\n    <h1><p>${reason}</p></h1>\n    ${message}\n  </body>\n</html>\n`;
  res.shouldKeepAlive = false;
  res.writeHead(status, reason, { 'Content-Type': 'text/html', 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
  res.end(body);
}
