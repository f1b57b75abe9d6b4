import net from 'node:net';
import type { Server as HttpServer, ServerResponse } from 'node:http';

/** A listening socket as a worker receives it from the master (a TCP or Pipe handle), or a bare fd (threads). */
export type SocketHandle = { fd: number } & object;

function listenOn(server: net.Server, handle: SocketHandle): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => reject(e);
    server.once('error', onError);
    const done = () => { server.off('error', onError); resolve(); };
    const ctor = (handle as { constructor?: { name?: string } }).constructor?.name;
    // a received TCP handle is adopted as is; a Pipe handle, or an fd (worker threads), is opened by fd
    if (ctor === 'TCP') server.listen(handle as never, done);
    else server.listen({ fd: handle.fd }, done);
  });
}

/** net.Server's own close: stops listening only. http.Server.close() would also destroy idle keep-alive connections. */
const netClose = net.Server.prototype.close;

export interface AcceptorEvents {
  opened(): void;
  closed(): void;
  /** a fresh copy of listening socket `index` (sync's pause while busy); absent: never pause */
  relisten?: (index: number) => Promise<SocketHandle>;
}

/** Node's listening handle inside a net.Server (TCPWrap / PipeWrap) */
interface ListenHandle {
  close(cb?: () => void): void;
  listen(backlog: number): number;
  onconnection: unknown;
  [k: symbol]: unknown;
}

/**
 * Accepts connections for one event loop and hands them to the app's server at most `capacity` at
 * a time: gunicorn's one-request-at-a-time sync worker (capacity 1) and its async workers'
 * --worker-connections. Node's own `server.maxConnections` closes the connections over the limit;
 * here they are accepted paused (not read) and wait in a FIFO until a slot frees, so none is
 * dropped. The app's server listens on the first socket (so `server.address()` and the app's
 * 'listening' callbacks behave); further --bind sockets feed the same queue.
 *
 * With `relisten` (sync), the acceptor also gives its listening sockets up while it is full: the
 * process closes its own copy of each (the socket and its queue of waiting connections stay open
 * in the master and the other workers, so those connections go to a free worker) and takes a fresh
 * copy from the master, which it listens on again as soon as a slot is free — gunicorn's sync
 * worker, which calls accept() only when it is free.
 */
export class Acceptor {
  /** the app server's own 'connection' listeners (http's parser setup), called when a socket is admitted */
  private readonly admit: Array<(s: net.Socket) => void>;
  private readonly parked: net.Socket[] = [];
  /** servers[i] listens on --bind i (servers[0] is the app's) */
  private readonly servers: net.Server[] = [];
  /** every socket accepted and not yet closed */
  readonly sockets = new Set<net.Socket>();
  private active = 0;
  /** Date.now() when the connections in service went from none to some; 0 while none is (sync's --timeout) */
  busySince = 0;
  private closed = false;
  /** sync: the listening handles are given up while full */
  private paused = false;
  private readonly spare: Array<Promise<SocketHandle> | undefined> = [];
  private readonly onConnection = (sock: net.Socket) => this.accept(sock);
  /**
   * ref'd only while the listening sockets are given up: the worker's IPC channel is unref'd (see
   * export/ipc.ts), so without it a paused worker between two requests would have nothing keeping
   * its event loop alive and would exit
   */
  private hold: NodeJS.Timeout | undefined;

  constructor(readonly server: HttpServer | net.Server, readonly capacity: number, private readonly events: AcceptorEvents) {
    this.admit = server.listeners('connection') as Array<(s: net.Socket) => void>;
    server.removeAllListeners('connection');
    server.on('connection', this.onConnection);
    (server as unknown as { pauseOnConnect: boolean }).pauseOnConnect = true;
  }

  async listen(handles: SocketHandle[]): Promise<void> {
    for (let i = 0; i < handles.length; i++) {
      const s = i === 0 ? this.server : net.createServer({ pauseOnConnect: true }, this.onConnection);
      this.servers.push(s);
      await listenOn(s, handles[i]!);
      if (this.events.relisten) {
        // the socket's address never changes, but while paused the server holds a closed handle:
        // server.address() (apps call it, even per request) answers from here
        const address = s.address();
        s.address = () => address;
      }
    }
  }

