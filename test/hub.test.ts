/**
 * The scrape hub's pure parts, without processes: snapshot merge, the union-wide endpoint cap and its
 * `__overflow__` fold, retention in time and in count, concurrent scrapes sharing one collection, the
 * health metrics, the exit line. Real OTel MetricData (from a real Telemetry + Metrics) where the
 * shape matters; the IPC channel is an in-memory pair (a real child process is in the runner tests).
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { loadConfig } from '../src/config';
import { EndpointUnion, foldOwner } from '../src/export/fold';
import { ScrapeHub, workerExitLine, type HubOptions } from '../src/export/hub';
import { TAG, type IpcEndpoint } from '../src/export/ipc';
import { mergeScopeMetrics } from '../src/export/merge';
import { toSnapshot, type Snapshot } from '../src/export/snapshot';
import { Telemetry } from '../src/export/telemetry';
import { RequestMetricProducer } from '../src/metrics/producer';
import { Metrics } from '../src/metrics/Metrics';
import { parseMetrics, type Sample } from './helpers';

const config = loadConfig({}, { targetInfo: false, buckets: [0.1, 1] });
const EMPTY: ResourceMetrics = { resource: resourceFromAttributes({}), scopeMetrics: [] };
const local = async () => EMPTY;

/** A worker's snapshot as it would send it: a real Telemetry + Metrics with `requests` recorded. */
async function snapshotOf(pid: number, requests: Array<[method: string, endpoint: string, ok?: boolean]>, opts: { time?: number; final?: boolean; inFlight?: number } = {}): Promise<Snapshot> {
  const producer = new RequestMetricProducer();
  const telemetry = new Telemetry(config, [producer]);
  const metrics = new Metrics({ meterProvider: telemetry.meterProvider, workerId: pid, producer, buckets: config.buckets });
  metrics.memoryBytes = 42_000_000;
  metrics.cpuPercent = 12.5;
  for (const [m, ep, ok] of requests) metrics.recordRequest(m, ep, 0.05, ok !== false);
  const s = toSnapshot(await telemetry.collect(), pid, opts.final ?? false, opts.inFlight);
  await telemetry.shutdown();
  if (opts.time !== undefined) s.time = opts.time;
  return JSON.parse(JSON.stringify(s)) as Snapshot; // as it crosses IPC
}

function hub(o: Partial<HubOptions> = {}, clock?: { t: number }): ScrapeHub {
  return new ScrapeHub({ deadlineMs: 50, retentionMs: 60_000, maxRetained: 10, maxEndpoints: 100, targetInfo: false, ...(clock ? { now: () => clock.t } : {}), ...o });
}

async function samples(h: ScrapeHub): Promise<Sample[]> {
  return parseMetrics(await h.scrape(local));
}

const total = (s: Sample[], name: string, match: Record<string, string> = {}) => s
  .filter((x) => x.name === name && Object.entries(match).every(([k, v]) => x.labels[k] === v))
  .reduce((a, x) => a + x.value, 0);
const endpoints = (s: Sample[]) => [...new Set(s.filter((x) => x.name === 'gunicorn_worker_requests_total').map((x) => x.labels.endpoint!))].sort();

/** An in-memory IPC pair: what the hub sends reaches `worker`, what the worker sends reaches the hub. */
function channelPair(answer: (id: number) => Snapshot | undefined | Promise<Snapshot | undefined>) {
  const master = new EventEmitter();
  let collects = 0;
  const endpoint: IpcEndpoint & { emit: EventEmitter['emit'] } = Object.assign(master, {
    connected: true,
    send(m: unknown, cb?: (err: Error | null) => void) {
      const msg = m as { [TAG]: string; id: number };
      if (msg[TAG] === 'collect') {
        collects++;
        void Promise.resolve(answer(msg.id)).then((snapshot) => {
          if (snapshot) setImmediate(() => master.emit('message', { [TAG]: 'snapshot', id: msg.id, snapshot }));
        });
      }
      cb?.(null);
      return true;
    },
  }) as never;
  return { endpoint, collects: () => collects, push: (snapshot: Snapshot) => master.emit('message', { [TAG]: 'snapshot', snapshot }) };
}

