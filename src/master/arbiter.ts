/**
 * The runner's master (gunicorn's arbiter.py): binds the sockets, forks the workers, supervises
 * them, handles signals, and serves one scrape endpoint for itself and every worker.
 *
 * Read top to bottom as gunicorn's: start; the loop (signals and child exits, as CHLD, go into one
 * queue and are handled in one place, each by a named method; a periodic tick promotes a USR2 master,
 * murders silent workers and keeps the worker count); the signal handlers; halt and stop; reexec
 * and reload; then the worker steps (murder, reap, manage, spawn, kill). A worker's life is its
 * WorkerProcess's lifecycle (booting → running → leaving(reason) → exited); the restart reason comes
 * from that state (exit-reason.ts). The scrape hub (export/hub.ts) owns the workers' links, snapshots and retention.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { metrics as otelMetrics } from '@opentelemetry/api';
import { ConfigError, type ExporterConfig } from '../config';
import { loadRunnerConfig, serveSettings, WORKER_CLASS_NAMES, type RunnerConfig } from '../config/runner';
import { hubOptions, ScrapeHub, workerExitLine } from '../export/hub';
import { startMetricsServer, type MetricsServer } from '../export/server';
import { startHostMetrics } from '../export/host-metrics';
import { exporterSummary, Telemetry } from '../export/telemetry';
import { HookRunner, type ServerApi, type WorkerInfo } from '../hooks/server';
import type { MasterMetrics } from '../metrics/MasterMetrics';
import type { RestartReason } from '../metrics/contract';
import type { RunnerLog } from '../util/logger';
import {
  APP_LOAD_ERROR, BOOT_ENV, TAG, WORKER_BOOT_ERROR, beatPeriodMs, isTagged, murderGraceMs, type BeatMessage, type RelistenMessage, type RetireMessage, type WorkerBoot,
  workerExecArgv,
} from '../workers/protocol';
import { jitteredMaxRequests } from '../workers/loop';
import { abortsOnUncaughtException, OomKillCounter, restartReason } from './exit-reason';
import { Pidfile } from './pidfile';
import { bindAll, bindOne, closeAll, listeningAt, type Listener } from './sockets';
import { WorkerProcess, type LeaveReason } from './worker-process';

const WORKER_ENTRY = join(__dirname, '..', 'workers', 'entry.js');
/** env of a master started by USR2: the inherited listening fds (3, 4, …) and the old master's pid */
const LISTEN_FDS_ENV = 'PREFORK_OTEL_LISTEN_FDS';
const OLD_MASTER_ENV = 'PREFORK_OTEL_OLD_MASTER';

type SignalName = 'HUP' | 'TTIN' | 'TTOU' | 'TERM' | 'INT' | 'QUIT' | 'USR1' | 'USR2' | 'WINCH';
const SIGNALS: SignalName[] = ['HUP', 'TTIN', 'TTOU', 'TERM', 'INT', 'QUIT', 'USR1', 'USR2', 'WINCH'];
type Queued = SignalName | 'CHLD';

/**
 * gunicorn_master_signals_total{signal, action}: the action each signal stands for. WINCH is ignored
 * (gunicorn stops the workers on WINCH only when daemonized, and the runner never daemonizes).
 */
export const SIGNAL_ACTIONS: Record<SignalName, string> = {
  HUP: 'reload', TTIN: 'scale_up', TTOU: 'scale_down', TERM: 'graceful_stop', INT: 'fast_stop', QUIT: 'fast_stop',
  USR1: 'reopen_logs', USR2: 'upgrade', WINCH: 'ignored',
};

