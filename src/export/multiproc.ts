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
 *
 * The directory is untrusted input (other processes and users may leave anything in it):
 *  - at start, the directory must be ours, or sticky (like /tmp): see checkMultiprocDir;
 *  - a file is opened with O_RDONLY|O_NONBLOCK|O_NOFOLLOW (a symlink fails with ELOOP, a FIFO opens
 *    without waiting for a writer), fstat'ed, and read only if it is a regular file of at most
 *    MAX_FILE_BYTES; the reads of one scrape run at most READ_CONCURRENCY at a time and are abandoned
 *    after the scrape's read deadline (the file's last good contents are served instead); every file
 *    system operation of the reader takes one of IO_SLOTS slots and keeps it until it settles, so the
 *    directory can never hold more than IO_SLOTS of the pool's threads (UV_THREADPOOL_SIZE, default 4);
 *  - the content is validated completely (validateFile) before it is merged: a bad file costs that
 *    file only, with one warning naming it (rate-limited), never the scrape;
 *  - temporary files are created with O_CREAT|O_EXCL|O_NOFOLLOW under an unpredictable name, with the
 *    mode the umask gives, and renamed into place.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync, constants as FS, fstatSync, lstatSync, mkdirSync, openSync, readSync, readlinkSync, renameSync, statSync,
  unlinkSync, watch, writeSync, type FSWatcher, type Stats,
} from 'node:fs';
import { open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Resource } from '@opentelemetry/resources';
import type { ResourceMetrics, ScopeMetrics } from '@opentelemetry/sdk-metrics';
import { ConfigError } from '../config';
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

/** A file larger than this is skipped unread (a file of 500 endpoints × 4 methods is ≈ 2 MiB). */
export const MAX_FILE_BYTES = 16 * 1024 * 1024;
/** At most this many `*.json` files are read per scrape (the rest are skipped with a warning). */
export const MAX_FILES = 10_000;
/** Files read at the same time during one scrape. */
export const READ_CONCURRENCY = 2;
/**
 * File system operations on the directory (readdir, reads, dead-marking rewrites) in flight at once, over
 * all scrapes, abandoned ones included: an operation holds its slot until it settles, even after its
 * scrape's deadline gave up on it. So the directory never holds more than this many libuv threadpool
 * threads, whatever hangs in it.
 */
export const IO_SLOTS = 2;
/** Default deadline for reading the whole directory in one scrape. */
export const DEFAULT_READ_DEADLINE_MS = 1000;

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

// ---------------------------------------------------------------------------------------------
// warnings: one line per problem, rate-limited

/** The same key warns at most once per this many ms; at most WARN_BURST lines per minute in all. */
const WARN_REPEAT_MS = 10 * 60_000;
const WARN_BURST = 20;

export class Warnings {
  private readonly last = new Map<string, number>();
  private minute = 0;
  private inMinute = 0;
  constructor(private readonly write: (line: string) => void = (l) => void process.stderr.write(l)) {}

  /** Say `line` unless `key` was said within WARN_REPEAT_MS or the per-minute budget is spent. */
  warn(key: string, line: string): void {
    const now = Date.now();
    const prev = this.last.get(key);
    if (prev !== undefined && now - prev < WARN_REPEAT_MS) return;
    const minute = Math.floor(now / 60_000);
    if (minute !== this.minute) {
      this.minute = minute;
      this.inMinute = 0;
    }
    if (++this.inMinute > WARN_BURST) return;
    if (this.last.size >= 10_000) this.last.clear();
    this.last.set(key, now);
    this.write(`prefork-otel: ${line}\n`);
  }
}

// ---------------------------------------------------------------------------------------------
// validation: everything a file claims is checked before it reaches the merge or the serializer

type Problem = string;

const isObj = (x: unknown): x is Record<string, unknown> => x !== null && typeof x === 'object' && !Array.isArray(x);
const isFiniteNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
const isOptStr = (x: unknown) => x === undefined || typeof x === 'string';
const isHrTime = (x: unknown) => Array.isArray(x) && x.length === 2 && isFiniteNum(x[0]) && isFiniteNum(x[1]);

