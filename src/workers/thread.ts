/**
 * One thread of a gthread worker (PrometheusThreadWorker): its own event loop, its own copy of the
 * app, its own request accumulators (recorded under the process's worker_id), serving the
 * process's listening sockets (each thread has its own fd of each socket; the threads race on
 * accept) with its own ServingLoop. The process's main thread collects the accumulators and sums
 * them. Messages: ToThread / FromThread in protocol.ts.
 */
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { createNoopMeter, type MeterProvider } from '@opentelemetry/api';
import { ConfigError, loadConfig } from '../config';
import { readConfigFile } from '../config/runner';
import { HttpObserver } from '../hooks/http';
import { resolveEndpoint } from '../hooks/routes';
import { pickHooks, type WorkerApi } from '../hooks/server';
import { EndpointPolicy } from '../metrics/labels';
import { Metrics } from '../metrics/Metrics';
import { RequestMetricProducer } from '../metrics/producer';
import { RunnerLog } from '../util/logger';
import { loadApp } from './app';
import { ServingLoop } from './loop';
import { APP_LOAD_ERROR, type FromThread, type ThreadData, type ToThread } from './protocol';
import { ABORT } from './watchdog';

/** globalThis key of this thread's index (the main thread's abort addresses one thread by it) */
const THREAD_INDEX = Symbol.for('prefork-otel.threadIndex');

const NOOP_PROVIDER: MeterProvider = { getMeter: () => createNoopMeter() };

function post(m: FromThread): void {
  parentPort!.postMessage(m);
}

class ThreadLoop implements WorkerApi {
  readonly pid = process.pid;
  readonly ppid = process.ppid;
  readonly age: number;
  readonly metrics: Metrics;
  readonly log: RunnerLog;
  private readonly producer = new RequestMetricProducer();
  private readonly counter: Int32Array;
  private readonly ticks: Float64Array;
  private readonly loop: ServingLoop;
  private observer: HttpObserver | undefined;
  private aborted = false;
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
    const boot = data.boot;
    this.loop = new ServingLoop({
      capacity: data.capacity,
      closeEach: false,
      keepAlive: boot.keepAlive,
      maxRequests: boot.maxRequests,
      // the process-wide count: --max-requests is the worker's, over all its threads
      count: () => Atomics.add(this.counter, 0, 1) + 1,
      onQuota: () => post({ cmd: 'quota' }),
      trackInflight: boot.abortOnTimeout && boot.timeout > 0,
    });
  }

  get alive(): boolean {
    return this.loop.serving && !this.aborted;
  }

  set alive(_v: boolean) { /* WorkerApi: a hook cannot stop a thread this way */ }

  get nr(): number {
    return Atomics.load(this.counter, 0);
  }

  async start(): Promise<void> {
    const { boot } = this.data;
    const tick = () => { this.ticks[this.data.index] = Date.now(); };
    tick();
    setInterval(tick, boot.beatMs).unref();
    const user = boot.configFile ? pickHooks(await readConfigFile(boot.configFile)) : {};
    if (boot.abortOnTimeout && boot.timeout > 0) {
      (globalThis as Record<symbol, unknown>)[ABORT] = () => this.abortOnTimeout();
      (globalThis as Record<symbol, unknown>)[THREAD_INDEX] = this.data.index;
    }
    const hooks = this.loop.requestHooks(
      user.pre_request ? (req) => user.pre_request!(this, req) : undefined,
      user.post_request ? (req, res, s) => user.post_request!(this, req, res, s) : undefined,
    );
    this.observer = new HttpObserver(this.metrics, new EndpointPolicy(this.maxEndpoints), hooks).start();
    const server = await loadApp(boot.app, Math.max(boot.timeout, 10) * 1000);
    await this.loop.serve(server, this.data.fds.map((fd) => ({ fd })));
  }

  /**
   * Run by the process's main thread (through the inspector) inside this thread's blocked event
   * loop: the requests in progress fail with TimeoutError, and the final series go to the main thread.
   */
  abortOnTimeout(): void {
    if (this.aborted) return;
    this.aborted = true;
    const now = performance.now();
    for (const [req, t0] of this.loop.takeInflight()) {
      this.metrics.recordRequest(req.method ?? 'OTHER', resolveEndpoint(req as never, this.observer!.policy), (now - t0) / 1000, false, 'TimeoutError');
    }
    post({ cmd: 'final', scopes: this.scopes() });
  }

  closeAcceptor(): void {
    this.loop.stopAccepting();
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
    if (graceful) await this.loop.drain(ms);
    this.loop.abandon();
    // let 'close' handlers of destroyed sockets record their requests before the last collection
    await new Promise((r) => setImmediate(r));
    this.observer?.stop();
  }
}

async function main(): Promise<void> {
  const loop = new ThreadLoop(workerData as ThreadData);
  parentPort!.on('message', (m: ToThread) => {
    if (m.cmd === 'collect') post({ cmd: 'scopes', id: m.id, scopes: loop.scopes() });
    else if (m.cmd === 'close') loop.closeAcceptor();
    else if (m.cmd === 'stop') {
      const first = !loop.stopped;
      void loop.stop(m.graceful, m.ms).then(() => { if (first) post({ cmd: 'final', scopes: loop.scopes() }); });
    }
  });
  try {
    await loop.start();
    post({ cmd: 'ready' });
  } catch (e) {
    const exitCode = e instanceof ConfigError ? e.exitCode : APP_LOAD_ERROR;
    const message = e instanceof ConfigError ? e.message : String((e as Error)?.stack ?? e);
    post({ cmd: 'failed', message, exitCode });
  }
}

void main();
