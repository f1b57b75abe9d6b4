/**
 * The shipped Grafana dashboard and the otel-collector/ files: every metric name the dashboard's PromQL
 * uses exists in a live scrape of a preloaded app, every label it groups by or prints exists on those
 * metrics, all ten metrics of the contract are covered, and the compose / collector / Prometheus /
 * provisioning files agree with each other (ports, mounts, uids, the exporter settings that keep the
 * gunicorn_* names).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { FIXTURES, REGISTER_CJS, ROOT, freePort, hit, scrape, startNode, tmpDir, waitFor, type Proc, type Sample } from './helpers';

const OC = join(ROOT, 'otel-collector');
const CONTRACT = [
  'gunicorn_worker_requests_total', 'gunicorn_worker_request_duration_seconds', 'gunicorn_worker_memory_bytes',
  'gunicorn_worker_cpu_percent', 'gunicorn_worker_uptime_seconds', 'gunicorn_worker_state',
  'gunicorn_worker_failed_requests_total', 'gunicorn_worker_error_handling_total',
  'gunicorn_master_worker_restarts_total', 'gunicorn_master_signals_total',
];

interface Target { expr: string; legendFormat?: string }
interface Panel { type: string; title: string; targets?: Target[]; datasource?: { uid: string } }
const dashboard = JSON.parse(readFileSync(join(OC, 'grafana/dashboards/prefork-otel.json'), 'utf8')) as {
  uid: string; panels: Panel[]; templating: { list: Array<{ name: string; query?: unknown; definition?: string }> };
};
const panels = dashboard.panels.filter((p) => p.type !== 'row');
const targets = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, ...t })));
const yaml = (f: string) => parseYaml(readFileSync(join(OC, f), 'utf8'));

/** metric names in a PromQL expression */
function metricNamesIn(expr: string): string[] {
  return [...new Set([...expr.matchAll(/\b((?:gunicorn|prefork_otel)_[a-z_]+)\b/g)].map((m) => m[1]!))];
}

/** label names an expression groups by, matches on, or a legend prints */
function labelsIn(t: Target): string[] {
  const out = new Set<string>();
  for (const m of t.expr.matchAll(/\bby \(([^)]*)\)/g)) for (const l of m[1]!.split(',')) out.add(l.trim());
  for (const m of t.expr.matchAll(/\{([^}]*)\}/g)) for (const mm of m[1]!.matchAll(/([a-z_]+)\s*(=~|!=|!~|=)/g)) out.add(mm[1]!);
  for (const m of (t.legendFormat ?? '').matchAll(/\{\{\s*([a-z_]+)\s*\}\}/g)) out.add(m[1]!);
  out.delete('');
  return [...out];
}

