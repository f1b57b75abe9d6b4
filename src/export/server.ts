import { unwatchFile, watchFile, type Stats } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { ConfigError, METRICS_MAX_CONNECTIONS, loadWebConfig, secureContextOptions, type WebConfig, type WebSources } from '../config';
import { BasicAuth } from './basic-auth';
import { PROMETHEUS_CONTENT_TYPE } from './serializer';

export interface MetricsServer {
  readonly server: Server;
  readonly port: number;
  readonly host: string;
  /** 'https' when a web config or PROMETHEUS_SSL_* turned TLS on */
  readonly scheme: 'http' | 'https';
  close(): Promise<void>;
}

export interface MetricsServerOptions {
  host: string;
  port: number;
  path: string;
  /** produces the exposition text for one scrape */
  gather: () => Promise<string>;
  /** keep the process alive while listening (the runner's master: yes; the preload: no) */
  ref?: boolean;
  /**
   * Where TLS and basic auth come from (ExporterConfig carries these fields): PROMETHEUS_WEB_CONFIG_FILE
   * / --metrics-web-config and PROMETHEUS_SSL_*. None set: plain HTTP, no authentication.
   */
  web?: WebSources;
}

/**
 * The bounds of the metrics server: whatever clients do, it holds at most
 * PREFORK_OTEL_METRICS_MAX_CONNECTIONS (METRICS_MAX_CONNECTIONS = 64 by default) sockets
 * (file descriptors) besides its listening one, so it cannot take the descriptors the master needs
 * to fork and link workers; a connection over the limit is closed as soon as it is accepted.
 * A client has `headersTimeoutMs` to send its request headers (`handshakeTimeoutMs` first for the
 * TLS handshake), `requestTimeoutMs` for the whole request, and an idle keep-alive connection is
 * closed after `keepAliveTimeoutMs`. The timeouts are checked every `checkIntervalMs`.
 */
export const METRICS_SERVER_TIMEOUTS = {
  handshakeTimeoutMs: 5_000,
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 30_000,
  checkIntervalMs: 1_000,
} as const;
/** how often the web config, certificate, key and CA files are checked for a change (stat) */
export const WEB_CONFIG_POLL_MS = 1_000;
/** gzip level of a compressed scrape (see docs/configuration.md and bench/scrape-gzip.mjs) */
export const GZIP_LEVEL = 1;

// node:https (with node:tls) and node:zlib are loaded by the process that serves the endpoint, when it
// needs them: this module is also loaded by every worker (hooks/http reads ownServers), ~1 MB of RSS each
const https = () => require('node:https') as typeof import('node:https');
const zlib = () => require('node:zlib') as typeof import('node:zlib');

/**
 * Servers of ours, and a runner app's side servers (workers/app.ts): the request observer ignores
 * their requests (a scrape is not app traffic).
 */
export const ownServers = new WeakSet<object>();

const REALM = 'Basic realm="prefork-otel metrics", charset="UTF-8"';

/** does this Accept-Encoding accept gzip (not with q=0)? */
export function acceptsGzip(header: string | undefined): boolean {
  if (!header) return false;
  for (const part of header.split(',')) {
    const [coding, ...params] = part.trim().toLowerCase().split(';');
    if (coding !== 'gzip' && coding !== 'x-gzip' && coding !== '*') continue;
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    return q === undefined || Number(q.slice(2)) > 0;
  }
  return false;
}

function sanMatches(socket: TLSSocket, allowed: readonly string[]): boolean {
  const san = socket.getPeerCertificate()?.subjectaltname ?? '';
  return san.split(', ').some((entry) => allowed.includes(entry.slice(entry.indexOf(':') + 1)));
}

