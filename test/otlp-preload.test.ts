/**
 * OTLP end to end, under the preload: the app runs with the standard OTel environment
 * (OTEL_METRICS_EXPORTER=otlp, OTEL_EXPORTER_OTLP_*) and exports with OpenTelemetry's maintained
 * exporter packages to an OTLP receiver started inside this test. No OpenTelemetry Collector binary
 * can be downloaded on these machines (no network but the npm registry and Debian apt), which is why
 * the receiver is in-process: test/fixtures/otlp-receiver.ts decodes OTLP/JSON, OTLP/protobuf (with
 * OpenTelemetry's generated protobuf root) and OTLP/gRPC exactly as a collector's OTLP receiver would.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { FIXTURES, REGISTER_CJS, freePort, hit, scrape, select, startNode, waitFor, type Proc } from './helpers';
import {
  metricNames, pointsOf, startGrpcReceiver, startHttpReceiver, type Export, type Receiver,
} from './fixtures/otlp-receiver';
import { collectorPrometheusName, type Strategy } from './fixtures/collector-naming';

const APP = join(FIXTURES, 'otlp-app.cjs');
const WORKER_METRICS = [
  'gunicorn_worker_cpu_percent', 'gunicorn_worker_error_handling_total', 'gunicorn_worker_failed_requests_total',
  'gunicorn_worker_memory_bytes', 'gunicorn_worker_request_duration_seconds', 'gunicorn_worker_requests_total',
  'gunicorn_worker_state', 'gunicorn_worker_uptime_seconds',
];

const running = new Set<Proc>();
afterEach(async () => {
  // a test that failed half-way must not leave its app exporting into the next test's receiver
  for (const app of running) await app.stop('SIGKILL');
  running.clear();
});

async function startApp(env: Record<string, string>): Promise<{ app: Proc; port: number }> {
  const port = await freePort();
  const app = startNode(['-r', REGISTER_CJS, APP], { APP_PORT: String(port), OTEL_METRIC_EXPORT_INTERVAL: '600000', ...env });
  running.add(app);
  await waitFor(() => app.stdout.includes('listening') || app.child.exitCode !== null, 20_000, 'app listening');
  if (!app.stdout.includes('listening')) throw new Error(`app did not start: ${app.stderr}`);
  return { app, port };
}

/** A known mix: 12 GET /users/:id, 3 POST /orders/:id/items, 4 × 503, 2 × 500 — 21 requests. */
async function sendKnownMix(port: number): Promise<void> {
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 12; i++) await hit(`${base}/users/${100 + i}`);
  for (let i = 0; i < 3; i++) await hit(`${base}/orders/${i}/items`, { method: 'POST' });
  for (let i = 0; i < 4; i++) await hit(`${base}/fail/x`, { method: 'DELETE' });
  for (let i = 0; i < 2; i++) await hit(`${base}/throw`, { method: 'PUT' });
}

function sumOf(e: Export, name: string, match: Record<string, string> = {}): number {
  return pointsOf(e, name)
    .filter((p) => Object.entries(match).every(([k, v]) => p.attributes[k] === v))
    .reduce((a, p) => a + (p.value ?? p.count ?? 0), 0);
}

