/**
 * The preload under node:cluster (`node -r prefork-otel/register app.js`, app.js forking workers itself).
 *
 * Primary: a single process until it forks its first worker; from then on it is the master: its own
 * `gunicorn_worker_*` series are no longer exported (it does not serve requests), and its endpoint is
 * the scrape hub's (src/export/hub.ts: its own metrics + every worker's, gathered over IPC at scrape
 * time with the `PREFORK_OTEL_SCRAPE_TIMEOUT` deadline, exited workers retained, the union endpoint
 * cap), and it records the restarts it observes through cluster 'exit' events (reasons from
 * master/exit-reason.ts). This file only wires node:cluster's events to the hub.
 *
 * Worker (a cluster worker whose primary runs the preload): a WorkerRuntime answering the primary's
 * collect requests and pushing a snapshot every `PREFORK_OTEL_SNAPSHOT_INTERVAL`; no endpoint of its own.
 * Our messages travel on Node's internal IPC event, invisible to the application's own handlers.
 */
import cluster, { type Worker } from 'node:cluster';
import diagnostics from 'node:diagnostics_channel';
import http from 'node:http';
import net from 'node:net';
import type { ResourceMetrics, ScopeMetrics } from '@opentelemetry/sdk-metrics';
import type { ExporterConfig } from '../config';
import { startHostMetrics } from '../export/host-metrics';
import { hubOptions, ScrapeHub } from '../export/hub';
import { internalChannel, isOurMessage, SnapshotResponder, TAG, type LeaveMessage, type SnapshotMessage } from '../export/ipc';
import { freshenSnapshot } from '../export/snapshot';
import { M, SCOPE, type RestartReason } from '../metrics/contract';
import { MasterMetrics } from '../metrics/MasterMetrics';
import { processProducer } from '../metrics/Metrics';
import { abortsOnUncaughtException, OomKillCounter, restartReason } from '../master/exit-reason';
import type { WorkerRuntime } from '../workers/runtime';
import { endTimeoutMs, flushOnProcessEnd, NOTHING_TO_FLUSH } from './lifecycle';
import { processRuntime, serveMetricsEndpoint } from './single';
import { withDeadline } from '../util/time';

/** Set by a primary running the preload to its pid; a cluster worker whose parent it is knows its master is ours. */
export const PRIMARY_ENV = 'PREFORK_OTEL_CLUSTER_PRIMARY';

/** Is this process a node:cluster worker whose primary runs the preload? */
export function isOurClusterWorker(env: NodeJS.ProcessEnv = process.env): boolean {
  return cluster.isWorker && env[PRIMARY_ENV] === String(process.ppid);
}

/** The contract's worker metrics (everything but the master's two). */
const WORKER_METRICS: ReadonlySet<string> = new Set(Object.values(M).map((d) => d.name)
  .filter((name) => name !== M.workerRestarts.name && name !== M.signals.name));

/** The metrics of `rm` without the worker metrics of the contract (a master serves no requests). */
export function withoutWorkerMetrics(rm: ResourceMetrics): ResourceMetrics {
  return {
    resource: rm.resource,
    scopeMetrics: rm.scopeMetrics.map((sm) => ({ scope: sm.scope, metrics: sm.metrics.filter((m) => !WORKER_METRICS.has(m.descriptor.name)) })),
  };
}

/**
 * The restart reason of a cluster worker's exit, by the one decision of both masters
 * (`restartReason`, master/exit-reason.ts). node:cluster tells the primary only whether the exit was
 * asked for (`exitedAfterDisconnect`: after `worker.disconnect()` / `worker.kill()`, the app's own
 * replacement, not a restart of ours to count); exit code 0 is the worker ending on its own: both are
 * `leaving: 'shutdown'` (not replaced by us). Anything else went away unasked.
 */
