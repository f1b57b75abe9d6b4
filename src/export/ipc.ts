import type { Telemetry } from './telemetry';
import { isSnapshot, toSnapshot, type Snapshot } from './snapshot';

/**
 * The snapshot protocol between a worker and its master over the process IPC channel
 * (child_process.fork or node:cluster). Every message is an object with the key TAG, so an
 * application's own IPC messages are never mistaken for ours (and ours are easy to skip).
 *   master → worker: { [TAG]: 'collect', id }
 *   worker → master: { [TAG]: 'snapshot', id?, snapshot }   (an answer carries the id; pushes do not)
 */
export const TAG = 'prefork-otel';

export interface CollectMessage { [TAG]: 'collect'; id: number }
export interface SnapshotMessage { [TAG]: 'snapshot'; id?: number; snapshot: Snapshot }

export function isOurMessage(m: unknown): m is CollectMessage | SnapshotMessage {
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
  private readonly onMessage = (m: unknown) => {
    if (isOurMessage(m) && m[TAG] === 'collect') void this.send(false, (m as CollectMessage).id);
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

  async send(final: boolean, id?: number): Promise<void> {
    if (!this.channel.send || this.channel.connected === false) return;
    const snapshot = toSnapshot(await this.telemetry.collect(), this.pid, final, this.inFlight?.());
    this.last = snapshot;
    const msg: SnapshotMessage = { [TAG]: 'snapshot', snapshot };
    if (id !== undefined) msg.id = id;
    await new Promise<void>((resolve) => {
      try {
        this.channel.send!(msg, () => resolve());
      } catch {
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
  private readonly waiting = new Map<number, (s: Snapshot) => void>();
  private readonly onMessage = (m: unknown) => {
    if (!isOurMessage(m) || m[TAG] !== 'snapshot') return;
    const { snapshot, id } = m as SnapshotMessage;
    if (!isSnapshot(snapshot)) return;
    this.onSnapshot(snapshot);
    if (id !== undefined) {
      const done = this.waiting.get(id);
      this.waiting.delete(id);
      done?.(snapshot);
    }
  };

  constructor(readonly pid: number, private readonly channel: IpcEndpoint, private readonly onSnapshot: (s: Snapshot) => void) {
    channel.on('message', this.onMessage);
  }

  request(): Promise<Snapshot | undefined> {
    if (!this.channel.send || this.channel.connected === false) return Promise.resolve(undefined);
    const id = nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      try {
        this.channel.send!({ [TAG]: 'collect', id } satisfies CollectMessage, (err) => {
          if (err) {
            this.waiting.delete(id);
            resolve(undefined);
          }
        });
      } catch {
        this.waiting.delete(id);
        resolve(undefined);
      }
    }).then((s) => s as Snapshot | undefined).finally(() => this.waiting.delete(id));
  }

  close(): void {
    this.channel.off('message', this.onMessage);
    for (const done of this.waiting.values()) (done as (s?: Snapshot) => void)(undefined);
    this.waiting.clear();
  }
}
