/**
 * PROMETHEUS_MULTIPROC_DIR: for processes no master of ours supervises (PM2 cluster mode, several
 * processes sharing a volume). Each process writes its snapshot to its own file in the directory,
 * atomically (write a temporary file, then rename), every snapshot interval and at exit; whoever
 * serves the endpoint reads every file and serves their union.
 *
 * Like prometheus_client's multiprocess mode: the files of a dead process stay, with its counters and
 * histograms (so totals never go down) but without its gauges (`mark_process_dead` removes the live
 * gauge files); a process that gets the pid of a dead one continues its counters instead of starting
 * them again from zero. Wipe the directory when a deployment starts, as upstream asks.
 *
 * A file is named `<instance>_<pid>.json`, where the instance is the host name plus the pid namespace:
 * two containers sharing a volume may both run pid 1. Whether a pid is alive can only be checked for
 * files of the reader's own instance; a file of another instance not rewritten for three snapshot
 * intervals plus 30 s is treated as ended (its gauges are not served) without being rewritten.
 */
import { readFileSync, readlinkSync, renameSync, writeFileSync } from 'node:fs';
import { readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Resource } from '@opentelemetry/resources';
import type { ResourceMetrics, ScopeMetrics } from '@opentelemetry/sdk-metrics';
import { cumulativeOnly, mergeScopeMetrics } from './merge';
import { freshenSnapshot, isSnapshot, toSnapshot, type Snapshot } from './snapshot';
import { serializePrometheus } from './serializer';
import { pidAlive } from '../util/pid';

export interface MultiprocFile {
  format: 'prefork-otel-multiproc/1';
  /** host name + pid namespace: pids compare only within one instance */
  instance: string;
  pid: number;
  /** how often the writer rewrites its file */
  intervalMs: number;
  /** Date.now() of this write */
  writtenAt: number;
  /** the process has ended: only its counters and histograms remain */
  dead?: true;
  snapshot: Snapshot;
}

let instance: string | undefined;

/** This machine / container: host name plus the pid namespace (Linux), e.g. `web-1.4026531836`. */
export function processInstance(): string {
  if (instance === undefined) {
    let ns = '';
    try {
      ns = /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'))?.[1] ?? '';
    } catch { /* not Linux */ }
    instance = (hostname() + (ns ? `.${ns}` : '')).replace(/[^A-Za-z0-9.-]/g, '-');
  }
  return instance;
}

export function multiprocFileName(pid: number, inst = processInstance()): string {
  return `${inst}_${pid}.json`;
}

function parseFile(text: string): MultiprocFile | undefined {
  try {
    const f = JSON.parse(text) as MultiprocFile;
    if (f && f.format === 'prefork-otel-multiproc/1' && typeof f.pid === 'number' && typeof f.instance === 'string' && isSnapshot(f.snapshot)) return f;
  } catch { /* not ours, or not JSON */ }
  return undefined;
}


let tmpSeq = 0;
function tmpName(dir: string, name: string): string {
  return join(dir, `.${name}.${process.pid}.${++tmpSeq}.tmp`);
}

