import diagnostics from 'node:diagnostics_channel';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { methodIndex, type EndpointPolicy } from '../metrics/labels';
import type { Metrics } from '../metrics/Metrics';
import { REQUEST_ERROR, statusErrorIndex } from '../metrics/status';
import type { Series } from '../metrics/store';
import { ownServers } from '../export/server';
import { SLOT, captureFastifyRoutes, captureLoadedFrameworkRoutes, resolveEndpoint, rawRequest, type RouteNote } from './routes';

const hrtime = process.hrtime;
/**
 * Milliseconds on the monotonic clock. `process.hrtime()` rather than `performance.now()`: the latter
 * checks its receiver through a wrapper V8 cannot inline (≈ 120 instructions a call, counted by
 * callgrind); hrtime's two-element array does not escape this function once it is inlined.
 */
function nowMs(): number {
  const t = hrtime();
  return t[0] * 1e3 + t[1] / 1e6;
}


const SEEN = Symbol('prefork-otel.seenServer');
/** SEEN values: the server is observed / is one of ours (its requests are not app traffic) */
const OBSERVED = 1;
const OWN = 2;

type Res = ServerResponse & { req: IncomingMessage };
type Sock = { [SLOT]?: Slot; on(event: 'close', listener: () => void): unknown };
interface ChannelMessage { request: IncomingMessage; response: Res; socket?: Sock | null; server: object & { [SEEN]?: number } }

/** a pipelined request waiting behind the slot's current one */
interface Queued { res: Res; t0: number }

/**
 * One per connection, made at its first request and reused by every request on it: the response
 * under way and its start time. Nothing is added to the request or response objects, so Node's own
 * HTTP code keeps seeing the object shapes it was optimised for, and a request costs no allocation
 * here. Pipelined requests (rare) wait in `queue`.
 */
class Slot implements RouteNote {
  res: Res | null = null;
  t0 = 0;
  queue: Queued[] | null = null;
  /**
   * The last raw (method, URL) recorded on this connection and what it resolved to: a client that
   * repeats its request on a keep-alive connection skips the endpoint and series lookups. Only for
   * requests without a framework route (those resolve from the request itself).
   */
  method: string | undefined = undefined;
  url: string | undefined = undefined;
  mi = 0;
  endpoint = '';
  series: Series | undefined = undefined;
  /** the Express route of the connection's request under way (src/hooks/routes.ts); reset when the next one starts */
  routeReq: object | null = null;
  route: unknown = undefined;
  base: string | undefined = undefined;
}

/** Optional per-request user hooks (gunicorn's pre_request / post_request). */
export interface RequestHooks {
  preRequest?: (req: IncomingMessage, res: ServerResponse) => void;
  postRequest?: (req: IncomingMessage, res: ServerResponse, seconds: number) => void;
  /** counted when a request ends; the runner uses it for --max-requests */
  onRequestDone?: () => void;
}

/**
 * The default pre_request / post_request hooks of a worker, fed by node:diagnostics_channel
 * (`http.server.request.start` / `http.server.response.finish`), so node:http, Express, Fastify and
 * Koa are observed without wrapping the app. Per request: one clock read at each end, the endpoint
 * and series slot (remembered per connection for a repeated raw request, else a cached lookup) and
 * the slot's increments. Aborted requests (the connection closed before
 * the response finished) are found by one 'close' listener per connection, not per request: a
 * listener per response cost ≈ 200 ns a request, a third of the whole hot path.
 */
export class HttpObserver {
  /** requests started and not yet recorded (finished or aborted) */
  inFlight = 0;
  private readonly started = (m: unknown) => this.onStart(m as ChannelMessage);
  /**
   * The finish handler is the subscriber itself, not an arrow that calls a method: it is too large for
   * V8 to inline into the channel's publish, so a wrapper would be one more call per request (≈ 30
   * instructions in the callgrind diff). `started` stays a wrapper: V8 inlines onStart into it.
   */
  private readonly finished = (msg: unknown): void => {
    const m = msg as ChannelMessage;
    const res = m.response;
    const socket = m.socket;
    const t0 = this.take(socket, res);
    if (t0 < 0) return;
    this.inFlight--;
    const status = res.statusCode;
    const err = statusErrorIndex(status);
    const seconds = (nowMs() - t0) / 1000;
    const req = m.request;
    const slot = socket ? socket[SLOT] : undefined;
    if (slot !== undefined) {
      const url = rawRequest(req);
      if (url !== undefined) {
        const method = req.method;
        if (url !== slot.url || method !== slot.method) {
          const mi = methodIndex(method);
          const endpoint = this.policy.fromUrl(url);
          slot.method = method;
          slot.url = url;
          slot.mi = mi;
          slot.endpoint = endpoint;
          slot.series = this.metrics.fastSeries(mi, endpoint);
        }
        this.metrics.record(slot.mi, slot.series, slot.endpoint, seconds, err);
        this.after(req, res, seconds);
        return;
      }
    }
    this.record(req, res, seconds, err);
  };
  /** a socket's 'close' (this = the socket): its unfinished requests were aborted */
  private readonly socketClosed: (this: Sock) => void;
  /** a response's 'close', for the rare request published without its socket */
  private readonly closed: (this: Res) => void;
  /** start times of those rare requests */
  private readonly unslotted = new WeakMap<Res, number>();

