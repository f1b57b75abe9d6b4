/**
 * gunicorn's server hooks for the runner. Each hook has a default that feeds the metrics (creating
 * MasterMetrics, recording restarts, worker state; the master itself retains an exited worker's
 * final series, before child_exit runs); a user
 * hook of the same name from the -c config file runs after ours. Arguments are the Node equivalents
 * of gunicorn's (docs/runner.md has the table): `server` is the master (Arbiter), `worker` a worker
 * process (in the master: a WorkerInfo record; in the worker: the worker object, with `.metrics`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { MeterProvider } from '@opentelemetry/api';
import { MasterMetrics } from '../metrics/MasterMetrics';
import type { Metrics } from '../metrics/Metrics';
import type { RestartReason } from '../metrics/contract';

import { HOOK_NAMES, type HookName, type RawHooks } from '../config/hooks';
import type { Logger } from '../util/logger';

export { HOOK_NAMES, type HookName };
export type { Logger };

/** What hooks see of a worker from the master (gunicorn passes its Worker object). */
export interface WorkerInfo {
  pid: number;
  /** spawn order, as gunicorn's worker.age */
  age: number;
  /** Date.now() at fork */
  bornAt: number;
  state: 'booting' | 'running' | 'stopping';
  /** why the master will replace it once it exits (undefined: not replaced) */
  restartReason?: RestartReason;
  exitCode?: number | null;
  signal?: NodeJS.Signals | null;
}

/** What hooks see of the master (the Arbiter). */
export interface ServerApi {
  readonly pid: number;
  readonly numWorkers: number;
  /** set by the default on_starting (the reference's `server.master_metrics = MasterMetrics()`) */
  masterMetrics: MasterMetrics;
  /** the master's own MeterProvider (its metrics are served with every worker's) */
  readonly meterProvider: MeterProvider;
  workerInfos(): WorkerInfo[];
  log: Logger;
}

/** What hooks see of a worker inside the worker process (gunicorn's Worker). */
export interface WorkerApi {
  readonly pid: number;
  readonly ppid: number;
  readonly age: number;
  readonly metrics: Metrics;
  /** requests handled so far (gunicorn's worker.nr) */
  readonly nr: number;
  alive: boolean;
  log: Logger;
}

type MaybeAsync = void | Promise<void>;
export interface UserHooks {
  on_starting?(server: ServerApi): MaybeAsync;
  on_reload?(server: ServerApi): MaybeAsync;
  when_ready?(server: ServerApi): MaybeAsync;
  pre_fork?(server: ServerApi, worker: WorkerInfo): MaybeAsync;
  post_fork?(server: { pid: number; log: Logger }, worker: WorkerApi): MaybeAsync;
  post_worker_init?(worker: WorkerApi): MaybeAsync;
  worker_int?(worker: WorkerApi): MaybeAsync;
  /**
   * the worker's event loop was blocked past --timeout: runs in the worker (synchronously, inside
   * the blocked loop, via the watchdog; `worker` is the WorkerApi), or — without the watchdog, or
   * when JavaScript could not be interrupted — in the master before the kill (`worker` a WorkerInfo)
   */
  worker_abort?(worker: WorkerInfo | WorkerApi): MaybeAsync;
  pre_exec?(server: ServerApi): MaybeAsync;
  /** synchronous: runs on the request path */
  pre_request?(worker: WorkerApi, req: IncomingMessage): void;
  /** synchronous: runs on the request path; `seconds` is the request's duration */
  post_request?(worker: WorkerApi, req: IncomingMessage, res: ServerResponse, seconds: number): void;
  child_exit?(server: ServerApi, worker: WorkerInfo): MaybeAsync;
  worker_exit?(server: { pid: number; log: Logger }, worker: WorkerApi): MaybeAsync;
  nworkers_changed?(server: ServerApi, newValue: number, oldValue: number): MaybeAsync;
  on_exit?(server: ServerApi): MaybeAsync;
}

/** The hooks from a config module's exports (non-hook keys ignored here; the config loader validates them). */
export function pickHooks(values: Record<string, unknown>): UserHooks {
  const out: Record<string, unknown> = {};
  for (const name of HOOK_NAMES) if (typeof values[name] === 'function') out[name] = values[name];
  return out as UserHooks;
}

/** Our defaults: the part of each hook that feeds the metrics. */
export const DEFAULT_HOOKS: UserHooks = {
  on_starting(server) {
    if (!server.masterMetrics) server.masterMetrics = new MasterMetrics({ meterProvider: server.meterProvider });
  },
  child_exit(server, worker) {
    // (an exited worker's retention is the reaper's job: it calls the scrape hub directly)
    if (worker.restartReason !== undefined) server.masterMetrics.recordWorkerRestart(worker.pid, worker.restartReason);
  },
  post_worker_init(worker) {
    worker.metrics.updateWorkerState('running');
  },
  worker_int(worker) {
    worker.metrics.updateWorkerState('stopping');
  },
  worker_exit(_server, worker) {
    worker.metrics.updateWorkerState('stopping');
  },
};

/**
 * Calls a hook: our default, then the user's. A user hook that throws (or rejects) is logged and
 * does not stop the server (as gunicorn logs and continues).
 */
export class HookRunner {
  readonly user: UserHooks;
  /** `user`: hooks as the config loader found them (RawHooks) or already typed */
  constructor(user: UserHooks | RawHooks, private readonly log: Logger, private readonly defaults: UserHooks = DEFAULT_HOOKS) {
    this.user = user as UserHooks;
  }

  async call<K extends keyof UserHooks>(name: K, ...args: Parameters<NonNullable<UserHooks[K]>>): Promise<void> {
    const d = this.defaults[name] as ((...a: unknown[]) => MaybeAsync) | undefined;
    if (d) await d(...args);
    const u = this.user[name] as ((...a: unknown[]) => MaybeAsync) | undefined;
    if (!u) return;
    try {
      await u(...args);
    } catch (e) {
      this.log.error(`hook ${name} failed: ${(e as Error)?.stack ?? e}`);
    }
  }

  has(name: HookName): boolean {
    return typeof this.user[name] === 'function';
  }
}
