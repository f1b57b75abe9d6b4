/**
 * The serving loop: the one place that serves requests on an event loop of a runner worker, for
 * every worker class (sync, gthread, async) and for each of gthread's threads. It owns:
 *  - admission: an Acceptor of `capacity` connections (sync: 1; async: --worker-connections; a
 *    gthread thread: its share), connections over it wait unread, none is dropped;
 *  - per request (gunicorn's handle_request): the request count, --max-requests (the request that
 *    reaches the quota is the last on its connection and starts the retirement), `Connection: close`
 *    when the class or a stop asks for it;
 *  - the requests in progress (only when a --timeout abort can need them);
 *  - the graceful drain: stop accepting, then serve every connection accepted, without ever closing
 *    a keep-alive connection on which a request may already be on its way (see `drain`).
 */
import net from 'node:net';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { RequestHooks } from '../hooks/http';
import { Acceptor, type SocketHandle } from './acceptor';

/** The request count against --max-requests: go on, this is the last one, or past it (other connections). */
export type Quota = 'serve' | 'last' | 'over';

/** Pure: where request number `n` (1-based) stands against a quota of `max` (0 = none). */
export function quota(n: number, max: number): Quota {
  if (max <= 0 || n < max) return 'serve';
  return n === max ? 'last' : 'over';
}

/**
 * Pure: one worker's --max-requests with its --max-requests-jitter (gunicorn: max_requests +
 * randint(0, jitter)), so that workers started together do not all retire together. 0 = no limit.
 */
export function jitteredMaxRequests(max: number, jitter: number, random: () => number = Math.random): number {
  if (max <= 0) return 0;
  const j = Math.max(0, Math.floor(jitter));
  return max + Math.min(j, Math.floor(random() * (j + 1)));
}

export type DrainState = 'serving' | 'draining' | 'drained';

/**
 * Pure: the drain state machine of one loop. serving → (begin) draining → (the last open
 * connection closed, or `finish` when the graceful time ran out) drained. `done` resolves on drained.
 */
export class Drain {
  state: DrainState = 'serving';
  private open = 0;
  private resolveDone!: () => void;
  readonly done: Promise<void> = new Promise((r) => { this.resolveDone = r; });

  get connections(): number {
    return this.open;
  }

  opened(): void {
    this.open++;
  }

  closed(): void {
    if (this.open > 0) this.open--;
    if (this.open === 0 && this.state === 'draining') this.finish();
  }

  /** stop serving new connections; resolves once every open one has closed */
  begin(): Promise<void> {
    if (this.state === 'serving') {
      this.state = 'draining';
      if (this.open === 0) this.finish();
    }
    return this.done;
  }

  finish(): void {
    if (this.state === 'drained') return;
    this.state = 'drained';
    this.resolveDone();
  }
}

export interface LoopOptions {
  /** connections served at once (the rest wait, accepted and unread) */
  capacity: number;
  /** --keep-alive seconds; ≤ 0: no keep-alive */
  keepAlive: number;
  /** every response closes its connection (sync, as gunicorn's sync worker) */
  closeEach: boolean;
  /** this worker's --max-requests (with jitter); 0 = none */
  maxRequests: number;
  /** count one request started and return the count so far (gthread: shared by the process's threads) */
  count(): number;
  /** the request that reaches --max-requests has just started here */
  onQuota(): void;
  /** keep the requests in progress, for the --timeout abort */
  trackInflight: boolean;
  /**
   * sync: while a request is being served, this loop holds no listening socket (so waiting
   * connections go to an idle worker) — see Acceptor. Returns a fresh copy of listening socket `i`.
   */
  relisten?: (index: number) => Promise<SocketHandle>;
}

export class ServingLoop {
  /** requests in progress and when they started (only with `trackInflight`) */
  readonly inflight = new Map<IncomingMessage, number>();
  private readonly drainer = new Drain();
  private acceptor: Acceptor | undefined;

  constructor(private readonly opts: LoopOptions) {}

  /** false once draining or aborted: responses from here on close their connection */
  get serving(): boolean {
    return this.drainer.state === 'serving';
  }

  get state(): DrainState {
    return this.drainer.state;
  }

