/**
 * The scrape hub: the one place a master (the runner's arbiter, a node:cluster primary under the
 * preload) and a single process turn "what every process counted" into one scrape.
 *
 * It owns, for every worker: the IPC link (`attach`), the last snapshot, and its retention after the
 * worker exited (`workerExited`, called by the reaper). At scrape time it asks every live worker for a
 * fresh snapshot, waits until all answered or `deadlineMs` passed (the last snapshot of any worker
 * that did not answer is used, so one blocked or dying worker never fails or stalls the scrape),
 * applies the union-wide endpoint cap (src/export/fold.ts), merges everything so each metric name
 * appears once, adds its own health metrics and serialises the union once. Concurrent scrapes share
 * the one collection in flight.
 *
 * Bounds (docs/metrics.md has the formula): at most `maxEndpoints` endpoint values over the whole union;
 * an exited worker's counters and histograms are kept for `retentionMs` and for at most `maxRetained`
 * exited workers at a time (the oldest exit goes first). Each snapshot is applied exactly once: when
 * it arrives on the link, whether pushed or answering a collect.
 */
import { ValueType, type Attributes } from '@opentelemetry/api';
import {
  AggregationTemporality, DataPointType, type DataPoint, type MetricData, type ResourceMetrics, type ScopeMetrics,
} from '@opentelemetry/sdk-metrics';
import { HEALTH, M, OVERFLOW_REASONS, SCOPE, type OverflowReason } from '../metrics/contract';
import { nowHrTime } from '../metrics/store';
import { EndpointUnion, foldOwner, type FoldOwner } from './fold';
import { WorkerLink, type IpcEndpoint } from './ipc';
import { cumulativeOnly, mergeScopeMetrics } from './merge';
import { serializePrometheus, type LineCache } from './serializer';
import type { Snapshot } from './snapshot';

export interface HubOptions {
  /** PREFORK_OTEL_SCRAPE_TIMEOUT: how long a scrape waits for fresh answers */
  deadlineMs: number;
  /** PREFORK_OTEL_RETENTION: how long an exited worker's counters and histograms stay */
  retentionMs: number;
  /** PREFORK_OTEL_MAX_RETAINED: how many exited workers are kept at most */
  maxRetained: number;
  /** PREFORK_OTEL_MAX_ENDPOINTS: distinct endpoint values over the whole union */
  maxEndpoints: number;
  /** PREFORK_OTEL_TARGET_INFO */
  targetInfo: boolean;
  /**
   * while this process serves requests itself (a single process, a cluster primary before its first
   * fork): its worker_id, reported with snapshot age 0 (it always answers itself). Its own series are
   * never folded (its EndpointPolicy is the cap there); undefined: a master that serves no requests
   */
  selfWorkerId?: () => string | undefined;
  /** clock (tests) */
  now?: () => number;
}

/** The hub's settings from the exporter configuration. */
export function hubOptions(c: {
  scrapeTimeoutMs: number; retentionMs: number; maxRetained: number; maxEndpoints: number; targetInfo: boolean;
}, extra: Partial<HubOptions> = {}): HubOptions {
  return {
    deadlineMs: c.scrapeTimeoutMs, retentionMs: c.retentionMs, maxRetained: c.maxRetained, maxEndpoints: c.maxEndpoints,
    targetInfo: c.targetInfo, ...extra,
  };
}

interface Entry {
  readonly pid: number;
  link?: WorkerLink;
  channel?: IpcEndpoint;
  /** the last snapshot as received */
  snap?: Snapshot;
  /** what is served for it: the snapshot after the union fold (cumulative only once exited) */
  view?: ScopeMetrics[];
  /** data points of `view` (the series it contributes) */
  points: number;
  /** points folded at the cap / for length / dropped, in the current view (they only grow) */
  folded: { capped: number; tooLong: number; dropped: number };
  /** its fold decisions (fixed while it is held) */
  readonly owner: FoldOwner;
  /** the scrape (sequence number) it last answered */
  answered: number;
  final: boolean;
  /** Date.now() when it exited; undefined while alive */
  exitedAt?: number;
}

/** What the hub last knew of a worker: for the one line the master logs when it dies. */
export interface WorkerSummary {
  /** gunicorn_worker_requests_total summed over its series */
  requests: number;
  rssBytes?: number;
  cpuPercent?: number;
  uptimeSeconds?: number;
  /** requests in flight when the snapshot was taken (when the worker reports it) */
  inFlight?: number;
  /** seconds between that snapshot and now */
  ageSeconds: number;
}

