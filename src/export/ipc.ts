import type { Telemetry } from './telemetry';
import { applySnapshotDelta, diffSnapshot, isSnapshot, isSnapshotDelta, toSnapshot, type Snapshot, type SnapshotDelta } from './snapshot';

/**
 * The snapshot protocol between a worker and its master over the process IPC channel
 * (child_process.fork or node:cluster). Every message is an object with the key TAG, so an
 * application's own IPC messages are never mistaken for ours (and ours are easy to skip).
 *   master → worker: { [TAG]: 'collect', id, full? }
 *   worker → master: { [TAG]: 'snapshot', id?, seq?, snapshot }   a whole snapshot (an answer carries the id; pushes do not)
 *                    { [TAG]: 'snapshot', id?, delta }            what changed since the previous one (SnapshotDelta)
 *                    { [TAG]: 'leave' }   a node:cluster worker got SIGTERM / SIGINT: its primary disconnects it
 * A worker sends its first snapshot, its final one and any asked for with `full` whole, the others as
 * deltas against the one it sent before; a master that cannot apply a delta (it missed the base) asks
 * for the next one whole. Whole snapshots without `seq` (a worker's synchronous last word) are accepted too.
 */
export const TAG = 'prefork-otel';

export interface CollectMessage { [TAG]: 'collect'; id: number; full?: true }
export interface SnapshotMessage { [TAG]: 'snapshot'; id?: number; seq?: number; snapshot?: Snapshot; delta?: SnapshotDelta }
export interface LeaveMessage { [TAG]: 'leave' }

export function isOurMessage(m: unknown): m is CollectMessage | SnapshotMessage | LeaveMessage {
  return !!m && typeof m === 'object' && typeof (m as Record<string, unknown>)[TAG] === 'string';
}

/** Anything that can send over IPC: `process`, a cluster Worker, a ChildProcess. */
export interface IpcEndpoint {
  send?(message: unknown, callback?: (err: Error | null) => void): boolean;
  on(event: 'message', listener: (m: unknown) => void): unknown;
  off(event: 'message', listener: (m: unknown) => void): unknown;
  /** the channel closed (a ChildProcess's 'disconnect'): the hub closes a dead worker's link then */
  once?(event: 'disconnect', listener: () => void): unknown;
  connected?: boolean;
}

/** `cmd` of our messages on the internal channel (Node routes `cmd: 'NODE_…'` messages to 'internalMessage'). */
export const INTERNAL_CMD = 'NODE_PREFORK_OTEL';

type RawIpc = {
  send?(message: unknown, callback?: (err: Error | null) => void): boolean;
  on(event: 'internalMessage', listener: (m: unknown) => void): unknown;
  off(event: 'internalMessage', listener: (m: unknown) => void): unknown;
  once?(event: 'disconnect', listener: () => void): unknown;
  connected?: boolean;
};

/**
 * The same protocol on Node's internal IPC event instead of 'message': a message whose `cmd` starts
 * with `NODE_` is delivered as 'internalMessage' (as node:cluster's own are), so an application's
 * `process.on('message')`, `worker.on('message')` and `cluster.on('message')` handlers never see
 * ours, and our listener does not ref the channel. Used where the application owns the IPC channel
 * (node:cluster under the preload). `target`: `process` in a child, a ChildProcess in the parent.
 */
export function internalChannel(target: RawIpc): IpcEndpoint {
  const wrapped = new Map<(m: unknown) => void, (m: unknown) => void>();
  return {
    send: (message, callback) => {
      if (!target.send) return false;
      return target.send({ ...(message as object), cmd: INTERNAL_CMD }, callback);
    },
    on: (_event, listener) => {
      const w = (m: unknown) => { if ((m as { cmd?: unknown })?.cmd === INTERNAL_CMD) listener(m); };
      wrapped.set(listener, w);
      return target.on('internalMessage', w);
    },
    off: (_event, listener) => {
      const w = wrapped.get(listener);
      wrapped.delete(listener);
      return w ? target.off('internalMessage', w) : undefined;
    },
    once: (event, listener) => target.once?.(event, listener),
    get connected() { return target.connected; },
  };
}

/**
 * Worker side: answer the master's collect requests and push a snapshot every `intervalMs`
 * (unref'd). `flush(true)` sends the final snapshot and resolves once it is handed to the channel.
 */
export class SnapshotResponder {
  /** the last snapshot sent (a process ending abruptly can send it, freshened, synchronously) */
  last: Snapshot | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** the last snapshot handed to the channel, and its sequence number: the base of the next delta */
  private sent: { snap: Snapshot; seq: number } | undefined;
  private seq = 0;
  private readonly onMessage = (m: unknown) => {
    if (isOurMessage(m) && m[TAG] === 'collect') void this.send(false, (m as CollectMessage).id, (m as CollectMessage).full === true);
  };

