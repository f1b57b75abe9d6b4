/**
 * The one label policy: how `method` and `endpoint` values are derived and bounded.
 * (`worker_id` is the process pid; `error_type` one of contract.ERROR_TYPES.)
 */

/** The standard methods (RFC 9110 + PATCH); anything else is folded to OTHER. Index = method slot. */
export const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH', 'OTHER'] as const;
export const METHOD_OTHER = METHODS.length - 1;

/** Method name → slot index; a switch, so no allocation and no hashing on the hot path. */
export function methodIndex(method: string | undefined): number {
  switch (method) {
    case 'GET': return 0;
    case 'HEAD': return 1;
    case 'POST': return 2;
    case 'PUT': return 3;
    case 'DELETE': return 4;
    case 'CONNECT': return 5;
    case 'OPTIONS': return 6;
    case 'TRACE': return 7;
    case 'PATCH': return 8;
    default: {
      if (method === undefined) return METHOD_OTHER;
      // case-insensitive match for the rare lower-case client; still one of the standard values
      const up = method.toUpperCase();
      const i = (METHODS as readonly string[]).indexOf(up);
      return i >= 0 ? i : METHOD_OTHER;
    }
  }
}

/** The endpoint value every path beyond the cap is folded into. */
export const OVERFLOW_ENDPOINT = '__overflow__';

/**
 * The longest endpoint value made from a raw (normalised) path, in characters. A longer path is cut
 * at its last `/` that leaves room for TRUNCATED_MARKER, and the marker replaces the rest, so the
 * value stays ≤ MAX_ENDPOINT_LENGTH. Route templates reported by a framework are never cut (they are
 * the application's own code, not request data).
 */
export const MAX_ENDPOINT_LENGTH = 128;
/** What replaces the cut-off tail of a path longer than MAX_ENDPOINT_LENGTH. */
export const TRUNCATED_MARKER = '/__truncated__';
/**
 * Raw URLs longer than this are normalised on every request instead of being cached: the cache then
 * holds at most cacheLimit × URL_CACHE_MAX_LENGTH characters, whatever the clients send.
 */
export const URL_CACHE_MAX_LENGTH = 1024;

/**
 * `path` if it has at most `max` characters; else cut at a segment boundary with TRUNCATED_MARKER in
 * place of the rest (`/api/v1/<8 KB>` → `/api/v1/__truncated__`; one huge first segment →
 * `/__truncated__`). The result never has more than `max` characters.
 */
export function capEndpoint(path: string, max: number = MAX_ENDPOINT_LENGTH): string {
  if (path.length <= max) return path;
  const room = max - TRUNCATED_MARKER.length;
  const cut = room > 0 ? path.lastIndexOf('/', room) : -1;
  return (cut > 0 ? path.slice(0, cut) : '') + TRUNCATED_MARKER;
}

const NUMERIC = /^\d+$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const LONG_HEX = /^[0-9a-f]{16,}$/i;
/** long opaque tokens with at least one digit (base64url ids, slugs with hashes), 20+ chars */
const OPAQUE = /^(?=.*\d)[A-Za-z0-9_\-=.~]{20,}$/;

function isId(seg: string): boolean {
  return NUMERIC.test(seg) || UUID.test(seg) || LONG_HEX.test(seg) || OPAQUE.test(seg);
}

/**
 * `/users/123?x=1` → `/users/:id`. Query and fragment dropped, numbers, UUIDs, long hex and long
 * opaque tokens collapsed, trailing slash kept only for `/`.
 */
export function normalizePath(url: string): string {
  let end = url.length;
  const q = url.indexOf('?');
  if (q >= 0) end = q;
  const h = url.indexOf('#');
  if (h >= 0 && h < end) end = h;
  let path = end === url.length ? url : url.slice(0, end);
  if (path.length === 0 || path[0] !== '/') {
    // absolute-form request target (proxies): http://host/path
    const m = /^[a-z][a-z0-9+.-]*:\/\/[^/]*(\/.*)?$/i.exec(path);
    path = m ? (m[1] ?? '/') : '/' + path;
  }
  const segs = path.split('/');
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i]!;
    if (s !== '' && isId(s)) segs[i] = ':id';
  }
  let out = segs.join('/');
  if (out.length > 1 && out.endsWith('/')) out = out.slice(0, -1);
  return out.length > 0 ? out : '/';
}

/**
 * Resolves raw request URLs to bounded endpoint values. A per-process cache maps a raw URL to its
 * endpoint (so a repeated URL costs one Map lookup); at most `maxEndpoints` distinct normalised
 * values are ever produced, the rest become OVERFLOW_ENDPOINT, and none is longer than
 * `maxLength` characters (capEndpoint). Route templates reported by a
 * framework are not counted against the cap: they are bounded by the application's code. Templates
 * partly built from the request (Express: a mounted router's matched prefix) have a cap of their
 * own (`admitRoute`), so unmatched paths — a scanner's 404s — can never crowd out real routes.
 */
export class EndpointPolicy {
  private readonly cache = new Map<string, string>();
  private readonly seen = new Set<string>();
  private readonly routes = new Set<string>();
  private readonly cacheLimit: number;
  constructor(readonly maxEndpoints: number, readonly maxLength: number = MAX_ENDPOINT_LENGTH) {
    this.cacheLimit = Math.max(1024, maxEndpoints * 4);
  }

  /** Endpoint for a raw URL (no framework route known). */
  fromUrl(url: string): string {
    let ep = this.cache.get(url);
    if (ep !== undefined) return ep;
    ep = this.admit(this.normalise(url));
    if (url.length > URL_CACHE_MAX_LENGTH) return ep;
    if (this.cache.size >= this.cacheLimit) this.cache.clear();
    this.cache.set(url, ep);
    return ep;
  }

  /** A raw path (or a mounted router's matched prefix) → its normalised, length-capped value. */
  normalise(url: string): string {
    return capEndpoint(normalizePath(url), this.maxLength);
  }

  /** Admit an already-normalised endpoint value under the cap (OVERFLOW_ENDPOINT once full). */
  admit(ep: string): string {
    if (this.seen.has(ep)) return ep;
    if (this.seen.size >= this.maxEndpoints) return OVERFLOW_ENDPOINT;
    this.seen.add(ep);
    return ep;
  }

  /** Admit a route template built partly from request data, under a cap separate from raw paths'. */
  admitRoute(ep: string): string {
    if (this.routes.has(ep)) return ep;
    if (this.routes.size >= this.maxEndpoints) return OVERFLOW_ENDPOINT;
    this.routes.add(ep);
    return ep;
  }

  /** how many distinct normalised endpoints were admitted (for tests and docs) */
  get admitted(): number {
    return this.seen.size;
  }
}