/** The exact numbers of sendKnownMix (+ the GET /quit that ended the app), as they must arrive. */
function expectKnownMix(e: Export, pid: number): void {
  const w = String(pid);
  expect(sumOf(e, 'gunicorn_worker_requests_total', { worker_id: w, method: 'GET', endpoint: '/users/:id' })).toBe(12);
  expect(sumOf(e, 'gunicorn_worker_requests_total', { worker_id: w, method: 'POST', endpoint: '/orders/:id/items' })).toBe(3);
  expect(sumOf(e, 'gunicorn_worker_requests_total', { worker_id: w, method: 'DELETE', endpoint: '/fail/x' })).toBe(4);
  expect(sumOf(e, 'gunicorn_worker_requests_total', { worker_id: w, method: 'PUT', endpoint: '/throw' })).toBe(2);
  expect(sumOf(e, 'gunicorn_worker_requests_total', { worker_id: w, method: 'GET', endpoint: '/quit' })).toBe(1);
  expect(sumOf(e, 'gunicorn_worker_requests_total')).toBe(22);
  // the histogram counts the same requests, series by series, with the contract's seconds buckets
  for (const p of pointsOf(e, 'gunicorn_worker_requests_total')) {
    const h = pointsOf(e, 'gunicorn_worker_request_duration_seconds').filter((x) => JSON.stringify(x.attributes) === JSON.stringify(p.attributes));
    expect(h).toHaveLength(1);
    expect(h[0]!.count).toBe(p.value);
    expect(h[0]!.bucketCounts!.reduce((a, b) => a + b, 0)).toBe(p.value);
    expect(h[0]!.explicitBounds).toEqual([0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]);
  }
  expect(sumOf(e, 'gunicorn_worker_failed_requests_total', { worker_id: w, method: 'DELETE', endpoint: '/fail/x', error_type: 'RequestError' })).toBe(4);
  expect(sumOf(e, 'gunicorn_worker_failed_requests_total', { worker_id: w, method: 'PUT', endpoint: '/throw', error_type: 'RequestError' })).toBe(2);
  expect(sumOf(e, 'gunicorn_worker_failed_requests_total')).toBe(6);
  expect(sumOf(e, 'gunicorn_worker_error_handling_total')).toBe(6);
  // attributes are exactly the reference's labels
  for (const p of pointsOf(e, 'gunicorn_worker_requests_total')) expect(Object.keys(p.attributes).sort()).toEqual(['endpoint', 'method', 'worker_id']);
  for (const p of pointsOf(e, 'gunicorn_worker_failed_requests_total')) expect(Object.keys(p.attributes).sort()).toEqual(['endpoint', 'error_type', 'method', 'worker_id']);
  for (const name of ['gunicorn_worker_memory_bytes', 'gunicorn_worker_uptime_seconds', 'gunicorn_worker_cpu_percent']) {
    expect(pointsOf(e, name).map((p) => p.attributes)).toEqual([{ worker_id: w }]);
  }
  expect(pointsOf(e, 'gunicorn_worker_state').map((p) => p.attributes)).toEqual([{ worker_id: w, state: 'running' }]);
  // names, types and units as the contract has them: a collector's Prometheus exporter derives the
  // suffixes from these (unit s → _seconds, By → _bytes, % → _percent, monotonic sum → _total)
  expect(metricNames(e)).toEqual(WORKER_METRICS);
  const meta = (n: string) => pointsOf(e, n)[0]!.metric;
  expect(meta('gunicorn_worker_requests_total')).toMatchObject({ type: 'sum', monotonic: true, temporality: 2, unit: '' });
  expect(meta('gunicorn_worker_failed_requests_total')).toMatchObject({ type: 'sum', monotonic: true, temporality: 2 });
  expect(meta('gunicorn_worker_request_duration_seconds')).toMatchObject({ type: 'histogram', temporality: 2, unit: 's' });
  expect(meta('gunicorn_worker_memory_bytes')).toMatchObject({ type: 'gauge', unit: 'By' });
  expect(meta('gunicorn_worker_cpu_percent')).toMatchObject({ type: 'gauge', unit: '%' });
  expect(meta('gunicorn_worker_uptime_seconds')).toMatchObject({ type: 'gauge', unit: 's' });
  expect(meta('gunicorn_worker_requests_total').description).toBe('Total requests handled by worker');
  // what arrived is named exactly as the contract by a collector's Prometheus exporter, whatever its
  // translation strategy (no _total_total, no _seconds_seconds)
  for (const strategy of ['UnderscoreEscapingWithSuffixes', 'UnderscoreEscapingWithoutSuffixes', 'NoUTF8EscapingWithSuffixes', 'NoTranslation'] as Strategy[]) {
    for (const name of WORKER_METRICS) expect(collectorPrometheusName(meta(name), strategy), `${strategy} ${name}`).toBe(name);
  }
}

