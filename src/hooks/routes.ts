import diagnostics from 'node:diagnostics_channel';
import type { EndpointPolicy } from '../metrics/labels';

/**
 * Route templates from frameworks, without wrapping the application:
 * - Express (4 and 5): `req.baseUrl + req.route.path`. An accessor on Express's request prototype
 *   notes `req.baseUrl` at the moment the router assigns `req.route`, because by the time the
 *   response finishes an error may have unwound a mounted router and reset `req.baseUrl`.
 * - Fastify: its `fastify.initialization` channel hands us each new instance; a root `onRequest`
 *   hook (the first hook, so it runs before any plugin's hooks) copies the route URL (prefix
 *   included) onto the raw request. Requests answered before the handler — an auth hook's 401, a
 *   schema validation 400 — keep their route template.
 * - Koa + @koa/router (or koa-router): the router assigns `ctx._matchedRoute`; accessors on Koa's
 *   shared context prototype copy the matched route onto the raw request (see hookKoaContext). Koa's ESM entry wraps its CommonJS
 *   files, so the prototype is found in require.cache whichever way the app imported Koa (Express
 *   has no ESM build, so the same holds for it).
 * A template found this way is stored on the raw request under ROUTE.
 */
export const ROUTE = Symbol.for('prefork-otel.route');
/**
 * Express: the route assigned to `req.route`, and `req.baseUrl` at that moment. Kept in WeakMaps,
 * not on the request: Express swaps each request's prototype (Object.setPrototypeOf), and V8 then
 * pays microseconds for every property added to that object (two added properties cost ≈ 5 µs a
 * request in a CPU profile; a WeakMap entry costs next to nothing here).
 */
const expressRoutes = new WeakMap<object, unknown>();
const expressBases = new WeakMap<object, string | undefined>();

/**
 * The connection's slot (the HTTP observer's, src/hooks/http.ts), under this key on the socket. The
 * Express route of the request under way on a connection is noted there: two stores into an object
 * that already has the fields, where a WeakMap entry for every request costs an identity hash and a
 * hash-table insert (and the garbage collector's work on the table). Requests that find the note
 * taken (pipelined behind another) use the WeakMaps.
 */
export const SLOT = Symbol('prefork-otel.slot');
export interface RouteNote {
  /** the request whose Express route is noted here, else null */
  routeReq: object | null;
  route: unknown;
  base: string | undefined;
}
type NotedSocket = { [SLOT]?: RouteNote } | null | undefined;

function noteOf(req: Proto): RouteNote | undefined {
  const sock = req.socket as NotedSocket;
  return sock ? sock[SLOT] : undefined;
}

type RawReq = { [ROUTE]?: string };

type FastifyRequest = { raw?: RawReq; routeOptions?: { url?: unknown } } & Record<symbol, { config?: { url?: unknown } } | undefined>;
/** Fastify's own (private) key of the route context on its Request; found once, else the public getter */
let fastifyContextKey: symbol | null | undefined;

/** The route URL of a Fastify request without allocating (`request.routeOptions` builds an object per call). */
function fastifyRouteUrl(request: FastifyRequest): unknown {
  if (fastifyContextKey === undefined) {
    fastifyContextKey = Object.getOwnPropertySymbols(request).find((s) => s.description === 'fastify.context') ?? null;
  }
  if (fastifyContextKey !== null) return request[fastifyContextKey]?.config?.url;
  return request.routeOptions?.url;
}

function fastifyOnRequest(request: FastifyRequest, _reply: unknown, done: () => void): void {
  const url = fastifyRouteUrl(request);
  const raw = request.raw;
  if (raw && typeof url === 'string') raw[ROUTE] = url;
  done();
}

let fastifySubscribed = false;
/** Hook every Fastify instance created from now on (the preload runs before the app creates one). */
export function captureFastifyRoutes(): void {
  if (fastifySubscribed) return;
  fastifySubscribed = true;
  diagnostics.subscribe('fastify.initialization', (msg: unknown) => {
    const app = (msg as { fastify?: { addHook?: (name: string, fn: unknown) => unknown } }).fastify;
    try {
      app?.addHook?.('onRequest', fastifyOnRequest);
    } catch {
      // an instance that refuses hooks keeps the normalised-path fallback
    }
  });
}

const MATCHED = Symbol('prefork-otel.koaMatchedRoute');
const KOA_ROUTER = Symbol('prefork-otel.koaRouter');
/** a router has just dispatched: its next _matchedRoute is the route template */
const ARMED = Symbol('prefork-otel.koaRouterArmed');
const HOOKED = Symbol.for('prefork-otel.routeHooked');
const KOA_CONTEXT = /[\\/]koa[\\/]lib[\\/]context\.js$/;
const EXPRESS_REQUEST = /[\\/]express[\\/]lib[\\/]request\.js$/;

