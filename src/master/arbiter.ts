/**
 * The runner's master (gunicorn's arbiter.py): binds the sockets, forks the workers, supervises
 * them, handles signals, and serves one scrape endpoint for itself and every worker.
 *
 * Readable top to bottom like gunicorn's: signals (and child exits, as CHLD) go into one queue and
 * are handled in one place, each by a named method (handleHup, handleTtin, …); a periodic tick
 * murders silent workers and keeps the worker count; spawning, reaping, retiring and murdering are
 * small named steps.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { metrics as otelMetrics } from '@opentelemetry/api';
import { ConfigError, type ExporterConfig } from '../config';
import { loadRunnerConfig, WORKER_CLASS_NAMES, type RunnerConfig } from '../config/runner';
import { Aggregator } from '../export/aggregator';
import { WorkerLink } from '../export/ipc';
import { serializePrometheus } from '../export/serializer';
import { startMetricsServer, type MetricsServer } from '../export/server';
import { Telemetry } from '../export/telemetry';
import { HookRunner, type ServerApi, type WorkerInfo } from '../hooks/server';
import type { MasterMetrics } from '../metrics/MasterMetrics';
import {
  APP_LOAD_ERROR, BOOT_ENV, TAG, WORKER_BOOT_ERROR, beatPeriodMs, isTagged, murderGraceMs, type BeatMessage, type RelistenMessage, type RetireMessage, type WorkerBoot,
} from '../workers/protocol';
import { jitteredMaxRequests } from '../workers/loop';
import { classifyExit, OomKillCounter } from './exit-reason';
import type { RunnerLog } from '../util/logger';
import { Pidfile } from './pidfile';
import { bindAll, bindOne, closeAll, type Listener } from './sockets';
import { WorkerProcess } from './worker-process';

const WORKER_ENTRY = join(__dirname, '..', 'workers', 'entry.js');
/** env of a master started by USR2: the inherited listening fds (3, 4, …) and the old master's pid */
const LISTEN_FDS_ENV = 'PREFORK_OTEL_LISTEN_FDS';
const OLD_MASTER_ENV = 'PREFORK_OTEL_OLD_MASTER';

type SignalName = 'HUP' | 'TTIN' | 'TTOU' | 'TERM' | 'INT' | 'QUIT' | 'USR1' | 'USR2' | 'WINCH';
const SIGNALS: SignalName[] = ['HUP', 'TTIN', 'TTOU', 'TERM', 'INT', 'QUIT', 'USR1', 'USR2', 'WINCH'];
type Queued = SignalName | 'CHLD';

/** gunicorn_master_signals_total{signal, action}: the action each signal stands for */
export const SIGNAL_ACTIONS: Record<SignalName, string> = {
  HUP: 'reload', TTIN: 'scale_up', TTOU: 'scale_down', TERM: 'graceful_stop', INT: 'fast_stop', QUIT: 'fast_stop',
  USR1: 'reopen_logs', USR2: 'upgrade', WINCH: 'stop_workers',
};

export class Arbiter implements ServerApi {
  readonly pid = process.pid;
  numWorkers: number;
  masterMetrics!: MasterMetrics;
  readonly telemetry: Telemetry;
  readonly aggregator: Aggregator;
  private hooks: HookRunner;
  private readonly workers = new Map<number, WorkerProcess>();
  private listeners: Listener[] = [];
  private metricsServer: MetricsServer | undefined;
  private pidfile: Pidfile | undefined;
  private readonly queue: Queued[] = [];
  private readonly reaped: WorkerProcess[] = [];
  private wakeScheduled = false;
  private processing = false;
  private age = 0;
  private spawning = 0;
  private stopping: 'graceful' | 'fast' | undefined;
  private stopDeadline: NodeJS.Timeout | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  private exitCode = 0;
  private halting = false;
  /** start-up went through (from here on errors are logged, not one-line user errors) */
  private started = false;
  private upgradedTo: ChildProcess | undefined;
  private readonly oom = new OomKillCounter();
  private done!: (code: number) => void;
  private readonly signalHandlers = new Map<SignalName, () => void>();

  /**
   * `argv` (and `cwd`, where it was read): the command line, read again on HUP.
   */
  constructor(private cfg: RunnerConfig, readonly exporter: ExporterConfig, readonly log: RunnerLog, private readonly argv: string[],
    private readonly version: string, private readonly cwd = process.cwd()) {
    this.numWorkers = cfg.workers;
    this.telemetry = new Telemetry(exporter, []);
    otelMetrics.setGlobalMeterProvider(this.telemetry.meterProvider);
    this.aggregator = new Aggregator(exporter.scrapeTimeoutMs, exporter.retentionMs);
    this.hooks = new HookRunner(cfg.hooks, log);
  }