describe('the Grafana dashboard', () => {
  let app: Proc;
  let samples: Sample[];

  beforeAll(async () => {
    const appPort = await freePort();
    const metricsPort = await freePort();
    app = startNode(['-r', REGISTER_CJS, join(FIXTURES, 'otlp-app.cjs')], {
      APP_PORT: String(appPort), PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
      PREFORK_OTEL_CPU_INTERVAL: '0.2', PREFORK_OTEL_MEMORY_INTERVAL: '0.2', MASTER_EVENTS: '1',
    });
    await waitFor(() => app.stdout.includes('listening'), 20_000, 'app listening');
    for (const path of ['/', '/users/1', '/fail/x', '/throw']) await hit(`http://127.0.0.1:${appPort}${path}`);
    await waitFor(async () => {
      samples = await scrape(metricsPort);
      return samples.some((s) => s.name === 'gunicorn_worker_cpu_percent') && samples.some((s) => s.name === 'gunicorn_worker_memory_bytes');
    }, 20_000, 'cpu and memory sampled');
  });
  afterAll(async () => { await app?.stop(); });

  it('is the output of otel-collector/grafana/build-dashboard.mjs', () => {
    const out = join(tmpDir(), 'dashboard.json');
    execFileSync(process.execPath, [join(OC, 'grafana/build-dashboard.mjs'), out]);
    expect(readFileSync(out, 'utf8')).toBe(readFileSync(join(OC, 'grafana/dashboards/prefork-otel.json'), 'utf8'));
  });

  it('covers all ten metrics of the contract, and the panels the issue asks for', () => {
    const used = new Set(targets.flatMap((t) => metricNamesIn(t.expr)).map((n) => n.replace(/_(bucket|sum|count)$/, '')));
    for (const name of CONTRACT) expect(used, name).toContain(name);
    const all = targets.map((t) => t.expr).join('\n');
    for (const q of ['0.5', '0.95', '0.99']) expect(all).toContain(`histogram_quantile(${q}, sum by (le) (rate(gunicorn_worker_request_duration_seconds_bucket`);
    expect(all).toContain('sum by (error_type) (rate(gunicorn_worker_failed_requests_total');
    expect(all).toContain('sum by (reason) (increase(gunicorn_master_worker_restarts_total');
    expect(all).toContain('sum by (signal, action) (increase(gunicorn_master_signals_total');
    for (const n of ['gunicorn_worker_memory_bytes', 'gunicorn_worker_cpu_percent', 'gunicorn_worker_uptime_seconds']) {
      expect(targets.some((t) => t.expr.startsWith(`${n}{`) && t.legendFormat?.includes('{{worker_id}}')), n).toBe(true);
    }
    expect(all).toContain('count by (state) (gunicorn_worker_state');
  });

  it('uses only metric names that exist in a live scrape, and only labels those metrics have', () => {
    const names = new Set(samples.map((s) => s.name));
    const missing: string[] = [];
    const badLabels: string[] = [];
    for (const t of targets) {
      const metrics = metricNamesIn(t.expr);
      expect(metrics.length, t.expr).toBeGreaterThan(0);
      for (const m of metrics) if (!names.has(m)) missing.push(`${t.panel}: ${m}`);
      const have = new Set(samples.filter((s) => metrics.includes(s.name)).flatMap((s) => Object.keys(s.labels)));
      // job / instance are added by Prometheus at scrape time, not by the exporter
      for (const l of labelsIn(t)) if (!have.has(l) && l !== 'job' && l !== 'instance') badLabels.push(`${t.panel}: ${l}`);
    }
    expect(missing).toEqual([]);
    expect(badLabels).toEqual([]);
  });

  it('filters every query by the job variable (one path at a time: no double counting) and uses the datasource variable', () => {
    for (const t of targets) {
      for (const sel of t.expr.matchAll(/(?:gunicorn|prefork_otel)_[a-z_]+\{([^}]*)\}/g)) expect(sel[1], t.expr).toContain('job="$job"');
      expect(t.expr, t.expr).not.toMatch(/(?:gunicorn|prefork_otel)_[a-z_]+(?![a-z_{])/);
    }
    for (const p of panels) expect(p.datasource?.uid).toBe('${datasource}');
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(['datasource', 'job', 'worker_id']);
  });
});