  constructor(readonly metrics: Metrics, readonly policy: EndpointPolicy, readonly hooks: RequestHooks = {}) {
    const self = this;
    this.socketClosed = function (this: Sock) {
      self.onSocketClose(this);
    };
    this.closed = function (this: Res) {
      self.onResponseClose(this);
    };
  }

  start(): this {
    captureFastifyRoutes();
    diagnostics.subscribe('http.server.request.start', this.started);
    diagnostics.subscribe('http.server.response.finish', this.finished);
    return this;
  }

  stop(): void {
    diagnostics.unsubscribe('http.server.request.start', this.started);
    diagnostics.unsubscribe('http.server.response.finish', this.finished);
  }

  private onStart(m: ChannelMessage): void {
    const server = m.server;
    const seen = server[SEEN];
    if (seen !== OBSERVED) {
      if (seen === OWN) return;
      // first request of this server: decide once whether it is ours, and hook Express / Koa if loaded
      if (ownServers.has(server)) {
        server[SEEN] = OWN;
        return;
      }
      server[SEEN] = OBSERVED;
      captureLoadedFrameworkRoutes();
    }
    const res = m.response;
    const t0 = nowMs();
    this.inFlight++;
    const socket = m.socket;
    if (socket) {
      let slot = socket[SLOT];
      if (slot === undefined) {
        slot = socket[SLOT] = new Slot();
        socket.on('close', this.socketClosed);
      }
      if (slot.res === null) {
        slot.res = res;
        slot.t0 = t0;
        slot.routeReq = null;
      } else {
        (slot.queue ??= []).push({ res, t0 });
      }
    } else {
      this.unslotted.set(res, t0);
      res.on('close', this.closed);
    }
    if (this.hooks.preRequest) this.hooks.preRequest(m.request, res);
  }

  /**
   * The start time of `res` if it is still to be recorded, and forget it (so a finish and a close
   * never count it twice); -1 if it is not ours or already recorded.
   */
  private take(socket: Sock | null | undefined, res: Res): number {
    const slot = socket ? socket[SLOT] : undefined;
    if (slot !== undefined) {
      if (slot.res === res) {
        const t0 = slot.t0;
        const next = slot.queue !== null ? slot.queue.shift() : undefined;
        if (next !== undefined) {
          slot.res = next.res;
          slot.t0 = next.t0;
        } else {
          slot.res = null;
        }
        return t0;
      }
      const q = slot.queue;
      if (q !== null) {
        for (let i = 0; i < q.length; i++) {
          if (q[i]!.res === res) return q.splice(i, 1)[0]!.t0;
        }
      }
    }
    return this.takeUnslotted(res);
  }

  /** take() for a request published without its socket */
  private takeUnslotted(res: Res): number {
    const t0 = this.unslotted.get(res);
    if (t0 === undefined) return -1;
    this.unslotted.delete(res);
    return t0;
  }

  /** The connection closed: every request on it that had not finished was aborted. */
  private onSocketClose(socket: Sock): void {
    const slot = socket[SLOT];
    if (slot === undefined) return;
    const now = nowMs();
    if (slot.res !== null) {
      const res = slot.res;
      slot.res = null;
      this.aborted(res, slot.t0, now);
    }
    const q = slot.queue;
    slot.queue = null;
    if (q !== null) for (const x of q) this.aborted(x.res, x.t0, now);
  }

  /** A response's 'close' (a request published without its socket): aborted unless it finished. */
  private onResponseClose(res: Res): void {
    const t0 = this.takeUnslotted(res);
    if (t0 < 0) return;
    this.aborted(res, t0, nowMs());
  }

  /** A request ended without a finish: the client went away (or the socket was destroyed) mid-request. */
  private aborted(res: Res, t0: number, now: number): void {
    this.inFlight--;
    this.record(res.req, res, (now - t0) / 1000, REQUEST_ERROR);
  }

  private record(req: IncomingMessage, res: Res, seconds: number, errorIdx: number): void {
    const metrics = this.metrics;
    const mi = methodIndex(req.method);
    const endpoint = resolveEndpoint(req as never, this.policy);
    metrics.record(mi, metrics.fastSeries(mi, endpoint), endpoint, seconds, errorIdx);
    this.after(req, res, seconds);
  }

  /** the user's post_request and the runner's request count */
  private after(req: IncomingMessage, res: Res, seconds: number): void {
    const h = this.hooks;
    if (h.postRequest) h.postRequest(req, res, seconds);
    if (h.onRequestDone) h.onRequestDone();
  }
}