export class Arbiter implements ServerApi {
  readonly pid = process.pid;
  numWorkers: number;
  masterMetrics!: MasterMetrics;
  readonly telemetry: Telemetry;
  readonly hub: ScrapeHub;
  private hooks: HookRunner;
  private readonly workers = new Map<number, WorkerProcess>();
  private listeners: Listener[] = [];
  private metricsServer: MetricsServer | undefined;
  private pidfile: Pidfile | undefined;
  private readonly queue: Queued[] = [];
  private readonly exitedWorkers: WorkerProcess[] = [];
  private wakeScheduled = false;
  private processing = false;
  private age = 0;
  private spawning = 0;
  private tickTimer: NodeJS.Timeout | undefined;
  /** start-up went through (from here on errors are logged, not one-line user errors) */
  private started = false;
  /** the master a USR2 started (gunicorn's reexec_pid), until it exits */
  private reexecChild: ChildProcess | undefined;
  /** the master that started this one with USR2 (gunicorn's master_pid); 0 once promoted */
  private masterPid = Number(process.env[OLD_MASTER_ENV] ?? 0);
  /** "Master", or "Master.2" for a master started by USR2 until it is promoted */
  private masterName = this.masterPid ? 'Master.2' : 'Master';
  private readonly oom = new OomKillCounter();
  /** forked workers inherit the master's execArgv and NODE_OPTIONS */
  private readonly abortOnUncaught = abortsOnUncaughtException(process.execArgv, process.env.NODE_OPTIONS);
  /** stop(): the signal sent to every worker ('SIGTERM' graceful, 'SIGQUIT' fast) */
  private stopSignal: NodeJS.Signals | undefined;
  private stopDeadline: NodeJS.Timeout | undefined;
  private allGone: (() => void) | undefined;
  private halting = false;
  private done!: (code: number) => void;
  private readonly signalHandlers = new Map<SignalName, () => void>();

  /**
   * `argv` (and `cwd`, where it was read): the command line, read again on HUP.
   */
  constructor(private cfg: RunnerConfig, readonly exporter: ExporterConfig, readonly log: RunnerLog, private readonly argv: string[],
    private readonly version: string, private readonly cwd = process.cwd()) {
    delete process.env[OLD_MASTER_ENV];
    this.numWorkers = cfg.workers;
    this.telemetry = new Telemetry(exporter, []);
    otelMetrics.setGlobalMeterProvider(this.telemetry.meterProvider);
    // --host-metrics or PREFORK_OTEL_HOST_METRICS=true: the master is the one process of the host
    startHostMetrics(this.telemetry.meterProvider, { on: cfg.hostMetrics });
    this.hub = new ScrapeHub(hubOptions(exporter));
    this.hooks = new HookRunner(cfg.hooks, log);
  }

  get meterProvider() {
    return this.telemetry.meterProvider;
  }

  workerInfos(): WorkerInfo[] {
    return [...this.workers.values()];
  }

  // ── start ───────────────────────────────────────────────────────────────────────────────────

  /** Start, then run until halted; resolves with the exit code. */
  run(): Promise<number> {
    const finished = new Promise<number>((resolve) => { this.done = resolve; });
    this.start().catch((e) => this.fail(e));
    return finished;
  }

  /**
   * on_starting, pid file, sockets, metrics endpoint — a user error in any of these is one line on
   * stderr and the exit code, before anything else is logged (an address in use is retried first,
   * with gunicorn's lines) — then when_ready and the workers.
   */
  private async start(): Promise<void> {
    // the cgroup's OOM-kill count now: a worker SIGKILLed while it rises was killed for memory
    await this.oom.baseline();
    await this.hooks.call('on_starting', this);
    if (this.cfg.pidfile) {
      // gunicorn: a master started by USR2 writes FILE.2 (renamed to FILE when it is promoted)
      this.pidfile = new Pidfile(this.masterPid ? `${this.cfg.pidfile}.2` : this.cfg.pidfile);
      this.pidfile.create();
    }
    this.listeners = await this.createListeners();
    await this.startMetricsEndpoint();
    this.started = true;
    this.log.info(`Starting prefork-otel ${this.version}`);
    this.log.info(`Listening at: ${listeningAt(this.listeners, serveSettings(this.cfg).tls !== undefined)} (${this.pid})`);
    this.log.info(`Using worker: ${this.cfg.workerClass} (${WORKER_CLASS_NAMES[this.cfg.workerClass]})`);
    if (this.metricsServer) this.log.info(`Metrics at: ${this.metricsServer.scheme}://${this.exporter.bindAddress}:${this.metricsServer.port}${this.exporter.metricsPath}`);
    else if (!this.exporter.exporters.includes('prometheus')) this.log.info(`M${exporterSummary(this.exporter).slice(1)}`); // never off silently
    this.initSignals();
    await this.hooks.call('when_ready', this);
    const tickMs = Math.min(1000, beatPeriodMs(this.cfg.timeout));
    this.tickTimer = setInterval(() => this.tick(), tickMs);
    this.manageWorkers();
  }