/** Write `f` as `name` in `dir` atomically (readers see the old file or the new one, never a part). */
async function writeAtomic(dir: string, name: string, f: MultiprocFile): Promise<void> {
  const tmp = tmpName(dir, name);
  try {
    await writeFile(tmp, JSON.stringify(f));
    await rename(tmp, join(dir, name));
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

function writeAtomicSync(dir: string, name: string, f: MultiprocFile): void {
  const tmp = tmpName(dir, name);
  writeFileSync(tmp, JSON.stringify(f));
  renameSync(tmp, join(dir, name));
}

/** mark_process_dead: keep the counters and histograms of an ended process, drop its gauges. */
export function deadVersion(f: MultiprocFile): MultiprocFile {
  return { ...f, dead: true, snapshot: { ...f.snapshot, scopeMetrics: cumulativeOnly(f.snapshot.scopeMetrics), final: true } };
}

/** Writes this process's snapshots to its file in the directory. */
export class MultiprocWriter {
  readonly name: string;
  /** the last snapshot collected (a synchronous exit freshens it) */
  last: Snapshot | undefined;
  /** counters and histograms left in our file by an ended process with our pid */
  private base: ScopeMetrics[] = [];
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(readonly dir: string, private readonly collect: () => Promise<ResourceMetrics>, readonly intervalMs: number,
    readonly pid = process.pid) {
    this.name = multiprocFileName(pid);
  }

  /** Take over what an earlier process with this pid left (start-up, so read synchronously), write now and every interval. */
  start(): this {
    try {
      const prev = parseFile(readFileSync(join(this.dir, this.name), 'utf8'));
      if (prev) this.base = cumulativeOnly(prev.snapshot.scopeMetrics);
    } catch { /* no earlier file */ }
    void this.write().catch(() => undefined);
    this.timer = setInterval(() => void this.write().catch(() => undefined), this.intervalMs).unref();
    return this;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private file(snap: Snapshot): MultiprocFile {
    const scopeMetrics = this.base.length > 0 ? mergeScopeMetrics([this.base, snap.scopeMetrics], true) : snap.scopeMetrics;
    return {
      format: 'prefork-otel-multiproc/1', instance: processInstance(), pid: this.pid, intervalMs: this.intervalMs,
      writtenAt: Date.now(), snapshot: { ...snap, scopeMetrics },
    };
  }

  /** Collect (or take `rm`) and write; writes are queued so an older one never lands after a newer one. */
  write(rm?: ResourceMetrics): Promise<void> {
    const next = this.chain.then(async () => {
      const snap = toSnapshot(rm ?? await this.collect(), this.pid);
      this.last = snap;
      await writeAtomic(this.dir, this.name, this.file(snap));
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  /** At `process.exit()`: the last snapshot with `fresh` (read synchronously) in it, written synchronously, as ended. */
  writeFinalSync(fresh: ScopeMetrics): void {
    this.stop();
    writeAtomicSync(this.dir, this.name, deadVersion(this.file(freshenSnapshot(this.last, fresh, this.pid))));
  }
}

/** A file of another instance not rewritten for 3 intervals + 30 s is taken as ended (busy machines lag). */
const STALE_AFTER_INTERVALS = 3;
const STALE_GRACE_MS = 30_000;

/** Reads the directory: the union of every process's file; marks the files of ended processes. */
export class MultiprocReader {
  constructor(readonly dir: string) {}

  /** Each file's scope metrics (gauges only for live processes). `skip`: a file name to leave out. */
  async sources(skip?: string): Promise<ScopeMetrics[][]> {
    const names = (await readdir(this.dir)).filter((n) => n.endsWith('.json') && !n.startsWith('.') && n !== skip);
    const own = processInstance();
    const now = Date.now();
    const out: ScopeMetrics[][] = [];
    await Promise.all(names.map(async (name) => {
      const f = parseFile(await readFile(join(this.dir, name), 'utf8').catch(() => ''));
      if (!f) return;
      if (f.dead) {
        out.push(f.snapshot.scopeMetrics);
        return;
      }
      if (f.instance === own) {
        if (pidAlive(f.pid)) {
          out.push(f.snapshot.scopeMetrics);
        } else {
          const dead = deadVersion(f);
          out.push(dead.snapshot.scopeMetrics);
          await writeAtomic(this.dir, name, dead).catch(() => undefined);
        }
        return;
      }
      // another host / container: its pids mean nothing here; a file not rewritten for a while is taken as ended
      const stale = now - f.writtenAt > STALE_AFTER_INTERVALS * f.intervalMs + STALE_GRACE_MS;
      out.push(stale ? cumulativeOnly(f.snapshot.scopeMetrics) : f.snapshot.scopeMetrics);
    }));
    return out;
  }

  /** The union of the directory (plus `extra` sources), each metric once; equal series are added up. */
  async union(extra: ScopeMetrics[][] = [], skip?: string): Promise<ScopeMetrics[]> {
    return mergeScopeMetrics([...extra, ...await this.sources(skip)], true);
  }

  /** The exposition text of the union, with `resource` (the serving process's) as target_info. */
  async scrape(resource: Resource, opts: { targetInfo: boolean }): Promise<string> {
    return serializePrometheus({ resource, scopeMetrics: await this.union() }, opts);
  }
}

