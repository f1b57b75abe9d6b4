/**
 * PREFORK_OTEL_HOST_METRICS=true: OpenTelemetry's host metrics (@opentelemetry/host-metrics) appear
 * once per scrape, from one process — the runner's master, the preloaded cluster primary, the
 * process serving the PROMETHEUS_MULTIPROC_DIR union (app or `prefork-otel exporter`) — with the
 * Prometheus names OTel's exporter writes; never in the workers' snapshots or the multiproc files.
 * Off by default: absent.
 */
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  FIXTURES, REGISTER_CJS, freePort, parseMetrics, scrapeText, startNode, tmpDir, waitFor, waitForHttp, type Proc,
} from './helpers';
import { startRunner } from './runner-helpers';

/** The families OTel's Prometheus exporter writes for host-metrics 0.39 (all groups). */
const SYSTEM = ['system_cpu_time_total', 'system_cpu_utilization', 'system_memory_usage', 'system_memory_utilization',
  'system_network_dropped_total', 'system_network_errors_total', 'system_network_io_total'];
const PROCESS = ['process_cpu_time_total', 'process_cpu_utilization', 'process_memory_usage'];

function families(text: string): string[] {
  return [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!);
}

/** Each host family once; one series of the process' memory (one process exports them). */
function expectHostOnce(text: string, groups: string[]): void {
  const f = families(text);
  for (const name of groups) expect(f.filter((x) => x === name), name).toHaveLength(1);
  const s = parseMetrics(text);
  if (groups.includes('process_memory_usage')) expect(s.filter((x) => x.name === 'process_memory_usage')).toHaveLength(1);
  // the system series are not added up over processes: one sample per (state, cpu) of system_cpu_time_total
  const cpu = s.filter((x) => x.name === 'system_cpu_time_total').map((x) => JSON.stringify(x.labels));
  expect(cpu.length).toBeGreaterThan(0);
  expect(new Set(cpu).size).toBe(cpu.length);
  // gunicorn_* are still there beside them
  expect(f).toContain('gunicorn_worker_requests_total');
}

function expectNoHost(text: string): void {
  expect(families(text).filter((x) => x.startsWith('system_') || x.startsWith('process_'))).toEqual([]);
}

const procs: Proc[] = [];
afterAll(async () => { await Promise.all(procs.map((p) => p.stop())); });

describe('the runner\'s master', () => {
  it('on: the host families once beside gunicorn_*; off (default): absent', async () => {
    for (const on of [true, false]) {
      const r = await startRunner(['-w', '2', join(FIXTURES, 'runner-http.cjs')], { workers: 2, env: on ? { PREFORK_OTEL_HOST_METRICS: 'true' } : {} });
      procs.push(r.proc);
      await fetch(r.url('/')).then((x) => x.text());
      const text = await waitFor(async () => { const t = await scrapeText(r.metricsPort); return t.includes('gunicorn_worker_requests_total') ? t : undefined; }, 15_000, 'a request counted');
      if (on) expectHostOnce(text, [...SYSTEM, ...PROCESS]);
      else expectNoHost(text);
      await r.stop();
    }
  });
});

describe('the runner\'s --host-metrics flag', () => {
  it('as PREFORK_OTEL_HOST_METRICS=true: the host families once, from the master', async () => {
    const r = await startRunner(['--host-metrics', '-w', '1', join(FIXTURES, 'runner-http.cjs')], { workers: 1, env: { PREFORK_OTEL_HOST_METRICS: '' } });
    procs.push(r.proc);
    await fetch(r.url('/')).then((x) => x.text());
    const text = await waitFor(async () => { const t = await scrapeText(r.metricsPort); return t.includes('gunicorn_worker_requests_total') ? t : undefined; }, 15_000, 'a request counted');
    expectHostOnce(text, [...SYSTEM, ...PROCESS]);
    await r.stop();
  });

  it('host_metrics: true in a config file: the same', async () => {
    const dir = tmpDir();
    const file = join(dir, 'conf.json');
    writeFileSync(file, JSON.stringify({ host_metrics: true }));
    const r = await startRunner(['-c', file, '-w', '1', join(FIXTURES, 'runner-http.cjs')], { workers: 1, env: { PREFORK_OTEL_HOST_METRICS: '' } });
    procs.push(r.proc);
    await fetch(r.url('/')).then((x) => x.text());
    const text = await waitFor(async () => { const t = await scrapeText(r.metricsPort); return t.includes('gunicorn_worker_requests_total') ? t : undefined; }, 15_000, 'a request counted');
    expectHostOnce(text, [...SYSTEM, ...PROCESS]);
    await r.stop();
  });
});

