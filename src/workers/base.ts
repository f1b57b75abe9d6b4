/**
 * What every runner worker does, whatever its class (gunicorn's workers/base.py): its own
 * WorkerRuntime (MeterProvider, Metrics, state, uptime and resource samples), the snapshot
 * responder on the IPC channel, heartbeats to the master, signals, --max-requests, the worker-side
 * hooks, and the graceful exit that loses no increment (final snapshot, OTLP flush).
 */
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { MetricProducer } from '@opentelemetry/sdk-metrics';
import type { ExporterConfig } from '../config';
import { SnapshotResponder } from '../export/ipc';
import { freshenSnapshot } from '../export/snapshot';
import type { RequestHooks } from '../hooks/http';
import { reopenAccessLogs } from '../hooks/access-log';
import { resolveEndpoint } from '../hooks/routes';
import { HookRunner, type Logger, type UserHooks, type WorkerApi } from '../hooks/server';
import { processProducer, type Metrics } from '../metrics/Metrics';
import type { RestartReason } from '../metrics/contract';
import { Acceptor, type SocketHandle } from './acceptor';
import { loadApp } from './app';
import { TAG, type WorkerBoot } from './protocol';
import { WorkerRuntime } from './runtime';
import { Watchdog } from './watchdog';
import { sleep } from '../util/time';


/** Send to the master; a closed channel (the master is gone) is not an error here. */
export function toMaster(message: object): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    try {
      process.send(message, () => resolve());
    } catch {
      resolve();
    }
  });
}

/**
 * Heartbeats to the master every `ms` (unref'd): `tick` is when this process's event loop(s) last
 * ran; the master kills a worker whose tick is older than --timeout. Started before the app loads.
 */
export const heartbeat = {
  /** Date.now() of the stalest event loop of the process (gthread: the threads' too) */
  source: (): number => Date.now(),
  /** Date.now() when the request in progress started (set by the sync class: BeatMessage.busySince) */
  busySince: (): number | undefined => undefined,
  start(ms: number): void {
    const beat = () => void toMaster({ [TAG]: 'beat', tick: heartbeat.source(), busySince: heartbeat.busySince() });
    beat();
    setInterval(beat, ms).unref();
  },
};

export abstract class BaseWorker implements WorkerApi {
  readonly pid = process.pid;
  readonly ppid = process.ppid;
  readonly age: number;
  alive = true;
  /** requests started */
  protected requests = 0;
  runtime!: WorkerRuntime;
  protected responder!: SnapshotResponder;
  protected readonly hooks: HookRunner;
  protected readonly acceptors: Acceptor[] = [];
  /** every response gets `Connection: close` (sync; and everyone once stopping) */
  protected closeEachConnection = false;
  protected stopping: Promise<void> | undefined;

  constructor(readonly boot: WorkerBoot, readonly config: ExporterConfig, readonly log: Logger, userHooks: UserHooks) {
    this.age = boot.age;
    this.hooks = new HookRunner(userHooks, log);
  }

  /** requests started so far (gunicorn's worker.nr) */
  get nr(): number {
    return this.requests;
  }

  get metrics(): Metrics {
    return this.runtime.metrics;
  }

  /** extra producers for this process's readers (threads) */
  protected producers(): MetricProducer[] {
    return [];
  }

  /** requests in progress and when they started (kept only for the watchdog: they fail with TimeoutError on abort) */
  private readonly inflight = new Map<IncomingMessage, number>();
  private watchdog: Watchdog | undefined;
  protected aborted = false;

  protected get watchdogEnabled(): boolean {
    return this.boot.abortOnTimeout && this.boot.timeout > 0;
  }

