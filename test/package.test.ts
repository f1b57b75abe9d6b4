/**
 * The package as a user gets it: `npm pack`, a fresh project that `npm install`s the tarball with
 * Express, Fastify, Koa and @koa/router, unmodified apps under `node -r prefork-otel/register` and
 * `node --import prefork-otel/register`, the library from CommonJS and ESM, all scraped over HTTP
 * with exact counts, and `tsc` (nodenext) type-checking a .cts and a .mts consumer.
 * Needs a built dist/ (`npm test` builds first) and the npm registry (or npm's cache) for the install.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  FIXTURES, ROOT, freePort, parseMetrics, scrapeText, select, startNode, tmpDir, waitFor, waitForHttp, type Proc, type Sample,
} from './helpers';
import { sendAll, type Req } from './http-client';
import { pointsOf, startHttpReceiver } from './fixtures/otlp-receiver';

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
/** the versions the repository tests against, so npm can serve them from its cache */
const dev = pkg.devDependencies as Record<string, string>;
const CONSUMER_DEPS = ['express', 'fastify', 'koa', '@koa/router', '@types/node'].map((n) => `${n}@${dev[n]}`);

let work: string;
let project: string;
let tarball: string;
let packedFiles: string[];

function npm(args: string[], cwd: string): string {
  // never --force / --legacy-peer-deps, not even from the environment: peers must resolve as they are
  return execFileSync('npm', args, {
    cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: '', npm_config_force: 'false', npm_config_legacy_peer_deps: 'false' },
  });
}

/** every installed copy of `name` under `dir` (npm ls --all --parseable: one path per copy) */
function copiesOf(dir: string, name: string): string[] {
  const out = spawnSync('npm', ['ls', name, '--all', '--parseable'], { cwd: dir, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } }).stdout;
  return [...new Set(out.split('\n').filter((l) => l.trim() !== ''))];
}

/** every package directory under node_modules (scoped ones as @scope/name), nested ones included */
function installedPackages(dir: string): string[] {
  const out: string[] = [];
  const walk = (nm: string): void => {
    let entries: string[];
    try { entries = readdirSync(nm); } catch { return; }
    for (const e of entries) {
      if (e.startsWith('.')) continue;
      const names = e.startsWith('@') ? readdirSync(join(nm, e)).map((n) => `${e}/${n}`) : [e];
      for (const n of names) {
        out.push(n);
        walk(join(nm, n, 'node_modules'));
      }
    }
  };
  walk(join(dir, 'node_modules'));
  return out;
}

beforeAll(() => {
  work = tmpDir('prefork-otel-pack-');
  // --ignore-scripts: prepack's clean build would wipe dist/ under tests running in parallel; dist/ is already built
  const packed = JSON.parse(npm(['pack', '--ignore-scripts', '--json', '--pack-destination', work], ROOT))[0];
  tarball = join(work, packed.filename);
  packedFiles = packed.files.map((f: { path: string }) => f.path);
  project = join(work, 'consumer');
  execFileSync('mkdir', [project]);
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }, null, 2));
  for (const f of readdirSync(join(FIXTURES, 'consumer'))) copyFileSync(join(FIXTURES, 'consumer', f), join(project, f));
  npm(['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', tarball, ...CONSUMER_DEPS], project);
}, 180_000);

// after every describe's own afterAll has stopped its processes
afterAll(() => { if (work) rmSync(work, { recursive: true, force: true }); });

