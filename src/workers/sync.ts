import type { SocketHandle } from './acceptor';
import { BaseWorker } from './base';

/**
 * `sync` (gunicorn's SyncWorker): one request at a time per process, and every response closes its
 * connection (no keep-alive), as gunicorn's sync worker. While it serves, the worker holds no
 * listening socket (see Acceptor: it closes its own copy and takes a fresh one from the master
 * when free), so connections that arrive meanwhile go to a free worker, as gunicorn's sync worker
 * calls accept() only when free. A connection accepted in the same instant as the one being served
 * waits its turn here, unread, and is served next — none is dropped.
 */
export class PrometheusWorker extends BaseWorker {
  protected override loop = this.createLoop(1, true, true);

  protected override async serve(handles: SocketHandle[][]): Promise<void> {
    await this.serveInProcess(handles);
  }
}