function attributesProblem(a: unknown): Problem | undefined {
  if (!isObj(a)) return 'attributes is not an object';
  for (const k in a) {
    const v = a[k];
    if (typeof v !== 'string' && typeof v !== 'boolean' && !isFiniteNum(v)) return `attribute ${JSON.stringify(k).slice(0, 64)} is not a string, number or boolean`;
  }
  return undefined;
}

function histogramProblem(v: unknown): Problem | undefined {
  if (!isObj(v) || !isObj(v.buckets)) return 'histogram value without buckets';
  const { boundaries, counts } = v.buckets as { boundaries: unknown; counts: unknown };
  if (!Array.isArray(boundaries) || !Array.isArray(counts) || counts.length !== boundaries.length + 1) return 'histogram buckets do not match their boundaries';
  for (let i = 0; i < boundaries.length; i++) {
    if (!isFiniteNum(boundaries[i]) || (i > 0 && boundaries[i] <= boundaries[i - 1])) return 'histogram boundaries are not increasing numbers';
  }
  let sum = 0;
  for (const c of counts) {
    if (!isCount(c)) return 'histogram bucket count is not a non-negative integer';
    sum += c;
  }
  if (!isCount(v.count) || v.count !== sum) return 'histogram count is not the sum of its buckets';
  if (v.sum !== undefined && !isFiniteNum(v.sum)) return 'histogram sum is not a number';
  if ((v.min !== undefined && !isFiniteNum(v.min)) || (v.max !== undefined && !isFiniteNum(v.max))) return 'histogram min/max is not a number';
  return undefined;
}

function metricProblem(m: unknown): Problem | undefined {
  if (!isObj(m) || !isObj(m.descriptor)) return 'metric without descriptor';
  const d = m.descriptor;
  if (typeof d.name !== 'string' || d.name.length === 0 || d.name.length > 255) return 'metric name is not a string of 1..255 characters';
  if (!isOptStr(d.description) || !isOptStr(d.unit)) return `metric ${d.name}: description/unit is not a string`;
  if (d.valueType !== undefined && d.valueType !== 0 && d.valueType !== 1) return `metric ${d.name}: bad valueType`;
  if (m.aggregationTemporality !== 1) return `metric ${d.name}: not cumulative`;
  const type = m.dataPointType;
  if (type !== 0 && type !== 2 && type !== 3) return `metric ${d.name}: unsupported dataPointType ${JSON.stringify(type)}`;
  if (type === 3 && typeof m.isMonotonic !== 'boolean') return `metric ${d.name}: sum without isMonotonic`;
  if (!Array.isArray(m.dataPoints)) return `metric ${d.name}: dataPoints is not an array`;
  for (const p of m.dataPoints as unknown[]) {
    if (!isObj(p) || !isHrTime(p.startTime) || !isHrTime(p.endTime)) return `metric ${d.name}: data point without start/end time`;
    const bad = attributesProblem(p.attributes);
    if (bad) return `metric ${d.name}: ${bad}`;
    if (type === 0) {
      const h = histogramProblem(p.value);
      if (h) return `metric ${d.name}: ${h}`;
    } else if (!isFiniteNum(p.value) || (type === 3 && m.isMonotonic === true && p.value < 0)) {
      return `metric ${d.name}: value ${JSON.stringify(p.value)} is not ${type === 3 && m.isMonotonic ? 'a non-negative number' : 'a number'}`;
    }
  }
  return undefined;
}

/** A pid that `kill(pid, 0)` can be asked about (0 and negatives address process groups). */
const isPid = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x > 0 && x <= 0x3fffffff;

/**
 * `x` as a MultiprocFile written under `name`, or the reason it is not one. Checks everything the
 * reader, the merge and the serializer rely on, so a file that passes cannot fail a scrape.
 */
