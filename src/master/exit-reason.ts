import { readFile } from 'node:fs/promises';
import type { RestartReason } from '../metrics/contract';

/**
 * The kernel OOM killer's count for this cgroup (v2 `memory.events`, v1 `memory.oom_control`): a worker
 * killed by SIGKILL while the count went up was killed for memory. Undefined where unreadable.
 */
export class OomKillCounter {
  private file: string | null | undefined;
  private last: number | undefined;

  private async read(): Promise<number | undefined> {
    if (this.file === undefined) {
      this.file = null;
      const own = await readFile('/proc/self/cgroup', 'utf8').catch(() => '');
      const v2 = /^0::(.*)$/m.exec(own)?.[1];
      const v1 = /^\d+:[^:]*\bmemory\b[^:]*:(.*)$/m.exec(own)?.[1];
      const candidates = [
        '/sys/fs/cgroup/memory.events',
        v2 && `/sys/fs/cgroup${v2}/memory.events`,
        '/sys/fs/cgroup/memory/memory.oom_control',
        v1 && `/sys/fs/cgroup/memory${v1}/memory.oom_control`,
      ].filter((f): f is string => !!f);
      for (const f of candidates) {
        if (/\boom_kill (\d+)/.test(await readFile(f, 'utf8').catch(() => ''))) {
          this.file = f;
          break;
        }
      }
    }
    if (!this.file) return undefined;
    const m = /\boom_kill (\d+)/.exec(await readFile(this.file, 'utf8').catch(() => ''));
    return m ? Number(m[1]) : undefined;
  }

  /** remember the current count */
  async baseline(): Promise<void> {
    this.last = await this.read();
  }

  /** did the count go up since the last look? (and remember the new count) */
  async increased(): Promise<boolean> {
    const before = this.last;
    const now = await this.read();
    this.last = now;
    return now !== undefined && before !== undefined && now > before;
  }
}

/**
 * Why a worker nobody asked to stop went away (the runner's master and a preloaded cluster primary):
 *  - SIGKILL while the cgroup's OOM-kill count rose (`oomRose`): `oom` (the kernel's OOM killer); else `signal`
 *  - SIGABRT (or exit code 134): `oom` — V8 aborts the process when the JavaScript heap limit is reached
 *    ("JavaScript heap out of memory"), unless the worker runs with --abort-on-uncaught-exception
 *    (`abortOnUncaught`), where an abort is how an uncaught exception ends it: `crash` (so is SIGTRAP
 *    then, which is how V8 builds for x64 abort: an `int3`)
 *  - any other signal: `signal`
 *  - an exit code: `crash` (an uncaught exception exits 1)
 */
export function classifyExit(code: number | null, signal: string | null, oomRose: boolean, abortOnUncaught = false): RestartReason {
  if (signal === 'SIGKILL') return oomRose ? 'oom' : 'signal';
  if (abortOnUncaught && (signal === 'SIGABRT' || signal === 'SIGTRAP' || (!signal && (code === 134 || code === 133)))) return 'crash';
  if (signal === 'SIGABRT' || (!signal && code === 134)) return 'oom';
  if (signal) return 'signal';
  return 'crash';
}

/**
 * Does a Node process started with these options abort (SIGABRT) on an uncaught exception? Node's own
 * flag, on the command line (`execArgv`, which forked workers inherit) or in NODE_OPTIONS.
 */
export function abortsOnUncaughtException(execArgv: readonly string[], nodeOptions = ''): boolean {
  const flag = /^--abort[-_]on[-_]uncaught[-_]exception(=true)?$/;
  return execArgv.some((a) => flag.test(a)) || nodeOptions.split(/\s+/).some((a) => flag.test(a));
}

/** What the master knows about a worker that exited, for {@link restartReason}. */
export interface ExitFacts {
  /** why the master (or the worker itself) said it was leaving; undefined: it was not asked to */
  leaving: RestartReason | 'scale_down' | 'shutdown' | undefined;
  code: number | null;
  signal: string | null;
  /** the master is stopping: nothing is replaced */
  stopping: boolean;
  oomRose: boolean;
  abortOnUncaught: boolean;
}

/**
 * The one restart-reason decision of both masters (the runner's arbiter and the node:cluster
 * primary): undefined when the worker is not replaced (the master stops, a scale-down), the reason it
 * was leaving for, or — it went away unasked — {@link classifyExit}.
 */
export function restartReason(f: ExitFacts): RestartReason | undefined {
  if (f.stopping || f.leaving === 'scale_down' || f.leaving === 'shutdown') return undefined;
  if (f.leaving !== undefined) return f.leaving;
  return classifyExit(f.code, f.signal, f.oomRose, f.abortOnUncaught);
}
