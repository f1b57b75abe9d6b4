import net from 'node:net';
import type { Server as HttpServer } from 'node:http';

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

/**
 * Accepts connections for one event loop and hands them to the app's server at most `capacity` at
 * a time: gunicorn's one-request-at-a-time sync worker (capacity 1) and its async workers'
 * --worker-connections. Node's own `server.maxConnections` closes the connections over the limit;
 * here they are accepted paused (not read) and wait in a FIFO until a slot frees, so none is
 * dropped. The app's server listens on the first socket (so `server.address()` and the app's
 * 'listening' callbacks behave); further --bind sockets feed the same queue.
 */
export class Acceptor {
  /** the app server's own 'connection' listeners (http's parser setup), called when a socket is admitted */
  private readonly admit: Array<(s: net.Socket) => void>;
  private readonly parked: net.Socket[] = [];
  private readonly extra: net.Server[] = [];
  /** every socket accepted and not yet closed */
  readonly sockets = new Set<net.Socket>();
  private active = 0;
  private closed = false;
  private readonly onConnection = (sock: net.Socket) => this.accept(sock);

  constructor(readonly server: HttpServer | net.Server, readonly capacity: number) {
    this.admit = server.listeners('connection') as Array<(s: net.Socket) => void>;
    server.removeAllListeners('connection');
    server.on('connection', this.onConnection);
    (server as unknown as { pauseOnConnect: boolean }).pauseOnConnect = true;
  }

  async listen(handles: SocketHandle[]): Promise<void> {
    const [first, ...rest] = handles;
    if (first) await listenOn(this.server, first);
    for (const h of rest) {
      const s = net.createServer({ pauseOnConnect: true }, this.onConnection);
      this.extra.push(s);
      await listenOn(s, h);
    }
  }

  private accept(sock: net.Socket): void {
    this.sockets.add(sock);
    if (this.active < this.capacity) this.dispatch(sock);
    else this.parked.push(sock);
  }

  private dispatch(sock: net.Socket): void {
    this.active++;
    sock.once('close', () => {
      this.sockets.delete(sock);
      this.active--;
      this.next();
    });
    for (const f of this.admit) f.call(this.server, sock);
    sock.resume();
  }

  private next(): void {
    while (this.active < this.capacity && this.parked.length > 0) {
      const s = this.parked.shift()!;
      if (s.destroyed) {
        this.sockets.delete(s);
        continue;
      }
      this.dispatch(s);
    }
  }

  /** connections accepted and waiting for a slot */
  get waiting(): number {
    return this.parked.length;
  }

  /** Stop accepting; accepted connections (in service or waiting) are still served. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.close();
    for (const s of this.extra) s.close();
    this.closeIdle();
  }

  /** close keep-alive connections that are between requests */
  closeIdle(): void {
    (this.server as HttpServer).closeIdleConnections?.();
  }

  /** Drop everything still open (the graceful timeout ran out). */
  destroyAll(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    this.parked.length = 0;
  }
}
