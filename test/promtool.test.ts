/**
 * The exposition as Prometheus reads it: `promtool check metrics` on real scrapes of a real app
 * (both recording modes), the reference's names / HELP / TYPE exactly, no `_total_total`, no
 * OpenTelemetry scope labels, and target_info as a separate series that PREFORK_OTEL_TARGET_INFO=false drops.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES, REGISTER_CJS, parseMetrics, scrapeText, select, startApp, waitFor, waitForHttp, type Proc } from './helpers';
import { abortMidResponse, sendAll, type Req } from './http-client';

/** promtool from the Debian `prometheus` package (.ci/run installs it) */
function promtool(): string {
  for (const p of ['/usr/bin/promtool', '/usr/local/bin/promtool']) if (existsSync(p)) return p;
  const which = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' });
  if (which.status === 0 && which.stdout.trim()) return which.stdout.trim();
  throw new Error('promtool not found: install the Debian package `prometheus` (.ci/run does)');
}

function promtoolCheck(text: string): { status: number | null; output: string } {
  const r = spawnSync(promtool(), ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/** The worker families of the reference: name, HELP text, TYPE. */
const WORKER_FAMILIES: Array<[string, string, string]> = [
  ['gunicorn_worker_requests_total', 'Total requests handled by worker', 'counter'],
  ['gunicorn_worker_request_duration_seconds', 'Request duration in seconds', 'histogram'],
  ['gunicorn_worker_memory_bytes', 'Memory usage in bytes', 'gauge'],
  ['gunicorn_worker_cpu_percent', 'CPU usage percentage', 'gauge'],
  ['gunicorn_worker_uptime_seconds', 'Worker uptime in seconds', 'gauge'],
  ['gunicorn_worker_state', 'Worker state with timestamp', 'gauge'],
  ['gunicorn_worker_failed_requests_total', 'Failed requests with method/endpoint labels', 'counter'],
  ['gunicorn_worker_error_handling_total', 'Error tracking with method and endpoint labels', 'counter'],
];

/** prefork-otel's own scrape-health families (src/metrics/contract.ts HEALTH) */
const HEALTH_FAMILIES = ['prefork_otel_scrape_duration_seconds', 'prefork_otel_worker_snapshot_age_seconds', 'prefork_otel_series_overflow_total'];

const TRAFFIC: Req[] = [
  ...Array.from({ length: 5 }, (_, i) => ({ method: 'GET', path: `/users/${i}` })),
  { method: 'POST', path: '/users' },
  { method: 'GET', path: '/api/v1/items/3' },
  { method: 'GET', path: '/api/v1/boom' },
  { method: 'GET', path: '/status/504' },
  { method: 'GET', path: '/status/503' },
  { method: 'PROPFIND', path: '/dav/x' },
  { method: 'GET', path: '/missing/page?x=1' },
  { method: 'GET', path: '/say/"hi"\\there' },
];

const CASES = [
  { what: 'fast recording, target_info on', env: { OTEL_SERVICE_NAME: 'checkout' }, targetInfo: true },
  { what: 'otel recording, target_info on', env: { PREFORK_OTEL_RECORDING: 'otel', OTEL_SERVICE_NAME: 'checkout' }, targetInfo: true },
  { what: 'fast recording, PREFORK_OTEL_TARGET_INFO=false', env: { PREFORK_OTEL_TARGET_INFO: 'false' }, targetInfo: false },
];

describe.each(CASES)('scrape of a Fastify app: $what', (c) => {
  let app: Proc;
  let appPort: number;
  let metricsPort: number;
  let text: string;
  beforeAll(async () => {
    ({ app, appPort, metricsPort } = await startApp(['-r', REGISTER_CJS, join(FIXTURES, 'fastify-app.cjs')], c.env));
    await waitForHttp(`http://127.0.0.1:${metricsPort}/metrics`);
    await sendAll(appPort, TRAFFIC, 2);
    await abortMidResponse(appPort, '/wait/60000');
    await waitFor(async () => (await scrapeText(metricsPort)).includes('endpoint="/wait/:ms"'), 15_000, 'the abort');
    text = await scrapeText(metricsPort);
  });
  afterAll(async () => { await app?.stop(); });

  it('passes promtool check metrics', () => {
    const r = promtoolCheck(text);
    expect(r.output).toBe('');
    expect(r.status).toBe(0);
  });

  it('has the reference families with their exact HELP and TYPE, once each', () => {
    for (const [name, help, type] of WORKER_FAMILIES) {
      expect(text.split('\n').filter((l) => l === `# HELP ${name} ${help}`)).toHaveLength(1);
      expect(text.split('\n').filter((l) => l === `# TYPE ${name} ${type}`)).toHaveLength(1);
    }
    const helps = text.split('\n').filter((l) => l.startsWith('# HELP ')).map((l) => l.split(' ')[2]);
    expect(new Set(helps).size).toBe(helps.length);
    // nothing but the reference's families, prefork-otel's three scrape-health families (docs/metrics.md)
    // and (optionally) target_info
    expect(helps.sort()).toEqual([...WORKER_FAMILIES.map(([n]) => n), ...HEALTH_FAMILIES, ...(c.targetInfo ? ['target_info'] : [])].sort());
  });

  it('no _total_total, no unit suffix added, no OpenTelemetry scope labels', () => {
    const samples = parseMetrics(text);
    for (const s of samples) {
      expect(s.name).not.toMatch(/_total_total$/);
      expect(s.name).not.toMatch(/_seconds_seconds|_bytes_bytes|_percent_percent/);
      for (const l of Object.keys(s.labels)) expect(l).not.toMatch(/^otel_scope_/);
    }
    expect(text).not.toContain('otel_scope_name');
    // every gunicorn series carries exactly the reference's labels (resource attributes stay in target_info)
    const allowed = new Set(['worker_id', 'method', 'endpoint', 'error_type', 'state', 'le']);
    for (const s of samples.filter((x) => x.name.startsWith('gunicorn_'))) {
      for (const l of Object.keys(s.labels)) expect(allowed.has(l), `${s.name} has label ${l}`).toBe(true);
    }
    // the query is dropped; a quote and a backslash in a path are escaped and parse back
    expect(select(samples, 'gunicorn_worker_requests_total', { endpoint: '/missing/page' })).toHaveLength(1);
    expect(select(samples, 'gunicorn_worker_requests_total', { endpoint: '/say/"hi"\\there' })).toHaveLength(1);
    expect(text).toContain('endpoint="/say/\\"hi\\"\\\\there"');
    expect(select(samples, 'gunicorn_worker_failed_requests_total', { endpoint: '/status/:code', error_type: 'TimeoutError' })[0]!.value).toBe(1);
    expect(select(samples, 'gunicorn_worker_failed_requests_total', { endpoint: '/wait/:ms', error_type: 'RequestError' })[0]!.value).toBe(1);
  });

  it(c.targetInfo ? 'keeps target_info as one separate series with the resource' : 'drops target_info', () => {
    const ti = select(parseMetrics(text), 'target_info');
    if (!c.targetInfo) {
      expect(ti).toHaveLength(0);
      expect(text).not.toContain('target_info');
      return;
    }
    expect(ti).toHaveLength(1);
    expect(ti[0]!.value).toBe(1);
    expect(ti[0]!.labels.service_name).toBe('checkout');
    expect(ti[0]!.labels.process_pid).toBe(String(app.child.pid));
  });
});
