import type { SocketHandle } from './acceptor';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BaseWorker, heartbeat } from './base';

/**
 * `sync` (gunicorn's SyncWorker): one request at a time per process. Further connections are
 * accepted but not read until the current one is done, then served in arrival order — none is
 * dropped. As gunicorn's sync worker, every response closes its connection (no keep-alive).
 */
export class PrometheusWorker extends BaseWorker {
  protected override closeEachConnection = true;
  /** Date.now() when the request in progress started: the master times it out past --timeout (as gunicorn's sync worker) */
  private busySince: number | undefined;
  private readonly done = () => { this.busySince = undefined; };

  override handleRequest(req: IncomingMessage, res: ServerResponse): void {
    super.handleRequest(req, res);
    this.busySince = Date.now();
    res.once('close', this.done);
  }

  protected override async serve(handles: SocketHandle[][]): Promise<void> {
    heartbeat.busySince = () => this.busySince;
    await this.serveInProcess(handles, 1);
  }
}