function pointSum(scopes: ScopeMetrics[], name: string): number | undefined {
  let total: number | undefined;
  for (const sm of scopes) {
    for (const m of sm.metrics) {
      if (m.descriptor.name !== name || m.dataPointType === DataPointType.HISTOGRAM) continue;
      for (const p of m.dataPoints as DataPoint<number>[]) total = (total ?? 0) + p.value;
    }
  }
  return total;
}

function countPoints(scopes: ScopeMetrics[]): number {
  let n = 0;
  for (const sm of scopes) for (const m of sm.metrics) n += m.dataPoints.length;
  return n;
}

function gauge(d: { name: string; help: string; unit: string }, points: DataPoint<number>[]): MetricData {
  return {
    descriptor: { name: d.name, description: d.help, unit: d.unit, valueType: ValueType.DOUBLE },
    aggregationTemporality: AggregationTemporality.CUMULATIVE,
    dataPointType: DataPointType.GAUGE,
    dataPoints: points,
  };
}

export class ScrapeHub {
  private readonly entries = new Map<number, Entry>();
  private readonly union: EndpointUnion;
  private readonly now: () => number;
  private readonly overflow = new Map<OverflowReason, number>(OVERFLOW_REASONS.map((r) => [r, 0]));
  private readonly startTime = nowHrTime();
  private scrapeSeq = 0;
  private inFlight: Promise<string> | undefined;
  private collecting: Promise<ResourceMetrics> | undefined;
  /** the text of points that did not change since the last scrape (kept by the snapshot deltas) */
  private readonly lineCache: LineCache = new WeakMap();

  constructor(readonly opts: HubOptions) {
    this.union = new EndpointUnion(opts.maxEndpoints);
    this.now = opts.now ?? Date.now;
  }

  // ── workers ──────────────────────────────────────────────────────────────────────────────────

  /**
   * A worker was forked: link to it over `channel` (a ChildProcess, a cluster worker's process, or an
   * internalChannel). Its snapshots are applied as they arrive; it is asked at every scrape once it
   * sent its first one, until its final one.
   */
  attach(pid: number, channel: IpcEndpoint): WorkerLink {
    const old = this.entries.get(pid);
    if (old) {
      // the pid was reused while the old process's series were retained: same worker_id, so they go
      if (old.exitedAt !== undefined) this.count('retained_workers', old.points);
      old.link?.close();
      this.forget(old);
    }
    const entry: Entry = { pid, channel, points: 0, folded: { capped: 0, tooLong: 0, dropped: 0 }, owner: foldOwner(), answered: 0, final: false };
    // a late snapshot of a worker already forgotten (or replaced under the same pid) is not applied
    entry.link = new WorkerLink(pid, channel, (s) => { if (this.entries.get(pid) === entry) this.update(s); });
    this.entries.set(pid, entry);
    return entry.link;
  }

  /**
   * A snapshot arrived (pushed, answering a collect, or final): applied once. An older snapshot never
   * replaces a newer one; after a final one, nothing does.
   */
  update(snap: Snapshot): void {
    let e = this.entries.get(snap.pid);
    if (!e) {
      e = { pid: snap.pid, points: 0, folded: { capped: 0, tooLong: 0, dropped: 0 }, owner: foldOwner(), answered: 0, final: false };
      this.entries.set(snap.pid, e);
    }
    // a final snapshot always wins (a worker may send a freshened one after an earlier final); after one, only finals
    if (!snap.final && (e.final || (e.snap && e.snap.time > snap.time))) return;
    e.snap = snap;
    if (snap.final) e.final = true;
    this.applyView(e);
  }

  private applyView(e: Entry): void {
    const scopes = e.exitedAt !== undefined ? cumulativeOnly(e.snap!.scopeMetrics) : e.snap!.scopeMetrics;
    const r = this.union.fold(scopes, e.owner);
    e.view = r.scopes;
    // a worker's series are cumulative and their fold is sticky: these counts only grow per worker
    this.count('endpoint_cap', Math.max(0, r.capped - e.folded.capped));
    this.count('endpoint_length', Math.max(0, r.tooLong - e.folded.tooLong));
    this.count('unfoldable', Math.max(0, r.dropped - e.folded.dropped));
    e.folded = { capped: Math.max(r.capped, e.folded.capped), tooLong: Math.max(r.tooLong, e.folded.tooLong), dropped: Math.max(r.dropped, e.folded.dropped) };
    e.points = countPoints(e.view);
  }