  /**
   * Date.now() since when connections have been in service without a break; 0 when none is. For
   * sync (one at a time) that is when the request in progress began: its heartbeat (gunicorn's sync
   * worker notifies the master only between requests).
   */
  get busySince(): number {
    return this.acceptor?.busySince ?? 0;
  }

  /** connections accepted and not yet closed */
  get connections(): number {
    return this.drainer.connections;
  }

  /**
   * The request hooks of the observer for this loop: gunicorn's pre_request / post_request user
   * hooks (`pre`, `post`, when defined) and, with `trackInflight`, the requests in progress.
   */
  requestHooks(pre?: RequestHooks['preRequest'], post?: RequestHooks['postRequest']): RequestHooks {
    const h: RequestHooks = {};
    if (this.opts.trackInflight) {
      const inflight = this.inflight;
      h.preRequest = pre
        ? (req, res) => { inflight.set(req, performance.now()); pre(req, res); }
        : (req) => { inflight.set(req, performance.now()); };
      h.postRequest = post
        ? (req, res, s) => { inflight.delete(req); post(req, res, s); }
        : (req) => { inflight.delete(req); };
    } else {
      if (pre) h.preRequest = pre;
      if (post) h.postRequest = post;
    }
    return h;
  }

  /** Serve `server` (the app's) on `handles`, one per --bind. */
  async serve(server: net.Server, handles: SocketHandle[]): Promise<void> {
    server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => this.handleRequest(req, res));
    const http = server as HttpServer;
    if (typeof http.keepAliveTimeout === 'number') {
      // --keep-alive 0 (or sync): no keep-alive, as gunicorn
      http.keepAliveTimeout = this.opts.closeEach || this.opts.keepAlive <= 0 ? 1 : this.opts.keepAlive * 1000;
    }
    this.acceptor = new Acceptor(server, this.opts.capacity, {
      opened: () => this.drainer.opened(),
      closed: () => this.drainer.closed(),
      relisten: this.opts.relisten,
    });
    await this.acceptor.listen(handles);
  }

  /** Every request, before the app sees it (gunicorn's handle_request). */
  handleRequest(_req: IncomingMessage, res: ServerResponse): void {
    const q = quota(this.opts.count(), this.opts.maxRequests);
    if (this.opts.closeEach || this.opts.keepAlive <= 0 || this.drainer.state !== 'serving') res.shouldKeepAlive = false;
    if (q !== 'serve') {
      // the quota is reached: this response closes its connection, and no new connection is taken
      res.shouldKeepAlive = false;
      this.stopAccepting();
      if (q === 'last') this.opts.onQuota();
    }
  }

  /** Stop taking new connections (the accepted ones are still served). */
  stopAccepting(): void {
    this.acceptor?.close();
  }

  /**
   * Graceful drain, for up to `ms`: stop accepting; every connection already accepted is served —
   * those waiting for a slot too. Requests in progress answer with `Connection: close` (when their
   * headers are not out yet), as does the next request on any keep-alive connection. An idle
   * keep-alive connection is never closed here: a request may already be on its way in the kernel
   * (Node's closeIdleConnections, which http.Server.close() calls, races exactly that). It gets
   * `Connection: close` on its next request, or the server closes it at its keep-alive timeout,
   * which the client was told in `Keep-Alive: timeout=N` (Node's Agent drops the socket a second
   * before that). Resolves true when everything was served, false when `ms` ran out.
   */
  async drain(ms: number): Promise<boolean> {
    const done = this.drainer.begin();
    this.stopAccepting();
    this.acceptor?.closeAfterCurrent();
    if (this.drainer.state === 'drained') return true;
    let timer: NodeJS.Timeout | undefined;
    const served = await Promise.race([
      done.then(() => true),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), ms); }),
    ]);
    clearTimeout(timer);
    return served;
  }

  /** Drop what is still open (no graceful time left, or a fast stop). */
  abandon(): void {
    this.drainer.begin();
    this.stopAccepting();
    this.acceptor?.destroyAll();
    this.drainer.finish();
  }

  /** The --timeout abort: the requests in progress (with their start), forgotten here. */
  takeInflight(): Array<[IncomingMessage, number]> {
    const out = [...this.inflight];
    this.inflight.clear();
    this.drainer.begin();
    return out;
  }
}