type Proto = Record<string | symbol, unknown>;

/**
 * @koa/router (and koa-router) assign `ctx.router` when a router dispatches, then `ctx._matchedRoute`
 * first with the matched route's path, then again with the path of every layer it runs — including
 * `router.use()` middleware, whose path is a pattern such as `/api/admin(?:\/|$)`. So the first
 * `_matchedRoute` after each `ctx.router` assignment is the route template; later ones are ignored
 * (a router library that never sets `ctx.router` gets its first value).
 */
function hookKoaContext(proto: Proto): void {
  Object.defineProperty(proto, 'router', {
    configurable: true,
    enumerable: false,
    get(this: Proto) {
      return this[KOA_ROUTER];
    },
    set(this: Proto, v: unknown) {
      this[KOA_ROUTER] = v;
      this[ARMED] = true;
    },
  });
  Object.defineProperty(proto, '_matchedRoute', {
    configurable: true,
    enumerable: false,
    get(this: Proto) {
      return this[MATCHED];
    },
    set(this: Proto, v: unknown) {
      this[MATCHED] = v;
      const req = this.req as RawReq | undefined;
      if (req === undefined || typeof v !== 'string') return;
      if (this[ARMED] === true || req[ROUTE] === undefined) {
        this[ARMED] = false;
        req[ROUTE] = v;
      }
    },
  });
}

function hookExpressRequest(proto: Proto): void {
  Object.defineProperty(proto, 'route', {
    configurable: true,
    enumerable: true,
    get(this: Proto) {
      const note = noteOf(this);
      if (note !== undefined && note.routeReq === this) return note.route;
      return expressRoutes.get(this);
    },
    set(this: Proto, v: unknown) {
      const note = noteOf(this);
      if (note !== undefined && (note.routeReq === null || note.routeReq === this)) {
        note.routeReq = this;
        note.route = v;
        note.base = this.baseUrl as string | undefined;
        return;
      }
      expressRoutes.set(this, v);
      expressBases.set(this, this.baseUrl as string | undefined);
    },
  });
}

/** `req.baseUrl` noted when Express assigned `req.route` (undefined if the accessor did not run) */
function notedBase(req: Proto): string | undefined {
  const note = noteOf(req);
  if (note !== undefined && note.routeReq === req) return note.base;
  return expressBases.get(req);
}

/**
 * Install the accessors on every loaded copy of Koa's context prototype and Express's request
 * prototype. Called on the first request of each server; cheap and idempotent.
 */
export function captureLoadedFrameworkRoutes(): void {
  const cache = require.cache;
  for (const key of Object.keys(cache)) {
    const koa = KOA_CONTEXT.test(key);
    if (!koa && !EXPRESS_REQUEST.test(key)) continue;
    const proto = cache[key]?.exports as Proto | undefined;
    if (!proto || typeof proto !== 'object' || proto[HOOKED]) continue;
    Object.defineProperty(proto, HOOKED, { value: true });
    if (koa) hookKoaContext(proto);
    else hookExpressRequest(proto);
  }
}

const expressCache = new Map<string, Map<unknown, string>>();
/**
 * Express endpoint: baseUrl + route.path. A mounted router's baseUrl is the matched prefix (it can
 * hold ids when the mount path has parameters), so it is normalised and length-capped (the route
 * template after it is never cut) and, being request-derived, the result is bounded by the policy's route cap (not the raw-path cap: 404s cannot push real routes
 * into the overflow value). Cached: a repeated request builds no string.
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
    ep = policy.admitRoute(policy.normalise(baseUrl) + (p === '/' ? '' : p));
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

/**
 * The raw URL a request's endpoint is made from when no framework route applies to it, else
 * undefined (resolveEndpoint must then be asked). Same precedence as resolveEndpoint.
 */
export function rawRequest(req: ObservedReq): string | undefined {
  if (req[ROUTE] !== undefined) return undefined;
  const route = req.route;
  if (route != null && route.path !== undefined) return undefined;
  return req.originalUrl ?? req.url ?? '/';
}

/** The endpoint label of a finished request: framework route template, else the bounded normalised path. */
export function resolveEndpoint(req: ObservedReq, policy: EndpointPolicy): string {
  const r = req[ROUTE];
  if (r !== undefined) return r;
  const route = req.route;
  if (route != null && route.path !== undefined) {
    const path = route.path;
    // the base noted when the route was assigned; req.baseUrl if the accessor is not installed
    const noted = notedBase(req as Proto);
    const base = noted !== undefined ? noted : req.baseUrl;
    if (!base && typeof path === 'string') return path;
    return expressEndpoint(base ?? '', path, policy);
  }
  return policy.fromUrl(req.originalUrl ?? req.url ?? '/');
}