  /** bind --bind (or take the sockets of the master that started us with USR2) */
  private async createListeners(): Promise<Listener[]> {
    const inherited = process.env[LISTEN_FDS_ENV];
    delete process.env[LISTEN_FDS_ENV];
    if (!inherited) return bindAll(this.cfg.bind, this.log);
    const fds = inherited.split(',').map(Number);
    const out: Listener[] = [];
    for (let i = 0; i < fds.length; i++) {
      const l = await bindOne({ kind: 'fd', fd: fds[i]! });
      const b = this.cfg.bind[i];
      out.push({ ...l, bind: b ?? l.bind, url: b?.kind === 'tcp' ? `http://${b.host}:${b.port}` : b?.kind === 'unix' ? `unix:${b.path}` : l.url });
    }
    return out;
  }

  private async startMetricsEndpoint(): Promise<void> {
    const e = this.exporter;
    if (e.disabled || !e.exporters.includes('prometheus')) return;
    const open = () => startMetricsServer({
      host: e.bindAddress, port: e.metricsPort, path: e.metricsPath, ref: true, web: e,
      gather: () => this.hub.scrape(() => this.telemetry.collect()),
    });
    try {
      this.metricsServer = await open();
    } catch (err) {
      if (!(err instanceof ConfigError) || !this.masterPid) throw err;
      // started by USR2: the old master still serves the port; take it over when it is released
      this.log.info(`Metrics port ${e.metricsPort} still held by the old master (pid ${this.masterPid}); retrying every second`);
      const retry = setInterval(() => {
        if (this.halting) return clearInterval(retry);
        open().then((s) => {
          clearInterval(retry);
          this.metricsServer = s;
          this.log.info(`Metrics at: ${s.scheme}://${e.bindAddress}:${s.port}${e.metricsPath}`);
        }, () => undefined);
      }, 1000);
    }
  }

  // ── the loop ────────────────────────────────────────────────────────────────────────────────

  private initSignals(): void {
    for (const name of SIGNALS) {
      const h = () => this.enqueue(name);
      this.signalHandlers.set(name, h);
      process.on(`SIG${name}`, h);
    }
  }

  /** gunicorn keeps at most 5 signals queued */
  private enqueue(sig: Queued): void {
    if (sig !== 'CHLD' && this.queue.filter((s) => s !== 'CHLD').length >= 5) return;
    this.queue.push(sig);
    if (this.wakeScheduled) return;
    this.wakeScheduled = true;
    setImmediate(() => {
      this.wakeScheduled = false;
      void this.processQueue();
    });
  }

  /**
   * The one place signals are handled: in arrival order, each handler finished before the next.
   * While halting only INT/QUIT (a faster stop) and CHLD still matter, as in gunicorn, whose loop
   * no longer runs then.
   */
  private async processQueue(): Promise<void> {
    if (this.processing) return;
    this.processing = true;
    try {
      while (this.queue.length > 0) {
        const sig = this.queue.shift()!;
        try {
          if (sig === 'CHLD') {
            await this.handleChld();
            continue;
          }
          if (this.halting && sig !== 'INT' && sig !== 'QUIT') continue;
          this.log.info(`Handling signal: ${sig.toLowerCase()}`);
          this.masterMetrics.recordSignal(sig.toLowerCase(), this.actionFor(sig));
          const handler: () => void | Promise<void> = {
            HUP: this.handleHup, TTIN: this.handleTtin, TTOU: this.handleTtou, TERM: this.handleTerm, INT: this.handleInt,
            QUIT: this.handleQuit, USR1: this.handleUsr1, USR2: this.handleUsr2, WINCH: this.handleWinch,
          }[sig];
          await handler.call(this);
        } catch (e) {
          this.log.error(`handling ${sig} failed: ${(e as Error)?.stack ?? e}`);
        }
      }
    } finally {
      this.processing = false;
    }
  }