export async function exitReason(code: number | null, signal: string | null,
  opts: { asked?: boolean; stopping?: boolean; oom?: OomKillCounter; execArgv?: readonly string[]; nodeOptions?: string } = {}): Promise<RestartReason | undefined> {
  const leaving = opts.asked === true || (!signal && (code === null || code === 0)) ? 'shutdown' : undefined;
  const oomRose = leaving === undefined && signal === 'SIGKILL' && opts.oom !== undefined && await opts.oom.increased();
  return restartReason({
    leaving, code, signal, stopping: opts.stopping === true, oomRose,
    abortOnUncaught: abortsOnUncaughtException(opts.execArgv ?? [], opts.nodeOptions ?? ''),
  });
}

const NO_METRICS: ScopeMetrics = { scope: { ...SCOPE }, metrics: [] };

/**
 * A preloaded primary's view of node:cluster: it becomes the master at its first fork (its own
 * observer and sampler stop, its own worker series are dropped, MasterMetrics appear on its
 * MeterProvider) and records each unintended worker exit as a restart.
 */
export class PrimaryWatch {
  master = false;
  /** the primary is stopping (our graceful SIGTERM / SIGINT): nothing that exits now is a restart */
  stopping = false;
  /** workers that asked to leave on a signal of their own (SIGTERM from outside): still a restart, reason signal */
  readonly leftOnSignal = new WeakSet<Worker>();
  /** forked and not yet exited (node:cluster drops a worker from cluster.workers at its disconnect, before it exits) */
  readonly live = new Set<Worker>();
  masterMetrics: MasterMetrics | undefined;
  private readonly oom = new OomKillCounter();

  constructor(private readonly runtime: WorkerRuntime, hooks: { fork?(w: Worker): void; exit?(w: Worker): void } = {}) {
    if (!cluster.isPrimary) return;
    cluster.on('fork', (w: Worker) => {
      if (!this.master) this.becomeMaster();
      this.live.add(w);
      hooks.fork?.(w);
    });
    cluster.on('exit', (w: Worker, code: number | null, signal: string | null) => {
      this.live.delete(w);
      hooks.exit?.(w);
      const pid = w.process.pid;
      if (pid === undefined) return;
      void exitReason(code, signal, {
        asked: w.exitedAfterDisconnect && !this.leftOnSignal.has(w), stopping: this.stopping, oom: this.oom,
        execArgv: w.process.spawnargs ?? [], nodeOptions: process.env.NODE_OPTIONS,
      }).then((reason) => {
        if (reason) this.masterMetrics?.recordWorkerRestart(pid, reason);
      });
    });
  }

  private becomeMaster(): void {
    this.master = true;
    this.runtime.observer.stop();
    this.runtime.sampler.stop();
    // the push readers (OTLP, console) must not carry its worker series either
    this.runtime.telemetry.setPushTransform(withoutWorkerMetrics);
    this.masterMetrics = new MasterMetrics({ meterProvider: this.runtime.telemetry.meterProvider });
    void this.oom.baseline();
  }

  /** this process's collected metrics, without worker series once it is a master */
  async localMetrics(): Promise<ResourceMetrics> {
    const rm = await this.runtime.telemetry.collect();
    return this.master ? withoutWorkerMetrics(rm) : rm;
  }

  /** the request-path metrics read synchronously (none once a master) */
  freshSync(): ScopeMetrics {
    return this.master ? NO_METRICS : processProducer.scopeMetrics();
  }
}

/** How long a preloaded primary's SIGTERM / SIGINT waits for its workers to finish (gunicorn's graceful_timeout default). */
export const GRACEFUL_STOP_MS = 30_000;

/** node:cluster's Worker.state of a worker that has booted */
const BOOTED: ReadonlySet<string> = new Set(['online', 'listening']);