describe('merge', () => {
  it('puts each metric name once, keeps every worker\'s points apart (worker_id), and sums equal ones only when asked', async () => {
    const a = await snapshotOf(1, [['GET', '/a'], ['GET', '/a']]);
    const b = await snapshotOf(2, [['GET', '/a']]);
    const merged = mergeScopeMetrics([a.scopeMetrics, b.scopeMetrics]);
    const names = merged.flatMap((sm) => sm.metrics.map((m) => m.descriptor.name));
    expect(new Set(names).size).toBe(names.length);
    const req = merged.flatMap((sm) => sm.metrics).find((m) => m.descriptor.name === 'gunicorn_worker_requests_total')!;
    expect(req.dataPoints.map((p) => [p.attributes.worker_id, p.value])).toEqual([['1', 2], ['2', 1]]);
  });

  it('applies each snapshot once: a pushed snapshot and an answer are each one update, totals exact', async () => {
    const h = hub();
    let n = 0;
    const pair = channelPair(async () => snapshotOf(7, Array.from({ length: ++n * 3 }, () => ['GET', '/x'] as [string, string])));
    h.attach(7, pair.endpoint);
    pair.push(await snapshotOf(7, [['GET', '/x']], { time: 1 }));
    const s = await samples(h);
    expect(pair.collects()).toBe(1);
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(3);
    expect(total(s, 'gunicorn_worker_request_duration_seconds_count')).toBe(3);
    expect(total(s, 'prefork_otel_worker_snapshot_age_seconds', { worker_id: '7' })).toBe(0);
  });

  it('never lets an older snapshot replace a newer one; a final one always wins and ends the updates', async () => {
    const h = hub();
    h.update(await snapshotOf(3, [['GET', '/a'], ['GET', '/a']], { time: 2000 }));
    h.update(await snapshotOf(3, [['GET', '/a']], { time: 1000 }));
    expect(total(await samples(h), 'gunicorn_worker_requests_total')).toBe(2);
    h.update(await snapshotOf(3, [['GET', '/a'], ['GET', '/a'], ['GET', '/a']], { time: 1500, final: true }));
    h.update(await snapshotOf(3, Array.from({ length: 9 }, () => ['GET', '/a'] as [string, string]), { time: 3000 }));
    expect(total(await samples(h), 'gunicorn_worker_requests_total')).toBe(3);
  });
});