/** A token bucket (exporter-toolkit's rate_limit): `burst` requests, one more every `intervalMs`. */
class RateLimiter {
  private tokens: number;
  private at = Date.now();
  constructor(private readonly intervalMs: number, private readonly burst: number) {
    this.tokens = burst;
  }
  take(): boolean {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + (now - this.at) / this.intervalMs);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** What the handler reads per request; replaced as a whole when the files change. */
interface Live {
  web: WebConfig | undefined;
  auth: BasicAuth | undefined;
  limiter: RateLimiter | undefined;
}

function live(web: WebConfig | undefined): Live {
  return {
    web,
    auth: web && web.users.size > 0 ? new BasicAuth(web.users) : undefined,
    limiter: web?.rateLimit ? new RateLimiter(web.rateLimit.intervalMs, web.rateLimit.burst) : undefined,
  };
}

/**
 * Serves GET `path` with the text `gather()` produces, over HTTPS and behind basic auth when the web
 * settings say so, gzip-compressed when the scraper accepts it. Listening errors and bad web settings
 * become one-line ConfigErrors (port in use, address not available, permission denied, a bad file).
 */
export async function startMetricsServer(o: MetricsServerOptions): Promise<MetricsServer> {
  // a bad web config rejects here, before anything listens
  const first = o.web ? loadWebConfig(o.web) : undefined;
  let state = live(first);
  const T = METRICS_SERVER_TIMEOUTS;

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const s = state;
    if (s.web) for (const h in s.web.headers) res.setHeader(h, s.web.headers[h]!);
    if (s.limiter && !s.limiter.take()) {
      res.writeHead(429, { 'content-type': 'text/plain' }).end('too many requests\n');
      return;
    }
    if (s.auth) {
      s.auth.check(req.headers.authorization).then((ok) => {
        if (ok) serve(req, res);
        else res.writeHead(401, { 'www-authenticate': REALM, 'content-type': 'text/plain' }).end('unauthorized\n');
      }, () => res.writeHead(500).end());
      return;
    }
    serve(req, res);
  };

