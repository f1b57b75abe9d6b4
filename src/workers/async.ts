import type { SocketHandle } from './acceptor';
import { BaseWorker } from './base';

/**
 * `eventlet` / `gevent` / `async` (gunicorn's async workers): one event loop serving many requests
 * concurrently — Node's own model — with at most --worker-connections connections open at once.
 * Connections over the limit are accepted but not read until one closes (Node's maxConnections
 * would close them); keep-alive as --keep-alive.
 */
export class PrometheusAsyncWorker extends BaseWorker {
  protected override loop = this.createLoop(this.boot.workerConnections, false);

  protected override async serve(handles: SocketHandle[][]): Promise<void> {
    await this.serveInProcess(handles);
  }
}

/** `eventlet`: gunicorn's EventletWorker name, kept so configs carry over. */
export class PrometheusEventletWorker extends PrometheusAsyncWorker {}

/** `gevent` (and `async`): gunicorn's GeventWorker name, kept so configs carry over. */
export class PrometheusGeventWorker extends PrometheusAsyncWorker {}
