import { Session } from 'node:inspector';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { CollectionResult, MetricProducer, ScopeMetrics } from '@opentelemetry/sdk-metrics';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { ConfigError } from '../config';
import { mergeScopeMetrics } from '../export/merge';
import type { SocketHandle } from './acceptor';
import { BaseWorker, heartbeat, toMaster } from './base';
import { TAG, type FromThread, type ThreadData, type ToThread } from './protocol';
import { sleep } from '../util/time';

const EMPTY_RESOURCE = resourceFromAttributes({});

interface Thread {
  worker: Worker;
  /** the thread's accumulators as last received (final once it stopped) */
  latest: ScopeMetrics | undefined;
  done: boolean;
  waiting: Map<number, () => void>;
  /** resolves when the thread serves no more (its final series arrived, or it exited) */
  finished: Promise<void>;
  finish(): void;
  send(m: ToThread): void;
}

function newThread(worker: Worker): Thread {
  let finish!: () => void;
  const finished = new Promise<void>((r) => { finish = r; });
  const t: Thread = {
    worker, latest: undefined, done: false, waiting: new Map(), finished,
    finish() {
      t.done = true;
      for (const w of t.waiting.values()) w();
      t.waiting.clear();
      finish();
    },
    send(m) { if (!t.done) worker.postMessage(m); },
  };
  return t;
}

/**
 * The threads' accumulators as one producer of this process: at collection time each live thread
 * is asked for its series (a thread that does not answer within `deadlineMs` contributes its last
 * answer), and points with equal attributes — same worker_id, method, endpoint — are summed.
 */
class ThreadsProducer implements MetricProducer {
  private nextId = 1;
  constructor(private readonly threads: Thread[], private readonly deadlineMs: number) {}

  async collect(): Promise<CollectionResult> {
    const asks = this.threads.filter((t) => !t.done).map((t) => new Promise<void>((resolve) => {
      const id = this.nextId++;
      t.waiting.set(id, resolve);
      t.send({ cmd: 'collect', id });
    }));
    if (asks.length > 0) await Promise.race([Promise.all(asks), sleep(this.deadlineMs)]);
    const sources = this.threads.filter((t) => t.latest).map((t) => [t.latest!]);
    return { resourceMetrics: { resource: EMPTY_RESOURCE, scopeMetrics: mergeScopeMetrics(sources, true) }, errors: [] };
  }
}

/**
 * `gthread` (gunicorn's ThreadWorker): one process running --threads worker_threads, each an event
 * loop with its own copy of the app serving the process's sockets (every thread listens on its own
 * fd of each socket; the kernel hands a connection to whichever thread accepts). All threads record
 * under the process's worker_id; their series are summed in this (main) thread, which serves no
 * requests itself: it owns the MeterProvider, the snapshots, heartbeats and signals.
 * --worker-connections is shared out over the threads.
 */
export class PrometheusThreadWorker extends BaseWorker {
  private readonly threads: Thread[] = [];
  private readonly counter = new SharedArrayBuffer(4);
  private readonly ticks = new SharedArrayBuffer(8 * Math.max(1, this.boot.threads));

  protected override producers(): MetricProducer[] {
    return [new ThreadsProducer(this.threads, Math.max(10, Math.floor(this.config.scrapeTimeoutMs / 2)))];
  }

  override get nr(): number {
    return Atomics.load(new Int32Array(this.counter), 0);
  }

  protected override async serve(handles: SocketHandle[][]): Promise<void> {
    const n = this.boot.threads;
    const capacity = Math.max(1, Math.ceil(this.boot.workerConnections / n));
    const ticks = new Float64Array(this.ticks);
    heartbeat.source = () => {
      let min = Date.now();
      // a thread already ended (a timed-out one) no longer holds the worker's heartbeat back
      for (let i = 0; i < n; i++) if (!this.threads[i]?.done && ticks[i]! < min) min = ticks[i]!;
      return min;
    };
    const started: Promise<void>[] = [];
    for (let i = 0; i < n; i++) {
      const data: ThreadData = {
        boot: this.boot, index: i, capacity, counter: this.counter, ticks: this.ticks,
        fds: handles.map((copies) => (copies[i] ?? copies[0]!).fd),
      };
      ticks[i] = Date.now();
      const worker = new Worker(join(__dirname, 'thread.js'), { workerData: data });
      const t = newThread(worker);
      this.threads.push(t);
      started.push(new Promise((resolve, reject) => {
        worker.on('message', (m: FromThread) => {
          if (m.cmd === 'ready') resolve();
          else if (m.cmd === 'failed') reject(new ConfigError(m.message, m.exitCode));
          else if (m.cmd === 'scopes') {
            t.latest = m.scopes;
            const done = t.waiting.get(m.id);
            t.waiting.delete(m.id);
            done?.();
          } else if (m.cmd === 'final') {
            t.latest = m.scopes;
            t.finish();
            void worker.terminate();
          } else if (m.cmd === 'quota') {
            this.maxRequestsReached();
          }
        });
        worker.on('error', (e) => {
          t.finish();
          reject(e);
          if (this.alive) {
            this.log.error(`thread ${i} failed: ${e?.stack ?? e}`);
            process.exitCode = 1;
            void this.stop(true);
          }
        });
        worker.on('exit', () => t.finish());
      }));
    }
    await Promise.all(started);
  }

