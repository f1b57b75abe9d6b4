/**
 * The snapshot protocol's deltas (src/export/snapshot.ts, src/export/ipc.ts) without processes: a
 * delta rebuilt on the master equals the whole snapshot, keeps unchanged point objects, is refused when
 * it does not fit its base (the master then asks for a whole one), and the serializer's line cache
 * writes exactly what it writes without it. Real Telemetry + Metrics collections; the IPC channel is an
 * in-memory pair that round-trips every message through JSON, as Node's IPC does.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { DataPoint } from '@opentelemetry/sdk-metrics';
import { loadConfig } from '../src/config';
import { SnapshotResponder, TAG, WorkerLink, type IpcEndpoint } from '../src/export/ipc';
import { serializePrometheus, type LineCache } from '../src/export/serializer';
import { applySnapshotDelta, diffSnapshot, toSnapshot, type Snapshot } from '../src/export/snapshot';
import { Telemetry } from '../src/export/telemetry';
import { RequestMetricProducer } from '../src/metrics/producer';
import { Metrics } from '../src/metrics/Metrics';

const config = loadConfig({}, { targetInfo: false });
const json = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

function worker() {
  const producer = new RequestMetricProducer();
  const telemetry = new Telemetry(config, [producer]);
  const metrics = new Metrics({ meterProvider: telemetry.meterProvider, workerId: 777, producer, buckets: config.buckets });
  metrics.memoryBytes = 1000;
  metrics.cpuPercent = 1;
  return { telemetry, metrics, snap: async () => toSnapshot(await telemetry.collect(), 777) };
}

/** what the serializer writes for `s` (a whole snapshot), for comparisons */
const text = (s: Snapshot, cache?: LineCache) => serializePrometheus({ resource: { attributes: {} } as never, scopeMetrics: s.scopeMetrics }, { targetInfo: false }, cache);

describe('snapshot deltas', () => {
  it('rebuild the whole snapshot, reusing every unchanged point object of the base', async () => {
    const w = worker();
    for (let i = 0; i < 20; i++) w.metrics.recordRequest('GET', `/r${i}`, 0.01, true);
    const a = await w.snap();
    w.metrics.recordRequest('GET', '/r3', 0.2, false);
    w.metrics.recordRequest('POST', '/new', 0.02, true);
    w.metrics.memoryBytes = 2000;
    const b = await w.snap();
    const d = diffSnapshot(a, b, 2, 1);
    // the delta carries only what changed: /r3 (requests, duration, failed, error_handling), /new, memory, uptime …
    const changed = d.scopes.flatMap((s) => s.metrics).reduce((n, m) => n + ('m' in m ? m.m.dataPoints.length : m.cp.length), 0);
    expect(changed).toBeLessThan(15);
    const baseOnMaster = json(a);
    const rebuilt = applySnapshotDelta(baseOnMaster, json(d))!;
    expect(json(rebuilt).scopeMetrics.map((s) => s.metrics.map((m) => [m.descriptor.name, m.dataPoints.map((p) => [p.attributes, p.value])])))
      .toEqual(json(b).scopeMetrics.map((s) => s.metrics.map((m) => [m.descriptor.name, m.dataPoints.map((p) => [p.attributes, p.value])])));
    expect(text(rebuilt)).toBe(text(json(b)));
    // unchanged points are the base's own objects; changed ones are new
    const req = (s: Snapshot) => s.scopeMetrics.flatMap((x) => x.metrics).find((m) => m.descriptor.name === 'gunicorn_worker_requests_total')!.dataPoints as DataPoint<number>[];
    const byEp = (s: Snapshot, ep: string) => req(s).find((p) => p.attributes.endpoint === ep)!;
    expect(byEp(rebuilt, '/r0')).toBe(byEp(baseOnMaster, '/r0'));
    expect(byEp(rebuilt, '/r3')).not.toBe(byEp(baseOnMaster, '/r3'));
    expect(byEp(rebuilt, '/r3').value).toBe(2);
    await w.telemetry.shutdown();
  });

  it('is refused when it does not fit the base', async () => {
    const w = worker();
    w.metrics.recordRequest('GET', '/a', 0.01, true);
    const a = await w.snap();
    w.metrics.recordRequest('GET', '/b', 0.01, true);
    const b = await w.snap();
    const d = diffSnapshot(a, b, 2, 1);
    const empty: Snapshot = { ...json(a), scopeMetrics: [] };
    expect(applySnapshotDelta(empty, json(d))).toBeUndefined();
    await w.telemetry.shutdown();
  });

  it('the line cache writes byte for byte what the serializer writes without it, scrape after scrape', async () => {
    const w = worker();
    for (let i = 0; i < 30; i++) w.metrics.recordRequest(i % 2 ? 'GET' : 'PUT', `/p${i}`, 0.001 * i, i % 7 !== 0);
    let base = json(await w.snap());
    const cache: LineCache = new WeakMap();
    for (let round = 0; round < 4; round++) {
      w.metrics.recordRequest('GET', `/p${round}`, 0.3, round % 2 === 0);
      const next = await w.snap();
      base = applySnapshotDelta(base, json(diffSnapshot(json(base), next, round + 2, round + 1)))!;
      expect(text(base, cache)).toBe(text(json(next)));
    }
    await w.telemetry.shutdown();
  });
});

