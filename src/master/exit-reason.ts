import { readFileSync } from 'node:fs';
import type { RestartReason } from '../metrics/contract';

/** The kernel's OOM-kill count for this cgroup (v2 memory.events, v1 memory.oom_control); undefined when not readable. */
export function oomKills(): number | undefined {
  for (const file of ['/sys/fs/cgroup/memory.events', '/sys/fs/cgroup/memory/memory.oom_control']) {
    try {
      const m = /^oom_kill (\d+)$/m.exec(readFileSync(file, 'utf8'));
      if (m) return Number(m[1]);
    } catch { /* not this cgroup version */ }
  }
  return undefined;
}

/**
 * Why a worker the master did not stop went away:
 *  - SIGKILL while the cgroup's OOM-kill count rose: `oom` (the kernel's OOM killer); else `signal`
 *  - SIGABRT: `oom` — V8 aborts the process when the JavaScript heap limit is reached
 *    ("JavaScript heap out of memory"); a native abort() for another cause is rare and lands here too
 *  - any other signal: `signal`
 *  - an exit code: `crash` (an uncaught exception exits 1; exit 0 is an unexpected quit)
 */
export function classifyExit(code: number | null, signal: NodeJS.Signals | null, oomBefore: number | undefined, oomNow: number | undefined): RestartReason {
  if (signal === 'SIGKILL') return oomBefore !== undefined && oomNow !== undefined && oomNow > oomBefore ? 'oom' : 'signal';
  if (signal === 'SIGABRT' || code === 134) return 'oom';
  if (signal) return 'signal';
  return 'crash';
}