  /**
   * gunicorn's pre_request / post_request user hooks, on the request observer (only when defined);
   * with the watchdog, also the in-progress requests.
   */
  protected requestHooks(): RequestHooks {
    const u = this.hooks.user;
    const h: RequestHooks = {};
    const inflight = this.watchdogEnabled ? this.inflight : undefined;
    if (inflight) {
      h.preRequest = u.pre_request
        ? (req) => { inflight.set(req, performance.now()); u.pre_request!(this, req); }
        : (req) => { inflight.set(req, performance.now()); };
      h.postRequest = u.post_request
        ? (req, res, s) => { inflight.delete(req); u.post_request!(this, req, res, s); }
        : (req) => { inflight.delete(req); };
    } else {
      if (u.pre_request) h.preRequest = (req) => u.pre_request!(this, req);
      if (u.post_request) h.postRequest = (req, res, s) => u.post_request!(this, req, res, s);
    }
    return h;
  }

  /** a watchdog thread for this (serving) event loop */
  protected startWatchdog(): void {
    this.watchdog = new Watchdog(this.boot.timeout * 1000, () => this.abortOnTimeout()).start();
  }

  /**
   * The watchdog's abort, run inside the blocked event loop (synchronous only): gunicorn's
   * handle_abort. Tell the master why, count every request in progress as failed with
   * TimeoutError, run worker_abort, send the final snapshot; the watchdog then kills the process.
   */
  protected abortOnTimeout(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.alive = false;
    // the master logs gunicorn's `WORKER TIMEOUT (pid:N)` (under its own pid) when it hears of this
    this.log.critical(`event loop blocked for more than ${this.boot.timeout}s; aborting`);
    const send = (m: object) => { try { process.send?.(m); } catch { /* the master is gone */ } };
    send({ [TAG]: 'retire', reason: 'timeout' });
    const metrics = this.runtime.metrics;
    const now = performance.now();
    for (const [req, t0] of this.inflight) {
      metrics.recordRequest(req.method ?? 'OTHER', resolveEndpoint(req as never, this.runtime.observer.policy), (now - t0) / 1000, false, 'TimeoutError');
    }
    this.inflight.clear();
    metrics.updateWorkerState('stopping');
    try {
      this.hooks.user.worker_abort?.(this as never);
    } catch (e) {
      this.log.error(`hook worker_abort failed: ${(e as Error)?.stack ?? e}`);
    }
    send({ [TAG]: 'snapshot', snapshot: freshenSnapshot(this.responder.last, processProducer.scopeMetrics()) });
  }

  /** Boot, serve, and tell the master we are ready. `handles[bind][copy]`. */
  async run(handles: SocketHandle[][]): Promise<void> {
    this.runtime = new WorkerRuntime(this.config, this.requestHooks(), { workerId: this.pid, producers: this.producers() });
    // requests in flight, for the master's exit line (gthread's are counted in its threads: not known here)
    const inFlight = this.boot.kind === 'gthread' ? undefined : () => this.runtime.observer.inFlight;
    this.responder = new SnapshotResponder(this.runtime.telemetry, undefined, undefined, inFlight).start(this.config.snapshotIntervalMs);
    if (this.watchdogEnabled) this.startWatchdog();
    // a first snapshot before serving: from now on the master asks this worker at every scrape
    await this.responder.send(false);
    this.initSignals();
    await this.hooks.call('post_fork', { pid: this.ppid, log: this.log }, this);
    await this.serve(handles);
    await this.hooks.call('post_worker_init', this);
    await toMaster({ [TAG]: 'ready' });
  }

  /** load the app and serve on the sockets */
  protected abstract serve(handles: SocketHandle[][]): Promise<void>;

  /**
   * Every request, before the app sees it (gunicorn's handle_request): count it, apply
   * --max-requests (the request that reaches the limit is the last: its response closes the
   * connection and the worker retires gracefully), close connections when the class or a stop asks.
   */
  handleRequest(_req: IncomingMessage, res: ServerResponse): void {
    const n = ++this.requests;
    if (this.closeEachConnection || !this.alive) res.shouldKeepAlive = false;
    const max = this.boot.maxRequests;
    if (max > 0 && n >= max && this.alive) {
      res.shouldKeepAlive = false;
      this.maxRequestsReached();
    }
  }

  protected maxRequestsReached(): void {
    this.log.info(`Autorestarting worker after current request (--max-requests ${this.boot.maxRequests}).`);
    void this.retire('max_requests');
  }