  private count(reason: OverflowReason, n: number): void {
    if (n > 0) this.overflow.set(reason, this.overflow.get(reason)! + n);
  }

  /**
   * The worker `pid` exited (the reaper calls this): it is no longer asked; its last counters and
   * histograms stay for the retention window (its gauges describe a dead process and go). A final
   * snapshot still in the IPC pipe is applied when it arrives; the link closes once the channel has.
   */
  workerExited(pid: number): void {
    const e = this.entries.get(pid);
    if (!e) return;
    if (e.exitedAt !== undefined) return;
    e.exitedAt = this.now();
    if (e.snap) this.applyView(e);
    const link = e.link;
    const ch = e.channel;
    const close = () => {
      link?.close();
      // a retained worker holds nothing of its process any more
      e.link = undefined;
      e.channel = undefined;
    };
    if (!ch || ch.connected === false || typeof ch.once !== 'function') {
      close();
    } else {
      const t = setTimeout(close, 1000);
      t.unref?.();
      ch.once('disconnect', () => { clearTimeout(t); close(); });
    }
    this.enforceRetention();
  }

  /** drop exited workers past the retention time, then the oldest beyond the count bound */
  private enforceRetention(): void {
    const now = this.now();
    const exited: Entry[] = [];
    for (const [pid, e] of this.entries) {
      if (e.exitedAt === undefined) continue;
      if (now - e.exitedAt > this.opts.retentionMs || !e.snap) {
        this.forget(e);
        continue;
      }
      exited.push(e);
    }
    if (exited.length <= this.opts.maxRetained) return;
    exited.sort((a, b) => a.exitedAt! - b.exitedAt!);
    for (const e of exited.slice(0, exited.length - this.opts.maxRetained)) {
      this.count('retained_workers', e.points);
      this.forget(e);
    }
  }

  /** the entry goes: its endpoint values free their places in the union */
  private forget(e: Entry): void {
    this.entries.delete(e.pid);
    this.union.release(e.owner);
  }

  /** pids held: live workers and retained exited ones */
  pids(): number[] {
    return [...this.entries.keys()];
  }

  /** pids of retained exited workers */
  retainedPids(): number[] {
    return [...this.entries.values()].filter((e) => e.exitedAt !== undefined).map((e) => e.pid);
  }

  lastSnapshot(pid: number): Snapshot | undefined {
    return this.entries.get(pid)?.snap;
  }

  /** how many endpoint values the union has admitted */
  get admittedEndpoints(): number {
    return this.union.size;
  }

  /** series folded or dropped so far, by reason */
  overflowCounts(): Record<OverflowReason, number> {
    return Object.fromEntries(this.overflow) as Record<OverflowReason, number>;
  }

  /** What the last snapshot of `pid` says (undefined: none arrived). */
  summary(pid: number): WorkerSummary | undefined {
    const s = this.entries.get(pid)?.snap;
    if (!s) return undefined;
    const sm = s.scopeMetrics;
    return {
      requests: pointSum(sm, M.requestsTotal.name) ?? 0,
      rssBytes: pointSum(sm, M.memoryBytes.name),
      cpuPercent: pointSum(sm, M.cpuPercent.name),
      uptimeSeconds: pointSum(sm, M.uptimeSeconds.name),
      inFlight: s.inFlight,
      ageSeconds: Math.max(0, (this.now() - s.time) / 1000),
    };
  }

  // ── one scrape ───────────────────────────────────────────────────────────────────────────────

  /** Live workers the scrape asks: sent a snapshot, not yet their final one, not exited, still connected. */
  private askable(): Entry[] {
    const out: Entry[] = [];
    for (const e of this.entries.values()) {
      if (e.link && e.snap && !e.final && e.exitedAt === undefined && e.channel?.connected !== false) out.push(e);
    }
    return out;
  }