/**
 * The primary's graceful stop: `disconnect()` every worker (each stops listening, serves every
 * request it accepted, its connections close after their response: drainServersOnClusterDisconnect),
 * and resolve when they have exited, or at `deadlineMs` (what is left then ends with the primary:
 * node:cluster workers exit when their channel closes). Nothing that exits now is a restart.
 *
 * The app's primary may fork replacements meanwhile (many replace every worker that exits): one
 * forked while any of the workers of the signal still drains is disconnected as soon as it listens
 * and waited for too (it may have been handed connections); one forked after those are all gone is
 * only waited for until it is online (it has not listened yet: it holds no connection) and then left
 * to end with the primary, so an app that always re-forks cannot keep the primary alive.
 */
export function stopWorkersGracefully(watch: PrimaryWatch, deadlineMs: number): Promise<void> {
  watch.stopping = true;
  // every worker not yet exited, including those already disconnecting (the app's own replacement, a
  // worker leaving on its own signal): they are no longer in cluster.workers
  const first = new Set<Worker>(watch.live);
  const fresh = new Set<Worker>();
  const late = new Set<Worker>();
  const leave = (w: Worker) => {
    if (!w.isDead() && w.isConnected() && !w.exitedAfterDisconnect) w.disconnect();
  };
  const gone = (ws: Set<Worker>) => {
    for (const w of ws) if (!w.isDead()) return false;
    return true;
  };
  return new Promise<void>((resolve) => {
    const check = () => {
      if (!gone(first) || !gone(fresh)) return;
      for (const w of late) if (!w.isDead() && !BOOTED.has((w as Worker & { state?: string }).state ?? '')) return;
      done();
    };
    const onFork = (w: Worker) => {
      if (gone(first)) {
        late.add(w);
        w.once('online', check);
        return;
      }
      fresh.add(w);
      w.once('listening', () => leave(w));
    };
    const timer = setTimeout(() => done(), deadlineMs);
    const done = () => {
      clearTimeout(timer);
      cluster.removeListener('fork', onFork);
      cluster.removeListener('exit', check);
      resolve();
    };
    cluster.on('fork', onFork);
    cluster.on('exit', check);
    for (const w of first) leave(w);
    check();
  });
}

/**
 * A process that is not a cluster worker: observed as a single process, and the aggregating master
 * as soon as it forks cluster workers. Everything that must see the application's first fork is set
 * up synchronously; the endpoint starts listening asynchronously.
 */
export function startClusterPrimary(config: ExporterConfig): Promise<unknown> {
  process.env[PRIMARY_ENV] = String(process.pid);
  const runtime = processRuntime(config);
  startHostMetrics(runtime.telemetry.meterProvider); // PREFORK_OTEL_HOST_METRICS=true: the one process of the host
  // the one scrape hub: the workers' links, snapshots, retention, the union cap, the merge. Until the
  // first fork this process is a single process: its own series, snapshot age 0.
  const hub = new ScrapeHub(hubOptions(config, { selfWorkerId: () => (watch.master ? undefined : runtime.metrics.workerId) }));
  const watch = new PrimaryWatch(runtime, {
    fork: (w) => {
      if (w.process.pid !== undefined) hub.attach(w.process.pid, internalChannel(w.process as never));
      // a worker that got SIGTERM / SIGINT asks to leave: the graceful path (drainServersOnClusterDisconnect)
      internalChannel(w.process as never).on('message', (m) => {
        if (!isOurMessage(m) || m[TAG] !== 'leave' || !w.isConnected() || w.exitedAfterDisconnect) return;
        watch.leftOnSignal.add(w);
        w.disconnect();
      });
    },
    // retention directly from the exit handler; a final snapshot still in the pipe is applied when it arrives
    exit: (w) => {
      if (w.process.pid !== undefined) hub.workerExited(w.process.pid);
    },
  });
  // SIGTERM / SIGINT with no handler of the app's: a graceful stop of the workers (every request they
  // accepted is served), then the push readers' last export, then the signal's default action
  flushOnProcessEnd({ ...NOTHING_TO_FLUSH, drain: () => (watch.master ? stopWorkersGracefully(watch, GRACEFUL_STOP_MS) : Promise.resolve()) },
    endTimeoutMs(config));
  if (!config.exporters.includes('prometheus')) return Promise.resolve();
  return serveMetricsEndpoint(config, () => hub.scrape(() => watch.localMetrics()));
}