/** an in-memory IPC pair; every message goes through JSON (as Node's IPC), asynchronously */
function pair() {
  const a = new EventEmitter();
  const b = new EventEmitter();
  let dropNext = false;
  const end = (self: EventEmitter, other: EventEmitter): IpcEndpoint => Object.assign(self, {
    connected: true,
    send(m: unknown, cb?: (err: Error | null) => void) {
      const copy = JSON.parse(JSON.stringify(m));
      const drop = dropNext && (m as { delta?: unknown }).delta !== undefined;
      if (drop) dropNext = false;
      setImmediate(() => { if (!drop) other.emit('message', copy); cb?.(null); });
      return true;
    },
  }) as never;
  return { master: end(a, b), worker: end(b, a), dropNextDelta: () => { dropNext = true; } };
}

describe('SnapshotResponder ↔ WorkerLink', () => {
  it('first whole, then deltas; a lost delta makes the master ask for a whole one, and nothing is lost', async () => {
    const w = worker();
    const p = pair();
    const sent: string[] = [];
    const spy = p.worker.send!.bind(p.worker);
    p.worker.send = (m: unknown, cb?: (err: Error | null) => void) => {
      sent.push((m as { delta?: unknown }).delta ? 'delta' : 'whole');
      return spy(m, cb);
    };
    const responder = new SnapshotResponder(w.telemetry, p.worker, 777, () => 3).start(3_600_000);
    const got: Snapshot[] = [];
    const link = new WorkerLink(777, p.master, (s) => got.push(s));
    const total = (s: Snapshot | undefined) => (s?.scopeMetrics.flatMap((x) => x.metrics).find((m) => m.descriptor.name === 'gunicorn_worker_requests_total')?.dataPoints ?? [])
      .reduce((n, x) => n + (x.value as number), 0);

    w.metrics.recordRequest('GET', '/a', 0.01, true);
    expect(total(await link.request())).toBe(1);
    w.metrics.recordRequest('GET', '/a', 0.01, true);
    const second = await link.request();
    expect(total(second)).toBe(2);
    expect(second!.inFlight).toBe(3);
    // a delta lost on the way (the next one sent: a push); the answer after it does not fit the
    // master's base, so that request gets nothing and the master asks for the next one whole
    p.dropNextDelta();
    w.metrics.recordRequest('GET', '/b', 0.01, true);
    await responder.send(false);
    w.metrics.recordRequest('GET', '/b', 0.01, true);
    expect(await link.request()).toBeUndefined();
    const recovered = await link.request();
    expect(total(recovered)).toBe(4);
    expect(sent).toEqual(['whole', 'delta', 'delta', 'delta', 'whole']);
    expect(total(got.at(-1))).toBe(4);
    await responder.stop(true);
    await new Promise((r) => setImmediate(r));
    expect(got.at(-1)!.final).toBe(true);
    expect(sent.at(-1)).toBe('whole'); // the final snapshot always goes whole
    link.close();
    await w.telemetry.shutdown();
  });
});
