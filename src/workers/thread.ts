/**
 * One thread of a gthread worker (PrometheusThreadWorker): its own event loop, its own copy of the
 * app, its own request accumulators (recorded under the process's worker_id), serving the
 * process's listening sockets (each thread has its own fd of each socket; the threads race on
 * accept). The process's main thread collects the accumulators and sums them.
 *   main → thread: { cmd: 'collect', id } | { cmd: 'close' } | { cmd: 'stop', graceful, ms }
 *   thread → main: { cmd: 'ready' } | { cmd: 'scopes', id, scopes } | { cmd: 'max' } | { cmd: 'final', scopes }
 *                  | { cmd: 'failed', message, exitCode }
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { createNoopMeter, type MeterProvider } from '@opentelemetry/api';
import { ConfigError, loadConfig } from '../config';
import { readConfigFile } from '../config/runner';
import { HttpObserver, type RequestHooks } from '../hooks/http';
import { resolveEndpoint } from '../hooks/routes';
import { pickHooks, type WorkerApi } from '../hooks/server';
import { EndpointPolicy } from '../metrics/labels';
import { Metrics } from '../metrics/Metrics';
import { RequestMetricProducer } from '../metrics/producer';
import { RunnerLog } from '../util/logger';
import { Acceptor } from './acceptor';
import { loadApp } from './app';
import { APP_LOAD_ERROR, type WorkerBoot } from './protocol';
import { ABORT } from './watchdog';
import { sleep } from '../util/time';

/** globalThis key of this thread's index (the main thread's abort addresses one thread by it) */
const THREAD_INDEX = Symbol.for('prefork-otel.threadIndex');

export interface ThreadData {
  boot: WorkerBoot;
  index: number;
  /** this thread's fd of each listening socket */
  fds: number[];
  capacity: number;
  /** Int32Array[0]: requests started by all threads of the process (--max-requests) */
  counter: SharedArrayBuffer;
  /** Float64Array[index]: Date.now() of this thread's last event-loop tick (heartbeat) */
  ticks: SharedArrayBuffer;
}

const NOOP_PROVIDER: MeterProvider = { getMeter: () => createNoopMeter() };

class ThreadLoop implements WorkerApi {
  readonly pid = process.pid;
  readonly ppid = process.ppid;
  readonly age: number;
  alive = true;
  readonly metrics: Metrics;
  readonly log: RunnerLog;
  private readonly producer = new RequestMetricProducer();
  private readonly counter: Int32Array;
  private readonly ticks: Float64Array;
  private acceptor: Acceptor | undefined;
  private observer: HttpObserver | undefined;
  private aborted = false;
  /** requests in progress and when they started (for the abort on --timeout) */
  private readonly inflight = new Map<IncomingMessage, number>();
  private readonly maxEndpoints: number;

  constructor(readonly data: ThreadData) {
    this.age = data.boot.age;
    this.log = new RunnerLog(data.boot.logLevel);
    this.counter = new Int32Array(data.counter);
    this.ticks = new Float64Array(data.ticks);
    const config = loadConfig(process.env);
    // the fast path always: the main thread merges these accumulators into its own readers
    this.metrics = new Metrics({ meterProvider: NOOP_PROVIDER, workerId: process.pid, buckets: config.buckets, recording: 'fast', producer: this.producer });
    this.maxEndpoints = config.maxEndpoints;
  }

  get nr(): number {
    return Atomics.load(this.counter, 0);
  }

