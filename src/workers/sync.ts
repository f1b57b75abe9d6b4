import type { SocketHandle } from './acceptor';
import { BaseWorker } from './base';

/**
 * `sync` (gunicorn's SyncWorker): one request at a time per process. Further connections are
 * accepted but not read until the current one is done, then served in arrival order — none is
 * dropped. As gunicorn's sync worker, every response closes its connection (no keep-alive).
 */
export class PrometheusWorker extends BaseWorker {
  protected override closeEachConnection = true;

  protected override async serve(handles: SocketHandle[][]): Promise<void> {
    await this.serveInProcess(handles, 1);
  }
}
