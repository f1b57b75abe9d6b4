import { lookup } from 'node:dns/promises';
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { getSystemErrorName } from 'node:util';
import { ConfigError } from '../config';
import type { Bind } from '../config/runner';
import type { Logger } from '../util/logger';

/** Node's raw listening handle (TCP or Pipe wrap): what node:cluster shares with its workers too. */
export interface RawHandle {
  fd: number;
  getsockname?(out: Record<string, unknown>): number;
  close(cb?: () => void): void;
}

/**
 * A socket the master binds once and hands to every worker (gunicorn's master sockets). The master
 * never listens on it itself: each worker calls listen() on its copy and the kernel spreads
 * connections over the processes that accept (as node:cluster's SCHED_NONE, and gunicorn).
 */
export interface Listener {
  bind: Bind;
  handle: RawHandle;
  /** http://127.0.0.1:8000, unix:/run/app.sock, fd://3 */
  url: string;
}

// net._createServerHandle: the bind-without-listen node:cluster uses for the same purpose
const createServerHandle = (net as unknown as {
  _createServerHandle(address: string | null, port: number | null, addressType: number | null, fd?: number): RawHandle | number;
})._createServerHandle;

function bindError(bind: string, code: number | string): ConfigError {
  const name = typeof code === 'number' ? getSystemErrorName(code) : code;
  if (name === 'EADDRINUSE') return new ConfigError(`prefork-otel: connection in use: --bind ${bind} (EADDRINUSE): stop the other server or choose another address`, 1, 'port_in_use');
  if (name === 'EACCES') return new ConfigError(`prefork-otel: permission denied: --bind ${bind} (EACCES): use a port above 1023 or run with the needed privilege`, 1);
  if (name === 'EADDRNOTAVAIL') return new ConfigError(`prefork-otel: invalid --bind ${bind}: not an address of this machine (EADDRNOTAVAIL)`, 1);
  return new ConfigError(`prefork-otel: cannot listen on --bind ${bind} (${name})`, 1);
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/** Bind one address (no listen); one-line ConfigError (exit 1) when it is in use or not ours. */
export async function bindOne(bind: Bind): Promise<Listener> {
  if (bind.kind === 'fd') {
    const h = createServerHandle(null, null, null, bind.fd);
    if (typeof h === 'number') throw bindError(`fd://${bind.fd}`, h);
    return { bind, handle: h, url: `fd://${bind.fd}` };
  }
  if (bind.kind === 'unix') {
    const shown = `unix:${bind.path}`;
    if (existsSync(bind.path)) {
      // gunicorn removes a stale socket file; one something still answers on is in use
      if (!lstatSync(bind.path).isSocket()) throw new ConfigError(`prefork-otel: invalid --bind ${shown}: the path exists and is not a socket`);
      if (await canConnect(bind.path)) throw bindError(shown, 'EADDRINUSE');
      unlinkSync(bind.path);
    }
    const h = createServerHandle(bind.path, -1, -1);
    if (typeof h === 'number') throw bindError(shown, h);
    return { bind, handle: h, url: shown };
  }
  const shown = `${bind.host.includes(':') ? `[${bind.host}]` : bind.host}:${bind.port}`;
  let address = bind.host;
  let family = net.isIP(address);
  if (family === 0) {
    try {
      const r = await lookup(bind.host);
      address = r.address;
      family = r.family;
    } catch (e) {
      throw new ConfigError(`prefork-otel: invalid --bind ${shown}: cannot resolve ${bind.host} (${(e as NodeJS.ErrnoException).code})`, 1);
    }
  }
  const h = createServerHandle(address, bind.port, family);
  if (typeof h === 'number') throw bindError(shown, h);
  // libuv reports EADDRINUSE only at listen(); getsockname on the bound handle shows it now
  const out: Record<string, unknown> = {};
  const err = h.getsockname?.(out) ?? 0;
  if (err !== 0) {
    h.close();
    throw bindError(shown, err);
  }
  const port = Number(out.port ?? bind.port);
  return { bind: { ...bind, port }, handle: h, url: `http://${family === 6 ? `[${address}]` : address}:${port}` };
}

/**
 * gunicorn's `Listening at:` addresses: every listener on one line, comma-separated; a TCP one is
 * `https://…` when the workers serve TLS (--certfile and --keyfile), as gunicorn's TCPSocket prints
 * (gunicorn 20.1 prints `http://[::1]:…` for an IPv6 one even then; we print `https://`).
 */
export function listeningAt(listeners: readonly Listener[], tls: boolean): string {
  return listeners.map((l) => (tls && l.bind.kind === 'tcp' ? l.url.replace(/^http:/, 'https:') : l.url)).join(',');
}

/** How gunicorn names an address in its log: `('127.0.0.1', 8000)`, or a unix socket's path. */
export function gunicornAddress(bind: Bind): string {
  if (bind.kind === 'tcp') return `('${bind.host}', ${bind.port})`;
  if (bind.kind === 'unix') return bind.path;
  return `fd://${bind.fd}`;
}

/** gunicorn's create_sockets: an address in use is tried this many times, `BIND_RETRY_MS` apart */
export const BIND_ATTEMPTS = 5;
export const BIND_RETRY_MS = 1000;

/**
 * Bind every --bind address, or close the ones already bound and throw. An address in use is tried
 * {@link BIND_ATTEMPTS} times, {@link BIND_RETRY_MS} apart, with gunicorn's log lines
 * (`Connection in use: ('127.0.0.1', 8000)`, `Retrying in 1 second.`, `Can't connect to …`): during a
 * USR2 upgrade or a rolling restart the old server may release it meanwhile. Other errors fail at once.
 */
export async function bindAll(binds: Bind[], log?: Logger, attempts = BIND_ATTEMPTS, retryMs = BIND_RETRY_MS): Promise<Listener[]> {
  const out: Listener[] = [];
  try {
    for (const b of binds) {
      for (let i = 1; ; i++) {
        try {
          out.push(await bindOne(b));
          break;
        } catch (e) {
          if (!(e instanceof ConfigError) || e.reason !== 'port_in_use' || !log) throw e;
          log.error(`Connection in use: ${gunicornAddress(b)}`);
          log.error('Retrying in 1 second.');
          await new Promise((r) => setTimeout(r, retryMs));
          if (i >= attempts) {
            log.error(`Can't connect to ${gunicornAddress(b)}`);
            throw e;
          }
        }
      }
    }
  } catch (e) {
    closeAll(out);
    throw e;
  }
  return out;
}

/** Close the master's copies; unix socket files are removed (as gunicorn does on exit). */
export function closeAll(listeners: Listener[], unlink = true): void {
  for (const l of listeners) {
    try { l.handle.close(); } catch { /* already closed */ }
    if (unlink && l.bind.kind === 'unix') {
      try { unlinkSync(l.bind.path); } catch { /* gone */ }
    }
  }
}