describe('the compose example app (otel-collector/example/app.cjs), run here without Docker', () => {
  it('runs under the runner with the compose command and environment: two workers, one endpoint, /crash recorded as a restart', async () => {
    const compose = yaml('docker-compose.yml');
    const cmd: string[] = compose.services.app.command;
    expect(cmd.slice(0, 2)).toEqual(['node', 'dist/cjs/cli.js']);
    const appPort = await freePort();
    const metricsPort = await freePort();
    const args = cmd.slice(1).map((a) => (a === '0.0.0.0:8000' ? `127.0.0.1:${appPort}` : a));
    const env = { ...compose.services.app.environment, PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1', OTEL_METRICS_EXPORTER: 'prometheus' };
    const app = startNode(args, env);
    try {
      const running = async () => (await scrape(metricsPort)).filter((s) => s.name === 'gunicorn_worker_state' && s.labels.state === 'running').map((s) => s.labels.worker_id!);
      const two = await waitFor(async () => { const r = await running(); return r.length === 2 ? r : undefined; }, 30_000, 'two workers running');
      const crashed = await fetch(`http://127.0.0.1:${appPort}/crash`, { headers: { connection: 'close' } });
      expect(await crashed.text()).toBe('bye');
      await waitFor(async () => (await scrape(metricsPort)).some((s) => s.name === 'gunicorn_master_worker_restarts_total' && s.labels.reason === 'crash' && s.value === 1), 20_000, 'restart recorded');
      await waitFor(async () => { const r = await running(); return r.length === 2 && r.some((p) => !two.includes(p)); }, 30_000, 'replacement worker');
      expect(await app.stop()).toEqual({ code: 0, signal: null });
    } finally {
      await app.stop();
    }
  });
});

describe('otel-collector/ files agree with each other', () => {
  const compose = yaml('docker-compose.yml');
  const collector = yaml('collector.yaml');
  const prom = yaml('prometheus.yml');

  it('collector: OTLP receiver → batch → Prometheus exporter that keeps the gunicorn_* names and label sets', () => {
    const p = collector.service.pipelines.metrics;
    expect(p.receivers).toEqual(['otlp']);
    expect(p.processors).toContain('batch');
    expect(p.exporters).toEqual(['prometheus']);
    expect(Object.keys(collector.receivers.otlp.protocols).sort()).toEqual(['grpc', 'http']);
    const e = collector.exporters.prometheus;
    expect(e.translation_strategy).toBe('UnderscoreEscapingWithSuffixes');
    expect(e.without_scope_info).toBe(true);
    expect(e.namespace).toBeUndefined();
    expect(e.resource_to_telemetry_conversion).toBeUndefined();
    expect(e.resource_constant_labels).toBeUndefined();
    // the remote-write example is there, commented out
    expect(readFileSync(join(OC, 'collector.yaml'), 'utf8')).toMatch(/^ {2}# prometheusremotewrite:\n {2}# {3}endpoint: http:\/\/prometheus:9090\/api\/v1\/write/m);
  });

  it('prometheus.yml scrapes the app directly and the collector (honor_labels), at the compose ports', () => {
    const jobs = Object.fromEntries(prom.scrape_configs.map((j: { job_name: string }) => [j.job_name, j]));
    const app = compose.services.app.environment;
    expect(jobs['prefork-otel'].static_configs[0].targets).toEqual([`app:${app.PROMETHEUS_METRICS_PORT}`]);
    const exporterPort = String(collector.exporters.prometheus.endpoint).split(':').pop();
    expect(jobs['otel-collector'].static_configs[0].targets).toEqual([`otel-collector:${exporterPort}`]);
    expect(jobs['otel-collector'].honor_labels).toBe(true);
    expect(app.OTEL_METRICS_EXPORTER).toBe('prometheus,otlp');
    expect(app.OTEL_EXPORTER_OTLP_ENDPOINT).toBe('http://otel-collector:4318');
  });

  it('compose: every mounted file exists; Grafana provisioning points at the dashboard and the Prometheus service', () => {
    for (const [name, svc] of Object.entries<{ volumes?: string[]; command?: string[] }>(compose.services)) {
      for (const v of svc.volumes ?? []) {
        const host = v.split(':')[0]!;
        expect(existsSync(join(OC, host)), `${name}: ${host}`).toBe(true);
      }
    }
    expect(existsSync(join(ROOT, compose.services.app.command[1]))).toBe(true); // after npm run build
    expect(existsSync(join(ROOT, compose.services.app.command.at(-1)))).toBe(true);
    expect(Object.keys(compose.services).sort()).toEqual(['app', 'grafana', 'load', 'otel-collector', 'prometheus']);
    const datasource = yaml('grafana/provisioning/datasources/prometheus.yml').datasources[0];
    expect(datasource.url).toBe('http://prometheus:9090');
    expect(datasource.type).toBe('prometheus');
    const provider = yaml('grafana/provisioning/dashboards/prefork-otel.yml').providers[0];
    expect(compose.services.grafana.volumes).toContain(`./grafana/dashboards:${provider.options.path}:ro`);
    expect(compose.services.grafana.volumes).toContain('./grafana/provisioning:/etc/grafana/provisioning:ro');
  });
});
