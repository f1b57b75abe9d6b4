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
/** T0 value once the request is recorded (finish) so close does not count it again */
const DONE = -1;

type Req = IncomingMessage & { [T0]?: number };
type Res = ServerResponse & { req: Req };
interface ChannelMessage { request: Req; response: Res; server: object & { [SEEN]?: boolean } }

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
 * Koa are observed without wrapping the app. Per request: one clock read at each end, one close
 * listener (to see aborted requests), a cached endpoint lookup and the series slot's increments.
 */
export class HttpObserver {
  inFlight = 0;
  private readonly started = (m: unknown) => this.onStart(m as ChannelMessage);
  private readonly finished = (m: unknown) => this.onFinish(m as ChannelMessage);
  private readonly closed: (this: Res) => void;

  constructor(readonly metrics: Metrics, readonly policy: EndpointPolicy, readonly hooks: RequestHooks = {}) {
    const self = this;
    this.closed = function (this: Res) {
      self.onClose(this);
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
    if (server[SEEN] !== true) {
      // first request of this server: decide once whether it is ours, and hook Express / Koa if loaded
      server[SEEN] = true;
      if (ownServers.has(server)) return;
      captureLoadedFrameworkRoutes();
    } else if (ownServers.has(server)) {
      return;
    }
    m.request[T0] = performance.now();
    this.inFlight++;
    m.response.on('close', this.closed);
    if (this.hooks.preRequest) this.hooks.preRequest(m.request, m.response);
  }

  private onFinish(m: ChannelMessage): void {
    const req = m.request;
    const t0 = req[T0];
    if (t0 === undefined || t0 === DONE) return;
    req[T0] = DONE;
    const status = m.response.statusCode;
    const err = status >= 500 ? (status === 504 ? TIMEOUT_ERROR : REQUEST_ERROR) : status === 408 ? TIMEOUT_ERROR : -1;
    this.record(req, m.response, (performance.now() - t0) / 1000, err);
  }

  /** 'close' without a finish first: the client went away (or the socket was destroyed) mid-request. */
  private onClose(res: Res): void {
    this.inFlight--;
    const req = res.req;
    const t0 = req?.[T0];
    if (t0 === undefined || t0 === DONE) return;
    req[T0] = DONE;
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