export function validateFile(x: unknown, name?: string): MultiprocFile | Problem {
  if (!isObj(x) || x.format !== 'prefork-otel-multiproc/1') return 'not a prefork-otel-multiproc/1 file';
  if (!isPid(x.pid) || typeof x.instance !== 'string' || !/^[A-Za-z0-9.-]{1,300}$/.test(x.instance)) return 'bad pid or instance';
  if (name !== undefined && name !== multiprocFileName(x.pid, x.instance)) return `its name does not match its pid ${x.pid} and instance`;
  if (!isFiniteNum(x.intervalMs) || x.intervalMs <= 0 || !isFiniteNum(x.writtenAt)) return 'bad intervalMs or writtenAt';
  if (x.dead !== undefined && x.dead !== true) return 'bad dead flag';
  const s = x.snapshot;
  if (!isObj(s) || s.v !== 1 || s.pid !== x.pid || !isFiniteNum(s.time) || !isObj(s.resource)) return 'bad snapshot header';
  if (!Array.isArray(s.scopeMetrics)) return 'snapshot.scopeMetrics is not an array';
  for (const sm of s.scopeMetrics as unknown[]) {
    if (!isObj(sm) || !isObj(sm.scope) || typeof sm.scope.name !== 'string' || !isOptStr(sm.scope.version) || !isOptStr(sm.scope.schemaUrl)) return 'bad scope';
    if (!Array.isArray(sm.metrics)) return `scope ${sm.scope.name}: metrics is not an array`;
    for (const m of sm.metrics as unknown[]) {
      const bad = metricProblem(m);
      if (bad) return bad;
    }
  }
  return x as unknown as MultiprocFile;
}

function parseText(text: string, name?: string): MultiprocFile | Problem {
  let x: unknown;
  try {
    x = JSON.parse(text);
  } catch (e) {
    return `not JSON (${(e as Error).message.slice(0, 80)})`;
  }
  return validateFile(x, name);
}

// ---------------------------------------------------------------------------------------------
// reading one file safely

const READ_FLAGS = FS.O_RDONLY | FS.O_NONBLOCK | FS.O_NOFOLLOW;

function kindOf(st: Stats): string {
  return st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() ? 'a character device' : st.isBlockDevice() ? 'a block device'
    : st.isSocket() ? 'a socket' : st.isDirectory() ? 'a directory' : st.isSymbolicLink() ? 'a symbolic link' : 'not a regular file';
}

function openProblem(e: unknown): Problem {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ELOOP' ? 'a symbolic link (not followed)' : `cannot open (${code ?? (e as Error).message})`;
}

type Read = { ok: true; text: string; st: Stats } | { ok: false; problem: Problem; gone?: true };

