import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError } from '../config';
import { PROMETHEUS_CONTENT_TYPE } from './serializer';

export interface MetricsServer {
  readonly server: Server;
  readonly port: number;
  readonly host: string;
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
}

/** Servers of ours: the request observer ignores their requests (a scrape is not app traffic). */
export const ownServers = new WeakSet<object>();

/**
 * Serves GET `path` with the text `gather()` produces. Listening errors become one-line ConfigErrors
 * naming the variables (port in use, address not available, permission denied).
 */
export function startMetricsServer(o: MetricsServerOptions): Promise<MetricsServer> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
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
    o.gather().then(
      (text) => {
        res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'content-length': Buffer.byteLength(text) });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`# metrics collection failed: ${(err as Error)?.message ?? err}\n`);
      },
    );
  });
  ownServers.add(server);
  // Not keeping the process alive (the preload) means its connections too: a scraper's keep-alive
  // connection would otherwise hold an application that has finished its work open until the scraper
  // hangs up (Prometheus never does, it scrapes every few seconds).
  if (!o.ref) server.on('connection', (socket) => socket.unref());
  server.keepAliveTimeout = 65_000;
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const where = `PROMETHEUS_BIND_ADDRESS:PROMETHEUS_METRICS_PORT=${o.host}:${o.port}`;
      if (err.code === 'EADDRINUSE') reject(new ConfigError(`prefork-otel: metrics port in use: ${where} (EADDRINUSE): set PROMETHEUS_METRICS_PORT to a free port (0-65535)`, 1, 'port_in_use'));
      else if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') reject(new ConfigError(`prefork-otel: invalid PROMETHEUS_BIND_ADDRESS=${JSON.stringify(o.host)}: not an address of this machine (${err.code})`, 1));
      else if (err.code === 'EACCES') reject(new ConfigError(`prefork-otel: permission denied for ${where} (EACCES): use a port above 1023 or run with the needed privilege`, 1));
      else reject(err);
    };
    server.once('error', onError);
    server.listen(o.port, o.host, () => {
      server.off('error', onError);
      if (!o.ref) server.unref();
      const addr = server.address() as AddressInfo;
      resolve({
        server,
        port: addr.port,
        host: o.host,
        close: () => new Promise<void>((r) => {
          server.close(() => r());
          server.closeAllConnections();
        }),
      });
    });
  });
}
