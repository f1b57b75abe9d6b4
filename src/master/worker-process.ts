import type { ChildProcess } from 'node:child_process';
import type { WorkerLink } from '../export/ipc';
import type { WorkerInfo } from '../hooks/server';
import type { RestartReason } from '../metrics/contract';

/** The master's record of one worker process (gunicorn keeps a Worker object per pid). */
export class WorkerProcess implements WorkerInfo {
  readonly pid: number;
  readonly bornAt = Date.now();
  state: WorkerInfo['state'] = 'booting';
  /** why it will be replaced once it exits; undefined: it is not replaced (scale down, shutdown) */
  restartReason?: RestartReason;
  exitCode?: number | null;
  signal?: NodeJS.Signals | null;
  /** Date.now() of the worker's stalest event loop, as last reported */
  lastBeat = Date.now();
  /** leaving: no longer counts towards --workers (its replacement may already be booting) */
  retiring = false;
  /** to be retired by a reload (HUP) as soon as a new worker is ready */
  reloadPending = false;
  /** the reason the worker itself gave for leaving (max_requests; signal: someone signalled it) */
  selfReason?: RestartReason;
  /** a snapshot arrived: it answers collections (it sends one before it serves) */
  snapshotSeen = false;
  /** its final snapshot arrived: it no longer answers collections */
  finalReceived = false;
  /** a SIGKILL deadline is armed (graceful timeout) */
  deadline?: NodeJS.Timeout;

  constructor(readonly child: ChildProcess, readonly link: WorkerLink, readonly age: number) {
    this.pid = child.pid!;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  kill(signal: NodeJS.Signals): void {
    try {
      this.child.kill(signal);
    } catch { /* already gone */ }
  }
}
