/**
 * The runner's master ↔ worker protocol (besides the snapshot protocol of export/ipc.ts, on the same
 * IPC channel and with the same tag). The worker's settings travel in one environment variable at
 * fork; the listening sockets follow as IPC handles; the worker reports readiness, heartbeats and
 * the reason it is leaving.
 *   master → worker: { [TAG]: 'listen', index, copy } + the socket handle
 *   worker → master: { [TAG]: 'ready' } | { [TAG]: 'beat', tick } | { [TAG]: 'retire', reason }
 *                    | { [TAG]: 'relisten', index } (sync: send me a fresh copy of socket `index`; the
 *                      master answers with a 'listen' message and the handle, as at fork)
 */
import { TAG } from '../export/ipc';
import type { AppSpec, RunnerSettings, WorkerKind } from '../config/runner';
import type { ScopeMetrics } from '@opentelemetry/sdk-metrics';
import type { RestartReason } from '../metrics/contract';

export { TAG };
export const BOOT_ENV = 'PREFORK_OTEL_WORKER_BOOT';

/** Exit codes, as gunicorn's: the master halts when a worker exits with one of these while booting. */
export const WORKER_BOOT_ERROR = 3;
export const APP_LOAD_ERROR = 4;

/** Everything a worker process needs to know, set by the master at fork. */
export interface WorkerBoot extends Pick<RunnerSettings,
  'threads' | 'workerConnections' | 'timeout' | 'abortOnTimeout' | 'gracefulTimeout' | 'keepAlive' | 'procName' | 'logLevel'> {
  app: AppSpec;
  kind: WorkerKind;
  /** this worker's limit (with its jitter); 0 = none */
  maxRequests: number;
  configFile: string | undefined;
  age: number;
  /** number of listening sockets */
  binds: number;
  /** copies of each socket sent (one per gthread thread, else 1) */
  copies: number;
  /** heartbeat period (ms) */
  beatMs: number;
}

export interface ListenMessage { [TAG]: 'listen'; index: number; copy: number }
export interface ReadyMessage { [TAG]: 'ready' }
/**
 * `tick`: Date.now() of the stalest event loop of the worker (a gthread worker has several); a sync
 * worker's is the start of the request in progress, so the master times a request that outlives
 * --timeout even if it only waits (a timer, I/O), as gunicorn's sync worker.
 */
export interface BeatMessage { [TAG]: 'beat'; tick: number }
export interface RetireMessage { [TAG]: 'retire'; reason: RestartReason; signal?: string }
/**
 * sync: the worker closed its copy of listening socket `index` while busy (so connections go to a
 * free worker) and wants a fresh one for when it is free again: the master answers
 * `{ [TAG]: 'listen', index, copy: 0 }` with the socket's handle.
 */
export interface RelistenMessage { [TAG]: 'relisten'; index: number }
export type WorkerMessage = ReadyMessage | BeatMessage | RetireMessage | RelistenMessage;

export function isTagged(m: unknown, kind: string): boolean {
  return !!m && typeof m === 'object' && (m as Record<string, unknown>)[TAG] === kind;
}

/** Heartbeat period for a --timeout (seconds): often enough that one late beat never kills a worker. */
export function beatPeriodMs(timeoutSeconds: number): number {
  if (timeoutSeconds <= 0) return 1000;
  return Math.max(50, Math.min(1000, Math.floor((timeoutSeconds * 1000) / 4)));
}

/**
 * How long the master waits, past --timeout, before it kills a silent worker itself: with the
 * watchdog, long enough for the worker to abort on its own first (gunicorn's SIGABRT, then SIGKILL).
 */
export function murderGraceMs(timeoutSeconds: number, abortOnTimeout: boolean): number {
  return abortOnTimeout ? beatPeriodMs(timeoutSeconds) + 1000 : 0;
}

/**
 * gthread: a thread's start data (workerData), and the messages between the process's main thread
 * and each serving thread (workers/gthread.ts ↔ workers/thread.ts).
 */
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

/** main → thread: collect the series (answer `scopes`); stop accepting; stop (drain for `ms`, or not) */
export type ToThread =
  | { cmd: 'collect'; id: number }
  | { cmd: 'close' }
  | { cmd: 'stop'; graceful: boolean; ms: number };

/**
 * thread → main: serving; the series asked for; this thread started the request that reached
 * --max-requests; its final series (it serves no more); it failed to boot.
 */
export type FromThread =
  | { cmd: 'ready' }
  | { cmd: 'scopes'; id: number; scopes: ScopeMetrics }
  | { cmd: 'quota' }
  | { cmd: 'final'; scopes: ScopeMetrics }
  | { cmd: 'failed'; message: string; exitCode: number };

/**
 * V8's young generation of a runner worker process: semi-spaces of at most this many MB (V8's own
 * default grows them to 16 MB under load, which a request/response worker does not need: the
 * throughput with 2 MB was measured equal, bench/memory-runner.mjs and docs/runner.md "Memory").
 */
export const WORKER_SEMI_SPACE_MB = 2;
const SEMI_SPACE_FLAG = /^--max[-_]semi[-_]space[-_]size(=|$)/;

/**
 * The worker's execArgv: the master's (as fork's default) plus `--max-semi-space-size`, unless the
 * user already chose one (in the master's execArgv or NODE_OPTIONS, which the worker inherits).
 */
export function workerExecArgv(execArgv: readonly string[], nodeOptions = ''): string[] {
  const chosen = execArgv.some((a) => SEMI_SPACE_FLAG.test(a)) || nodeOptions.split(/\s+/).some((a) => SEMI_SPACE_FLAG.test(a));
  return chosen ? [...execArgv] : [...execArgv, `--max-semi-space-size=${WORKER_SEMI_SPACE_MB}`];
}
