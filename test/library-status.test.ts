/**
 * The library's post_request hook and the preload's HTTP observer count the same status codes the same
 * way (docs/metrics.md): 504 and 408 are TimeoutError, other 5xx RequestError, the rest successes.
 * Both sides get the same real requests: the library through a node:http server in this process that
 * calls the hooks, the observer through a preloaded Fastify app.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config';
import { Telemetry } from '../src/export/telemetry';
import { hooks, type LibraryWorker } from '../src/hooks/library';
import { processProducer } from '../src/metrics/Metrics';
import { FIXTURES, REGISTER_CJS, hit, parseMetrics, scrape, startApp, total, waitFor, type Proc, type Sample } from './helpers';

const STATUSES = [200, 204, 404, 408, 499, 500, 502, 503, 504];

/** failed / error_handling totals by error type, and the request count, for one status's requests */
function counts(s: Sample[], endpoint: string) {
  const m = { endpoint };
  return {
    requests: total(s, 'gunicorn_worker_requests_total', m),
    RequestError: total(s, 'gunicorn_worker_failed_requests_total', { ...m, error_type: 'RequestError' }),
    TimeoutError: total(s, 'gunicorn_worker_failed_requests_total', { ...m, error_type: 'TimeoutError' }),
    handledTimeout: total(s, 'gunicorn_worker_error_handling_total', { ...m, error_type: 'TimeoutError' }),
  };
}

describe('post_request (library) and the observer (preload) classify status codes alike', () => {
  let server: Server;
  let telemetry: Telemetry;
  let libPort: number;
  let app: Proc;
  let appPort: number;
  let metricsPort: number;

  beforeAll(async () => {
    telemetry = new Telemetry(loadConfig({}, { targetInfo: false }), [processProducer]);
    const worker: LibraryWorker = { pid: 4242, meterProvider: telemetry.meterProvider };
    hooks.worker_int(worker);
    server = createServer((req, res) => {
      hooks.pre_request(worker, req);
      res.on('finish', () => hooks.post_request(worker, req, res, '/status/:code'));
      res.statusCode = Number(req.url!.split('/')[2]);
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    libPort = (server.address() as AddressInfo).port;
    ({ app, appPort, metricsPort } = await startApp(['-r', REGISTER_CJS, join(FIXTURES, 'fastify-app.cjs')]));
  });
  afterAll(async () => {
    await new Promise((r) => server?.close(r));
    await telemetry?.shutdown();
    await app?.stop();
  });

  it('504 and 408 are TimeoutError, other 5xx RequestError, everything else a success: the same numbers on both sides', async () => {
    for (const code of STATUSES) {
      for (let i = 0; i < 2; i++) {
        expect(await hit(`http://127.0.0.1:${libPort}/status/${code}`)).toBe(code);
        expect(await hit(`http://127.0.0.1:${appPort}/status/${code}`)).toBe(code);
      }
    }
    const lib = parseMetrics(await telemetry.scrape());
    const obs = await waitFor(async () => {
      const s = await scrape(metricsPort);
      return total(s, 'gunicorn_worker_requests_total', { endpoint: '/status/:code' }) === STATUSES.length * 2 ? s : undefined;
    }, 15_000, 'the observer counted every request');
    expect(counts(lib, '/status/:code')).toEqual(counts(obs, '/status/:code'));
    expect(counts(lib, '/status/:code')).toEqual({ requests: 18, RequestError: 2 * 3, TimeoutError: 2 * 2, handledTimeout: 2 * 2 });
  });
});
