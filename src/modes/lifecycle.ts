import { constants as osConstants } from 'node:os';
import type { ExporterConfig } from '../config';
import { shutdownTelemetry } from '../export/telemetry';
import { withDeadline } from '../util/time';

/**
 * The end of a preloaded process: give its metrics one last chance to leave (a final snapshot to the
 * cluster primary, a final multiproc file) wherever Node lets JavaScript run before the process goes.
 *
 *  - SIGTERM / SIGINT with no handler of the application's: `drain` (a cluster primary's graceful stop of
 *    its workers, bounded by itself), then flush, then the final push export of the
 *    OTLP / console readers (`shutdown()`), bounded together by `timeoutMs`, then re-raise the signal
 *    with the default action, so the process still ends "killed by SIGTERM"
 *    exactly as it would have (the signal-exit pattern). When the application handles the signal
 *    itself, we stay out of its way: its own `process.exit()` reaches the 'exit' hook below.
 *  - 'beforeExit' (the event loop ran dry): async flush, once.
 *  - 'exit' (`process.exit()`, or the end after 'beforeExit'): only synchronous code runs, so `sync()`
 *    must do its work synchronously (write a file, hand a message to the IPC pipe).
 *  - SIGKILL, a crash of V8 (OOM abort), a power cut: nothing runs; what happened since the last
 *    periodic snapshot is lost. That is the window `PREFORK_OTEL_SNAPSHOT_INTERVAL` bounds.
 */
export interface FinalFlush {
  /**
   * A graceful stop before the flush, on SIGTERM / SIGINT only (a cluster primary stopping its workers):
   * bounded by itself, not by `timeoutMs`.
   */
  drain?(sig: NodeJS.Signals): Promise<void>;
  /** full final flush (may collect asynchronously) */
  flush(): Promise<void>;
  /** synchronous last resort on 'exit' */
  flushSync(): void;
  /**
   * After the flush, before a signal is re-raised (the process then ends without an 'exit' event):
   * settle what is still under way (the multiproc writer's files). Bounded by `timeoutMs`.
   */
  close?(): Promise<void>;
}

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;

/**
 * Listeners of `sig` that belong to the application, not counting ours (1) nor those of the
 * `signal-exit` package (which, like us, only re-raises when no one else listens: counting each other
 * as "the application" would leave the signal unhandled).
 */
function applicationListeners(sig: NodeJS.Signals): number {
  const g = globalThis as Record<symbol, unknown>;
  const p = process as unknown as Record<string, unknown>;
  const v4 = g[Symbol.for('signal-exit emitter')] as { count?: unknown } | undefined;
  const v3 = p.__signal_exit_emitter__ as { count?: unknown } | undefined;
  const polite = (typeof v4?.count === 'number' ? v4.count : 0) + (typeof v3?.count === 'number' ? v3.count : 0);
  return process.listenerCount(sig) - 1 - polite;
}

/** Nothing to flush but the push readers (a single process, a cluster primary). */
export const NOTHING_TO_FLUSH: FinalFlush = { flush: async () => undefined, flushSync: () => undefined };

/** Do push readers (OTLP, console) need a final export at the end? */
export function hasPushReaders(config: Pick<ExporterConfig, 'exporters'>): boolean {
  return config.exporters.some((e) => e !== 'prometheus');
}

/** How long the end of a process may wait for its flushes: the IPC / file flush, plus the final push export. */
export function endTimeoutMs(config: Pick<ExporterConfig, 'exporters' | 'scrapeTimeoutMs' | 'exportTimeoutMs'>): number {
  return Math.max(1000, config.scrapeTimeoutMs) + (hasPushReaders(config) ? config.exportTimeoutMs : 0);
}

export function flushOnProcessEnd(f: FinalFlush, timeoutMs: number): void {
  let flushing: Promise<void> | undefined;
  const bounded = () => (flushing ??= withDeadline(f.flush(), timeoutMs));
  let ending: Promise<void> | undefined;
  const beforeSignalExit = (sig: NodeJS.Signals) => (ending ??= (f.drain ? f.drain(sig) : Promise.resolve())
    .catch(() => undefined)
    .then(() => withDeadline(bounded().then(() => shutdownTelemetry()), timeoutMs))
    .then(() => (f.close ? withDeadline(f.close(), timeoutMs) : undefined)));

  for (const sig of SIGNALS) {
    const onSignal = () => {
      // the application handles this signal itself: its exit path reaches 'exit'
      if (applicationListeners(sig) > 0) return;
      void beforeSignalExit(sig).then(() => {
        process.removeListener(sig, onSignal);
        process.kill(process.pid, sig);
        // as PID 1 (a container's init) the kernel drops a signal whose action is the default: end as a shell reports it
        if (process.pid === 1) process.exit(128 + osConstants.signals[sig]);
      });
    };
    process.on(sig, onSignal);
  }
  let beforeExitDone = false;
  process.on('beforeExit', () => {
    if (beforeExitDone) return;
    beforeExitDone = true;
    void bounded();
  });
  process.on('exit', () => {
    try {
      f.flushSync();
    } catch {
      /* the process is ending: nothing sensible to do with an error here */
    }
  });
}