  /** `inFlight`: requests in flight now, sent with every snapshot (the master's exit line reports the last) */
  constructor(private readonly telemetry: Pick<Telemetry, 'collect'>, private readonly channel: IpcEndpoint = process as unknown as IpcEndpoint,
    private readonly pid = process.pid, private readonly inFlight?: () => number) {}

  start(intervalMs: number): this {
    this.channel.on('message', this.onMessage);
    this.timer = setInterval(() => void this.send(false), intervalMs).unref();
    // the channel must not keep a worker alive on its own account
    (this.channel as { channel?: { unref?(): void } }).channel?.unref?.();
    return this;
  }

  /** Collect and send: whole when `full`, `final` or the first, else as a delta against the last one sent. */
  async send(final: boolean, id?: number, full = false): Promise<void> {
    if (!this.channel.send || this.channel.connected === false) return;
    const snapshot = toSnapshot(await this.telemetry.collect(), this.pid, final, this.inFlight?.());
    this.last = snapshot;
    // from here to channel.send nothing awaits: the delta's base is the message sent just before it
    const seq = ++this.seq;
    const base = this.sent;
    const msg: SnapshotMessage = base && !full && !final
      ? { [TAG]: 'snapshot', delta: diffSnapshot(base.snap, snapshot, seq, base.seq) }
      : { [TAG]: 'snapshot', seq, snapshot };
    if (id !== undefined) msg.id = id;
    this.sent = { snap: snapshot, seq };
    await new Promise<void>((resolve) => {
      try {
        this.channel.send!(msg, (err) => {
          // not delivered: the master's base is older than ours; the next one goes whole
          if (err && this.sent?.seq === seq) this.sent = undefined;
          resolve();
        });
      } catch {
        if (this.sent?.seq === seq) this.sent = undefined;
        resolve();
      }
    });
  }

  /** stop the timer and listener; with `final`, send one last snapshot first */
  async stop(final = true): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.channel.off('message', this.onMessage);
    if (final) await this.send(true);
  }
}

let nextId = 1;

/**
 * Master side of one worker (made by ScrapeHub.attach): every snapshot that arrives — pushed or an
 * answer — goes to `onSnapshot`, once; `request()` asks for a fresh one and resolves with the answer
 * (the hub applies the deadline; a late answer is still applied by `onSnapshot`).
 */
export class WorkerLink {
  private readonly waiting = new Map<number, (s: Snapshot | undefined) => void>();
  /** the last whole snapshot received or rebuilt, and its sequence number (-1: none given) */
  private base: { snap: Snapshot; seq: number } | undefined;
  /** a delta could not be applied: ask for the next snapshot whole */
  private needFull = false;
  private readonly onMessage = (m: unknown) => {
    if (!isOurMessage(m) || m[TAG] !== 'snapshot') return;
    const { snapshot, delta, id, seq } = m as SnapshotMessage;
    let snap: Snapshot | undefined;
    if (isSnapshot(snapshot)) {
      snap = snapshot;
      this.base = { snap, seq: typeof seq === 'number' ? seq : -1 };
    } else if (isSnapshotDelta(delta)) {
      snap = this.base && this.base.seq === delta.base ? applySnapshotDelta(this.base.snap, delta) : undefined;
      if (snap) this.base = { snap, seq: delta.seq };
      else this.needFull = true;
    }
    if (snap) this.onSnapshot(snap);
    if (id !== undefined) {
      const done = this.waiting.get(id);
      this.waiting.delete(id);
      done?.(snap);
    }
  };

  constructor(readonly pid: number, private readonly channel: IpcEndpoint, private readonly onSnapshot: (s: Snapshot) => void) {
    channel.on('message', this.onMessage);
  }

  request(): Promise<Snapshot | undefined> {
    if (!this.channel.send || this.channel.connected === false) return Promise.resolve(undefined);
    const id = nextId++;
    const msg: CollectMessage = { [TAG]: 'collect', id };
    if (this.needFull) msg.full = true;
    this.needFull = false;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      // not sent: a whole snapshot is still wanted next time
      const failed = () => {
        if (msg.full) this.needFull = true;
        this.waiting.delete(id);
        resolve(undefined);
      };
      try {
        this.channel.send!(msg, (err) => { if (err) failed(); });
      } catch {
        failed();
      }
    }).then((s) => s as Snapshot | undefined).finally(() => this.waiting.delete(id));
  }

  close(): void {
    this.channel.off('message', this.onMessage);
    for (const done of this.waiting.values()) (done as (s?: Snapshot) => void)(undefined);
    this.waiting.clear();
  }
}