/** set on an application server whose cluster worker is draining: every response from now on closes its connection */
const DRAINING = Symbol('prefork-otel.clusterDraining');
type DrainingServer = net.Server & { [DRAINING]?: true };
interface RequestStart { response: http.ServerResponse; server: DrainingServer }

/** `http.server.request.start` while draining: the response of a draining server gets `Connection: close` */
function closeAfterResponse(m: unknown): void {
  const { response, server } = m as RequestStart;
  if (server[DRAINING] === true) response.shouldKeepAlive = false;
}

/**
 * The responses of `server` not yet started: the current response of each of its connections
 * (Node's own connection list, `http.server.connections`; an empty list where a Node version has
 * none: those responses then keep their keep-alive, and their connection's next request is closed).
 */
function pendingResponses(server: object): http.ServerResponse[] {
  const key = Object.getOwnPropertySymbols(server).find((k) => k.description === 'http.server.connections');
  const list = key && (server as Record<symbol, { all?(): unknown[] } | undefined>)[key];
  if (typeof list?.all !== 'function') return [];
  const out: http.ServerResponse[] = [];
  for (const socket of list.all()) {
    const res = (socket as { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (res && !res.headersSent) out.push(res);
  }
  return out;
}

/**
 * node:cluster's graceful worker end (`worker.disconnect()` in the primary, `cluster.worker.disconnect()`
 * here) closes each of the worker's servers with `server.close()`, and an HTTP server's `close()`
 * destroys its idle keep-alive connections (`closeIdleConnections()`), on which a client's next
 * request may already be travelling: that request fails with ECONNRESET (bare Node does this too).
 * In our cluster worker, a `close()` of an http / https server during that drain (node:cluster sets
 * `exitedAfterDisconnect` first) instead only stops listening (net.Server's close), as the runner's
 * drain does (workers/loop.ts): every response not yet started, and the next request on any of its
 * connections, gets `Connection: close`; an idle connection is never destroyed: it closes after its
 * next response or at the server's keep-alive timeout. node:cluster waits for the server's 'close'
 * (all its connections gone) before it disconnects, so the final snapshot counts every response.
 * Any other `close()` (not draining), and the app's own `closeAllConnections()` /
 * `closeIdleConnections()`, do what Node says.
 */
export function drainServersOnClusterDisconnect(): void {
  let subscribed = false;
  const patch = (proto: { close(this: net.Server, cb?: (err?: Error) => void): net.Server }) => {
    const close = proto.close;
    proto.close = function closeWithoutCuttingIdle(this: DrainingServer, cb?: (err?: Error) => void) {
      if (cluster.worker?.exitedAfterDisconnect !== true) return close.call(this, cb);
      if (!subscribed) {
        subscribed = true;
        diagnostics.subscribe('http.server.request.start', closeAfterResponse);
      }
      this[DRAINING] = true;
      for (const res of pendingResponses(this)) res.shouldKeepAlive = false;
      return net.Server.prototype.close.call(this, cb);
    };
  };
  patch(http.Server.prototype);
  // node:https (and tls) is loaded only when the disconnect begins, not in every worker: just before
  // node:cluster closes the servers (the primary's 'disconnect' message, or cluster.worker.disconnect())
  let httpsPatched = false;
  const patchHttps = () => {
    if (httpsPatched) return;
    httpsPatched = true;
    patch((require('node:https') as typeof import('node:https')).Server.prototype);
  };
  (process as unknown as NodeJS.EventEmitter).prependListener('internalMessage', (m: unknown) => {
    const msg = m as { cmd?: unknown; act?: unknown } | null;
    if (msg?.cmd === 'NODE_CLUSTER' && msg.act === 'disconnect') patchHttps();
  });
  const worker = cluster.worker;
  if (worker) {
    const disconnect = worker.disconnect;
    worker.disconnect = function disconnectAfterHttpsPatch(this: Worker) {
      patchHttps();
      return disconnect.call(this);
    };
  }
}

/**
 * A cluster worker's graceful end on a signal: ask the primary to `disconnect()` it (the one graceful
 * path node:cluster has; asking rather than calling `cluster.worker.disconnect()` here means that when
 * the primary stops too (a signal to the whole process group) only one disconnect ever runs), and
 * resolve once the channel is closed, which node:cluster does only after every server of this worker
 * has closed (its last connection gone), or at `deadlineMs`.
 */
function leaveGracefully(channel: ReturnType<typeof internalChannel>, deadlineMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    if (!process.connected) return resolve();
    const timer = setTimeout(resolve, deadlineMs);
    process.once('disconnect', () => {
      clearTimeout(timer);
      resolve();
    });
    if (cluster.worker?.exitedAfterDisconnect !== true) {
      const msg: LeaveMessage = { [TAG]: 'leave' };
      channel.send!(msg);
    }
  });
}

