/**
 * OTLP under node:cluster with the preload: every process exports itself (each worker its own
 * gunicorn_worker_* series under its own resource, the primary its master metrics), to an OTLP
 * receiver started inside this test — no OpenTelemetry Collector binary can be downloaded on these
 * machines, so the collector's receiving side runs in-process (test/fixtures/otlp-receiver.ts).
 */
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES, REGISTER_CJS, freePort, startNode, waitFor, type Proc, livePids } from './helpers';
import { pointsOf, startHttpReceiver, type Export, type Receiver } from './fixtures/otlp-receiver';
import { collectorPrometheusName } from './fixtures/collector-naming';

function get(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}


/** The latest export of each process (by resource process.pid). */
function latestByPid(exports: Export[]): Map<string, Export> {
  const out = new Map<string, Export>();
  for (const e of exports) for (const rm of e.resourceMetrics) out.set(String(rm.resource['process.pid']), e);
  return out;
}

function total(e: Export | undefined, name: string, match: Record<string, string> = {}): number {
  if (!e) return 0;
  return pointsOf(e, name).filter((p) => Object.entries(match).every(([k, v]) => p.attributes[k] === v))
    .reduce((a, p) => a + (p.value ?? p.count ?? 0), 0);
}

describe('OTLP with node:cluster under the preload (2 workers): each process exports itself', () => {
  let receiver: Receiver;
  let app: Proc;
  let appPort: number;
  /** every GET /pid of this file, by the worker pid that answered it */
  const served = new Map<string, number>();
  const getPid = async () => {
    const pid = await get(appPort, '/pid');
    served.set(pid, (served.get(pid) ?? 0) + 1);
    return pid;
  };

  beforeAll(async () => {
    receiver = await startHttpReceiver(await freePort());
    appPort = await freePort();
    app = startNode(['-r', REGISTER_CJS, join(FIXTURES, 'cluster-app.cjs')], {
      APP_PORT: String(appPort), CLUSTER_WORKERS: '2',
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_METRIC_EXPORT_INTERVAL: '300', OTEL_SERVICE_NAME: 'cluster-app',
    });
    await waitFor(() => livePids(app).length === 2, 20_000, 'two workers');
    // both workers listening (round-robin only hands connections to workers that listen)
    await waitFor(async () => { await getPid(); return served.size === 2; }, 20_000, 'both workers answering');
  });
  afterAll(async () => {
    await app?.stop();
    await receiver?.close();
  });

  it('the workers export their own series (worker_id = their pid, resource process.pid = their pid); the sum is exact; the primary exports no worker series', async () => {
    for (let i = 0; i < 40; i += 10) await Promise.all(Array.from({ length: 10 }, getPid));
    const pids = livePids(app);
    expect([...served.keys()].sort()).toEqual(pids); // round-robin over new connections: both served
    await waitFor(() => {
      const latest = latestByPid(receiver.exports);
      return pids.every((pid) => total(latest.get(pid), 'gunicorn_worker_requests_total', { endpoint: '/pid' }) === served.get(pid));
    }, 20_000, 'exports with every request');
    const latestNow = latestByPid(receiver.exports);
    const sent = [...served.values()].reduce((a, b) => a + b, 0);
    expect(pids.reduce((a, pid) => a + total(latestNow.get(pid), 'gunicorn_worker_requests_total'), 0)).toBe(sent);

    const latest = latestByPid(receiver.exports);
    const primary = String(app.child.pid);
    expect([...latest.keys()].sort()).toEqual([...pids, primary].sort());
    for (const pid of pids) {
      const e = latest.get(pid)!;
      expect(e.resourceMetrics).toHaveLength(1);
      expect(e.resourceMetrics[0]!.resource['service.name']).toBe('cluster-app');
      for (const name of ['gunicorn_worker_requests_total', 'gunicorn_worker_uptime_seconds', 'gunicorn_worker_state']) {
        const ids = [...new Set(pointsOf(e, name).map((p) => p.attributes.worker_id))];
        expect(ids).toEqual([pid]);
      }
    }
    // distinct service.instance.id per process: a collector keeps them apart (its `instance` label)
    const instances = [...latest.values()].map((e) => e.resourceMetrics[0]!.resource['service.instance.id']);
    expect(new Set(instances).size).toBe(3);
    // the primary serves no requests
    expect(pointsOf(latest.get(primary)!, 'gunicorn_worker_requests_total')).toEqual([]);
  });

  // the scrape path drops the master's own worker series with withoutWorkerMetrics; the push path
  // too, through Telemetry.setPushTransform in PrimaryWatch.becomeMaster() (src/modes/cluster.ts)
  it('the primary (the master) exports none of the worker metrics under its own pid', async () => {
    const primary = String(app.child.pid);
    await waitFor(() => latestByPid(receiver.exports).has(primary), 15_000, 'a primary export');
    const p = latestByPid(receiver.exports).get(primary)!;
    for (const name of ['gunicorn_worker_requests_total', 'gunicorn_worker_uptime_seconds', 'gunicorn_worker_state',
      'gunicorn_worker_memory_bytes', 'gunicorn_worker_cpu_percent', 'gunicorn_worker_request_duration_seconds']) {
      expect(pointsOf(p, name), name).toEqual([]);
    }
  });

  it('the primary exports the restart of a killed worker (gunicorn_master_worker_restarts_total, reason signal)', async () => {
    const victim = livePids(app)[0]!;
    process.kill(Number(victim), 'SIGKILL');
    await waitFor(() => new RegExp(`^exit ${victim} null SIGKILL$`, 'm').test(app.stdout), 15_000, 'victim exit');
    const primary = String(app.child.pid);
    await waitFor(() => total(latestByPid(receiver.exports).get(primary), 'gunicorn_master_worker_restarts_total') === 1, 15_000, 'restart exported');
    const e = latestByPid(receiver.exports).get(primary)!;
    expect(pointsOf(e, 'gunicorn_master_worker_restarts_total').map((x) => [x.attributes, x.value])).toEqual([[{ worker_id: victim, reason: 'signal' }, 1]]);
    const meta = pointsOf(e, 'gunicorn_master_worker_restarts_total')[0]!.metric;
    expect(meta).toMatchObject({ type: 'sum', monotonic: true, temporality: 2, unit: '' });
    expect(collectorPrometheusName(meta)).toBe('gunicorn_master_worker_restarts_total');
  });
});