  private actionFor(sig: SignalName): string {
    if (sig === 'TTOU' && this.numWorkers <= 1) return 'ignored';
    if (sig === 'USR2' && (this.reexecChild || this.masterPid)) return 'ignored';
    return SIGNAL_ACTIONS[sig];
  }

  /** every tick (gunicorn's loop without a signal): promote, kill silent workers, keep the number of workers */
  private tick(): void {
    this.maybePromoteMaster();
    this.murderWorkers();
    this.manageWorkers();
  }

  // ── signal handlers ─────────────────────────────────────────────────────────────────────────

  /** HUP: reload the configuration and replace every worker gracefully (new ones first) */
  private async handleHup(): Promise<void> {
    this.log.info(`Hang up: ${this.masterName}`);
    await this.reload();
  }

  /** TTIN: one worker more */
  private async handleTtin(): Promise<void> {
    await this.setNumWorkers(this.numWorkers + 1);
  }

  /** TTOU: one worker fewer (never below one) */
  private async handleTtou(): Promise<void> {
    if (this.numWorkers <= 1) return;
    await this.setNumWorkers(this.numWorkers - 1);
  }

  /** TERM: graceful stop */
  private handleTerm(): void {
    void this.halt(0, undefined, true);
  }

  /** INT: fast stop (also while a graceful stop is under way) */
  private handleInt(): void {
    void this.halt(0, undefined, false);
  }

  /** QUIT: fast stop */
  private handleQuit(): void {
    void this.halt(0, undefined, false);
  }

  /** USR1: reopen the log file */
  private handleUsr1(): void {
    this.log.reopen();
    this.log.info('Log file reopened');
    // gunicorn's kill_workers(SIGUSR1): each worker reopens its access log
    for (const w of this.workers.values()) w.kill('SIGUSR1');
  }

  /** USR2: start a new master (same command line) on the same sockets; this one keeps running */
  private async handleUsr2(): Promise<void> {
    await this.reexec();
  }

  /** WINCH: ignored, as gunicorn does when not daemonized (the runner never daemonizes) */
  private handleWinch(): void {
    this.log.debug('SIGWINCH ignored. Not daemonized');
  }

  /** CHLD: workers exited (queued by their exit events) */
  private async handleChld(): Promise<void> {
    await this.reapWorkers();
    if (this.halting) {
      if (this.workers.size === 0) this.allGone?.();
      return;
    }
    this.manageWorkers();
  }

  /** a master started by USR2 whose parent (the old master) exited becomes the master (gunicorn's maybe_promote_master) */
  private maybePromoteMaster(): void {
    if (this.masterPid === 0 || process.ppid === this.masterPid) return;
    this.log.info('Master has been promoted.');
    this.masterName = 'Master';
    this.masterPid = 0;
    if (this.pidfile && this.cfg.pidfile) this.pidfile.rename(this.cfg.pidfile);
  }

  // ── halt and stop ───────────────────────────────────────────────────────────────────────────

  /**
   * Stop the workers (gracefully or fast), then exit with `code` (gunicorn's halt): "Shutting down",
   * the reason, on_exit, the pid file. A later fast stop (INT after TERM) makes the running stop fast.
   */
  private async halt(code: number, reason?: string, graceful = true): Promise<void> {
    if (this.halting) {
      if (!graceful) this.stop(false);
      return;
    }
    this.halting = true;
    clearInterval(this.tickTimer);
    await this.stop(graceful);
    clearTimeout(this.stopDeadline);
    if (this.started) this.log.info(`Shutting down: ${this.masterName}`);
    if (reason) this.log.info(`Reason: ${reason}`);
    await this.hooks.call('on_exit', this);
    for (const [name, h] of this.signalHandlers) process.off(`SIG${name}`, h);
    await this.metricsServer?.close();
    await this.telemetry.shutdown();
    this.pidfile?.unlink();
    this.done(code);
  }