describe('the union endpoint cap', () => {
  it('holds over the union of workers: at most max values + __overflow__, every request still counted', async () => {
    const h = hub({ maxEndpoints: 5 });
    // three workers, each with 4 distinct endpoints of its own (12 in all): only 5 survive the union
    for (const pid of [11, 12, 13]) h.update(await snapshotOf(pid, [0, 1, 2, 3].map((i) => ['GET', `/w${pid}/e${i}`] as [string, string])));
    const s = await samples(h);
    const eps = endpoints(s);
    expect(eps.filter((e) => e !== '__overflow__')).toHaveLength(5);
    expect(eps).toContain('__overflow__');
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(12);
    expect(total(s, 'gunicorn_worker_request_duration_seconds_count')).toBe(12);
    // the histogram folds bucket by bucket: +Inf bucket equals the count for every series
    for (const x of s.filter((y) => y.name === 'gunicorn_worker_request_duration_seconds_count')) {
      const inf = s.find((y) => y.name === 'gunicorn_worker_request_duration_seconds_bucket' && y.labels.le === '+Inf'
        && y.labels.worker_id === x.labels.worker_id && y.labels.endpoint === x.labels.endpoint && y.labels.method === x.labels.method)!;
      expect(inf.value).toBe(x.value);
    }
    expect(total(s, 'prefork_otel_series_overflow_total', { reason: 'endpoint_cap' })).toBeGreaterThan(0);
  });

  it('folds counters and histograms into the worker\'s own __overflow__ series of the same method and error_type, summing exactly', async () => {
    const h = hub({ maxEndpoints: 1 });
    h.update(await snapshotOf(21, [['GET', '/keep'], ['GET', '/b'], ['GET', '/c', false], ['POST', '/d', false], ['GET', '__overflow__']]));
    const s = await samples(h);
    expect(endpoints(s)).toEqual(['/keep', '__overflow__']);
    expect(total(s, 'gunicorn_worker_requests_total', { method: 'GET', endpoint: '__overflow__' })).toBe(3);
    expect(total(s, 'gunicorn_worker_requests_total', { method: 'POST', endpoint: '__overflow__' })).toBe(1);
    expect(total(s, 'gunicorn_worker_failed_requests_total', { endpoint: '__overflow__', error_type: 'RequestError' })).toBe(2);
    expect(total(s, 'gunicorn_worker_request_duration_seconds_sum', { method: 'GET', endpoint: '__overflow__' })).toBeCloseTo(0.15, 10);
    // one series per label set: no duplicate lines
    const keys = s.map((x) => `${x.name}${JSON.stringify(x.labels)}`);
    expect(new Set(keys).size).toBe(keys.length);
    // folded series, each counted once: /b (requests, duration), /c and /d (requests, duration, failed, error_handling)
    expect(h.overflowCounts().endpoint_cap).toBe(2 + 4 + 4);
  });

  it('is sticky and stable across scrapes: an admitted endpoint stays, a folded one stays folded, totals never go backwards', async () => {
    const h = hub({ maxEndpoints: 2 });
    h.update(await snapshotOf(31, [['GET', '/a'], ['GET', '/b']], { time: 1 }));
    const first = await samples(h);
    expect(endpoints(first)).toEqual(['/a', '/b']);
    // a second worker brings /c and /a; /c folds, /a is shared
    h.update(await snapshotOf(32, [['GET', '/c'], ['GET', '/a']], { time: 1 }));
    // the first worker's next snapshot adds /c and /d: both fold for it too, /a /b still its own series
    h.update(await snapshotOf(31, [['GET', '/a'], ['GET', '/b'], ['GET', '/c'], ['GET', '/d']], { time: 2 }));
    const second = await samples(h);
    expect(endpoints(second)).toEqual(['/a', '/b', '__overflow__']);
    expect(total(second, 'gunicorn_worker_requests_total', { worker_id: '31', endpoint: '/b' })).toBe(1);
    expect(total(second, 'gunicorn_worker_requests_total', { worker_id: '31', endpoint: '__overflow__' })).toBe(2);
    expect(total(second, 'gunicorn_worker_requests_total', { worker_id: '32', endpoint: '__overflow__' })).toBe(1);
    for (const x of first) {
      const y = second.find((z) => z.name === x.name && JSON.stringify(z.labels) === JSON.stringify(x.labels));
      if (x.name.startsWith('gunicorn_worker_request')) expect(y!.value).toBeGreaterThanOrEqual(x.value);
    }
    const counted = h.overflowCounts().endpoint_cap;
    await samples(h);
    expect(h.overflowCounts().endpoint_cap).toBe(counted); // the same folded series are not counted again
  });

  it('frees the places of workers no longer held, but never moves a held worker\'s series in or out of __overflow__', async () => {
    const clock = { t: 3_000_000 };
    const h = hub({ maxEndpoints: 2, retentionMs: 1000 }, clock);
    // a scanner's values fill the cap through worker 33, which then exits
    h.update(await snapshotOf(33, [['GET', '/scan1'], ['GET', '/scan2']], { time: 1 }));
    // worker 34 arrives while the cap is full: /real folds for it
    h.update(await snapshotOf(34, [['GET', '/real']], { time: 1 }));
    h.workerExited(33);
    clock.t += 1001;
    let s = await samples(h); // 33's retention ended: its places are free
    expect(h.admittedEndpoints).toBe(0);
    // 34's /real stays folded for 34 (its overflow series must not go backwards) ...
    h.update(await snapshotOf(34, [['GET', '/real'], ['GET', '/real']], { time: 2 }));
    // ... while a new worker's /real and /new are admitted
    h.update(await snapshotOf(35, [['GET', '/real'], ['GET', '/new']], { time: 2 }));
    s = await samples(h);
    expect(total(s, 'gunicorn_worker_requests_total', { worker_id: '34', endpoint: '__overflow__' })).toBe(2);
    expect(total(s, 'gunicorn_worker_requests_total', { worker_id: '34', endpoint: '/real' })).toBe(0);
    expect(total(s, 'gunicorn_worker_requests_total', { worker_id: '35', endpoint: '/real' })).toBe(1);
    expect(total(s, 'gunicorn_worker_requests_total', { worker_id: '35', endpoint: '/new' })).toBe(1);
    expect(endpoints(s)).toEqual(['/new', '/real', '__overflow__']);
  });

  it('folds a value longer than the master\'s backstop length (reason endpoint_length), whatever the worker sent', async () => {
    const u = new EndpointUnion(100, 64);
    const snap = await snapshotOf(41, [['GET', `/${'x'.repeat(8000)}`], ['GET', '/short']]);
    const r = u.fold(snap.scopeMetrics, foldOwner());
    expect(r.tooLong).toBe(2); // requests_total + the duration histogram
    const eps = r.scopes.flatMap((sm) => sm.metrics).flatMap((m) => m.dataPoints).map((p) => p.attributes.endpoint).filter(Boolean);
    expect(new Set(eps)).toEqual(new Set(['/short', '__overflow__']));
    expect(u.size).toBe(1);
  });

  it('copies nothing when nothing folds', async () => {
    const snap = await snapshotOf(51, [['GET', '/a']]);
    const r = new EndpointUnion(10).fold(snap.scopeMetrics, foldOwner());
    expect(r.scopes).toBe(snap.scopeMetrics);
  });
});

