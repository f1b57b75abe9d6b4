/**
 * Loading the APP in a worker: a module exporting a request listener ((req, res), an Express app, a
 * Koa app.callback()), a Koa app, a Fastify instance, an http.Server, or a factory of one; or an
 * unmodified script that calls listen() itself. The result is always the http.Server the worker
 * serves on the runner's sockets.
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import { ConfigError } from '../config';
import { dynamicImport, type AppSpec } from '../config/runner';
import { APP_LOAD_ERROR } from './protocol';

/** The app could not be turned into a server: one line, exit APP_LOAD_ERROR. */
export function appError(spec: AppSpec, what: string): ConfigError {
  return new ConfigError(`prefork-otel: APP ${spec.raw}: ${what}`, APP_LOAD_ERROR);
}

const LISTEN = net.Server.prototype.listen;

/**
 * While the app loads, the first listen() called on an http(s).Server is not performed: the server
 * is handed to the runner, which listens on its own --bind sockets instead (so "the runner's bind
 * wins"), and the app's listen callback runs on the runner's 'listening'. Later listen() calls (and
 * any on non-HTTP servers) are left alone.
 */
class ListenInterceptor {
  server: net.Server | undefined;
  private waiters: Array<(s: net.Server) => void> = [];
  install(): void {
    const self = this;
    net.Server.prototype.listen = function patchedListen(this: net.Server, ...args: unknown[]) {
      if (self.server === undefined && (this instanceof http.Server || this instanceof https.Server)) {
        self.restore();
        self.server = this;
        const cb = [...args].reverse().find((a) => typeof a === 'function') as (() => void) | undefined;
        if (cb) this.once('listening', cb);
        for (const w of self.waiters) w(this);
        return this;
      }
      return LISTEN.apply(this, args as never);
    } as typeof LISTEN;
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
 * is waited for up to `waitMs`.
 */
export async function loadApp(spec: AppSpec, waitMs: number): Promise<net.Server> {
  const interceptor = new ListenInterceptor();
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
    if (spec.exportName === undefined && interceptor.server) return interceptor.server;
    if (picked !== undefined) return await toServer(spec, picked, spec.call);
    const late = await interceptor.wait(waitMs);
    if (late) return late;
    throw appError(spec, `exports no request listener, Express/Koa/Fastify app, http.Server or factory, and did not call listen() within ${Math.round(waitMs / 1000)} s`);
  } finally {
    interceptor.restore();
  }
}