  protected override stopAccepting(): void {
    for (const t of this.threads) t.send({ cmd: 'close' });
  }

  /**
   * The watchdog of a gthread worker is its main thread (it serves nothing, so it is free): a thread
   * whose event loop has not ticked for --timeout is interrupted through the inspector, its
   * requests in progress fail with TimeoutError and its final series come back; then the worker
   * aborts as a whole (gunicorn kills the whole worker on a timeout too).
   */
  protected override startWatchdog(): void {
    const ticks = new Float64Array(this.ticks);
    const limit = this.boot.timeout * 1000;
    const timer = setInterval(() => {
      const now = Date.now();
      const stalled = this.threads.findIndex((t, i) => !t.done && now - ticks[i]! > limit);
      if (stalled < 0 || this.aborted) return;
      clearInterval(timer);
      void this.abortStalledThread(stalled);
    }, Math.max(10, Math.min(100, Math.floor(limit / 20))));
    timer.unref();
  }

  /**
   * A thread blocked past --timeout. gunicorn's gthread is not killed by one long request (its
   * main loop keeps notifying); here a blocked thread is a whole event loop whose connections are
   * all stuck, so it is ended — but only it: its requests in progress fail with TimeoutError (it
   * is interrupted through the inspector first, so they are counted), `worker_abort` runs, and the
   * worker then leaves gracefully (reason timeout): the other threads finish every request they
   * have, and the master starts the replacement at once.
   */
  private async abortStalledThread(index: number): Promise<void> {
    this.aborted = true;
    // the master logs gunicorn's `WORKER TIMEOUT (pid:N)` (under its own pid) when it hears of this
    this.log.critical(`thread ${index}'s event loop blocked for more than ${this.boot.timeout}s; ending that thread, the others drain`);
    await toMaster({ [TAG]: 'retire', reason: 'timeout' });
    const t = this.threads[index]!;
    const session = new Session();
    session.connect();
    // every thread is attached; only the stalled one (by its index) runs the abort
    const expression = `globalThis[Symbol.for("prefork-otel.threadIndex")] === ${index} && globalThis[Symbol.for("prefork-otel.abort")]?.()`;
    session.on('NodeWorker.attachedToWorker', (m: { params: { sessionId: string } }) => {
      const evaluate = { id: 1, method: 'Runtime.evaluate', params: { expression } };
      session.post('NodeWorker.sendMessageToWorker', { sessionId: m.params.sessionId, message: JSON.stringify(evaluate) });
    });
    session.post('NodeWorker.enable', { waitForDebuggerOnStart: false });
    await Promise.race([t.finished, sleep(1000)]);
    session.disconnect();
    // the thread's connections (the request that blocks it among them) close with it
    void t.worker.terminate();
    t.finish();
    try {
      await this.hooks.user.worker_abort?.(this as never);
    } catch (e) {
      this.log.error(`hook worker_abort failed: ${(e as Error)?.stack ?? e}`);
    }
    await this.stop(true);
  }


  /** ask every thread to stop (draining for up to `ms`) and wait for their final series */
  protected override async drain(ms: number): Promise<void> {
    await this.stopThreads(true, ms);
  }

  protected override abandon(): void {
    // threads that are still running are told to drop their connections; stop() waits for them below
    for (const t of this.threads) t.send({ cmd: 'stop', graceful: false, ms: 0 });
  }

  protected override async finalFlush(): Promise<void> {
    await this.stopThreads(false, 0);
    await super.finalFlush();
  }

  private async stopThreads(graceful: boolean, ms: number): Promise<void> {
    for (const t of this.threads) t.send({ cmd: 'stop', graceful, ms });
    // a fast stop gives a thread busy in JavaScript 100 ms, then ends it (INT / QUIT: gunicorn cuts
    // requests in progress at once); what it counted since the last collection is lost
    await Promise.race([Promise.all(this.threads.map((t) => t.finished)), sleep(graceful ? ms + 2000 : 100)]);
    if (!graceful) for (const t of this.threads) if (!t.done) void t.worker.terminate();
  }
}