describe('retention', () => {
  it('keeps an exited worker\'s counters and histograms (not its gauges) for the retention time, then drops them', async () => {
    const clock = { t: 1_000_000 };
    const h = hub({ retentionMs: 10_000 }, clock);
    h.update(await snapshotOf(61, [['GET', '/a'], ['GET', '/a']]));
    h.workerExited(61);
    let s = await samples(h);
    expect(total(s, 'gunicorn_worker_requests_total', { worker_id: '61' })).toBe(2);
    expect(s.filter((x) => x.name === 'gunicorn_worker_memory_bytes')).toEqual([]);
    expect(s.filter((x) => x.name === 'prefork_otel_worker_snapshot_age_seconds')).toEqual([]);
    clock.t += 10_000;
    s = await samples(h);
    expect(total(s, 'gunicorn_worker_requests_total', { worker_id: '61' })).toBe(2);
    clock.t += 1;
    s = await samples(h);
    expect(s.filter((x) => x.name === 'gunicorn_worker_requests_total')).toEqual([]);
    expect(h.pids()).toEqual([]);
  });

  it('keeps at most maxRetained exited workers: the oldest exit goes first, its series counted as dropped', async () => {
    const clock = { t: 5_000_000 };
    const h = hub({ maxRetained: 2 }, clock);
    for (const pid of [71, 72, 73, 74]) {
      h.update(await snapshotOf(pid, [['GET', '/a']]));
      h.workerExited(pid);
      clock.t += 1000;
    }
    expect(h.retainedPids().sort()).toEqual([73, 74]);
    const s = await samples(h);
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(2);
    // two workers × (requests_total + duration histogram) dropped early
    expect(total(s, 'prefork_otel_series_overflow_total', { reason: 'retained_workers' })).toBe(4);
  });

  it('applies a final snapshot that arrives after the exit, as counters only', async () => {
    const h = hub();
    h.update(await snapshotOf(81, [['GET', '/a']], { time: 1 }));
    h.workerExited(81);
    h.update(await snapshotOf(81, [['GET', '/a'], ['GET', '/a'], ['GET', '/a']], { time: 2, final: true }));
    const s = await samples(h);
    expect(total(s, 'gunicorn_worker_requests_total', { worker_id: '81' })).toBe(3);
    expect(s.filter((x) => x.name === 'gunicorn_worker_cpu_percent')).toEqual([]);
  });
});

