import diagnostics from 'node:diagnostics_channel';
import { normalizePath, type EndpointPolicy } from '../metrics/labels';

/**
 * Route templates from frameworks, without wrapping the application:
 * - Express: `req.route.path` (+ `req.baseUrl`), read at response finish.
 * - Fastify: its `tracing:fastify.request.handler:start` channel carries the route URL.
 * - Koa + @koa/router (or koa-router): the router assigns `ctx._matchedRoute`; an accessor on Koa's
 *   shared context prototype copies it onto the raw request. Koa's ESM entry wraps its CommonJS
 *   files, so the prototype is found in require.cache whichever way the app imported Koa.
 * A template found this way is stored on the raw request under ROUTE.
 */
export const ROUTE = Symbol.for('prefork-otel.route');

type RawReq = { [ROUTE]?: string };

let fastifySubscribed = false;
export function captureFastifyRoutes(): void {
  if (fastifySubscribed) return;
  fastifySubscribed = true;
  diagnostics.subscribe('tracing:fastify.request.handler:start', (msg: unknown) => {
    const m = msg as { request?: { raw?: RawReq }; route?: { url?: string } };
    const raw = m.request?.raw;
    const url = m.route?.url;
    if (raw && typeof url === 'string') raw[ROUTE] = url;
  });
}

const MATCHED = Symbol('prefork-otel.koaMatchedRoute');
const HOOKED = Symbol.for('prefork-otel.koaHooked');
const KOA_CONTEXT = /[\\/]koa[\\/]lib[\\/]context\.js$/;

/** Install the `_matchedRoute` accessor on every loaded copy of Koa's context prototype. Cheap, idempotent. */
export function captureKoaRoutes(): void {
  const cache = require.cache;
  for (const key of Object.keys(cache)) {
    if (!KOA_CONTEXT.test(key)) continue;
    const proto = cache[key]?.exports as Record<string | symbol, unknown> | undefined;
    if (!proto || typeof proto !== 'object' || proto[HOOKED]) continue;
    Object.defineProperty(proto, HOOKED, { value: true });
    Object.defineProperty(proto, '_matchedRoute', {
      configurable: true,
      enumerable: false,
      get(this: Record<symbol, unknown>) {
        return this[MATCHED];
      },
      set(this: Record<string | symbol, unknown>, v: unknown) {
        this[MATCHED] = v;
        const req = this.req as RawReq | undefined;
        if (req && (typeof v === 'string')) req[ROUTE] = v;
      },
    });
  }
}

const expressCache = new Map<string, Map<unknown, string>>();
/**
 * Express endpoint: baseUrl + route.path. A mounted router's baseUrl is the matched prefix (it can
 * hold ids when the mount path has parameters), so it is normalised and, being request-derived, the
 * result counts against the endpoint cap. Cached: a repeated request builds no string.
 */
function expressEndpoint(baseUrl: string, path: unknown, policy: EndpointPolicy): string {
  let byPath = expressCache.get(baseUrl);
  if (byPath === undefined) {
    if (expressCache.size >= 4096) expressCache.clear();
    byPath = new Map();
    expressCache.set(baseUrl, byPath);
  }
  let ep = byPath.get(path);
  if (ep === undefined) {
    const p = Array.isArray(path) ? path.map(String).join('|') : String(path);
    ep = policy.admit(normalizePath(baseUrl) + (p === '/' ? '' : p));
    byPath.set(path, ep);
  }
  return ep;
}

type ObservedReq = RawReq & {
  route?: { path?: unknown } | null;
  baseUrl?: string;
  originalUrl?: string;
  url?: string;
};

/** The endpoint label of a finished request: framework route template, else the bounded normalised path. */
export function resolveEndpoint(req: ObservedReq, policy: EndpointPolicy): string {
  const r = req[ROUTE];
  if (r !== undefined) return r;
  const route = req.route;
  if (route != null && route.path !== undefined) {
    const path = route.path;
    const base = req.baseUrl;
    if (!base && typeof path === 'string') return path;
    return expressEndpoint(base ?? '', path, policy);
  }
  return policy.fromUrl(req.originalUrl ?? req.url ?? '/');
}