/**
 * A cluster worker of a preloaded primary: observed, answering the primary over IPC, no endpoint.
 * A graceful end sends a final snapshot first: node:cluster calls `process.disconnect()` once the
 * worker's servers have closed (after `worker.disconnect()` / `worker.kill()` in the primary, or
 * `cluster.worker.disconnect()` here); the final snapshot is sent just before. SIGTERM / SIGINT
 * without an application handler and `process.exit()` are covered by flushOnProcessEnd.
 */
export function startClusterWorker(config: ExporterConfig): WorkerRuntime {
  const runtime = processRuntime(config);
  drainServersOnClusterDisconnect();
  const channel = internalChannel(process as never);
  const responder = new SnapshotResponder(runtime.telemetry, channel, process.pid, () => runtime.observer.inFlight).start(config.snapshotIntervalMs);
  // a first snapshot now: from then on the primary's hub asks this worker at every scrape
  void responder.send(false);
  const timeoutMs = endTimeoutMs(config);
  let finalSent = false;
  let finalFlush: Promise<void> | undefined;
  const flush = () => (finalFlush ??= (async () => {
    runtime.metrics.updateWorkerState('stopping');
    await responder.stop(true);
    finalSent = true;
  })());
  const bounded = () => withDeadline(flush(), timeoutMs);

  const disconnect = process.disconnect as (() => void) | undefined;
  if (typeof disconnect === 'function') {
    process.disconnect = function disconnectAfterFinalSnapshot(this: unknown) {
      // Only a graceful end (worker.disconnect() in the primary, or cluster.worker.disconnect() here:
      // node:cluster sets exitedAfterDisconnect before it calls process.disconnect()) waits for the final
      // snapshot. Node also calls process.disconnect() itself when the channel reaches EOF (the primary
      // died): that call must run at once, or Node tears the channel down under a pending disconnect.
      if (finalFlush || !process.connected || cluster.worker?.exitedAfterDisconnect !== true) return disconnect.call(process);
      void bounded().then(() => { if (process.connected) disconnect.call(process); });
    };
  }
  flushOnProcessEnd({
    // SIGTERM / SIGINT without a handler of the app's: leave the way worker.disconnect() does (the
    // primary disconnects us: our servers drain, every accepted request is served), then re-raise
    drain: () => leaveGracefully(channel, GRACEFUL_STOP_MS),
    flush,
    flushSync: () => {
      if (finalSent || !process.connected) return;
      const msg: SnapshotMessage = { [TAG]: 'snapshot', snapshot: freshenSnapshot(responder.last, processProducer.scopeMetrics()) };
      channel.send!(msg);
    },
  }, timeoutMs);
  return runtime;
}