describe('one scrape', () => {
  it('concurrent scrapes share one collection in flight: each worker is asked once, every caller gets the same text', async () => {
    const h = hub({ deadlineMs: 5000 });
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const pair = channelPair(async () => { await gate; return snapshotOf(91, [['GET', '/a']]); });
    h.attach(91, pair.endpoint);
    pair.push(await snapshotOf(91, [], { time: 1 }));
    let locals = 0;
    const texts = Promise.all(Array.from({ length: 5 }, () => h.scrape(async () => { locals++; return EMPTY; })));
    release();
    const out = await texts;
    expect(pair.collects()).toBe(1);
    expect(locals).toBe(1);
    expect(new Set(out).size).toBe(1);
    // the next scrape is a new collection
    await h.scrape(local);
    expect(pair.collects()).toBe(2);
  });

  it('a worker that does not answer by the deadline is served from its last snapshot, with its age', async () => {
    const clock = { t: 10_000_000 };
    const h = hub({ deadlineMs: 20 }, clock);
    const pair = channelPair(() => new Promise(() => undefined)); // never answers
    h.attach(95, pair.endpoint);
    pair.push(await snapshotOf(95, [['GET', '/a']], { time: clock.t - 4000 }));
    const s = await samples(h);
    expect(total(s, 'gunicorn_worker_requests_total', { worker_id: '95' })).toBe(1);
    expect(total(s, 'prefork_otel_worker_snapshot_age_seconds', { worker_id: '95' })).toBe(4);
    expect(s.filter((x) => x.name === 'prefork_otel_scrape_duration_seconds')).toHaveLength(1);
  });

  it('a booting worker (no snapshot yet) is not asked, and an exited one no longer', async () => {
    const h = hub();
    const pair = channelPair(async () => snapshotOf(97, []));
    h.attach(97, pair.endpoint);
    await h.scrape(local);
    expect(pair.collects()).toBe(0);
    pair.push(await snapshotOf(97, [], { time: 1 }));
    await h.scrape(local);
    expect(pair.collects()).toBe(1);
    h.workerExited(97);
    await h.scrape(local);
    expect(pair.collects()).toBe(1);
  });
});

describe('the exit line', () => {
  it('says how it ended, uptime, requests served, last RSS and CPU, in-flight, from the last snapshot', async () => {
    const clock = { t: 2_000_000 };
    const h = hub({}, clock);
    h.update(await snapshotOf(99, [['GET', '/a'], ['GET', '/b'], ['POST', '/c']], { time: clock.t - 500, inFlight: 2 }));
    expect(workerExitLine(99, { signal: 'SIGKILL', bornAt: clock.t - 75_000 }, h.summary(99), clock.t))
      .toBe('Worker (pid:99) exited: signal SIGKILL, uptime 1m15s, 3 requests served, last RSS 42.0 MB, CPU 12.5%, 2 in flight (last snapshot 0.5s old)');
    expect(workerExitLine(98, { code: 1, bornAt: clock.t - 2000 }, h.summary(98), clock.t))
      .toBe('Worker (pid:98) exited: code 1, uptime 2.0s, no snapshot received (requests served, RSS, CPU and in-flight unknown)');
  });
});