  get meterProvider() {
    return this.telemetry.meterProvider;
  }

  workerInfos(): WorkerInfo[] {
    return [...this.workers.values()];
  }

  retainExited(pid: number): void {
    this.aggregator.exited(pid);
  }

  // ── start and the loop ──────────────────────────────────────────────────────────────────────

  /** Start, then run until halted; resolves with the exit code. */
  run(): Promise<number> {
    const finished = new Promise<number>((resolve) => { this.done = resolve; });
    this.start().catch((e) => this.fail(e));
    return finished;
  }

  /**
   * on_starting, pid file, sockets, metrics endpoint — a user error in any of these is one line on
   * stderr and the exit code, before anything else is logged — then when_ready and the workers.
   */
  private async start(): Promise<void> {
    // the cgroup's OOM-kill count now: a worker SIGKILLed while it rises was killed for memory
    await this.oom.baseline();
    await this.hooks.call('on_starting', this);
    if (this.cfg.pidfile) {
      this.pidfile = new Pidfile(this.cfg.pidfile);
      this.pidfile.create();
    }
    this.listeners = await this.createListeners();
    await this.startMetricsEndpoint();
    this.started = true;
    this.log.info(`Starting prefork-otel ${this.version}`);
    for (const l of this.listeners) this.log.info(`Listening at: ${l.url} (${this.pid})`);
    this.log.info(`Using worker: ${this.cfg.workerClass} (${WORKER_CLASS_NAMES[this.cfg.workerClass]})`);
    if (this.metricsServer) this.log.info(`Metrics at: http://${this.exporter.bindAddress}:${this.metricsServer.port}${this.exporter.metricsPath}`);
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
    if (!inherited) return bindAll(this.cfg.bind);
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
      host: e.bindAddress, port: e.metricsPort, path: e.metricsPath, ref: true,
      gather: async () => serializePrometheus(await this.aggregator.gather(await this.telemetry.collect(), this.sources()), e),
    });
    const oldMaster = Number(process.env[OLD_MASTER_ENV] ?? 0);
    delete process.env[OLD_MASTER_ENV];
    try {
      this.metricsServer = await open();
    } catch (err) {
      if (!(err instanceof ConfigError) || !oldMaster) throw err;
      // started by USR2: the old master still serves the port; take it over when it is released
      this.log.info(`Metrics port ${e.metricsPort} still held by the old master (pid ${oldMaster}); retrying every second`);
      const retry = setInterval(() => {
        if (this.halting) return clearInterval(retry);
        open().then((s) => {
          clearInterval(retry);
          this.metricsServer = s;
          this.log.info(`Metrics at: http://${e.bindAddress}:${s.port}${e.metricsPath}`);
        }, () => undefined);
      }, 1000);
    }
  }

  /**
   * The workers the aggregator asks at scrape time: those that sent a snapshot (a worker sends one
   * before it serves its first request) and not yet their final one.
   */
  private sources(): WorkerLink[] {
    const out: WorkerLink[] = [];
    for (const w of this.workers.values()) if (w.snapshotSeen && !w.finalReceived && w.alive) out.push(w.link);
    return out;
  }

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

  /** the one place signals are handled: in arrival order, each handler finished before the next */
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
    if (sig === 'USR2' && this.upgradedTo) return 'ignored';
    return SIGNAL_ACTIONS[sig];
  }

  /** every tick: kill silent workers, keep the number of workers */
  private tick(): void {
    this.murderWorkers();
    this.manageWorkers();
  }

  // ── signal handlers ─────────────────────────────────────────────────────────────────────────

  /** HUP: reload the configuration and replace every worker gracefully (new ones first) */
  private async handleHup(): Promise<void> {
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
    this.stop(true);
  }

  /** INT: fast stop */
  private handleInt(): void {
    this.stop(false);
  }

  /** QUIT: fast stop */
  private handleQuit(): void {
    this.stop(false);
  }

  /** USR1: reopen the log file */
  private handleUsr1(): void {
    this.log.reopen();
    this.log.info('Log file reopened');
  }

  /** USR2: start a new master (same command line) on the same sockets; this one keeps running */
  private async handleUsr2(): Promise<void> {
    await this.reexec();
  }

  /** WINCH: stop every worker gracefully, keep the master (TTIN brings workers back) */
  private async handleWinch(): Promise<void> {
    await this.setNumWorkers(0);
  }

  /** CHLD: workers exited (queued by their exit events) */
  private async handleChld(): Promise<void> {
    await this.reapWorkers();
    if (this.stopping && this.workers.size === 0) {
      await this.halt(this.exitCode);
      return;
    }
    this.manageWorkers();
  }

  // ── steps ───────────────────────────────────────────────────────────────────────────────────

  private async setNumWorkers(n: number): Promise<void> {
    const old = this.numWorkers;
    this.numWorkers = n;
    await this.hooks.call('nworkers_changed', this, n, old);
    this.manageWorkers();
  }

  /** Keep `numWorkers` workers that are not leaving: spawn the missing, retire the oldest extra. */
  private manageWorkers(): void {
    if (this.stopping || this.halting) return;
    const staying = [...this.workers.values()].filter((w) => !w.retiring && !w.reloadPending).sort((a, b) => a.age - b.age);
    const missing = this.numWorkers - staying.length - this.spawning;
    for (let i = 0; i < missing; i++) void this.spawnWorker();
    for (let i = 0; i < -missing && i < staying.length; i++) this.retire(staying[i]!);
    // a reload whose new workers are all up retires the old ones that are left (fewer workers now)
    const pending = [...this.workers.values()].filter((w) => w.reloadPending);
    if (pending.length > 0 && this.spawning === 0 && ![...this.workers.values()].some((w) => !w.reloadPending && w.state === 'booting')) {
      for (const w of pending) this.retire(w, 'reload');
    }
  }

  /** fork one worker, hand it the sockets */
  private async spawnWorker(): Promise<void> {
    this.spawning++;
    const age = ++this.age;
    let child: ChildProcess;
    try {
      await this.hooks.call('pre_fork', this, { pid: 0, age, bornAt: Date.now(), state: 'booting' });
      if (this.stopping || this.halting) return;
      const c = this.cfg;
      const boot: WorkerBoot = {
        app: c.app, kind: c.workerClass, threads: c.threads, workerConnections: c.workerConnections,
        timeout: c.timeout, abortOnTimeout: c.abortOnTimeout, gracefulTimeout: c.gracefulTimeout, keepAlive: c.keepAlive,
        maxRequests: jitteredMaxRequests(c.maxRequests, c.maxRequestsJitter),
        configFile: c.configFile, procName: c.procName, logLevel: c.logLevel, age,
        binds: this.listeners.length, copies: c.workerClass === 'gthread' ? c.threads : 1, beatMs: beatPeriodMs(c.timeout),
      };
      const toFile = this.log.file !== '-';
      child = fork(WORKER_ENTRY, [], {
        cwd: c.chdir ?? process.cwd(),
        // PREFORK_OTEL_ROLE: a preload inherited through execArgv / NODE_OPTIONS stays out of the way (src/register.ts)
        env: { ...process.env, ...c.rawEnv, PREFORK_OTEL_ROLE: 'runner-worker', [BOOT_ENV]: JSON.stringify(boot) },
        stdio: toFile ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      if (toFile) {
        child.stdout!.on('data', (d: Buffer) => this.log.write(d));
        child.stderr!.on('data', (d: Buffer) => this.log.write(d));
      }
    } finally {
      this.spawning--;
    }
    if (child.pid === undefined) {
      child.once('error', (e) => this.log.error(`cannot fork a worker: ${e.message}`));
      return;
    }
    const link = new WorkerLink(child.pid, child, (snap) => {
      this.aggregator.update(snap);
      w.snapshotSeen = true;
      if (snap.final) w.finalReceived = true;
    });
    const w = new WorkerProcess(child, link, age);
    this.workers.set(w.pid, w);
    // a send to a worker that just died, a failed kill: logged, never fatal to the master
    child.on('error', (e) => this.log.debug(`worker ${w.pid}: ${e.message}`));
    child.on('message', (m: unknown) => this.onWorkerMessage(w, m));
    child.once('exit', (code, signal) => {
      w.exitCode = code;
      w.signal = signal;
      // reap once the IPC channel is drained (a final snapshot sent just before exit arrives first)
      const reap = () => { this.reaped.push(w); this.enqueue('CHLD'); };
      if (!child.connected) return reap();
      const t = setTimeout(reap, 1000);
      child.once('disconnect', () => { clearTimeout(t); reap(); });
    });
    for (let index = 0; index < this.listeners.length; index++) {
      for (let copy = 0; copy < (this.cfg.workerClass === 'gthread' ? this.cfg.threads : 1); copy++) {
        child.send({ [TAG]: 'listen', index, copy }, this.listeners[index]!.handle as never, (e) => {
          if (e) this.log.debug(`worker ${w.pid}: socket not sent (${e.message})`);
        });
      }
    }
    this.log.info(`Booting worker with pid: ${w.pid}`);
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
      if (w.state === 'booting') w.state = 'running';
      // a reload retires one old worker per new worker that is up
      const old = [...this.workers.values()].filter((o) => o.reloadPending && !o.retiring).sort((a, b) => a.age - b.age)[0];
      if (old) this.retire(old, 'reload');
    } else if (isTagged(m, 'retire')) {
      const { reason, signal } = m as RetireMessage;
      if (!w.retiring) {
        w.selfReason = reason;
        this.log.info(`Worker (pid:${w.pid}) is leaving: ${reason}${signal ? ` (${signal})` : ''}`);
      }
      w.retiring = true;
      w.state = 'stopping';
      this.armDeadline(w);
      // max_requests / timeout: the replacement starts now; a signal may be the terminal's Ctrl-C that
      // reaches the master too, so that replacement waits for the exit (and the master's own signal)
      if (reason !== 'signal') this.manageWorkers();
    }
  }

  /** Ask a worker to leave gracefully; `reason`: it is being replaced (reload). */
  private retire(w: WorkerProcess, reason?: WorkerInfo['restartReason']): void {
    if (reason !== undefined && w.restartReason === undefined) w.restartReason = reason;
    if (w.retiring && w.state === 'stopping' && w.deadline) return;
    w.retiring = true;
    w.reloadPending = false;
    w.state = 'stopping';
    w.kill('SIGTERM');
    this.armDeadline(w);
  }

  /** a leaving worker that is still there after --graceful-timeout (+1 s) is killed */
  private armDeadline(w: WorkerProcess): void {
    if (w.deadline) return;
    w.deadline = setTimeout(() => {
      if (!w.alive) return;
      this.log.warning(`Worker (pid:${w.pid}) still running after --graceful-timeout ${this.cfg.gracefulTimeout}s; killing it`);
      w.kill('SIGKILL');
    }, this.cfg.gracefulTimeout * 1000 + 1000);
  }

  /**
   * Workers whose heartbeat is older than --timeout are killed and replaced (reason timeout). With
   * --abort-on-timeout the worker's watchdog aborts it first (it reports reason timeout and its
   * final metrics); the master's kill, a little later, is for a loop JavaScript cannot interrupt.
   */
  private murderWorkers(): void {
    if (this.cfg.timeout <= 0) return;
    const now = Date.now();
    const limit = this.cfg.timeout * 1000 + murderGraceMs(this.cfg.timeout, this.cfg.abortOnTimeout);
    for (const w of this.workers.values()) {
      if (w.state === 'stopping' || !w.alive || now - w.lastBeat <= limit) continue;
      this.log.critical(`WORKER TIMEOUT (pid:${w.pid})`);
      if (!this.stopping) w.restartReason = 'timeout';
      w.state = 'stopping';
      w.retiring = true;
      // gunicorn runs worker_abort in the worker on SIGABRT; a Node worker whose event loop is
      // blocked cannot run JavaScript, so the hook runs here, before the kill
      void this.hooks.call('worker_abort', w);
      w.kill('SIGKILL');
    }
  }

  /** exited workers → child_exit (restart recorded, final series retained), forget them */
  private async reapWorkers(): Promise<void> {
    while (this.reaped.length > 0) {
      const w = this.reaped.shift()!;
      if (!this.workers.has(w.pid)) continue;
      this.workers.delete(w.pid);
      clearTimeout(w.deadline);
      w.link.close();
      const { exitCode: code, signal } = w;
      if (w.state === 'booting' && (code === WORKER_BOOT_ERROR || code === APP_LOAD_ERROR)) {
        this.log.error(`Worker (pid:${w.pid}) failed to boot (exit code ${code})`);
        void this.halt(code, code === APP_LOAD_ERROR ? 'App failed to load.' : 'Worker failed to boot.');
      }
      if (this.stopping || this.halting) {
        w.restartReason = undefined;
      } else if (w.restartReason === undefined && !w.reloadPending) {
        if (w.selfReason !== undefined) w.restartReason = w.selfReason;
        else if (!w.retiring) {
          const oomRose = signal === 'SIGKILL' && await this.oom.increased();
          w.restartReason = classifyExit(code ?? null, signal ?? null, oomRose);
        }
      } else if (w.reloadPending && w.restartReason === undefined) {
        // an old worker that died before the reload retired it: replaced by the reload anyway
        w.restartReason = classifyExit(code ?? null, signal ?? null, false);
      }
      if (signal) {
        const hint = signal === 'SIGKILL' && w.restartReason !== 'timeout' ? ' Perhaps out of memory?' : '';
        (w.restartReason && w.restartReason !== 'reload' && w.restartReason !== 'max_requests' ? this.log.error : this.log.info)
          .call(this.log, `Worker (pid:${w.pid}) was sent ${signal}!${hint}`);
      } else if (code !== 0) {
        this.log.error(`Worker (pid:${w.pid}) exited with code ${code}`);
      } else {
        this.log.info(`Worker exiting (pid: ${w.pid})`);
      }
      await this.hooks.call('child_exit', this, w);
    }
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
    for (const w of this.workers.values()) if (!w.retiring) w.reloadPending = true;
    if (workers !== this.numWorkers) await this.setNumWorkers(workers);
    else this.manageWorkers();
  }

  /** USR2: a new master on the same sockets (fds 3, 4, …), gunicorn's reexec; this pid file becomes .oldbin */
  private async reexec(): Promise<void> {
    if (this.upgradedTo) {
      this.log.warning(`USR2 ignored: already upgraded (new master pid ${this.upgradedTo.pid})`);
      return;
    }
    await this.hooks.call('pre_exec', this);
    if (this.pidfile) this.pidfile.rename(`${this.pidfile.path}.oldbin`);
    const fds = this.listeners.map((l) => l.handle.fd);
    const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
      stdio: ['inherit', 'inherit', 'inherit', ...fds],
      env: { ...process.env, [LISTEN_FDS_ENV]: fds.map((_, i) => String(3 + i)).join(','), [OLD_MASTER_ENV]: String(this.pid) },
    });
    child.unref();
    this.upgradedTo = child;
    this.log.info(`Upgrade: started a new master, pid ${child.pid}`);
  }

  /** TERM (graceful) / INT, QUIT (fast): stop every worker, then halt */
  stop(graceful: boolean): void {
    if (this.stopping === 'fast' || (this.stopping === 'graceful' && graceful)) return;
    this.stopping = graceful ? 'graceful' : 'fast';
    clearInterval(this.tickTimer);
    // the master's copies of the sockets; workers still hold theirs until they leave
    closeAll(this.listeners, !this.upgradedTo);
    this.listeners = [];
    const sig: NodeJS.Signals = graceful ? 'SIGTERM' : 'SIGQUIT';
    for (const w of this.workers.values()) {
      w.retiring = true;
      w.state = 'stopping';
      w.kill(sig);
    }
    clearTimeout(this.stopDeadline);
    this.stopDeadline = setTimeout(() => {
      for (const w of this.workers.values()) w.kill('SIGKILL');
    }, this.cfg.gracefulTimeout * 1000);
    if (this.workers.size === 0) void this.halt(this.exitCode);
  }

  /** stop everything and exit with `code` */
  private async halt(code: number, reason?: string): Promise<void> {
    if (reason) this.log.info(`Reason: ${reason}`);
    if (code !== 0) this.exitCode = code;
    if (this.workers.size > 0) {
      this.stop(code === 0);
      return;
    }
    if (this.halting) return;
    this.halting = true;
    clearInterval(this.tickTimer);
    clearTimeout(this.stopDeadline);
    if (this.started) this.log.info('Shutting down: Master');
    await this.hooks.call('on_exit', this);
    for (const [name, h] of this.signalHandlers) process.off(`SIG${name}`, h);
    await this.metricsServer?.close();
    await this.telemetry.shutdown();
    closeAll(this.listeners, !this.upgradedTo);
    this.pidfile?.unlink();
    this.done(this.exitCode);
  }

  /** an error while starting (port in use, …) or a bug: stop the workers and exit */
  private fail(e: unknown): void {
    if (e instanceof ConfigError) {
      process.stderr.write(e.message + '\n');
      this.exitCode = e.exitCode;
    } else {
      this.log.critical(`master failed: ${(e as Error)?.stack ?? e}`);
      this.exitCode = 1;
    }
    if (this.workers.size > 0) this.stop(false);
    else void this.halt(this.exitCode);
  }
}
