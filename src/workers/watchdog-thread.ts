/** The watchdog thread of a runner worker: see watchdog.ts. */
import { Session } from 'node:inspector';
import { constants } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import type { WatchdogData } from './watchdog';

const { tick: buffer, timeoutMs, pollMs, quitGraceMs, ppid: parent } = workerData as WatchdogData;
const tick = new Float64Array(buffer);
let fired = false;
/** a worker whose master (`parent`) is gone (killed with SIGKILL) and whose loop is blocked ends here */
const ORPHAN_STALL_MS = Math.max(1000, pollMs * 10);

/**
 * Run `expression` inside the main thread's JavaScript (even when it is busy: V8 runs it at its next
 * interrupt check). `kill`: then end the process. The timeout abort kills; the quit ends the
 * process itself, or returns false when the main loop had already started the quit on its own.
 */
function interrupt(expression: string, kill: boolean): void {
  if (fired) return;
  fired = true;
  const session = new Session();
  session.connectToMainThread();
  session.post('Runtime.evaluate', { expression }, () => {
    session.disconnect();
    if (kill) process.kill(process.pid, 'SIGKILL');
    else fired = false;
  });
}

setInterval(() => {
  if (fired) return;
  const stalled = Date.now() - tick[0]!;
  // orphaned: the main loop would notice the IPC disconnect and leave gracefully, unless it is blocked
  if (process.ppid !== parent && stalled > ORPHAN_STALL_MS) {
    fired = true;
    process.kill(process.pid, 'SIGKILL');
    return;
  }
  if (stalled > timeoutMs) interrupt('globalThis[Symbol.for("prefork-otel.abort")]?.()', true);
}, pollMs);

/**
 * INT / QUIT (gunicorn: quit at once, requests in progress cut). Signals reach this thread's event
 * loop too (libuv delivers a signal to every loop watching it), even while the main loop is
 * blocked; JavaScript's process.on(signal) is not available in a thread, so the libuv signal
 * handle is used directly. `quitGraceMs` after the signal the quit is run inside the main thread;
 * it does nothing if the main loop's own handler has started the quit meanwhile.
 */
function watchQuitSignals(): void {
  process.noDeprecation = true; // process.binding's warning: this thread runs no user code
  const { Signal } = (process as unknown as { binding(n: string): { Signal: new () => SignalHandle } }).binding('signal_wrap');
  for (const name of ['SIGINT', 'SIGQUIT'] as const) {
    const s = new Signal();
    s.onsignal = () => {
      setTimeout(() => interrupt(`globalThis[Symbol.for("prefork-otel.quit")]?.(${JSON.stringify(name)})`, false), quitGraceMs);
    };
    s.start(constants.signals[name]);
    s.unref();
  }
}

interface SignalHandle { onsignal: (n: number) => void; start(signum: number): number; unref(): void }

try {
  watchQuitSignals();
} catch (e) {
  // no signal_wrap binding: INT / QUIT then wait for the main loop
  require('node:fs').writeSync(2, `prefork-otel: watchdog: INT/QUIT cannot interrupt a busy loop here (${(e as Error).message})\n`);
}
// watching: the worker serves only from now on (a thread boots with the help of the main loop, so
// one started just before a request that blocks would never come up)
parentPort?.postMessage('ready');
