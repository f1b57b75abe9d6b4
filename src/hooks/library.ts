/**
 * The reference's hooks, for servers that manage their own processes and call the hooks themselves
 * (`import { hooks } from 'prefork-otel'`). Same names, arguments and attributes as the reference:
 * `server.master_metrics`, `worker.metrics`, `worker.start_time`, `req.start_time`. (The runner uses
 * gunicorn's own hook semantics with these defaults built in: see src/hooks/server.ts and docs/runner.md.)
 * Metrics and MasterMetrics are created on the process's prefork-otel pipeline (the preload's) unless one
 * is given, else on the global MeterProvider (src/metrics/default-provider.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { MeterProvider } from '@opentelemetry/api';
import { EndpointPolicy } from '../metrics/labels';
import { MasterMetrics } from '../metrics/MasterMetrics';
import { Metrics } from '../metrics/Metrics';
import { statusErrorType } from '../metrics/status';
import { resolveEndpoint } from './routes';

export interface LibraryServer { master_metrics?: MasterMetrics; meterProvider?: MeterProvider }
export interface LibraryWorker { metrics?: Metrics; start_time?: number; pid?: number; meterProvider?: MeterProvider }
type TimedRequest = IncomingMessage & { start_time?: number };

/** endpoint values for post_request when the caller gives none: the preload's policy, with its default cap */
const policy = new EndpointPolicy(500);

export const hooks = {
  /** on_starting: the master's metrics (`server.master_metrics = MasterMetrics()`). */
  on_starting(server: LibraryServer): void {
    server.master_metrics ??= new MasterMetrics({ meterProvider: server.meterProvider });
  },
  /** on_reload: the master keeps its counters across a reload (restarts and signals are totals). */
  on_reload(server: LibraryServer): void {
    server.master_metrics ??= new MasterMetrics({ meterProvider: server.meterProvider });
  },
  /** worker_int: the worker's metrics and start time (`worker.metrics = Metrics()`). */
  worker_int(worker: LibraryWorker): void {
    worker.metrics ??= new Metrics({ meterProvider: worker.meterProvider, workerId: worker.pid });
    worker.start_time ??= Date.now() / 1000;
  },
  /** pre_request: note the request's start time. */
  pre_request(_worker: LibraryWorker, req: TimedRequest): void {
    req.start_time = performance.now();
  },
  /**
   * post_request: record the request (method, endpoint, duration). As the HTTP observer counts: a 504
   * or a 408 fails it as TimeoutError, any other 5xx as RequestError (docs/metrics.md).
   * `endpoint` defaults to the route template / normalised path of `req`.
   */
  post_request(worker: LibraryWorker, req: TimedRequest, res: ServerResponse, endpoint?: string): void {
    if (req.start_time === undefined) return;
    const seconds = (performance.now() - req.start_time) / 1000;
    hooks.worker_int(worker);
    const ep = endpoint ?? resolveEndpoint(req as never, policy);
    const errorType = statusErrorType(res.statusCode);
    worker.metrics!.recordRequest(req.method ?? 'OTHER', ep, seconds, errorType === undefined, errorType);
  },
};
