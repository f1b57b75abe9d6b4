/**
 * Beside the app's own OpenTelemetry (docs/opentelemetry-coexistence.md), with the real
 * @opentelemetry/sdk-node: an app that starts its own NodeSDK with instrumentation-http and its own
 * reader — a PrometheusExporter on its own port, or an OTLP reader to the in-test receiver
 * (test/fixtures/otlp-receiver.ts) — with the preload loaded before it and after it, in one process
 * and under the runner. Both sides are counted exactly: the app's http.server.request.duration count
 * equals the requests sent, and so does our gunicorn_worker_requests_total.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import {
  CLI, FIXTURES, REGISTER_CJS, freePort, hit, parseMetrics, scrape, scrapeText, select, startNode, total, waitFor, type Proc, type Sample,
} from './helpers';
import { pointsOf, startHttpReceiver, type Export, type Receiver } from './fixtures/otlp-receiver';

const APP = join(FIXTURES, 'otel-sdk-app.cjs');
const TRACING = join(FIXTURES, 'otel-sdk-tracing.cjs');
/** the app's SDK sends no traces or logs anywhere (its defaults would try localhost:4318) */
const SDK_ENV = { OTEL_TRACES_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none' };
const N = 9;

const running = new Set<Proc>();
afterEach(async () => {
  for (const p of running) await p.stop('SIGKILL');
  running.clear();
});

let receiver: Receiver;
beforeAll(async () => { receiver = await startHttpReceiver(await freePort()); });
afterAll(async () => { await receiver?.close(); });

type Order = 'preload first' | 'sdk first';

interface Started { app: Proc; port: number; metricsPort: number; appPromPort: number }

/** `node -r register app` (the app starts its SDK on its first line), or `node -r tracing -r register app`. */
async function startSingle(order: Order, env: Record<string, string>): Promise<Started> {
  const [port, metricsPort, appPromPort] = [await freePort(), await freePort(), await freePort()];
  const args = order === 'preload first' ? ['-r', REGISTER_CJS, APP] : ['-r', TRACING, '-r', REGISTER_CJS, APP];
  const app = startNode(args, {
    ...SDK_ENV, APP_PORT: String(port), APP_PROM_PORT: String(appPromPort), APP_OTLP_URL: receiver.url,
    PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1', ...env,
  });
  running.add(app);
  await waitFor(() => {
    if (app.child.exitCode !== null) throw new Error(`app exited ${app.child.exitCode}: ${app.stderr}`);
    return app.stdout.includes('listening');
  }, 30_000, 'app listening');
  return { app, port, metricsPort, appPromPort };
}

async function sendOrders(port: number, n = N): Promise<void> {
  for (let i = 0; i < n; i++) expect(await hit(`http://127.0.0.1:${port}/order/${i}`)).toBe(200);
}

/** the app's http.server.request.duration count over all its series, on its own Prometheus endpoint */
function appRequestCount(s: Sample[]): number {
  return total(s, 'http_server_request_duration_count');
}

/** our count for the requests sent (GET /order/:id); scrapes of the app's endpoint are requests too, on /metrics */
function ourCount(s: Sample[]): number {
  return total(s, 'gunicorn_worker_requests_total', { method: 'GET', endpoint: '/order/:id' });
}

/** The latest export of each process (by process.pid in its resource): cumulative, so it holds the totals. */
function latestPerProcess(exports: Export[]): Export[] {
  const byPid = new Map<string, Export>();
  for (const e of exports) {
    for (const rm of e.resourceMetrics) byPid.set(String(rm.resource['process.pid']), { ...e, resourceMetrics: [rm] });
  }
  return [...byPid.values()];
}

function exportedSum(exports: Export[], name: string, match: (attrs: Record<string, unknown>) => boolean = () => true): number {
  let n = 0;
  for (const e of latestPerProcess(exports)) {
    for (const p of pointsOf(e, name)) if (match(p.attributes)) n += p.count ?? p.value ?? 0;
  }
  return n;
}

const orderSeries = (a: Record<string, unknown>) => a.method === 'GET' && a.endpoint === '/order/:id';

describe.each(['preload first', 'sdk first'] as Order[])('single process, %s', (order) => {
  it('the app\'s own Prometheus reader keeps all its metrics; ours keep the gunicorn_* series; nothing crosses over', async () => {
    const { app, port, metricsPort, appPromPort } = await startSingle(order, { APP_READER: 'prometheus' });
    await sendOrders(port);
    const theirs = await waitFor(async () => {
      const s = parseMetrics(await scrapeText(appPromPort));
      return appRequestCount(s) === N ? s : undefined;
    }, 15_000, `the app's endpoint counting ${N} requests`);
    expect(total(theirs, 'app_orders_total')).toBe(N);
    expect(select(theirs, 'gunicorn_worker_requests_total')).toEqual([]);
    expect(theirs.filter((s) => s.name.startsWith('prefork_otel_'))).toEqual([]);
    const ours = await scrape(metricsPort);
    expect(ourCount(ours)).toBe(N);
    // ours: the gunicorn_* series and our own scrape-health series (docs/metrics.md), nothing of the app's
    expect(ours.filter((s) => !s.name.startsWith('gunicorn_') && s.name !== 'target_info' && !s.name.startsWith('prefork_otel_'))).toEqual([]);
    expect(app.stderr).toBe('');
  });

  it('the app\'s own OTLP reader exports its metrics to its collector; ours keep the gunicorn_* series', async () => {
    receiver.exports.length = 0;
    const { app, port, metricsPort } = await startSingle(order, { APP_READER: 'otlp', APP_OTLP_INTERVAL: '200' });
    await sendOrders(port);
    await waitFor(() => exportedSum(receiver.exports, 'http.server.request.duration') === N, 15_000, `an OTLP export counting ${N} requests`);
    expect(exportedSum(receiver.exports, 'app_orders_total')).toBe(N);
    const [latest] = latestPerProcess(receiver.exports);
    expect(latest!.resourceMetrics[0]!.resource['service.name']).toBe('the-app');
    expect(exportedSum(receiver.exports, 'gunicorn_worker_requests_total')).toBe(0);
    expect(ourCount(await scrape(metricsPort))).toBe(N);
    expect(app.stderr).toBe('');
  });
});

describe('joining the app\'s pipeline: metricProducers: [new PreforkMetricProducer()]', () => {
  it('Prometheus: the gunicorn_* series on the app\'s endpoint under its resource; OTEL_METRICS_EXPORTER=none with PREFORK_OTEL_EXPORTER=none turns ours off, said in one line', async () => {
    const { app, port, metricsPort, appPromPort } = await startSingle('preload first', {
      APP_READER: 'prometheus', APP_JOIN: '1', OTEL_METRICS_EXPORTER: 'none', PREFORK_OTEL_EXPORTER: 'none',
    });
    await sendOrders(port);
    const theirs = await waitFor(async () => {
      const s = parseMetrics(await scrapeText(appPromPort));
      return appRequestCount(s) === N ? s : undefined;
    }, 15_000, 'the app\'s endpoint');
    expect(ourCount(theirs)).toBe(N);
    expect(select(theirs, 'gunicorn_worker_requests_total').map((s) => s.labels.worker_id)).toContain(String(app.child.pid));
    expect(select(theirs, 'target_info')[0]!.labels.service_name).toBe('the-app');
    await expect(fetch(`http://127.0.0.1:${metricsPort}/metrics`)).rejects.toThrow();
    expect(app.stderr).toBe('prefork-otel: metrics endpoint off (PREFORK_OTEL_EXPORTER=none)\n');
  });

  it('OTLP: the gunicorn_* series travel with the app\'s export, and our endpoint still serves the same numbers', async () => {
    receiver.exports.length = 0;
    const { app, port, metricsPort } = await startSingle('sdk first', { APP_READER: 'otlp', APP_OTLP_INTERVAL: '200', APP_JOIN: '1' });
    await sendOrders(port);
    await waitFor(() => exportedSum(receiver.exports, 'gunicorn_worker_requests_total', orderSeries) === N
      && exportedSum(receiver.exports, 'http.server.request.duration') === N, 15_000, 'an OTLP export with both');
    const rm = latestPerProcess(receiver.exports)[0]!.resourceMetrics[0]!;
    expect(rm.resource['service.name']).toBe('the-app');
    expect(rm.scopes.map((s) => s.name)).toContain('prefork-otel');
    expect(ourCount(await scrape(metricsPort))).toBe(N);
    expect(app.stderr).toBe('');
  });
});

describe('PREFORK_OTEL_GLOBAL=true', () => {
  it('without an SDK of the app\'s, the app\'s own instruments land on our endpoint', async () => {
    const metricsPort = await freePort();
    const port = await freePort();
    const script = `const c = require('@opentelemetry/api').metrics.getMeter('the-app').createCounter('app_orders_total');
      require('node:http').createServer((req, res) => { c.add(1); res.end('ok'); }).listen(${port}, '127.0.0.1', () => console.log('listening'));`;
    const app = startNode(['-r', REGISTER_CJS, '-e', script], { PREFORK_OTEL_GLOBAL: 'true', PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1' });
    running.add(app);
    await waitFor(() => app.stdout.includes('listening'), 20_000, 'listening');
    for (let i = 0; i < N; i++) await hit(`http://127.0.0.1:${port}/order/${i}`);
    const s = await scrape(metricsPort);
    expect(total(s, 'app_orders_total')).toBe(N);
    expect(ourCount(s)).toBe(N);
    expect(app.stderr).toBe('');
  });

  it('an app NodeSDK started later takes over the global, said in one line; both pipelines keep their numbers', async () => {
    const { app, port, metricsPort, appPromPort } = await startSingle('preload first', { APP_READER: 'prometheus', PREFORK_OTEL_GLOBAL: 'true' });
    await sendOrders(port);
    const theirs = await waitFor(async () => {
      const s = parseMetrics(await scrapeText(appPromPort));
      return appRequestCount(s) === N ? s : undefined;
    }, 15_000, 'the app\'s endpoint');
    expect(total(theirs, 'app_orders_total')).toBe(N);
    expect(ourCount(await scrape(metricsPort))).toBe(N);
    expect(app.stderr).toBe('prefork-otel: the app registered its own global MeterProvider (PREFORK_OTEL_GLOBAL=true had made ours global): '
      + 'handing over to it; instruments created before now stay on prefork-otel\'s endpoint, gunicorn_* series are unaffected\n');
  });
  it('an app NodeSDK registered first stays global, said in one line; both pipelines keep their numbers', async () => {
    const { app, port, metricsPort, appPromPort } = await startSingle('sdk first', { APP_READER: 'prometheus', PREFORK_OTEL_GLOBAL: 'true' });
    await sendOrders(port);
    const theirs = await waitFor(async () => {
      const s = parseMetrics(await scrapeText(appPromPort));
      return appRequestCount(s) === N ? s : undefined;
    }, 15_000, 'the app\'s endpoint');
    expect(total(theirs, 'app_orders_total')).toBe(N);
    const ours = await scrape(metricsPort);
    expect(ourCount(ours)).toBe(N);
    expect(select(ours, 'app_orders_total')).toEqual([]);
    expect(app.stderr).toBe('prefork-otel: PREFORK_OTEL_GLOBAL=true, but another global MeterProvider is already registered: it stays global, '
      + 'prefork-otel keeps its own pipeline (its gunicorn_* series are unaffected)\n');
  });
});

describe('PREFORK_OTEL_EXPORTER takes precedence over OTEL_METRICS_EXPORTER for our endpoint', () => {
  it('OTEL_METRICS_EXPORTER=none (for the app\'s sdk-node) with PREFORK_OTEL_EXPORTER=prometheus: ours serves, and says why', async () => {
    const { app, port, metricsPort } = await startSingle('preload first', { APP_READER: 'otlp', OTEL_METRICS_EXPORTER: 'none', PREFORK_OTEL_EXPORTER: 'prometheus' });
    await sendOrders(port);
    expect(ourCount(await scrape(metricsPort))).toBe(N);
    expect(app.stderr).toBe(`prefork-otel: metrics endpoint serving on 127.0.0.1:${metricsPort}/metrics (PREFORK_OTEL_EXPORTER=prometheus)\n`);
  });

  it.each([
    [{ PREFORK_OTEL_EXPORTER: 'zipkin', OTEL_METRICS_EXPORTER: 'prometheus' }, 'prefork-otel: invalid PREFORK_OTEL_EXPORTER="zipkin": expected a comma list of prometheus, otlp, console, none'],
    [{ PREFORK_OTEL_EXPORTER: 'none,prometheus' }, 'prefork-otel: invalid PREFORK_OTEL_EXPORTER="none,prometheus": "none" cannot be combined with other exporters'],
    [{ PREFORK_OTEL_GLOBAL: 'maybe' }, 'prefork-otel: invalid PREFORK_OTEL_GLOBAL="maybe": expected one of true, false, 1, 0, yes, no, on, off'],
  ])('bad value %o: one line, exit 2', async (env, line) => {
    const p = startNode(['-r', REGISTER_CJS, '-e', 'setTimeout(() => {}, 60000)'], env);
    running.add(p);
    expect(await p.exited).toEqual({ code: 2, signal: null });
    expect(p.stderr).toBe(`${line}\n`);
  });
});

describe('under the runner: prefork-otel -w 2 with the app\'s NodeSDK and an OTLP reader in every worker', () => {
  it('each worker\'s app exports its own http.server.request.duration; the master serves our union; joined, each worker\'s export carries its gunicorn_* series', async () => {
    receiver.exports.length = 0;
    const [port, metricsPort] = [await freePort(), await freePort()];
    const runner = startNode([CLI, '-w', '2', '-b', `127.0.0.1:${port}`, APP], {
      ...SDK_ENV, APP_READER: 'otlp', APP_OTLP_URL: receiver.url, APP_OTLP_INTERVAL: '200', APP_JOIN: '1',
      PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
    });
    running.add(runner);
    const pids = await waitFor(async () => {
      if (runner.child.exitCode !== null) throw new Error(`runner exited: ${runner.stderr}`);
      const s = await scrape(metricsPort).catch(() => [] as Sample[]);
      const up = select(s, 'gunicorn_worker_state', { state: 'running' }).map((x) => x.labels.worker_id!).sort();
      return up.length === 2 ? up : undefined;
    }, 30_000, 'two running workers');
    await sendOrders(port);
    // the master's union: exact
    await waitFor(async () => ourCount(await scrape(metricsPort)) === N, 15_000, 'the master\'s union');
    // the apps' own pipelines: every worker exported its own requests, together exactly N
    await waitFor(() => exportedSum(receiver.exports, 'http.server.request.duration') === N
      && exportedSum(receiver.exports, 'gunicorn_worker_requests_total', orderSeries) === N, 15_000, `OTLP exports counting ${N}`);
    const latest = latestPerProcess(receiver.exports).filter((e) => pids.includes(String(e.resourceMetrics[0]!.resource['process.pid'])));
    // (the load may all land on one worker: a worker that served nothing exports no request series)
    const serving = latest.filter((e) => pointsOf(e, 'gunicorn_worker_requests_total').length > 0);
    expect(serving.length).toBeGreaterThanOrEqual(1);
    for (const e of latest) {
      const pid = String(e.resourceMetrics[0]!.resource['process.pid']);
      // a worker's export carries its own series only (worker_id = its pid), under the app's resource
      if (serving.includes(e)) expect(new Set(pointsOf(e, 'gunicorn_worker_requests_total').map((p) => p.attributes.worker_id))).toEqual(new Set([pid]));
      expect(e.resourceMetrics[0]!.resource['service.name']).toBe('the-app');
    }
    // our master endpoint carries none of the app's metrics
    const ours = await scrape(metricsPort);
    expect(ours.filter((s) => !s.name.startsWith('gunicorn_') && s.name !== 'target_info' && !s.name.startsWith('prefork_otel_'))).toEqual([]);
    expect(await runner.stop()).toEqual({ code: 0, signal: null });
  });
});

describe('the runner never switches its endpoint off silently', () => {
  it('OTEL_METRICS_EXPORTER=none: the master logs that its endpoint is off and why', async () => {
    const port = await freePort();
    const runner = startNode([CLI, '-w', '1', '-b', `127.0.0.1:${port}`, join(FIXTURES, 'runner-http.cjs')], { OTEL_METRICS_EXPORTER: 'none' });
    running.add(runner);
    await waitFor(async () => (await hit(`http://127.0.0.1:${port}/`).catch(() => 0)) === 200, 30_000, 'the runner serving');
    expect(runner.stderr).toMatch(/\[INFO\] Metrics endpoint off \(OTEL_METRICS_EXPORTER=none; PREFORK_OTEL_EXPORTER takes precedence for prefork-otel alone\)\n/);
    expect(runner.stderr).not.toContain('Metrics at:');
    expect(await runner.stop()).toEqual({ code: 0, signal: null });
  });
});