  async start(): Promise<void> {
    const { boot } = this.data;
    const tick = () => { this.ticks[this.data.index] = Date.now(); };
    tick();
    setInterval(tick, boot.beatMs).unref();
    const user = boot.configFile ? pickHooks(await readConfigFile(boot.configFile)) : {};
    const hooks: RequestHooks = {};
    const inflight = boot.abortOnTimeout && boot.timeout > 0 ? this.inflight : undefined;
    if (inflight) {
      (globalThis as Record<symbol, unknown>)[ABORT] = () => this.abortOnTimeout();
      (globalThis as Record<symbol, unknown>)[THREAD_INDEX] = this.data.index;
    }
    if (user.pre_request || inflight) {
      hooks.preRequest = (req) => {
        inflight?.set(req, performance.now());
        user.pre_request?.(this, req);
      };
    }
    if (user.post_request || inflight) {
      hooks.postRequest = (req, res, s) => {
        inflight?.delete(req);
        user.post_request?.(this, req, res, s);
      };
    }
    this.observer = new HttpObserver(this.metrics, new EndpointPolicy(this.maxEndpoints), hooks).start();
    const server = await loadApp(boot.app, Math.max(boot.timeout, 10) * 1000);
    server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => this.handleRequest(req, res));
    const http = server as unknown as { keepAliveTimeout?: number };
    if (typeof http.keepAliveTimeout === 'number') http.keepAliveTimeout = boot.keepAlive * 1000;
    this.acceptor = new Acceptor(server, this.data.capacity);
    await this.acceptor.listen(this.data.fds.map((fd) => ({ fd })));
  }

  /** per request (gunicorn's handle_request): the process-wide count for --max-requests */
  handleRequest(_req: IncomingMessage, res: ServerResponse): void {
    const n = Atomics.add(this.counter, 0, 1) + 1;
    if (!this.alive || this.data.boot.keepAlive <= 0) res.shouldKeepAlive = false;
    const max = this.data.boot.maxRequests;
    if (max > 0 && n >= max) {
      // the quota is reached: every thread stops accepting at its next request at the latest
      res.shouldKeepAlive = false;
      this.acceptor?.close();
      if (n === max) parentPort!.postMessage({ cmd: 'max' });
    }
  }

  /**
   * Run by the process's main thread (through the inspector) inside this thread's blocked event
   * loop: the requests in progress fail with TimeoutError, and the final series go to the main thread.
   */
  abortOnTimeout(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.alive = false;
    const now = performance.now();
    for (const [req, t0] of this.inflight) {
      this.metrics.recordRequest(req.method ?? 'OTHER', resolveEndpoint(req as never, this.observer!.policy), (now - t0) / 1000, false, 'TimeoutError');
    }
    this.inflight.clear();
    parentPort!.postMessage({ cmd: 'final', scopes: this.scopes() });
  }

  closeAcceptor(): void {
    this.acceptor?.close();
  }

  scopes() {
    return this.producer.scopeMetrics();
  }

  private stopping: Promise<void> | undefined;
  get stopped(): boolean {
    return this.stopping !== undefined;
  }

  stop(graceful: boolean, ms: number): Promise<void> {
    this.stopping ??= this.doStop(graceful, ms);
    return this.stopping;
  }

  private async doStop(graceful: boolean, ms: number): Promise<void> {
    this.alive = false;
    const a = this.acceptor;
    if (a) {
      a.close();
      const end = Date.now() + (graceful ? ms : 0);
      while (Date.now() < end && a.sockets.size > 0) {
        a.closeIdle();
        await sleep(25);
      }
      a.destroyAll();
    }
    // let 'close' handlers of destroyed sockets record their requests before the last collection
    await sleep(0);
    this.observer?.stop();
  }
}

async function main(): Promise<void> {
  const loop = new ThreadLoop(workerData as ThreadData);
  parentPort!.on('message', (m: { cmd: string; id?: number; graceful?: boolean; ms?: number }) => {
    if (m.cmd === 'collect') parentPort!.postMessage({ cmd: 'scopes', id: m.id, scopes: loop.scopes() });
    else if (m.cmd === 'close') loop.closeAcceptor();
    else if (m.cmd === 'stop') {
      const first = !loop.stopped;
      void loop.stop(!!m.graceful, m.ms ?? 0).then(() => { if (first) parentPort!.postMessage({ cmd: 'final', scopes: loop.scopes() }); });
    }
  });
  try {
    await loop.start();
    parentPort!.postMessage({ cmd: 'ready' });
  } catch (e) {
    const exitCode = e instanceof ConfigError ? e.exitCode : APP_LOAD_ERROR;
    const message = e instanceof ConfigError ? e.message : String((e as Error)?.stack ?? e);
    parentPort!.postMessage({ cmd: 'failed', message, exitCode });
  }
}

void main();
