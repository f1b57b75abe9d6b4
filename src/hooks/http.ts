import diagnostics from 'node:diagnostics_channel';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { methodIndex, type EndpointPolicy } from '../metrics/labels';
import type { Metrics } from '../metrics/Metrics';
import { ownServers } from '../export/server';
import { captureFastifyRoutes, captureLoadedFrameworkRoutes, resolveEndpoint } from './routes';

/** ERROR_TYPES indices */
const REQUEST_ERROR = 0;
const TIMEOUT_ERROR = 1;

const T0 = Symbol('prefork-otel.t0');
const SEEN = Symbol('prefork-otel.seenServer');
/** responses started on a socket and not yet recorded: one, several (pipelining), or null (none) */
const PENDING = Symbol('prefork-otel.pending');
/** T0 value once the request is recorded (finish) so close does not count it again */
const DONE = -1;
/** SEEN values: the server is observed / is one of ours (its requests are not app traffic) */
const OBSERVED = 1;
const OWN = 2;

type Req = IncomingMessage & { [T0]?: number };
type Res = ServerResponse & { req: Req };
type Sock = { [PENDING]?: Res | Res[] | null; on(event: 'close', listener: () => void): unknown };
interface ChannelMessage { request: Req; response: Res; socket?: Sock | null; server: object & { [SEEN]?: number } }

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
 * Koa are observed without wrapping the app. Per request: one clock read at each end, a cached
 * endpoint lookup and the series slot's increments. Aborted requests (the connection closed before
 * the response finished) are found by one 'close' listener per connection, not per request: a
 * listener per response cost ≈ 200 ns a request, a third of the whole hot path.
 */
export class HttpObserver {
  /** requests started and not yet recorded (finished or aborted) */
  inFlight = 0;
  private readonly started = (m: unknown) => this.onStart(m as ChannelMessage);
  private readonly finished = (m: unknown) => this.onFinish(m as ChannelMessage);
  /** a socket's 'close' (this = the socket): its unfinished requests were aborted */
  private readonly socketClosed: (this: Sock) => void;
  /** a response's 'close', for the rare request published without its socket */
  private readonly closed: (this: Res) => void;

  constructor(readonly metrics: Metrics, readonly policy: EndpointPolicy, readonly hooks: RequestHooks = {}) {
    const self = this;
    this.socketClosed = function (this: Sock) {
      self.onSocketClose(this);
    };
    this.closed = function (this: Res) {
      self.abort(this);
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
    m.request[T0] = performance.now();
    this.inFlight++;
    const socket = m.socket;
    if (socket) {
      const p = socket[PENDING];
      if (p === undefined) {
        socket.on('close', this.socketClosed);
        socket[PENDING] = res;
      } else if (p === null) {
        socket[PENDING] = res;
      } else if (Array.isArray(p)) {
        p.push(res);
      } else {
        socket[PENDING] = [p, res];
      }
    } else {
      res.on('close', this.closed);
    }
    if (this.hooks.preRequest) this.hooks.preRequest(m.request, res);
  }

  private onFinish(m: ChannelMessage): void {
    const req = m.request;
    const t0 = req[T0];
    if (t0 === undefined || t0 === DONE) return;
    req[T0] = DONE;
    const res = m.response;
    const socket = m.socket;
    if (socket) {
      const p = socket[PENDING];
      if (p === res) {
        socket[PENDING] = null;
      } else if (Array.isArray(p)) {
        const i = p.indexOf(res);
        if (i >= 0) p.splice(i, 1);
        if (p.length === 0) socket[PENDING] = null;
      }
    }
    this.inFlight--;
    const status = res.statusCode;
    const err = status >= 500 ? (status === 504 ? TIMEOUT_ERROR : REQUEST_ERROR) : status === 408 ? TIMEOUT_ERROR : -1;
    this.record(req, res, (performance.now() - t0) / 1000, err);
  }

  /** The connection closed: every request on it that had not finished was aborted. */
  private onSocketClose(socket: Sock): void {
    const p = socket[PENDING];
    socket[PENDING] = null;
    if (p == null) return;
    if (Array.isArray(p)) for (const res of p) this.abort(res);
    else this.abort(p);
  }

  /** A request ended without a finish: the client went away (or the socket was destroyed) mid-request. */
  private abort(res: Res): void {
    const req = res.req;
    const t0 = req?.[T0];
    if (t0 === undefined || t0 === DONE) return;
    req[T0] = DONE;
    this.inFlight--;
    this.record(req, res, (performance.now() - t0) / 1000, REQUEST_ERROR);
  }

  private record(req: Req, res: Res, seconds: number, errorIdx: number): void {
    const metrics = this.metrics;
    const mi = methodIndex(req.method);
    const endpoint = resolveEndpoint(req as never, this.policy);
    metrics.record(mi, metrics.fastSeries(mi, endpoint), endpoint, seconds, errorIdx);
    const h = this.hooks;
    if (h.postRequest) h.postRequest(req, res, seconds);
    if (h.onRequestDone) h.onRequestDone();
  }
}