  const serve = (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q >= 0 ? url.slice(0, q) : url;
    if (path !== o.path) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: metrics are at ${o.path}\n`);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const failed = (err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end(`# metrics collection failed: ${(err as Error)?.message ?? err}\n`);
    };
    o.gather().then((text) => {
      if (!acceptsGzip(req.headers['accept-encoding'])) {
        res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'content-length': Buffer.byteLength(text), vary: 'Accept-Encoding' });
        res.end(req.method === 'HEAD' ? undefined : text);
        return;
      }
      // compressed on libuv's thread pool, off the event loop
      zlib().gzip(text, { level: GZIP_LEVEL }, (err, body) => {
        if (err) return failed(err);
        res.writeHead(200, {
          'content-type': PROMETHEUS_CONTENT_TYPE, 'content-encoding': 'gzip', 'content-length': body.length, vary: 'Accept-Encoding',
        });
        res.end(req.method === 'HEAD' ? undefined : body);
      });
    }, failed);
  };

  const tls = first?.tls;
  const common = {
    headersTimeout: T.headersTimeoutMs,
    requestTimeout: T.requestTimeoutMs,
    keepAliveTimeout: T.keepAliveTimeoutMs,
    connectionsCheckingInterval: T.checkIntervalMs,
  };
  const server: Server = tls
    ? https().createServer({
      ...common,
      ...secureContextOptions(first!),
      handshakeTimeout: T.handshakeTimeoutMs,
      requestCert: tls.clientAuthType !== 'NoClientCert',
      rejectUnauthorized: tls.clientAuthType === 'RequireAndVerifyClientCert',
    }, handler) as unknown as Server
    : createServer(common, handler);
  server.maxConnections = o.web?.metricsMaxConnections ?? METRICS_MAX_CONNECTIONS;
  ownServers.add(server);

  if (tls) {
    // the client-certificate policies Node's two switches do not express by themselves
    server.on('secureConnection', (socket: TLSSocket) => {
      // the policy stays the one the server started with (a change needs a restart: said on reload);
      // the allowed SANs follow the current file
      const policy = tls.clientAuthType;
      const sans = state.web?.tls ? state.web.tls.clientAllowedSans : tls.clientAllowedSans;
      const given = Object.keys(socket.getPeerCertificate() ?? {}).length > 0;
      if ((policy === 'RequireAnyClientCert' && !given)
        || (policy === 'VerifyClientCertIfGiven' && given && !socket.authorized)
        || (sans && !(given && sanMatches(socket, sans)))) {
        socket.destroy();
      }
    });
    // a failed handshake (no or untrusted client certificate, wrong version) is the client's problem
    server.on('tlsClientError', (_err: Error, socket: Socket) => socket.destroy());
  }
  // Not keeping the process alive (the preload) means its connections too: a scraper's keep-alive
  // connection would otherwise hold an application that has finished its work open until the scraper
  // hangs up (Prometheus never does, it scrapes every few seconds).
  if (!o.ref) server.on(tls ? 'secureConnection' : 'connection', (socket: Socket) => socket.unref());
  if (!o.ref && tls) server.on('connection', (socket: Socket) => socket.unref());
  // Node's headersTimeout only starts with a request's first byte: a connection that sends nothing
  // would hold its slot (and descriptor) forever. It gets the same time to start a request.
  const requested = new WeakSet<Socket>();
  server.on('request', (req: IncomingMessage) => requested.add(req.socket));
  server.on(tls ? 'secureConnection' : 'connection', (socket: Socket) => {
    const timer = setTimeout(() => { if (!requested.has(socket)) socket.destroy(); }, T.headersTimeoutMs);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  });

  // certificate rotation without a restart: the files are polled (stat) and everything is loaded
  // again when one changes; a bad new version is reported once and the previous one stays in use
  let watched: string[] = [];
  let reloadTimer: NodeJS.Timeout | undefined;
  const reload = () => {
    reloadTimer = undefined;
    try {
      const next = loadWebConfig(o.web!);
      if (Boolean(next?.tls) !== Boolean(tls)) {
        process.stderr.write(`prefork-otel: ${next?.origin ?? 'web config'}: turning TLS on or off needs a restart of the metrics server; keeping ${tls ? 'HTTPS' : 'HTTP'}\n`);
      } else if (next?.tls && next.tls.clientAuthType !== tls!.clientAuthType) {
        process.stderr.write(`prefork-otel: ${next.origin}: a new client_auth_type needs a restart of the metrics server; keeping ${tls!.clientAuthType}\n`);
      }
      if (next?.tls && tls) (server as unknown as HttpsServer).setSecureContext(secureContextOptions(next));
      state = live(next);
      watch(next?.files ?? []);
    } catch (e) {
      process.stderr.write(`${e instanceof Error ? e.message : String(e)}; keeping the previous web config\n`);
    }
  };
  const onChange = (cur: Stats, prev: Stats) => {
    if (cur.mtimeMs === prev.mtimeMs && cur.ino === prev.ino && cur.size === prev.size) return;
    // a rotation writes the certificate and the key one after the other: load once both are there
    if (reloadTimer) clearTimeout(reloadTimer);
    reloadTimer = setTimeout(reload, 100);
    reloadTimer.unref();
  };
  const watch = (files: string[]) => {
    for (const f of watched) if (!files.includes(f)) unwatchFile(f, onChange);
    for (const f of files) if (!watched.includes(f)) watchFile(f, { persistent: false, interval: WEB_CONFIG_POLL_MS }, onChange);
    watched = files;
  };
  watch(first?.files ?? []);
  const stopWatching = () => {
    watch([]);
    if (reloadTimer) clearTimeout(reloadTimer);
  };

  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      stopWatching();
      const where = `PROMETHEUS_BIND_ADDRESS:PROMETHEUS_METRICS_PORT=${o.host}:${o.port}`;
      if (err.code === 'EADDRINUSE') reject(new ConfigError(`prefork-otel: metrics port in use: ${where} (EADDRINUSE): set PROMETHEUS_METRICS_PORT to a free port (0-65535)`, 1, 'port_in_use'));
      else if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') reject(new ConfigError(`prefork-otel: invalid PROMETHEUS_BIND_ADDRESS=${JSON.stringify(o.host)}: not an address of this machine (${err.code})`, 1));
      else if (err.code === 'EACCES') reject(new ConfigError(`prefork-otel: permission denied for ${where} (EACCES): use a port above 1023 or run with the needed privilege`, 1));
      else reject(err);
    };
    server.once('error', onError);
    server.listen(o.port, o.host, () => {
      server.off('error', onError);
      // accept errors (EMFILE when the process is out of descriptors) must not crash the process:
      // said at most once a minute
      let saidAt = 0;
      server.on('error', (err: NodeJS.ErrnoException) => {
        if (Date.now() - saidAt < 60_000) return;
        saidAt = Date.now();
        process.stderr.write(`prefork-otel: metrics server: ${err.code ?? err.message} (${err.message}); still serving\n`);
      });
      if (!o.ref) server.unref();
      const addr = server.address() as AddressInfo;
      resolve({
        server,
        port: addr.port,
        host: o.host,
        scheme: tls ? 'https' : 'http',
        close: () => new Promise<void>((r) => {
          stopWatching();
          server.close(() => r());
          server.closeAllConnections();
        }),
      });
    });
  });
}