  /**
   * Close the master's copies of the sockets, ask every worker to leave (TERM: graceful, QUIT: fast)
   * and SIGKILL those left after --graceful-timeout; resolves when every worker is gone. Called again
   * with graceful = false, it sends QUIT to the workers still draining.
   */
  private stop(graceful: boolean): Promise<void> {
    const sig: NodeJS.Signals = graceful ? 'SIGTERM' : 'SIGQUIT';
    if (this.stopSignal === 'SIGQUIT' || this.stopSignal === sig) return this.gone();
    this.stopSignal = sig;
    // a unix socket file stays for the master a USR2 started, or the one that started us (gunicorn's unlink rule)
    closeAll(this.listeners, !this.reexecChild && !this.masterPid);
    this.listeners = [];
    this.killWorkers(sig, 'shutdown');
    clearTimeout(this.stopDeadline);
    this.stopDeadline = setTimeout(() => this.killWorkers('SIGKILL', 'shutdown'), this.cfg.gracefulTimeout * 1000);
    return this.gone();
  }

  private gone(): Promise<void> {
    if (this.workers.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const prev = this.allGone;
      this.allGone = () => { prev?.(); resolve(); };
    });
  }

  /** an error while starting (port in use, …) or a bug: stop the workers and exit */
  private fail(e: unknown): void {
    let code = 1;
    if (e instanceof ConfigError) {
      process.stderr.write(e.message + '\n');
      code = e.exitCode;
    } else {
      this.log.critical(`master failed: ${(e as Error)?.stack ?? e}`);
    }
    void this.halt(code, undefined, false);
  }

  // ── reexec and reload ───────────────────────────────────────────────────────────────────────

  /** USR2: a new master on the same sockets (fds 3, 4, …), gunicorn's reexec; it writes FILE.2 */
  private async reexec(): Promise<void> {
    if (this.reexecChild) {
      this.log.warning('USR2 signal ignored. Child exists.');
      return;
    }
    if (this.masterPid) {
      this.log.warning('USR2 signal ignored. Parent exists.');
      return;
    }
    await this.hooks.call('pre_exec', this);
    const fds = this.listeners.map((l) => l.handle.fd);
    const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
      cwd: this.cwd,
      stdio: ['inherit', 'inherit', 'inherit', ...fds],
      env: { ...process.env, [LISTEN_FDS_ENV]: fds.map((_, i) => String(3 + i)).join(','), [OLD_MASTER_ENV]: String(this.pid) },
    });
    child.unref();
    child.once('exit', () => { if (this.reexecChild === child) this.reexecChild = undefined; });
    child.once('error', (e) => this.log.error(`USR2: cannot start a new master: ${e.message}`));
    this.reexecChild = child;
    this.log.info(`Upgrade: started a new master, pid ${child.pid}`);
  }

  /**
   * HUP (gunicorn's reload): read the configuration again (the worker count returns to its
   * configured value, as in gunicorn), run on_reload, then start a new generation of workers; each
   * one that is up retires one old worker (reason reload), so the service never runs short.
   */
  private async reload(): Promise<void> {
    let workers = this.numWorkers;
    try {
      const r = await loadRunnerConfig(this.argv, process.env, this.cwd);
      if (r.kind === 'run') {
        const next = r.config;
        if (JSON.stringify(next.bind) !== JSON.stringify(this.cfg.bind)) {
          this.log.warning('reload: --bind changed; new sockets need a restart (or USR2); keeping the current ones');
          next.bind = this.cfg.bind;
        }
        this.cfg = next;
        this.hooks = new HookRunner(next.hooks, this.log);
        workers = next.workers;
      }
    } catch (e) {
      this.log.error(`reload: configuration not reloaded: ${(e as Error).message}`);
    }
    await this.hooks.call('on_reload', this);
    for (const w of this.workers.values()) w.supersede();
    if (workers !== this.numWorkers) await this.setNumWorkers(workers);
    else this.manageWorkers();
  }

  // ── workers ─────────────────────────────────────────────────────────────────────────────────

  /**
   * Workers silent for longer than --timeout are killed and replaced (reason timeout): their
   * heartbeat is older, or — a sync worker — the request it serves started before that. With
   * --abort-on-timeout the worker's watchdog aborts it first (it reports reason timeout and its final
   * metrics); the master's kill, a little later, is for a loop JavaScript cannot interrupt.
   */
  private murderWorkers(): void {
    if (this.cfg.timeout <= 0) return;
    const now = Date.now();
    const limit = this.cfg.timeout * 1000 + murderGraceMs(this.cfg.timeout, this.cfg.abortOnTimeout);
    for (const w of this.workers.values()) {
      if (w.phase === 'leaving' || !w.alive) continue;
      // a sync worker's tick is the start of its request in progress (workers/sync.ts): a request that
      // outlives --timeout, even one that only waits, gets it killed, as gunicorn's sync worker
      if (now - w.lastBeat <= limit) continue;
      this.workerTimedOut(w);
      // gunicorn runs worker_abort in the worker on SIGABRT; a Node worker whose event loop is
      // blocked cannot run JavaScript, so the hook runs here, before the kill
      void this.hooks.call('worker_abort', w);
      w.kill('SIGKILL');
    }
  }

  /** a worker outlived --timeout (found by murderWorkers, or reported by its watchdog) */
  private workerTimedOut(w: WorkerProcess): void {
    if (!w.leave('timeout')) return;
    this.log.critical(`WORKER TIMEOUT (pid:${w.pid})`);
    this.armDeadline(w);
  }

  /** exited workers: halt on a boot error, log, decide the restart reason, retain the final series, child_exit (records the restart) */
  private async reapWorkers(): Promise<void> {
    while (this.exitedWorkers.length > 0) {
      const w = this.exitedWorkers.shift()!;
      if (!this.workers.delete(w.pid)) continue;
      const { exitCode: code = null, signal = null } = w;
      // retention, directly (not through the child_exit hook); the one line on what the worker was doing
      this.log.info(workerExitLine(w.pid, { code, signal, bornAt: w.bornAt }, this.hub.summary(w.pid)));
      this.hub.workerExited(w.pid);
      // a worker that could not boot (gunicorn: any exit with these codes) stops the master
      const bootFailure = w.leaveReason === undefined && (code === WORKER_BOOT_ERROR || code === APP_LOAD_ERROR);
      if (bootFailure && !this.halting) {
        void this.halt(code!, code === APP_LOAD_ERROR ? 'App failed to load.' : 'Worker failed to boot.');
      }
      this.logExit(w, code, signal);
      const reason = restartReason({
        leaving: w.leaveReason, code, signal, stopping: this.halting,
        oomRose: signal === 'SIGKILL' && this.unexpectedKill(w) && await this.oom.increased(),
        abortOnUncaught: this.abortOnUncaught,
      });
      await this.hooks.call('child_exit', this, this.exitInfo(w, reason));
    }
  }

  /** gunicorn 20.1's line for a worker ended by a signal; a SIGKILL the master did not send gets gunicorn ≥ 21's OOM hint */
  private logExit(w: WorkerProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (signal) {
      this.log.warning(`Worker with pid ${w.pid} was terminated due to signal ${osConstants.signals[signal] ?? signal}`);
      if (signal === 'SIGKILL' && this.unexpectedKill(w)) this.log.error(`Worker (pid:${w.pid}) was sent SIGKILL! Perhaps out of memory?`);
    } else if (code !== 0 && code !== WORKER_BOOT_ERROR && code !== APP_LOAD_ERROR) {
      this.log.error(`Worker (pid:${w.pid}) exited with code ${code}.`);
    }
  }

  /** a SIGKILL neither the master sent nor the worker's own watchdog (after it reported its timeout) */
  private unexpectedKill(w: WorkerProcess): boolean {
    return !w.killedByMaster && w.leaveReason !== 'timeout';
  }

  /** what child_exit sees: the worker, with the restart reason the reaper decided */
  private exitInfo(w: WorkerProcess, reason: RestartReason | undefined): WorkerInfo {
    return { pid: w.pid, age: w.age, bornAt: w.bornAt, state: w.state, restartReason: reason, exitCode: w.exitCode, signal: w.signal };
  }

  private async setNumWorkers(n: number): Promise<void> {
    const old = this.numWorkers;
    this.numWorkers = n;
    await this.hooks.call('nworkers_changed', this, n, old);
    this.manageWorkers();
  }

  /**
   * Keep `numWorkers` workers that stay: spawn the missing, retire the oldest extra. A reload whose
   * new workers are all up retires the outdated ones still left (when there are fewer workers now).
   */
  private manageWorkers(): void {
    if (this.halting) return;
    const all = [...this.workers.values()];
    const staying = all.filter((w) => w.staying).sort((a, b) => a.age - b.age);
    const missing = this.numWorkers - staying.length - this.spawning;
    for (let i = 0; i < missing; i++) void this.spawnWorker();
    for (let i = 0; i < -missing && i < staying.length; i++) this.retire(staying[i]!, 'scale_down');
    const outdated = all.filter((w) => w.outdated);
    if (outdated.length > 0 && this.spawning === 0 && !staying.some((w) => w.phase === 'booting')) {
      for (const w of outdated) this.retire(w, 'reload');
    }
  }

  /** fork one worker: pre_fork, fork, watch it, hand it the sockets */
  private async spawnWorker(): Promise<void> {
    this.spawning++;
    const age = ++this.age;
    let child: ChildProcess;
    try {
      await this.hooks.call('pre_fork', this, { pid: 0, age, bornAt: Date.now(), state: 'booting' });
      if (this.halting) return;
      child = this.forkWorker(age);
    } finally {
      this.spawning--;
    }
    if (child.pid === undefined) {
      child.once('error', (e) => this.log.error(`cannot fork a worker: ${e.message}`));
      return;
    }
    const w = this.watchWorker(child, age);
    this.sendSockets(w);
  }

  /** the worker's settings (its own --max-requests with jitter) and the fork */
  private forkWorker(age: number): ChildProcess {
    const c = this.cfg;
    const boot: WorkerBoot = {
      app: c.app, kind: c.workerClass, threads: c.threads, workerConnections: c.workerConnections,
      timeout: c.timeout, abortOnTimeout: c.abortOnTimeout, gracefulTimeout: c.gracefulTimeout, keepAlive: c.keepAlive,
      maxRequests: jitteredMaxRequests(c.maxRequests, c.maxRequestsJitter),
      configFile: c.configFile, procName: c.procName, logLevel: c.logLevel, age,
      binds: this.listeners.length, copies: this.socketCopies(), beatMs: beatPeriodMs(c.timeout),
    };
    const toFile = this.log.file !== '-';
    const env = { ...process.env, ...c.rawEnv };
    const child = fork(WORKER_ENTRY, [], {
      cwd: c.chdir ?? process.cwd(),
      // V8's young generation capped (docs/runner.md "Memory"), unless the user set it
      execArgv: workerExecArgv(process.execArgv, env.NODE_OPTIONS),
      // PREFORK_OTEL_ROLE: a preload inherited through execArgv / NODE_OPTIONS stays out of the way (src/register.ts)
      env: { ...env, PREFORK_OTEL_ROLE: 'runner-worker', [BOOT_ENV]: JSON.stringify(boot) },
      // stdout (an access log on "-") goes to the error log only with --capture-output, as gunicorn's
      stdio: toFile ? ['ignore', c.captureOutput ? 'pipe' : 'inherit', 'pipe', 'ipc'] : ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    if (toFile) {
      child.stdout?.on('data', (d: Buffer) => this.log.write(d));
      child.stderr!.on('data', (d: Buffer) => this.log.write(d));
    }
    return child;
  }

  /** the master's record of the new worker: its snapshots, its messages, its exit (→ CHLD) */
  private watchWorker(child: ChildProcess, age: number): WorkerProcess {
    const link = this.hub.attach(child.pid!, child);
    const w = new WorkerProcess(child, link, age);
    this.workers.set(w.pid, w);
    // a send to a worker that just died, a failed kill: logged, never fatal to the master
    child.on('error', (e) => this.log.debug(`worker ${w.pid}: ${e.message}`));
    child.on('message', (m: unknown) => this.onWorkerMessage(w, m));
    child.once('exit', (code, signal) => {
      w.exited(code, signal);
      // reap once the IPC channel is drained (a final snapshot sent just before exit arrives first)
      const reap = () => { this.exitedWorkers.push(w); this.enqueue('CHLD'); };
      if (!child.connected) return reap();
      const t = setTimeout(reap, 1000);
      child.once('disconnect', () => { clearTimeout(t); reap(); });
    });
    return w;
  }

  /** copies of each socket a worker takes: one per gthread thread, else one */
  private socketCopies(): number {
    return this.cfg.workerClass === 'gthread' ? this.cfg.threads : 1;
  }

  private sendSockets(w: WorkerProcess): void {
    for (let index = 0; index < this.listeners.length; index++) {
      for (let copy = 0; copy < this.socketCopies(); copy++) {
        w.child.send({ [TAG]: 'listen', index, copy }, this.listeners[index]!.handle as never, (e) => {
          if (e) this.log.debug(`worker ${w.pid}: socket not sent (${e.message})`);
        });
      }
    }
  }

  private onWorkerMessage(w: WorkerProcess, m: unknown): void {
    if (isTagged(m, 'beat')) {
      w.lastBeat = (m as BeatMessage).tick;
    } else if (isTagged(m, 'relisten')) {
      // sync: a fresh copy of a listening socket for a worker that gave its own up while busy
      const index = (m as RelistenMessage).index;
      const l = this.listeners[index];
      if (l && w.alive) w.child.send({ [TAG]: 'listen', index, copy: 0 }, l.handle as never, () => undefined);
    } else if (isTagged(m, 'ready')) {
      w.ready();
      // a reload retires one old worker per new worker that is up
      const old = [...this.workers.values()].filter((o) => o.outdated).sort((a, b) => a.age - b.age)[0];
      if (old) this.retire(old, 'reload');
    } else if (isTagged(m, 'retire')) {
      this.workerLeaves(w, m as RetireMessage);
    }
  }

  /**
   * The worker says it is leaving (max_requests, timeout: its watchdog; signal: someone signalled
   * it). max_requests / timeout: the replacement starts now; a signal may be the terminal's Ctrl-C
   * that reaches the master too, so that replacement waits for the exit (and the master's own signal).
   */
  private workerLeaves(w: WorkerProcess, { reason, signal }: RetireMessage): void {
    if (reason === 'timeout') this.workerTimedOut(w);
    else if (w.leave(reason)) this.log.info(`Worker (pid:${w.pid}) is leaving: ${reason}${signal ? ` (${signal})` : ''}`);
    this.armDeadline(w);
    if (reason !== 'signal') this.manageWorkers();
  }

  /** Ask a worker to leave gracefully (SIGTERM), for `reason`. */
  private retire(w: WorkerProcess, reason: LeaveReason): void {
    if (!w.leave(reason)) return;
    w.kill('SIGTERM');
    this.armDeadline(w);
  }

  /** a leaving worker that is still there after --graceful-timeout (+1 s) is killed */
  private armDeadline(w: WorkerProcess): void {
    if (w.deadline || !w.alive) return;
    w.deadline = setTimeout(() => {
      if (!w.alive) return;
      this.log.warning(`Worker (pid:${w.pid}) still running after --graceful-timeout ${this.cfg.gracefulTimeout}s; killing it`);
      w.kill('SIGKILL');
    }, this.cfg.gracefulTimeout * 1000 + 1000);
  }

  /** send `sig` to every worker (gunicorn's kill_workers); those not leaving yet leave for `reason` */
  private killWorkers(sig: NodeJS.Signals, reason: LeaveReason): void {
    for (const w of this.workers.values()) {
      w.leave(reason);
      w.kill(sig);
    }
  }
}