/** Read `path` if it is a regular file of at most `limit` bytes, without following links or blocking on FIFOs. */
async function readRegular(path: string, limit: number, known?: Stats): Promise<Read | { ok: true; same: true }> {
  let fh: FileHandle;
  try {
    fh = await open(path, READ_FLAGS);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { ok: false, problem: 'gone', gone: true };
    return { ok: false, problem: openProblem(e) };
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return { ok: false, problem: kindOf(st) };
    if (st.size > limit) return { ok: false, problem: `${st.size} bytes, more than the limit of ${limit}` };
    if (known && known.ino === st.ino && known.size === st.size && known.mtimeMs === st.mtimeMs) return { ok: true, same: true };
    const buf = Buffer.allocUnsafe(Math.min(limit, st.size) + 1);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    if (n > limit) return { ok: false, problem: `grew beyond the limit of ${limit} bytes while read` };
    return { ok: true, text: buf.toString('utf8', 0, n), st };
  } catch (e) {
    return { ok: false, problem: `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** The same, synchronously (a writer taking over its own earlier file at start-up). */
function readRegularSync(path: string, limit: number): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, READ_FLAGS);
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.size > limit) return undefined;
    const buf = Buffer.allocUnsafe(st.size + 1);
    let n = 0;
    for (;;) {
      let r: number;
      try {
        r = readSync(fd, buf, n, buf.length - n, n);
      } catch {
        return undefined;
      }
      if (r === 0) break;
      n += r;
      if (n >= buf.length) return undefined;
    }
    return buf.toString('utf8', 0, n);
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// writing: O_CREAT|O_EXCL|O_NOFOLLOW under an unpredictable name, then rename

const CREATE_FLAGS = FS.O_WRONLY | FS.O_CREAT | FS.O_EXCL | FS.O_NOFOLLOW;

function tmpName(dir: string, name: string): string {
  return join(dir, `.${name}.${randomBytes(9).toString('base64url')}.tmp`);
}

/**
 * Temporary files of asynchronous writes under way. The process can exit in the middle of one (the
 * final snapshot is written synchronously at exit, and the pending write never resumes): the exit
 * removes them, so that no `.tmp` file is left behind in the shared directory.
 */
const pendingTmp = new Set<string>();

/** Remove the temporary files of writes an exit cut short (synchronous: called at process exit). */
function removePendingTmp(): void {
  for (const tmp of pendingTmp) {
    try { unlinkSync(tmp); } catch { /* renamed or removed meanwhile */ }
  }
  pendingTmp.clear();
}

/**
 * Create a temporary file in `dir`, let `fill` write it, and rename it to `name` (readers see the old
 * file or the new one, never a part); on failure the temporary file is removed.
 */
async function viaTmp(dir: string, name: string, fill: (fh: FileHandle) => Promise<void>): Promise<void> {
  const tmp = tmpName(dir, name);
  pendingTmp.add(tmp);
  try {
    const fh = await open(tmp, CREATE_FLAGS, 0o666);
    try {
      try {
        await fill(fh);
      } finally {
        await fh.close();
      }
      await rename(tmp, join(dir, name));
    } catch (e) {
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
  } finally {
    pendingTmp.delete(tmp);
  }
}

/** Write `f` as `name` in `dir` atomically. */
function writeAtomic(dir: string, name: string, f: MultiprocFile): Promise<void> {
  return viaTmp(dir, name, (fh) => fh.writeFile(JSON.stringify(f)));
}

function writeAtomicSync(dir: string, name: string, f: MultiprocFile): void {
  const tmp = tmpName(dir, name);
  const fd = openSync(tmp, CREATE_FLAGS, 0o666);
  try {
    try {
      const data = Buffer.from(JSON.stringify(f));
      let off = 0;
      while (off < data.length) off += writeSync(fd, data, off, data.length - off);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, join(dir, name));
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* not there */ }
    throw e;
  }
}

function errorCode(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message ?? String(e);
}

// ---------------------------------------------------------------------------------------------
// the directory at start

/**
 * Create `dir` if needed and refuse it unless it is safe to write files into and read files from:
 *  - it must be a directory (a symlink to one is followed only if the link is ours or root's);
 *  - it must be owned by us, or have the sticky bit (like /tmp): in a sticky directory nobody else can
 *    rename or remove our files, and our writes never follow links;
 *  - a directory we do not own, without the sticky bit, and that we can write to is writable by
 *    someone else too: they could swap our files for links between our write and our rename, or make
 *    a root process write where they choose. It is refused with one line (exit 2).
 * It must also be readable and writable by us. Modes are left as they are.
 */
export function checkMultiprocDir(source: string, dir: string): string {
  const bad = (why: string) => new ConfigError(`prefork-otel: invalid ${source}=${JSON.stringify(dir)}: ${why}`);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw bad(`expected a writable directory (${errorCode(e)})`);
  }
  const uid = typeof process.getuid === 'function' ? process.getuid() : -1;
  let st: Stats;
  try {
    const l = lstatSync(dir);
    if (l.isSymbolicLink() && uid >= 0 && l.uid !== uid && l.uid !== 0) {
      throw bad(`a symbolic link owned by uid ${l.uid}, not by us (uid ${uid}) or root`);
    }
    st = statSync(dir);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw bad(`expected a writable directory (${errorCode(e)})`);
  }
  if (!st.isDirectory()) throw bad('expected a writable directory (ENOTDIR)');
  const sticky = (st.mode & 0o1000) !== 0;
  if (uid >= 0 && st.uid !== uid && !sticky) {
    throw bad(`owned by uid ${st.uid}, not by us (uid ${uid}), and not sticky: others could replace our files; `
      + 'use a directory owned by the user the processes run as (docs/cluster.md)');
  }
  try {
    const probe = tmpName(dir, 'probe');
    closeSync(openSync(probe, CREATE_FLAGS, 0o600));
    unlinkSync(probe);
  } catch (e) {
    throw bad(`expected a writable directory (${errorCode(e)})`);
  }
  return dir;
}

// ---------------------------------------------------------------------------------------------
// fresh at scrape time: the serving process renames a marker into the directory; every writer watches
// the directory (inotify) and writes its file at once; the reader waits (at most its deadline) for the
// files of this instance's live processes to be rewritten, then reads.

/** The marker a reader renames into the directory to ask every writer for a fresh file (not *.json: never read). */
export const SCRAPE_MARKER = '.prefork-otel-scrape';
/** A writer answers marker events at most this often (someone touching the marker in a loop costs this much). */
const MIN_ASKED_GAP_MS = 50;

function writeMarker(dir: string): Promise<void> {
  return viaTmp(dir, SCRAPE_MARKER, async () => undefined);
}

// ---------------------------------------------------------------------------------------------
// the writer

/** mark_process_dead: keep the counters and histograms of an ended process, drop its gauges. */
export function deadVersion(f: MultiprocFile): MultiprocFile {
  return { ...f, dead: true, snapshot: { ...f.snapshot, scopeMetrics: cumulativeOnly(f.snapshot.scopeMetrics), final: true } };
}

/** Writes this process's snapshots to its file in the directory. */
export class MultiprocWriter {
  readonly name: string;
  /** the last snapshot collected (a synchronous exit freshens it) */
  last: Snapshot | undefined;
  /** the last file content built (written or not): served from memory when writing failed */
  lastFile: MultiprocFile | undefined;
  /** did the last write fail? */
  failing = false;
  /** counters and histograms left in our file by an ended process with our pid */
  private base: ScopeMetrics[] = [];
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private watcher: FSWatcher | undefined;
  private asked: { at: number; queued: boolean } = { at: 0, queued: false };

  constructor(readonly dir: string, private readonly collect: () => Promise<ResourceMetrics>, readonly intervalMs: number,
    readonly pid = process.pid, private readonly warnings = new Warnings()) {
    this.name = multiprocFileName(pid);
  }

  /** Take over what an earlier process with this pid left (start-up, so read synchronously), write now and every interval. */
  start(): this {
    const text = readRegularSync(join(this.dir, this.name), MAX_FILE_BYTES);
    if (text !== undefined) {
      const prev = parseText(text, this.name);
      if (typeof prev !== 'string') this.base = cumulativeOnly(prev.snapshot.scopeMetrics);
    }
    void this.write().catch(() => undefined);
    this.timer = setInterval(() => void this.write().catch(() => undefined), this.intervalMs).unref();
    this.watchMarker();
    return this;
  }

  /** Write at once when a reader asks (SCRAPE_MARKER renamed into the directory); without inotify, periodic writes only. */
  private watchMarker(): void {
    try {
      this.watcher = watch(this.dir, { persistent: false }, (_event, file) => {
        if (file === SCRAPE_MARKER) this.onAsked();
      });
      this.watcher.on('error', () => this.unwatch());
    } catch (e) {
      this.warnings.warn(`watch:${errorCode(e)}`, `cannot watch ${this.dir} (${errorCode(e)}): this process's file is refreshed every snapshot interval only`);
    }
  }

  private onAsked(): void {
    if (this.asked.queued) return;
    const wait = this.asked.at + MIN_ASKED_GAP_MS - Date.now();
    this.asked.queued = true;
    const run = () => {
      this.asked = { at: Date.now(), queued: false };
      void this.write().catch(() => undefined);
    };
    if (wait > 0) setTimeout(run, wait).unref();
    else run();
  }

  private unwatch(): void {
    this.watcher?.close();
    this.watcher = undefined;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.unwatch();
  }

  private file(snap: Snapshot): MultiprocFile {
    const scopeMetrics = this.base.length > 0 ? mergeScopeMetrics([this.base, snap.scopeMetrics], true) : snap.scopeMetrics;
    return {
      format: 'prefork-otel-multiproc/1', instance: processInstance(), pid: this.pid, intervalMs: this.intervalMs,
      writtenAt: Date.now(), snapshot: { ...snap, scopeMetrics },
    };
  }

  private failed(e: unknown): void {
    this.failing = true;
    const code = errorCode(e);
    this.warnings.warn(`write:${code}`, `cannot write ${join(this.dir, this.name)} (${code}): serving from memory, other readers see this process's last file`);
  }

  /**
   * Collect (or take `rm`) and write; writes are queued so an older one never lands after a newer one.
   * A write error (ENOSPC, EACCES, …) warns once per error code and does not reject: see `failing`.
   */
  write(rm?: ResourceMetrics): Promise<void> {
    const next = this.chain.then(async () => {
      const snap = toSnapshot(rm ?? await this.collect(), this.pid);
      this.last = snap;
      const f = this.file(snap);
      this.lastFile = f;
      try {
        await writeAtomic(this.dir, this.name, f);
        this.failing = false;
      } catch (e) {
        this.failed(e);
      }
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  /**
   * Before the process ends by re-raising a signal (no 'exit' event, so no writeFinalSync): no new
   * write starts, the queued ones finish, and the temporary files of any still under way (a scrape's
   * marker) are removed, so that none is left in the shared directory.
   */
  async close(): Promise<void> {
    this.stop();
    await this.chain;
    removePendingTmp();
  }

  /** At `process.exit()`: the last snapshot with `fresh` (read synchronously) in it, written synchronously, as ended. */
  writeFinalSync(fresh: ScopeMetrics): void {
    this.stop();
    try {
      writeAtomicSync(this.dir, this.name, deadVersion(this.file(freshenSnapshot(this.last, fresh, this.pid))));
    } catch (e) {
      this.failed(e);
    }
    removePendingTmp();
  }
}

// ---------------------------------------------------------------------------------------------
// the reader

/** A file of another instance not rewritten for 3 intervals + 30 s is taken as ended (busy machines lag). */
const STALE_AFTER_INTERVALS = 3;
const STALE_GRACE_MS = 30_000;

interface Known { f: MultiprocFile; st: Stats }

/** What one read of the directory found about one process's file. */
export interface FileState {
  name: string;
  pid: number;
  instance: string;
  /** seconds since the file was last written (its `writtenAt`); what prefork_otel_worker_snapshot_age_seconds would show */
  ageSeconds: number;
  /** not rewritten for 3 intervals + 30 s although not marked dead, or served from memory because this scrape could not read it */
  stale: boolean;
  dead: boolean;
}

export interface ReaderOptions {
  /** deadline for reading the directory in one scrape (ms) */
  deadlineMs?: number;
  maxFileBytes?: number;
  warnings?: Warnings;
}

/** Reads the directory: the union of every process's file; marks the files of ended processes. */
export class MultiprocReader {
  /** last good contents per file name (served when a read is abandoned; skipped when a file is unchanged) */
  private readonly known = new Map<string, Known>();
  /** IO_SLOTS: operations in flight (abandoned ones included), and who waits for a slot */
  private busy = 0;
  private readonly waiters: (() => void)[] = [];
  /** files of live processes that did not answer the last marker (name → when asked) */
  private readonly deaf = new Map<string, number>();
  private readonly deadlineMs: number;
  private readonly maxFileBytes: number;
  readonly warnings: Warnings;
  /** the files the last read of the directory served, with their age: see FileState */
  lastRead: FileState[] = [];

  constructor(readonly dir: string, opts: ReaderOptions = {}) {
    this.deadlineMs = opts.deadlineMs ?? DEFAULT_READ_DEADLINE_MS;
    this.maxFileBytes = opts.maxFileBytes ?? MAX_FILE_BYTES;
    this.warnings = opts.warnings ?? new Warnings();
  }

  private skip(name: string, problem: Problem): void {
    this.known.delete(name);
    this.warnings.warn(`skip:${name}:${problem}`, `multiproc file skipped: ${join(this.dir, name)}: ${problem}`);
  }

  /** Take a slot before `end`; false when none came free in time. */
  private slot(end: number): Promise<boolean> {
    if (this.busy < IO_SLOTS) {
      this.busy++;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const take = () => {
        clearTimeout(timer);
        this.busy++;
        resolve(true);
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(take);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(false);
      }, Math.max(0, end - Date.now()));
      timer.unref?.();
      this.waiters.push(take);
    });
  }

  private release(): void {
    this.busy--;
    this.waiters.shift()?.();
  }

  /**
   * Run `work` in a slot, giving up on it at `end`: resolves with its result, or undefined when no slot
   * came free or the work did not finish in time (it keeps its slot until it settles); rejects if it failed.
   */
  private async bounded<T>(work: () => Promise<T>, end: number): Promise<T | undefined> {
    if (!await this.slot(end)) return undefined;
    let settled: Promise<T>;
    try {
      settled = work();
    } catch (e) {
      this.release();
      throw e;
    }
    settled.then(() => this.release(), () => this.release());
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((r) => { timer = setTimeout(r, Math.max(0, end - Date.now()), undefined); timer.unref?.(); });
    try {
      return await Promise.race([settled, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async listNames(end: number, skip?: string): Promise<string[] | undefined> {
    const names = await this.bounded(() => readdir(this.dir), end).catch((e: unknown) => {
      this.warnings.warn(`readdir:${errorCode(e)}`, `cannot read the multiproc directory ${this.dir} (${errorCode(e)}): serving the files read before`);
      return undefined;
    });
    if (names === undefined) return undefined;
    const json = names.filter((n) => n.endsWith('.json') && !n.startsWith('.') && n !== skip);
    if (json.length > MAX_FILES) {
      this.warnings.warn('too-many', `${this.dir} holds ${json.length} *.json files: reading the first ${MAX_FILES} only`);
      return json.sort().slice(0, MAX_FILES);
    }
    return json;
  }

  /** Read (or, on time-out, remember) one file; undefined: nothing to serve from it. */
  private async readOne(name: string, end: number): Promise<{ f: MultiprocFile; stale: boolean } | undefined> {
    const prev = this.known.get(name);
    if (Date.now() >= end) return prev && { f: prev.f, stale: true };
    const r = await this.bounded(() => readRegular(join(this.dir, name), this.maxFileBytes, prev?.st), end);
    if (r === undefined) {
      this.warnings.warn(`slow:${name}`, `multiproc file ${join(this.dir, name)} not read within ${this.deadlineMs} ms: serving its last contents`);
      return prev && { f: prev.f, stale: true };
    }
    if (!r.ok) {
      if (r.gone) this.known.delete(name);
      else this.skip(name, r.problem);
      return undefined;
    }
    if ('same' in r) return prev && { f: prev.f, stale: false };
    const f = parseText(r.text, name);
    if (typeof f === 'string') {
      this.skip(name, f);
      return undefined;
    }
    this.known.set(name, { f, st: r.st });
    return { f, stale: false };
  }

  /** Each file's scope metrics (gauges only for live processes). `skip`: a file name to leave out. */
  async sources(skip?: string): Promise<ScopeMetrics[][]> {
    const end = Date.now() + this.deadlineMs;
    const names = await this.listNames(end, skip) ?? [...this.known.keys()].filter((n) => n !== skip);
    const listed = new Set(names);
    for (const n of this.known.keys()) if (!listed.has(n)) this.known.delete(n);
    const own = processInstance();
    const now = Date.now();
    const out: ScopeMetrics[][] = [];
    const states: FileState[] = [];
    let next = 0;
    const worker = async () => {
      while (next < names.length) {
        const name = names[next++]!;
        const got = await this.readOne(name, end);
        if (!got) continue;
        let { f } = got;
        const state: FileState = {
          name, pid: f.pid, instance: f.instance, ageSeconds: Math.max(0, (now - f.writtenAt) / 1000), stale: got.stale, dead: !!f.dead,
        };
        if (!f.dead) {
          if (f.instance === own) {
            if (!pidAlive(f.pid)) {
              f = deadVersion(f);
              state.dead = true;
              this.known.delete(name);
              await this.bounded(() => writeAtomic(this.dir, name, f), end).catch(() => undefined);
            }
          } else if (now - f.writtenAt > STALE_AFTER_INTERVALS * f.intervalMs + STALE_GRACE_MS) {
            // another host / container: its pids mean nothing here; a file not rewritten for a while is taken as ended
            f = { ...f, snapshot: { ...f.snapshot, scopeMetrics: cumulativeOnly(f.snapshot.scopeMetrics) } };
            state.stale = true;
          }
        }
        if (!state.dead && now - f.writtenAt > STALE_AFTER_INTERVALS * f.intervalMs + STALE_GRACE_MS) state.stale = true;
        states.push(state);
        out.push(f.snapshot.scopeMetrics);
      }
    };
    await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, names.length) }, worker));
    this.lastRead = states;
    return out;
  }

  /**
   * Ask every writer for a fresh file and wait, at most the read deadline, until the files of this
   * instance's live processes (other than `own`) have been rewritten. Files of other hosts or
   * containers cannot be asked (no shared inotify); they are as fresh as their last periodic write.
   */
  async freshen(own?: string): Promise<void> {
    const end = Date.now() + this.deadlineMs;
    const names = await this.listNames(end, own);
    if (!names) return;
    const prefix = `${processInstance()}_`;
    const waiting = new Set(names.filter((n) => {
      if (!n.startsWith(prefix)) return false;
      const pid = Number(n.slice(prefix.length, -'.json'.length));
      if (!isPid(pid) || pid === process.pid || !pidAlive(pid)) return false;
      const k = this.known.get(n);
      const deafSince = this.deaf.get(n);
      // a file that did not answer last time is not waited for again until it has been rewritten since
      if (deafSince !== undefined && !(k && k.f.writtenAt > deafSince)) return false;
      this.deaf.delete(n);
      return !k?.f.dead;
    }));
    if (waiting.size === 0) return;
    const asked = Date.now();
    let watcher: FSWatcher | undefined;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      const done = () => resolve();
      timer = setTimeout(done, Math.max(0, end - Date.now()));
      try {
        watcher = watch(this.dir, { persistent: false }, (_event, file) => {
          if (typeof file === 'string' && waiting.delete(file) && waiting.size === 0) done();
        });
        watcher.on('error', done);
      } catch {
        done();
        return;
      }
      writeMarker(this.dir).catch(done);
    });
    clearTimeout(timer);
    watcher?.close();
    if (this.deaf.size > MAX_FILES) this.deaf.clear();
    for (const n of waiting) this.deaf.set(n, asked);
  }

  /** The union of the directory (plus `extra` sources), each metric once; equal series are added up. */
  async union(extra: ScopeMetrics[][] = [], skip?: string): Promise<ScopeMetrics[]> {
    return mergeScopeMetrics([...extra, ...await this.sources(skip)], true);
  }

  /** The exposition text of the union, with `resource` (the serving process's) as target_info. */
  async scrape(resource: Resource, opts: { targetInfo: boolean }, extra: () => Promise<ScopeMetrics[][]> = async () => []): Promise<string> {
    const [more] = await Promise.all([extra(), this.freshen()]);
    return serializePrometheus({ resource, scopeMetrics: await this.union(more) }, opts);
  }
}