describe('the preloaded node:cluster primary', () => {
  it('on: once, from the primary (the workers never export them)', async () => {
    const appPort = await freePort();
    const metricsPort = await freePort();
    const app = startNode(['-r', REGISTER_CJS, join(FIXTURES, 'cluster-app.cjs')], {
      CLUSTER_WORKERS: '2', APP_PORT: String(appPort), PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
      PREFORK_OTEL_HOST_METRICS: 'true',
    });
    procs.push(app);
    await waitFor(() => app.stdout.match(/^forked /gm)?.length === 2, 15_000, 'forks');
    await waitForHttp(`http://127.0.0.1:${appPort}/`);
    const text = await waitFor(async () => {
      const t = await scrapeText(metricsPort);
      return t.includes('gunicorn_worker_requests_total') ? t : undefined;
    }, 15_000, 'the workers\' series');
    expectHostOnce(text, [...SYSTEM, ...PROCESS]);
    await app.stop();
  });
});

describe('PROMETHEUS_MULTIPROC_DIR', () => {
  const dir = tmpDir('prefork-otel-host-mp-');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('on: once from the serving app process and once from the exporter; never written to the files', async () => {
    const metricsPort = await freePort();
    const apps = await Promise.all([0, 1].map(async () => {
      const port = await freePort();
      const p = startNode(['-r', REGISTER_CJS, join(FIXTURES, 'http-app.cjs')], {
        APP_PORT: String(port), PROMETHEUS_MULTIPROC_DIR: dir, PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
        PREFORK_OTEL_SNAPSHOT_INTERVAL: '0.2', PREFORK_OTEL_HOST_METRICS: 'true',
      });
      procs.push(p);
      await waitForHttp(`http://127.0.0.1:${port}/ready`);
      return p;
    }));
    const exporterPort = await freePort();
    const exporter = startNode([join(FIXTURES, 'exporter.cjs'), '--port', String(exporterPort), '--bind', '127.0.0.1', '--dir', dir], {
      PREFORK_OTEL_HOST_METRICS: 'true',
    });
    procs.push(exporter);
    await waitForHttp(`http://127.0.0.1:${exporterPort}/metrics`);
    for (const port of [metricsPort, exporterPort]) {
      const text = await waitFor(async () => {
        const t = await scrapeText(port);
        return families(t).includes('system_cpu_time_total') ? t : undefined;
      }, 15_000, `host metrics on ${port}`);
      expectHostOnce(text, [...SYSTEM, ...PROCESS]);
    }
    for (const n of readdirSync(dir).filter((x) => x.endsWith('.json'))) {
      expect(readFileSync(join(dir, n), 'utf8')).not.toContain('system.cpu.time');
    }
    await Promise.all([...apps, exporter].map((p) => p.stop()));
  });

  it('an invalid value: one line, exit 2', async () => {
    const p = startNode(['-r', REGISTER_CJS, '-e', ''], { PROMETHEUS_MULTIPROC_DIR: dir, PREFORK_OTEL_HOST_METRICS: 'sometimes' });
    const end = await p.exited;
    expect(end.code).toBe(2);
    expect(p.stderr).toBe('prefork-otel: invalid PREFORK_OTEL_HOST_METRICS="sometimes": expected one of true, false, 1, 0, yes, no, on, off\n');
  });
});