describe('OTLP with node:cluster under the preload, no periodic export (10 min interval): the final exports', () => {
  let receiver: Receiver;
  let app: Proc;
  let appPort: number;
  const served = new Map<string, number>();
  const getPid = async () => {
    const pid = await get(appPort, '/pid');
    served.set(pid, (served.get(pid) ?? 0) + 1);
    return pid;
  };

  beforeAll(async () => {
    receiver = await startHttpReceiver(await freePort());
    appPort = await freePort();
    app = startNode(['-r', REGISTER_CJS, join(FIXTURES, 'cluster-app.cjs')], {
      APP_PORT: String(appPort), CLUSTER_WORKERS: '2',
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_METRIC_EXPORT_INTERVAL: '600000',
    });
    await waitFor(() => livePids(app).length === 2, 20_000, 'two workers');
    await waitFor(async () => { await getPid(); return served.size === 2; }, 20_000, 'both workers answering');
  });
  afterAll(async () => {
    await app?.stop();
    await receiver?.close();
  });

  it('a worker the primary disconnects gracefully sends a final export with everything it counted', async () => {
    // requests, then /retire right away: what the retiring worker counted since its last periodic
    // export can only arrive with a final export
    for (let i = 0; i < 30; i += 10) await Promise.all(Array.from({ length: 10 }, getPid));
    const retired = await get(appPort, '/retire');
    await waitFor(() => new RegExp(`^exit ${retired} 0 null$`, 'm').test(app.stdout), 15_000, 'retired worker exit');
    expect(receiver.exports.length).toBe(1); // nothing periodic: this is the retired worker's final export
    const e = latestByPid(receiver.exports).get(retired)!;
    expect(total(e, 'gunicorn_worker_requests_total', { endpoint: '/retire' })).toBe(1);
    expect(total(e, 'gunicorn_worker_requests_total', { endpoint: '/pid' })).toBe(served.get(retired));
  });

  it('SIGTERM to the primary (no handler of the app): the primary ends by SIGTERM after its own final export', async () => {
    const primary = String(app.child.pid);
    expect(await app.stop('SIGTERM')).toEqual({ code: null, signal: 'SIGTERM' });
    await waitFor(() => latestByPid(receiver.exports).has(primary), 10_000, 'the primary\'s final export');
  });
});