  /**
   * Leave gracefully and let the master know why (it spawns the replacement right away). Accepting
   * stops at once, so the connections that arrive from here on go to the other workers.
   */
  protected async retire(reason: RestartReason, signal?: string): Promise<void> {
    if (!this.alive || this.retiring) return;
    this.retiring = true;
    this.stopAccepting();
    await toMaster({ [TAG]: 'retire', reason, ...(signal ? { signal } : {}) });
    await this.stop(true);
  }

  private retiring = false;

  /** stop taking new connections (accepted ones are still served) */
  protected stopAccepting(): void {
    for (const a of this.acceptors) a.close();
  }

  /** The app server(s) of this process, each behind an Acceptor of `capacity`. */
  protected async serveInProcess(handles: SocketHandle[][], capacity: number): Promise<void> {
    const server = await loadApp(this.boot.app, Math.max(this.boot.timeout, 10) * 1000);
    server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => this.handleRequest(req, res));
    const http = server as HttpServer;
    // --keep-alive 0: no keep-alive (as gunicorn)
    if (this.boot.keepAlive <= 0) this.closeEachConnection = true;
    if (this.closeEachConnection) http.keepAliveTimeout = 1;
    else if (typeof http.keepAliveTimeout === 'number') http.keepAliveTimeout = this.boot.keepAlive * 1000;
    const acceptor = new Acceptor(server, capacity);
    this.acceptors.push(acceptor);
    await acceptor.listen(handles.map((copies) => copies[0]!));
  }

  private initSignals(): void {
    process.on('SIGTERM', () => void this.retire('signal', 'SIGTERM'));
    const fast = (sig: string) => () => void this.quit(sig);
    process.on('SIGINT', fast('SIGINT'));
    process.on('SIGQUIT', fast('SIGQUIT'));
    // USR1 (forwarded by the master): reopen the access log (also the threads'); never the inspector
    process.on('SIGUSR1', () => reopenAccessLogs());
    process.on('disconnect', () => {
      if (!this.alive) return;
      this.log.info('Parent changed, shutting down');
      void this.stop(true);
    });
  }

  /** SIGINT / SIGQUIT: gunicorn's handle_quit: worker_int, then leave without draining. */
  private async quit(signal: string): Promise<void> {
    if (!this.alive) return;
    await toMaster({ [TAG]: 'retire', reason: 'signal', signal });
    await this.hooks.call('worker_int', this);
    await this.stop(false);
  }

  /** stop accepting and drain (graceful) or not; then worker_exit, final snapshot, flush, exit */
  stop(graceful: boolean): Promise<void> {
    this.stopping ??= this.doStop(graceful);
    return this.stopping;
  }

  protected async doStop(graceful: boolean): Promise<void> {
    this.alive = false;
    this.runtime.metrics.updateWorkerState('stopping');
    if (graceful) {
      await this.drain(this.boot.gracefulTimeout * 1000);
    }
    this.abandon();
    await this.hooks.call('worker_exit', { pid: this.ppid, log: this.log }, this);
    await this.finalFlush();
    process.exit(0);
  }

  /** Stop accepting; wait until every accepted connection is served (or `ms` passed). */
  protected async drain(ms: number): Promise<void> {
    for (const a of this.acceptors) a.close();
    const end = Date.now() + ms;
    while (Date.now() < end && this.acceptors.some((a) => a.sockets.size > 0)) {
      for (const a of this.acceptors) a.closeIdle();
      await sleep(25);
    }
  }

  /** drop what is still open (no graceful time left) */
  protected abandon(): void {
    for (const a of this.acceptors) {
      a.close();
      a.destroyAll();
    }
  }

  /** the final snapshot (so the master loses no increment), then flush OTLP push readers */
  protected async finalFlush(): Promise<void> {
    const bounded = <T>(p: Promise<T>) => Promise.race([p, sleep(5000)]);
    await bounded(this.responder.stop(true)).catch(() => undefined);
    await bounded(this.runtime.close()).catch(() => undefined);
  }
}