describe('OTLP from the preload to an in-test receiver', () => {
  let http: Receiver;
  beforeAll(async () => { http = await startHttpReceiver(await freePort()); });
  afterAll(async () => { await http?.close(); });

  it('http/json: the final export of a process that ends by itself carries every request, named and attributed as the contract says, under the right resource', async () => {
    http.exports.length = 0;
    const { app, port } = await startApp({
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_EXPORTER_OTLP_ENDPOINT: http.url,
      OTEL_EXPORTER_OTLP_HEADERS: 'x-api-key=s3cret,x-tenant=shop%20one',
      OTEL_SERVICE_NAME: 'checkout',
      OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=e2e,service.namespace=shop,service.name=ignored-because-OTEL_SERVICE_NAME-wins',
    });
    await sendKnownMix(port);
    expect(http.exports).toHaveLength(0); // the interval is 10 minutes: nothing was exported yet
    await hit(`http://127.0.0.1:${port}/quit`);
    const exit = await app.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(http.exports).toHaveLength(1); // exactly one export: the final one, sent before the process ended
    const e = http.exports[0]!;
    expect(e.format).toBe('json');
    expect(e.headers['x-api-key']).toBe('s3cret');
    expect(e.headers['x-tenant']).toBe('shop one');
    expectKnownMix(e, app.child.pid!);
    expect(e.resourceMetrics).toHaveLength(1);
    const r = e.resourceMetrics[0]!.resource;
    expect(r['service.name']).toBe('checkout');
    expect(r['service.namespace']).toBe('shop');
    expect(r['deployment.environment']).toBe('e2e');
    expect(r['process.pid']).toBe(app.child.pid);
    expect(r['host.name']).toBe(hostname());
    expect(r['service.instance.id']).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(r['telemetry.sdk.language']).toBe('nodejs');
    // the one start line: what our exporter does, and which variable decided it
    expect(app.stderr).toBe('prefork-otel: metrics endpoint off, pushing OTLP (http/json) every 600000 ms '
      + '(OTEL_METRICS_EXPORTER=otlp; PREFORK_OTEL_EXPORTER takes precedence for prefork-otel alone)\n');
  });

  it('http/protobuf (the default protocol), gzip, metrics-specific endpoint: the same exact numbers', async () => {
    http.exports.length = 0;
    const { app, port } = await startApp({
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `${http.url}/v1/metrics`,
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9/not-used-when-the-metrics-endpoint-is-set',
      OTEL_EXPORTER_OTLP_METRICS_COMPRESSION: 'gzip',
      OTEL_RESOURCE_ATTRIBUTES: '',
    });
    await sendKnownMix(port);
    await hit(`http://127.0.0.1:${port}/quit`);
    expect(await app.exited).toEqual({ code: 0, signal: null });
    expect(http.exports).toHaveLength(1);
    const e = http.exports[0]!;
    expect(e.format).toBe('protobuf');
    expect(e.headers['content-encoding']).toBe('gzip');
    expectKnownMix(e, app.child.pid!);
    const r = e.resourceMetrics[0]!.resource;
    expect(String(r['service.name'])).toMatch(/^unknown_service:/); // the spec's fallback
    expect(r['process.pid']).toBe(app.child.pid);
  });

  it('prometheus,otlp: periodic exports while running, a final one at the end without loss, and the scrape shows the same numbers', async () => {
    http.exports.length = 0;
    const metricsPort = await freePort();
    const { app, port } = await startApp({
      OTEL_METRICS_EXPORTER: 'prometheus,otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: http.url,
      OTEL_METRIC_EXPORT_INTERVAL: '300',
      PROMETHEUS_METRICS_PORT: String(metricsPort),
      PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
    });
    await sendKnownMix(port);
    // at least two periodic exports after the mix, so the periodic path is proven too
    const seen = http.exports.length;
    await http.waitForExports(seen + 2);
    const periodic = http.exports[http.exports.length - 1]!;
    expect(sumOf(periodic, 'gunicorn_worker_requests_total')).toBe(21);
    // the scrape and the OTLP export agree series by series
    const s = await scrape(metricsPort);
    for (const p of pointsOf(periodic, 'gunicorn_worker_requests_total')) {
      expect(select(s, 'gunicorn_worker_requests_total', p.attributes as Record<string, string>).map((x) => x.value)).toEqual([p.value]);
    }
    // requests right before the end: the final export must carry them (no loss between the last interval and exit)
    for (let i = 0; i < 5; i++) await hit(`http://127.0.0.1:${port}/users/${i}`);
    await hit(`http://127.0.0.1:${port}/quit`);
    expect(await app.exited).toEqual({ code: 0, signal: null });
    const last = http.exports[http.exports.length - 1]!;
    expect(sumOf(last, 'gunicorn_worker_requests_total', { method: 'GET', endpoint: '/users/:id' })).toBe(17);
    expect(sumOf(last, 'gunicorn_worker_requests_total')).toBe(27);
    // cumulative temporality: every export's total is ≥ the one before (nothing resets, nothing is a delta)
    const totals = http.exports.map((e) => sumOf(e, 'gunicorn_worker_requests_total'));
    expect([...totals].sort((a, b) => a - b)).toEqual(totals);
  });

  it('SIGTERM to an app without a handler: the final export carries the last requests, and the process still dies by SIGTERM', async () => {
    http.exports.length = 0;
    const { app, port } = await startApp({ OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: http.url });
    await sendKnownMix(port);
    await hit(`http://127.0.0.1:${port}/users/999`);
    expect(http.exports).toHaveLength(0);
    // the preload's signal hook flushes, then re-raises the signal with its default action (no behaviour change)
    expect(await app.stop('SIGTERM')).toEqual({ code: null, signal: 'SIGTERM' });
    expect(http.exports).toHaveLength(1);
    const e = http.exports[0]!;
    expect(sumOf(e, 'gunicorn_worker_requests_total', { worker_id: String(app.child.pid), method: 'GET', endpoint: '/users/:id' })).toBe(13);
    expect(sumOf(e, 'gunicorn_worker_requests_total')).toBe(22);
    expect(sumOf(e, 'gunicorn_worker_failed_requests_total')).toBe(6);
  });

  it('SIGINT (Ctrl-C) likewise', async () => {
    http.exports.length = 0;
    const { app, port } = await startApp({ OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: http.url });
    for (let i = 0; i < 4; i++) await hit(`http://127.0.0.1:${port}/users/${i}`);
    expect(await app.stop('SIGINT')).toEqual({ code: null, signal: 'SIGINT' });
    expect(http.exports).toHaveLength(1);
    expect(sumOf(http.exports[0]!, 'gunicorn_worker_requests_total')).toBe(4);
  });

  it('an app that handles SIGTERM by draining (closing its server) still sends its final export, exit code 0', async () => {
    http.exports.length = 0;
    const { app, port } = await startApp({
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_ENDPOINT: http.url, ON_SIGTERM: 'drain',
    });
    for (let i = 0; i < 9; i++) await hit(`http://127.0.0.1:${port}/users/${i}`, { headers: { connection: 'close' } });
    expect(await app.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(http.exports).toHaveLength(1);
    expect(sumOf(http.exports[0]!, 'gunicorn_worker_requests_total', { worker_id: String(app.child.pid), endpoint: '/users/:id' })).toBe(9);
  });
});

describe('OTEL_METRICS_EXPORTER=console and none', () => {
  it('console: the final export is printed on stdout (the console exporter of the OTel SDK)', async () => {
    const { app, port } = await startApp({ OTEL_METRICS_EXPORTER: 'console' });
    for (let i = 0; i < 3; i++) await hit(`http://127.0.0.1:${port}/users/${i}`);
    await hit(`http://127.0.0.1:${port}/quit`);
    expect(await app.exited).toEqual({ code: 0, signal: null });
    expect(app.stdout).toContain("name: 'gunicorn_worker_requests_total'");
    expect(app.stdout).toContain("endpoint: '/users/:id'");
  });

  it('none: no endpoint and no export; the app runs as without the preload', async () => {
    const metricsPort = await freePort();
    const { app, port } = await startApp({ OTEL_METRICS_EXPORTER: 'none', PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1' });
    expect(await hit(`http://127.0.0.1:${port}/users/1`)).toBe(200);
    await expect(fetch(`http://127.0.0.1:${metricsPort}/metrics`)).rejects.toThrow();
    await hit(`http://127.0.0.1:${port}/quit`);
    expect(await app.exited).toEqual({ code: 0, signal: null });
    expect(app.stdout).toBe('listening\n');
    // never silently: one line says our endpoint is off and which variable did it
    expect(app.stderr).toBe('prefork-otel: metrics endpoint off (OTEL_METRICS_EXPORTER=none; PREFORK_OTEL_EXPORTER takes precedence for prefork-otel alone)\n');
  });
});

describe('OTLP: an app that ends itself with process.exit()', () => {
  it("awaits the library's shutdown() first: its final export carries everything", async () => {
    const receiver = await startHttpReceiver(await freePort());
    try {
      const { app, port } = await startApp({ OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, ON_SIGTERM: 'exit' });
      for (let i = 0; i < 6; i++) await hit(`http://127.0.0.1:${port}/users/${i}`);
      expect(await app.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      expect(receiver.exports).toHaveLength(1);
      expect(sumOf(receiver.exports[0]!, 'gunicorn_worker_requests_total')).toBe(6);
    } finally {
      await receiver.close();
    }
  });
});

describe('OTLP/gRPC', () => {
  it('grpc (with the optional @opentelemetry/exporter-metrics-otlp-grpc installed): the same exact numbers and headers as metadata', async () => {
    const grpc = await startGrpcReceiver(await freePort());
    try {
      const { app, port } = await startApp({
        OTEL_METRICS_EXPORTER: 'otlp',
        OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'grpc',
        OTEL_EXPORTER_OTLP_ENDPOINT: grpc.url,
        OTEL_EXPORTER_OTLP_HEADERS: 'x-api-key=s3cret',
      });
      await sendKnownMix(port);
      await hit(`http://127.0.0.1:${port}/quit`);
      expect(await app.exited).toEqual({ code: 0, signal: null });
      expect(grpc.exports).toHaveLength(1);
      const e = grpc.exports[0]!;
      expect(e.format).toBe('grpc');
      expect(e.headers['x-api-key']).toBe('s3cret');
      expectKnownMix(e, app.child.pid!);
    } finally {
      await grpc.close();
    }
  });
});

describe("the collector naming rules used above reproduce otlptranslator's own examples", () => {
  it('adds the suffixes a name lacks, and only those', () => {
    expect(collectorPrometheusName({ name: 'http.server.duration', unit: 's', type: 'histogram' })).toBe('http_server_duration_seconds');
    expect(collectorPrometheusName({ name: 'requests.count', unit: '1', type: 'sum', monotonic: true })).toBe('requests_count_total');
    expect(collectorPrometheusName({ name: 'memory.usage', unit: 'By', type: 'gauge' })).toBe('memory_usage_bytes');
    expect(collectorPrometheusName({ name: 'cpu.utilization', unit: '1', type: 'gauge' })).toBe('cpu_utilization_ratio');
    expect(collectorPrometheusName({ name: 'gunicorn_worker_requests', unit: '', type: 'sum', monotonic: true })).toBe('gunicorn_worker_requests_total');
    expect(collectorPrometheusName({ name: 'gunicorn_worker_uptime', unit: 's', type: 'gauge' }, 'NoUTF8EscapingWithSuffixes')).toBe('gunicorn_worker_uptime_seconds');
    expect(collectorPrometheusName({ name: 'http.server.duration', unit: 's', type: 'histogram' }, 'UnderscoreEscapingWithoutSuffixes')).toBe('http_server_duration');
  });
});

describe('bad OTel environment: one line naming the variable, exit code 2, no stack', () => {
  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ['unknown exporter', { OTEL_METRICS_EXPORTER: 'prometheus,zipkin' }, /^prefork-otel: invalid OTEL_METRICS_EXPORTER="prometheus,zipkin": expected a comma list of prometheus, otlp, console, none$/],
    ['none combined', { OTEL_METRICS_EXPORTER: 'none,otlp' }, /^prefork-otel: invalid OTEL_METRICS_EXPORTER="none,otlp": "none" cannot be combined/],
    ['protocol', { OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/xml' }, /^prefork-otel: invalid OTEL_EXPORTER_OTLP_PROTOCOL="http\/xml": expected one of http\/protobuf, http\/json, grpc$/],
    ['endpoint', { OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' }, /^prefork-otel: invalid OTEL_EXPORTER_OTLP_ENDPOINT="collector:4318": expected an http:\/\/ or https:\/\/ URL/],
    ['metrics endpoint', { OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'ftp://x/v1/metrics' }, /^prefork-otel: invalid OTEL_EXPORTER_OTLP_METRICS_ENDPOINT="ftp:\/\/x\/v1\/metrics"/],
    ['headers (value not shown)', { OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_HEADERS: 'authorization' }, /^prefork-otel: invalid OTEL_EXPORTER_OTLP_HEADERS \(value not shown\): expected key=value pairs/],
    ['interval', { OTEL_METRIC_EXPORT_INTERVAL: '5s' }, /^prefork-otel: invalid OTEL_METRIC_EXPORT_INTERVAL="5s": expected an integer from 1 to 86400000$/],
    ['resource attributes', { OTEL_RESOURCE_ATTRIBUTES: 'team=a=b' }, /^prefork-otel: invalid OTEL_RESOURCE_ATTRIBUTES="team=a=b": expected key=value pairs/],
    ['temporality', { OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'sometimes' }, /^prefork-otel: invalid OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE="sometimes": expected one of cumulative, delta, lowmemory$/],
  ];
  for (const [what, env, line] of cases) {
    it(what, async () => {
      const app = startNode(['-r', REGISTER_CJS, APP], { APP_PORT: String(await freePort()), ...env });
      const exit = await app.exited;
      expect(exit.code).toBe(2);
      expect(app.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(app.stderr.trimEnd()).toMatch(line);
      expect(app.stderr).not.toContain('s3cret');
    });
  }
});
