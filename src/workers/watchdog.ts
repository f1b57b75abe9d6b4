import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

/** globalThis key of the function the watchdog runs inside a blocked event loop */
export const ABORT = Symbol.for('prefork-otel.abort');
/** globalThis key of the fast quit (INT / QUIT) the watchdog runs inside a blocked event loop */
export const QUIT = Symbol.for('prefork-otel.quit');

export interface WatchdogData {
  /** Float64Array[0]: Date.now() of the main event loop's last tick */
  tick: SharedArrayBuffer;
  timeoutMs: number;
  pollMs: number;
  /** the master's pid when the watchdog started (the thread may start later, after the master is gone) */
  ppid: number;
  /** after INT / QUIT, how long the main loop has to start the quit itself before it is interrupted */
  quitGraceMs: number;
}

/**
 * gunicorn's master sends SIGABRT to a worker silent past --timeout and the worker runs worker_abort
 * and exits (Python runs signal handlers between bytecodes, even in a busy loop). A Node worker
 * whose event loop is blocked runs no signal handler, so this watchdog thread does it: when the
 * main event loop has not ticked for `timeoutMs`, it asks V8 — through an in-process inspector
 * session, which interrupts running JavaScript — to run `onAbort` inside the blocked loop, then kills
 * the process. `onAbort` must be synchronous. A loop blocked outside JavaScript (a synchronous
 * system call, Atomics.wait) is not interruptible: the master's kill (reason timeout) remains.
 * The same thread makes INT / QUIT fast for a loop busy in JavaScript (see watchdog-thread.ts).
 * Cost: one extra Node thread per worker, ≈ 7.5 MB RSS (a worker thread's own isolate and bootstrap;
 * 7.1–7.7 MB whatever its resourceLimits: docs/runner.md "Memory", bench/memory-runner.mjs).
 */
export class Watchdog {
  private readonly tick = new Float64Array(new SharedArrayBuffer(8));
  private timer: NodeJS.Timeout | undefined;
  private thread: Worker | undefined;
  /** resolves once the thread watches (or could not start) */
  ready: Promise<void> = Promise.resolve();

  constructor(private readonly timeoutMs: number, private readonly onAbort: () => void, private readonly onQuit?: (signal: string) => void) {}

  start(): this {
    const pollMs = Math.max(10, Math.min(100, Math.floor(this.timeoutMs / 20)));
    const tick = this.tick;
    tick[0] = Date.now();
    this.timer = setInterval(() => { tick[0] = Date.now(); }, pollMs).unref();
    (globalThis as Record<symbol, unknown>)[ABORT] = this.onAbort;
    if (this.onQuit) (globalThis as Record<symbol, unknown>)[QUIT] = this.onQuit;
    const data: WatchdogData = { tick: tick.buffer as SharedArrayBuffer, timeoutMs: this.timeoutMs, pollMs, quitGraceMs: 100, ppid: process.ppid };
    this.thread = new Worker(join(__dirname, 'watchdog-thread.js'), {
      workerData: data,
      resourceLimits: { maxOldGenerationSizeMb: 8, maxYoungGenerationSizeMb: 2, stackSizeMb: 1 },
      stdout: false,
      stderr: false,
    });
    const thread = this.thread;
    this.ready = new Promise<void>((resolve) => {
      thread.once('message', () => resolve());
      thread.once('error', () => resolve());
      thread.once('exit', () => resolve());
    });
    thread.unref();
    thread.on('error', () => undefined);
    return this;
  }

  stop(): void {
    clearInterval(this.timer);
    void this.thread?.terminate();
    this.thread = undefined;
  }
}