  /** Ask every live worker, wait until all answered or the deadline passed. */
  private async gather(seq: number): Promise<void> {
    const ask = this.askable();
    if (ask.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((r) => { timer = setTimeout(r, this.opts.deadlineMs); });
    // the answer is applied by the link (update) as it arrives; here only "answered in time" is noted
    const answers = Promise.allSettled(ask.map((e) => e.link!.request().then((snap) => { if (snap) e.answered = seq; })));
    await Promise.race([answers, deadline]);
    clearTimeout(timer);
  }

  /**
   * One collection: the local metrics (`local()`: this process's own), every worker's (fresh or last),
   * merged, with the hub's health metrics. Concurrent calls share the collection in flight.
   */
  collect(local: () => Promise<ResourceMetrics>): Promise<ResourceMetrics> {
    return (this.collecting ??= this.collectOnce(local).finally(() => { this.collecting = undefined; }));
  }

  private async collectOnce(local: () => Promise<ResourceMetrics>): Promise<ResourceMetrics> {
    const t0 = performance.now();
    const seq = ++this.scrapeSeq;
    const [own] = await Promise.all([local(), this.gather(seq)]);
    return this.merge(own, seq, (performance.now() - t0) / 1000);
  }

  /** The exposition text of one scrape; concurrent scrapes share one collection and one text. */
  scrape(local: () => Promise<ResourceMetrics>): Promise<string> {
    return (this.inFlight ??= this.collect(local)
      .then((rm) => serializePrometheus(rm, this.opts, this.lineCache))
      .finally(() => { this.inFlight = undefined; }));
  }

  /** local metrics + every held worker's view + health, each metric name once. */
  merge(local: ResourceMetrics, seq = this.scrapeSeq, seconds = 0): ResourceMetrics {
    this.enforceRetention();
    const sources: ScopeMetrics[][] = [local.scopeMetrics];
    const now = this.now();
    const ages: DataPoint<number>[] = [];
    const endTime = nowHrTime();
    const pt = (attributes: Attributes, value: number): DataPoint<number> => ({ startTime: this.startTime, endTime, attributes, value });
    const self = this.opts.selfWorkerId?.();
    if (self !== undefined) ages.push(pt({ worker_id: self }, 0));
    for (const e of this.entries.values()) {
      if (!e.view) continue;
      sources.push(e.view);
      if (e.exitedAt === undefined && e.snap) {
        ages.push(pt({ worker_id: String(e.pid) }, e.answered === seq ? 0 : Math.max(0, (now - e.snap.time) / 1000)));
      }
    }
    const overflow: DataPoint<number>[] = [...this.overflow].map(([reason, n]) => pt({ reason }, n));
    sources.push([{
      scope: { ...SCOPE },
      metrics: [
        gauge(HEALTH.scrapeDuration, [pt({}, seconds)]),
        gauge(HEALTH.snapshotAge, ages),
        {
          descriptor: { name: HEALTH.seriesOverflow.name, description: HEALTH.seriesOverflow.help, unit: '', valueType: ValueType.DOUBLE },
          aggregationTemporality: AggregationTemporality.CUMULATIVE,
          dataPointType: DataPointType.SUM,
          isMonotonic: true,
          dataPoints: overflow,
        } as MetricData,
      ].filter((m) => m.dataPoints.length > 0),
    }]);
    return { resource: local.resource, scopeMetrics: mergeScopeMetrics(sources) };
  }
}

/** `12.3s`, `4m05s`, `2h03m` */
function duration(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m}m${String(Math.floor(seconds % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/**
 * The one line a master logs when a worker has died, from the hub's last snapshot of it, e.g.
 * `Worker (pid:4242) exited: signal SIGKILL, uptime 12.3s, 1804 requests served, last RSS 61.2 MB,
 * CPU 12.5%, 3 in flight (last snapshot 0.4s old)`.
 */
export function workerExitLine(pid: number, exit: { code?: number | null; signal?: string | null; bornAt?: number },
  s: WorkerSummary | undefined, now = Date.now()): string {
  const how = exit.signal ? `signal ${exit.signal}` : `code ${exit.code ?? 'unknown'}`;
  const up = exit.bornAt !== undefined ? (now - exit.bornAt) / 1000 : s?.uptimeSeconds;
  const parts = [how, `uptime ${up !== undefined ? duration(up) : 'unknown'}`];
  if (!s) {
    parts.push('no snapshot received (requests served, RSS, CPU and in-flight unknown)');
  } else {
    parts.push(`${s.requests} requests served`);
    parts.push(`last RSS ${s.rssBytes !== undefined ? `${(s.rssBytes / 1e6).toFixed(1)} MB` : 'unknown'}`);
    parts.push(`CPU ${s.cpuPercent !== undefined ? `${s.cpuPercent.toFixed(1)}%` : 'unknown'}`);
    parts.push(`${s.inFlight !== undefined ? s.inFlight : 'unknown'} in flight (last snapshot ${s.ageSeconds.toFixed(1)}s old)`);
  }
  return `Worker (pid:${pid}) exited: ${parts.join(', ')}`;
}
