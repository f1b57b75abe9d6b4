import { DataPointType, type ResourceMetrics, type ScopeMetrics } from '@opentelemetry/sdk-metrics';
import { mergeScopeMetrics } from './merge';
import type { Snapshot } from './snapshot';

/** A live worker the aggregator can ask for a fresh snapshot. */
export interface SnapshotSource {
  readonly pid: number;
  /** ask for a snapshot; resolves when it arrives (the aggregator applies the deadline) */
  request(): Promise<Snapshot | undefined>;
}

interface Entry {
  snap: Snapshot;
  /** Date.now() when the worker exited; undefined while alive */
  exitedAt?: number;
}

/** Only counters and histograms of an exited worker are kept (its gauges describe a dead process). */
export function cumulativeOnly(scopes: ScopeMetrics[]): ScopeMetrics[] {
  return scopes.map((sm) => ({
    scope: sm.scope,
    metrics: sm.metrics.filter((m) => m.dataPointType === DataPointType.HISTOGRAM
      || (m.dataPointType === DataPointType.SUM && m.isMonotonic)),
  }));
}

/**
 * The master's view of its workers' metrics. Each worker's latest snapshot is kept (pushed every few
 * seconds, and asked for at scrape time); a scrape waits at most `deadlineMs` for fresh answers and
 * uses the last snapshot of any worker that did not answer in time, so one blocked or dying worker
 * never fails or stalls the scrape. An exited worker's final counters and histograms stay for
 * `retentionMs`, so no increment between two scrapes is lost. Series carry worker_id: nothing is
 * summed, nothing collides.
 */
export class Aggregator {
  private readonly entries = new Map<number, Entry>();
  constructor(public deadlineMs: number, public retentionMs: number) {}

  /** A snapshot arrived (pushed, answered, or final). Older snapshots never replace newer ones. */
  update(snap: Snapshot): void {
    const prev = this.entries.get(snap.pid);
    if (prev && prev.snap.time > snap.time && !snap.final) return;
    this.entries.set(snap.pid, { snap, exitedAt: prev?.exitedAt ?? (snap.final ? Date.now() : undefined) });
  }

  /** The worker `pid` exited: keep its last counters and histograms for the retention window. */
  exited(pid: number): void {
    const e = this.entries.get(pid);
    if (e && e.exitedAt === undefined) e.exitedAt = Date.now();
  }

  /** pids with a snapshot held (alive or retained) */
  pids(): number[] {
    return [...this.entries.keys()];
  }

  lastSnapshot(pid: number): Snapshot | undefined {
    return this.entries.get(pid)?.snap;
  }

  /** Ask every live source, wait until all answered or the deadline passed, and merge. */
  async gather(local: ResourceMetrics, sources: readonly SnapshotSource[]): Promise<ResourceMetrics> {
    if (sources.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((r) => { timer = setTimeout(r, this.deadlineMs); });
      const answers = Promise.allSettled(sources.map((s) => s.request().then((snap) => { if (snap) this.update(snap); })));
      await Promise.race([answers, deadline]);
      clearTimeout(timer);
    }
    return this.merge(local);
  }

  /** local metrics + every held snapshot, each metric name once. */
  merge(local: ResourceMetrics): ResourceMetrics {
    const now = Date.now();
    const sources: ScopeMetrics[][] = [local.scopeMetrics];
    for (const [pid, e] of this.entries) {
      if (e.exitedAt !== undefined) {
        if (now - e.exitedAt > this.retentionMs) {
          this.entries.delete(pid);
          continue;
        }
        sources.push(cumulativeOnly(e.snap.scopeMetrics));
      } else {
        sources.push(e.snap.scopeMetrics);
      }
    }
    return { resource: local.resource, scopeMetrics: mergeScopeMetrics(sources) };
  }
}
