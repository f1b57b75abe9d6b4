import type { SocketHandle } from './acceptor';
import { BaseWorker, heartbeat } from './base';

/**
 * `sync` (gunicorn's SyncWorker): one request at a time per process, and every response closes its
 * connection (no keep-alive), as gunicorn's sync worker. While it serves, the worker holds no
 * listening socket (see Acceptor: it closes its own copy and takes a fresh one from the master
 * when free), so connections that arrive meanwhile go to a free worker, as gunicorn's sync worker
 * calls accept() only when free. A connection accepted in the same instant as the one being served
 * waits its turn here, unread, and is served next — none is dropped.
 *
 * --timeout, as gunicorn's sync worker: the worker's heartbeat is the start of the request in
 * progress (gunicorn's sync worker notifies only between requests), so a request that outlives
 * --timeout gets the worker killed and its client disconnected, whether it computes or only waits
 * (a timer, I/O). With --abort-on-timeout (the default) the worker does it itself, the request
 * counted failed with TimeoutError: from its event loop when the request waits, from the watchdog
 * thread when it blocks the loop. Otherwise the master's kill does it (WORKER TIMEOUT).
 */
export class PrometheusWorker extends BaseWorker {
  protected override loop = this.createLoop(1, true, true);

  protected override async serve(handles: SocketHandle[][]): Promise<void> {
    await this.serveInProcess(handles);
    const loop = this.loop;
    heartbeat.source = () => loop.busySince || Date.now();
    if (this.boot.timeout > 0 && this.watchdogEnabled) {
      const limit = this.boot.timeout * 1000;
      setInterval(() => {
        const since = loop.busySince;
        if (since && Date.now() - since > limit) this.timedOut();
      }, this.boot.beatMs).unref();
    }
  }

  /** a request (waiting, not blocking the loop) outlived --timeout: abort as the watchdog would, then die */
  private timedOut(): void {
    this.abortOnTimeout('request in progress');
    this.loop.abandon();
    process.kill(process.pid, 'SIGKILL');
  }
}
