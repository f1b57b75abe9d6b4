import type { ChildProcess } from 'node:child_process';
import type { WorkerLink } from '../export/ipc';
import type { WorkerInfo } from '../hooks/server';
import type { RestartReason } from '../metrics/contract';

/** A worker's life, as the master sees it. */
export type Phase = 'booting' | 'running' | 'leaving' | 'exited';

/**
 * Why a worker leaves (the state carries it; the reaper reads the restart reason from it):
 *  - `reload`, `max_requests`, `timeout`: it is replaced, with that restart reason
 *  - `signal`: someone else signalled the worker itself (`kill -TERM <worker>`); replaced, reason signal
 *  - `scale_down` (TTOU, fewer workers after a reload), `shutdown` (TERM/INT/QUIT to the master): not replaced
 */
export type LeaveReason = RestartReason | 'scale_down' | 'shutdown';

/**
 * The master's record of one worker process (gunicorn keeps a Worker object per pid), with its
 * lifecycle: booting → running → leaving(reason) → exited. Only the methods below change it.
 */
export class WorkerProcess implements WorkerInfo {
  readonly pid: number;
  readonly bornAt = Date.now();
  private current: Phase = 'booting';
  private why: LeaveReason | undefined;
  /** a reload (HUP) replaces it once a new worker is ready; it still serves until then */
  private superseded = false;
  /** the last signal the master sent it */
  private sent: NodeJS.Signals | undefined;
  exitCode?: number | null;
  signal?: NodeJS.Signals | null;
  /** Date.now() of the worker's stalest event loop, as last reported */
  lastBeat = Date.now();
  /** a SIGKILL deadline is armed (graceful timeout) */
  deadline?: NodeJS.Timeout;

  constructor(readonly child: ChildProcess, readonly link: WorkerLink, readonly age: number) {
    this.pid = child.pid!;
  }

  get phase(): Phase {
    return this.current;
  }

  /** why it is leaving (undefined while booting or running, or when it exited without being asked) */
  get leaveReason(): LeaveReason | undefined {
    return this.why;
  }

  /** WorkerInfo.state, as hooks see it */
  get state(): WorkerInfo['state'] {
    return this.current === 'booting' || this.current === 'running' ? this.current : 'stopping';
  }

  /** WorkerInfo.restartReason: why it will be replaced once it exits (undefined: not replaced, or not leaving yet) */
  get restartReason(): RestartReason | undefined {
    return this.why === 'scale_down' || this.why === 'shutdown' ? undefined : this.why;
  }

  /** counts towards --workers: not leaving, not superseded by a reload */
  get staying(): boolean {
    return (this.current === 'booting' || this.current === 'running') && !this.superseded;
  }

  get outdated(): boolean {
    return this.superseded && (this.current === 'booting' || this.current === 'running');
  }

  get alive(): boolean {
    return this.current !== 'exited' && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** the master sent the SIGKILL it died of */
  get killedByMaster(): boolean {
    return this.sent === 'SIGKILL';
  }

  /** booting → running (its first 'ready'); false if it was not booting */
  ready(): boolean {
    if (this.current !== 'booting') return false;
    this.current = 'running';
    return true;
  }

  /** a reload will replace it (HUP) */
  supersede(): void {
    if (this.current === 'booting' || this.current === 'running') this.superseded = true;
  }

  /** booting | running → leaving(reason); false if it was already leaving (the first reason stays) */
  leave(reason: LeaveReason): boolean {
    if (this.current !== 'booting' && this.current !== 'running') return false;
    this.current = 'leaving';
    this.why = reason;
    return true;
  }

  /** → exited (from any phase: a worker may die while booting or running) */
  exited(code: number | null, signal: NodeJS.Signals | null): void {
    this.current = 'exited';
    this.exitCode = code;
    this.signal = signal;
    clearTimeout(this.deadline);
  }

  kill(signal: NodeJS.Signals): void {
    if (this.current === 'exited') return;
    this.sent = signal;
    try {
      this.child.kill(signal);
    } catch { /* already gone */ }
  }
}