describe('the tarball', () => {
  it('holds every file package.json points at, and nothing from src/ or test/', () => {
    const targets = new Set<string>([pkg.main, pkg.types, ...Object.values(pkg.bin as Record<string, string>)]);
    const walk = (x: unknown): void => {
      if (typeof x === 'string') targets.add(x);
      else if (x && typeof x === 'object') Object.values(x).forEach(walk);
    };
    walk(pkg.exports);
    for (const t of targets) expect(packedFiles, t).toContain(t.replace(/^\.\//, ''));
    expect(packedFiles.filter((f) => /^(src|test|bench|scripts|node_modules)\//.test(f))).toEqual([]);
    expect(packedFiles).toContain('README.md');
    // the installed bin is executable with a shebang
    const bin = join(project, 'node_modules/.bin/prefork-otel');
    expect(statSync(bin).mode & 0o111).not.toBe(0);
    expect(readFileSync(join(project, 'node_modules/prefork-otel', pkg.bin['prefork-otel']), 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
  });
});

/** requests_total by "METHOD endpoint" */
function byRoute(s: Sample[], name = 'gunicorn_worker_requests_total'): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of select(s, name)) out[`${x.labels.method} ${x.labels.endpoint}${x.labels.error_type ? ` ${x.labels.error_type}` : ''}`] = x.value;
  return out;
}

async function runApp(args: string[], env: Record<string, string> = {}): Promise<{ app: Proc; port: number; metricsPort: number }> {
  const port = await freePort();
  const metricsPort = await freePort();
  const app = startNode(args, { PORT: String(port), PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1', ...env }, { cwd: project });
  await waitFor(() => app.stdout.includes('listening'), 20_000, `${args.join(' ')} listening (stderr: ${app.stderr})`);
  await waitForHttp(`http://127.0.0.1:${metricsPort}/metrics`);
  return { app, port, metricsPort };
}

describe('unmodified apps under the installed preload', () => {
  const running: Proc[] = [];
  afterAll(async () => { await Promise.all(running.map((p) => p.stop())); });

  it('Express (CommonJS) with node -r prefork-otel/register', async () => {
    const { app, port, metricsPort } = await runApp(['-r', 'prefork-otel/register', 'shop-express.cjs']);
    running.push(app);
    const reqs: Req[] = [
      ...Array.from({ length: 4 }, (_, i) => ({ method: 'GET', path: `/shop/products/SKU-${i}x` })),
      ...Array.from({ length: 2 }, (_, i) => ({ method: 'POST', path: `/shop/carts/${i + 10}/items`, headers: { 'content-type': 'application/json' }, body: '{"sku":"a"}' })),
      { method: 'GET', path: '/shop/checkout/991' },
      ...Array.from({ length: 3 }, () => ({ method: 'GET', path: '/health' })),
      { method: 'GET', path: '/nothing/99' },
    ];
    expect(Object.fromEntries(await sendAll(port, reqs, 2))).toEqual({ 200: 7, 201: 2, 404: 1, 500: 1 });
    const s = parseMetrics(await scrapeText(metricsPort));
    expect(byRoute(s)).toEqual({
      'GET /shop/products/:sku': 4, 'POST /shop/carts/:cartId/items': 2, 'GET /shop/checkout/:orderId': 1, 'GET /health': 3, 'GET /nothing/:id': 1,
    });
    expect(byRoute(s, 'gunicorn_worker_failed_requests_total')).toEqual({ 'GET /shop/checkout/:orderId RequestError': 1 });
    expect(select(s, 'gunicorn_worker_state').map((x) => x.labels)).toEqual([{ worker_id: String(app.child.pid), state: 'running' }]);
  });

  it('Koa (ESM) with node --import prefork-otel/register', async () => {
    const { app, port, metricsPort } = await runApp(['--import', 'prefork-otel/register', 'blog-koa.mjs']);
    running.push(app);
    const reqs: Req[] = [
      ...Array.from({ length: 5 }, (_, i) => ({ method: 'GET', path: `/blog/posts/hello-world-${i}` })),
      { method: 'POST', path: '/blog/posts/hello-world/comments' },
      ...Array.from({ length: 2 }, () => ({ method: 'DELETE', path: '/blog/posts/hello-world' })),
    ];
    expect(Object.fromEntries(await sendAll(port, reqs, 2))).toEqual({ 200: 5, 201: 1, 503: 2 });
    const s = parseMetrics(await scrapeText(metricsPort));
    expect(byRoute(s)).toEqual({ 'GET /blog/posts/:slug': 5, 'POST /blog/posts/:slug/comments': 1, 'DELETE /blog/posts/:slug': 2 });
    expect(byRoute(s, 'gunicorn_worker_failed_requests_total')).toEqual({ 'DELETE /blog/posts/:slug RequestError': 2 });
    expect(byRoute(s, 'gunicorn_worker_error_handling_total')).toEqual({ 'DELETE /blog/posts/:slug RequestError': 2 });
  });

  it('Fastify (ESM app) with node -r prefork-otel/register', async () => {
    const { app, port, metricsPort } = await runApp(['-r', 'prefork-otel/register', 'widgets-fastify.mjs']);
    running.push(app);
    const reqs: Req[] = [
      ...Array.from({ length: 3 }, (_, i) => ({ method: 'GET', path: `/v2/widgets/w${i}` })),
      { method: 'PUT', path: '/v2/widgets/w1' },
    ];
    expect(Object.fromEntries(await sendAll(port, reqs, 2))).toEqual({ 200: 3, 409: 1 });
    const s = parseMetrics(await scrapeText(metricsPort));
    expect(byRoute(s)).toEqual({ 'GET /v2/widgets/:widgetId': 3, 'PUT /v2/widgets/:widgetId': 1 });
    expect(select(s, 'gunicorn_worker_failed_requests_total')).toEqual([]);
  });
});

describe('the library', () => {
  const running: Proc[] = [];
  afterAll(async () => { await Promise.all(running.map((p) => p.stop())); });

  it('require(\'prefork-otel\'): Metrics and MasterMetrics, scraped', async () => {
    const { app, metricsPort } = await runApp(['library.cjs']);
    running.push(app);
    const text = await scrapeText(metricsPort);
    const s = parseMetrics(text);
    expect(byRoute(s)).toEqual({ 'GET /orders/:orderId': 3, 'POST /orders': 1 });
    expect(byRoute(s, 'gunicorn_worker_failed_requests_total')).toEqual({ 'POST /orders RequestError': 1 });
    expect(byRoute(s, 'gunicorn_worker_error_handling_total')).toEqual({ 'POST /orders RequestError': 1, 'GET /orders/:orderId TimeoutError': 1 });
    expect(select(s, 'gunicorn_master_worker_restarts_total').map((x) => [x.labels, x.value])).toEqual([[{ worker_id: '4242', reason: 'timeout' }, 1]]);
    expect(select(s, 'gunicorn_master_signals_total').map((x) => [x.labels, x.value])).toEqual([[{ signal: 'HUP', action: 'reload' }, 2]]);
    expect(select(s, 'gunicorn_worker_state').map((x) => x.labels)).toEqual([{ worker_id: 'lib-cjs', state: 'running' }]);
    expect(select(s, 'gunicorn_worker_memory_bytes', { worker_id: 'lib-cjs' })[0]!.value).toBeGreaterThan(0);
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(`${check.stdout}${check.stderr}`).toBe('');
    expect(check.status).toBe(0);
  });

  it('import from \'prefork-otel\' (ESM): named and default exports, one instance with require()', async () => {
    const { app, metricsPort } = await runApp(['library.mjs']);
    running.push(app);
    const s = parseMetrics(await scrapeText(metricsPort));
    expect(byRoute(s)).toEqual({ 'PUT /carts/:cartId': 5, 'OTHER /coffee': 1 });
    expect(byRoute(s, 'gunicorn_worker_failed_requests_total')).toEqual({ 'OTHER /coffee CPUError': 1 });
    expect(select(s, 'gunicorn_worker_state').map((x) => x.labels)).toEqual([{ worker_id: 'lib-esm', state: 'stopping' }]);
    expect(select(s, 'gunicorn_master_worker_restarts_total').map((x) => [x.labels, x.value])).toEqual([[{ worker_id: '4343', reason: 'max_requests' }, 1]]);
    expect(select(s, 'gunicorn_master_signals_total').map((x) => [x.labels, x.value])).toEqual([[{ signal: 'TTIN', action: 'increment' }, 1]]);
  });

  it('type-checks a .cts and a .mts consumer with tsc (module/moduleResolution nodenext)', () => {
    const r = spawnSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: project, encoding: 'utf8' });
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect(r.status).toBe(0);
  });
});

describe('a Prometheus-only install', () => {
  it('carries no OTLP exporter, sdk-logs, sdk-trace, protobufjs or gRPC, and one copy of @opentelemetry/api and sdk-metrics', () => {
    const pkgs = installedPackages(project);
    expect(pkgs).toContain('@opentelemetry/sdk-metrics');
    expect(pkgs.filter((n) => /^@opentelemetry\/(exporter-|otlp-|sdk-logs|sdk-trace|api-logs)|^protobufjs$|^@grpc\//.test(n))).toEqual([]);
    expect(copiesOf(project, '@opentelemetry/api')).toHaveLength(1);
    expect(copiesOf(project, '@opentelemetry/sdk-metrics')).toHaveLength(1);
  });

  it('OTEL_METRICS_EXPORTER=otlp without the exporter package: one line naming the package to install, exit 2', async () => {
    const p = startNode(['-r', 'prefork-otel/register', '-e', 'setTimeout(() => {}, 60000)'], { OTEL_METRICS_EXPORTER: 'otlp' }, { cwd: project });
    expect(await p.exited).toEqual({ code: 2, signal: null });
    const sdkMetrics = JSON.parse(readFileSync(join(project, 'node_modules/@opentelemetry/sdk-metrics/package.json'), 'utf8')).version;
    expect(p.stderr).toBe('prefork-otel: OTLP export (otlp with protocol http/protobuf) needs the optional package @opentelemetry/exporter-metrics-otlp-proto, '
      + `which is not installed: npm install @opentelemetry/exporter-metrics-otlp-proto (the release built on the installed @opentelemetry/sdk-metrics ${sdkMetrics}), `
      + 'or leave otlp out of PREFORK_OTEL_EXPORTER / OTEL_METRICS_EXPORTER\n');
  });
});

/**
 * The two newest OpenTelemetry trains package.json declares (the optional OTLP peers' range lists
 * each supported 0.x train): the tarball installs next to that train's sdk-node, exporter-prometheus
 * and instrumentation-http with plain `npm install`, shares their one sdk-metrics and api, and works
 * beside them (the app's own Prometheus reader, joined by PreforkMetricProducer).
 */
const TRAINS = (pkg.peerDependencies['@opentelemetry/exporter-metrics-otlp-proto'] as string)
  .split('||').map((r) => r.trim().replace(/^\^/, '')).slice(-2).reverse();

describe.each(TRAINS)('next to @opentelemetry/sdk-node@%s', (train) => {
  let dir: string;
  const running: Proc[] = [];
  beforeAll(() => {
    dir = join(work, `sdk-node-${train}`);
    execFileSync('mkdir', [dir]);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'otel-app', version: '1.0.0', private: true }, null, 2));
    for (const f of ['otel-sdk-app.cjs', 'otel-sdk-tracing.cjs', 'otlp-app.cjs']) copyFileSync(join(FIXTURES, f), join(dir, f));
    npm(['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', tarball,
      ...['sdk-node', 'exporter-prometheus', 'instrumentation-http'].map((n) => `@opentelemetry/${n}@${train}`)], dir);
  }, 240_000);
  afterAll(async () => { await Promise.all(running.map((p) => p.stop())); });

  it('one copy of @opentelemetry/sdk-metrics and of @opentelemetry/api', () => {
    const sdkNode = JSON.parse(readFileSync(join(dir, 'node_modules/@opentelemetry/sdk-node/package.json'), 'utf8'));
    expect(sdkNode.version).toBe(train);
    expect(copiesOf(dir, '@opentelemetry/sdk-metrics')).toEqual([join(dir, 'node_modules/@opentelemetry/sdk-metrics')]);
    expect(copiesOf(dir, '@opentelemetry/api')).toEqual([join(dir, 'node_modules/@opentelemetry/api')]);
  });

  it('the app\'s NodeSDK after the preload keeps its endpoint; joined, it also carries gunicorn_*; ours counts the same', async () => {
    const [port, metricsPort, appPromPort] = [await freePort(), await freePort(), await freePort()];
    const app = startNode(['-r', 'prefork-otel/register', 'otel-sdk-app.cjs'], {
      APP_PORT: String(port), APP_PROM_PORT: String(appPromPort), APP_READER: 'prometheus', APP_JOIN: '1',
      OTEL_TRACES_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none',
      PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
    }, { cwd: dir });
    running.push(app);
    await waitFor(() => app.stdout.includes('listening'), 30_000, `app listening (stderr: ${app.stderr})`);
    const n = 6;
    for (let i = 0; i < n; i++) await sendAll(port, [{ method: 'GET', path: `/order/${i}` }]);
    const theirs = await waitFor(async () => {
      const s = parseMetrics(await scrapeText(appPromPort));
      return select(s, 'http_server_request_duration_count').reduce((a, x) => a + x.value, 0) === n ? s : undefined;
    }, 15_000, 'the app\'s endpoint');
    expect(select(theirs, 'http_server_request_duration_count')[0]!.labels.otel_scope_version).toBe(train);
    expect(select(theirs, 'app_orders_total')[0]!.value).toBe(n);
    expect(select(theirs, 'gunicorn_worker_requests_total', { endpoint: '/order/:id' }).map((x) => x.value)).toEqual([n]);
    const ours = parseMetrics(await scrapeText(metricsPort));
    expect(select(ours, 'gunicorn_worker_requests_total', { endpoint: '/order/:id' }).map((x) => x.value)).toEqual([n]);
    expect(app.stderr).toBe('');
  });

  it('our own OTLP push through that train\'s exporter (the optional peer sdk-node brought): the exact count arrives', async () => {
    const receiver = await startHttpReceiver(await freePort());
    try {
      const port = await freePort();
      const app = startNode(['-r', 'prefork-otel/register', 'otlp-app.cjs'], {
        APP_PORT: String(port), OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_METRIC_EXPORT_INTERVAL: '600000',
      }, { cwd: dir });
      running.push(app);
      await waitFor(() => app.stdout.includes('listening'), 30_000, `app listening (stderr: ${app.stderr})`);
      for (let i = 0; i < 4; i++) await sendAll(port, [{ method: 'GET', path: `/users/${i}` }]);
      await sendAll(port, [{ method: 'GET', path: '/quit' }]);
      expect(await app.exited).toEqual({ code: 0, signal: null });
      expect(receiver.exports).toHaveLength(1); // the final export of a process that ended by itself
      const points = pointsOf(receiver.exports[0]!, 'gunicorn_worker_requests_total').filter((p) => p.attributes.endpoint === '/users/:id');
      expect(points.map((p) => p.value)).toEqual([4]);
    } finally {
      await receiver.close();
    }
  });
});