  private accept(sock: net.Socket): void {
    this.sockets.add(sock);
    this.events.opened();
    sock.once('close', () => {
      this.sockets.delete(sock);
      this.events.closed();
    });
    if (this.active < this.capacity) this.dispatch(sock);
    else this.parked.push(sock);
    if (this.active >= this.capacity) this.pause();
  }

  private dispatch(sock: net.Socket): void {
    if (this.active++ === 0) this.busySince = Date.now();
    sock.once('close', () => {
      if (--this.active === 0) this.busySince = 0;
      this.next();
    });
    for (const f of this.admit) f.call(this.server, sock);
    sock.resume();
  }

  private next(): void {
    while (this.active < this.capacity && this.parked.length > 0) {
      const s = this.parked.shift()!;
      if (s.destroyed) continue;
      this.dispatch(s);
    }
    if (this.active < this.capacity) this.resume();
  }

  /** sync: full — close this process's copy of each listening socket, and ask for fresh ones */
  private pause(): void {
    const relisten = this.events.relisten;
    if (!relisten || this.paused || this.closed) return;
    this.paused = true;
    (this.hold ??= setInterval(() => undefined, 1 << 30)).ref();
    for (let i = 0; i < this.servers.length; i++) {
      const h = (this.servers[i] as unknown as { _handle: ListenHandle | null })._handle;
      if (!h || this.spare[i]) continue;
      // the handle only: the net.Server object (the app's) stays as it is, only its fd goes away
      h.close();
      this.spare[i] = relisten(i);
    }
  }

  /** a slot is free again: listen on the fresh copies */
  private resume(): void {
    if (!this.paused || this.closed) return;
    this.paused = false;
    const waits: Promise<unknown>[] = [];
    for (let i = 0; i < this.servers.length; i++) {
      const next = this.spare[i];
      this.spare[i] = undefined;
      if (!next) continue;
      waits.push(next);
      const server = this.servers[i] as unknown as { _handle: ListenHandle | null };
      const old = server._handle;
      void next.then((h) => {
        if (this.paused && !this.closed && server._handle === old) {
          // full again (another --bind took a connection) before this copy came: keep it for the next resume
          if (this.spare[i]) (h as unknown as ListenHandle).close?.();
          else this.spare[i] = Promise.resolve(h);
          return;
        }
        if (this.closed || server._handle !== old) {
          // stopped meanwhile: this copy is not needed
          (h as unknown as ListenHandle).close?.();
          return;
        }
        const nh = h as unknown as ListenHandle;
        // what net.Server.listen does with a handle: same owner, same connection callback
        nh.onconnection = old!.onconnection;
        for (const k of Object.getOwnPropertySymbols(old)) if (typeof (old as Record<symbol, unknown>)[k] === 'object') nh[k] = (old as Record<symbol, unknown>)[k];
        server._handle = nh;
        nh.listen(511);
      });
    }
    // listening again (or not needed): nothing to wait for any more
    void Promise.all(waits).then(() => { if (!this.paused) this.hold?.unref(); });
  }

  /** connections accepted and waiting for a slot */
  get waiting(): number {
    return this.parked.length;
  }

  /** Stop accepting; accepted connections (in service or waiting) are still served. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.servers) {
      const h = (s as unknown as { _handle: ListenHandle | null })._handle;
      if (this.paused && h) {
        // already given up (sync, busy): only forget it
        (s as unknown as { _handle: ListenHandle | null })._handle = null;
        continue;
      }
      netClose.call(s);
    }
    for (const p of this.spare) void p?.then((h) => (h as unknown as ListenHandle).close?.());
    if (this.hold) clearInterval(this.hold);
  }

  /** responses not yet started close their connection (a drain began) */
  closeAfterCurrent(): void {
    for (const s of this.sockets) {
      const res = (s as unknown as { _httpMessage?: ServerResponse })._httpMessage;
      if (res && !res.headersSent) res.shouldKeepAlive = false;
    }
  }

  /** Drop everything still open (the graceful timeout ran out). */
  destroyAll(): void {
    for (const s of this.sockets) s.destroy();
    this.parked.length = 0;
  }
}
