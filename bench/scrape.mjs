// Scrape cost, master side, in-process: W synthetic workers, each a real Telemetry + Metrics
// (RequestStore + RequestMetricProducer) holding request series, collected and turned into the
// snapshot messages (JSON text, as they cross IPC): the delta protocol in use (each answer carries the
// points changed since the previous one: here one more request on every tenth label set), and whole
// snapshots (the protocol before) for comparison. The master's ScrapeHub applies them (the union
// endpoint cap included), merges them with its own metrics and the one serializer writes the text. Measures merge+serialize latency
// (p50/p99), the same with the IPC decode (JSON.parse of the W messages) and the payload size.
//
// "Series" are Prometheus time series (one sample line each). One (method, endpoint) label set of
// the request path is 18 of them (requests_total, the histogram's 15 buckets, _sum, _count), 20 when
// it also failed; a worker adds 4 gauges. `labelSets` cells give the (method, endpoint) count directly.
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const dist = (p) => fileURLToPath(new URL(`../dist/cjs/${p}`, import.meta.url));
const { loadConfig } = require(dist('config/index.js'));
const { Telemetry } = require(dist('export/telemetry.js'));
const { RequestMetricProducer } = require(dist('metrics/producer.js'));
const { Metrics } = require(dist('metrics/Metrics.js'));
const { MasterMetrics } = require(dist('metrics/MasterMetrics.js'));
const { toSnapshot, diffSnapshot, applySnapshotDelta } = require(dist('export/snapshot.js'));
const { ScrapeHub } = require(dist('export/hub.js'));
const { serializePrometheus } = require(dist('export/serializer.js'));

const METHODS = ['GET', 'POST', 'PUT', 'DELETE'];

/** (method, endpoint) label sets that make about `series` Prometheus series in one worker */
export function labelSetsFor(series) {
  return Math.max(1, Math.round((series - 4) / 18.2));
}

/**
 * One worker's snapshot messages as the master receives them (JSON text), with `series` (method,
 * endpoint) label sets: `whole` (its whole snapshot) and `delta` (the next one as sent under the delta
 * protocol, after one more request on every tenth label set: the traffic between two scrapes).
 */
export async function workerSnapshotJson(pid, series, config) {
  const producer = new RequestMetricProducer();
  const telemetry = new Telemetry(config, [producer]);
  const metrics = new Metrics({ meterProvider: telemetry.meterProvider, workerId: pid, producer, buckets: config.buckets });
  metrics.memoryBytes = 50_000_000;
  metrics.cpuPercent = 1.5;
  metrics.updateWorkerState('running');
  for (let i = 0; i < series; i++) {
    const method = METHODS[i % METHODS.length];
    const endpoint = `/api/v1/resource${Math.floor(i / METHODS.length)}/items`;
    for (let k = 0; k < 3; k++) metrics.recordRequest(method, endpoint, 0.001 * (1 + ((i + k) % 700)), k !== 0 || i % 10 !== 0);
  }
  const snap = toSnapshot(await telemetry.collect(), pid);
  for (let i = 0; i < series; i += 10) metrics.recordRequest(METHODS[i % METHODS.length], `/api/v1/resource${Math.floor(i / METHODS.length)}/items`, 0.002, true);
  const next = toSnapshot(await telemetry.collect(), pid);
  await telemetry.shutdown();
  return {
    whole: JSON.stringify({ 'prefork-otel': 'snapshot', seq: 1, snapshot: snap }),
    delta: JSON.stringify({ 'prefork-otel': 'snapshot', delta: diffSnapshot(snap, next, 2, 1) }),
  };
}

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/**
 * One cell: `workers` × `series`. Iterations until `minIters` and `budgetMs` are both reached (max `maxIters`).
 * Returns ms figures (p50/p99 of merge+serialize and of decode+merge+serialize) and payload bytes.
 */
export async function scrapeCell(workers, series, { minIters = 5, maxIters = 200, budgetMs = 4000, labelSets = false } = {}) {
  const sets = labelSets ? series : labelSetsFor(series);
  const config = loadConfig({}, { targetInfo: true });
  const master = new Telemetry(config, []);
  const mm = new MasterMetrics({ meterProvider: master.meterProvider });
  for (let i = 0; i < workers; i++) mm.recordWorkerRestart(String(100000 + i), 'crash');
  const messages = [];
  for (let i = 0; i < workers; i++) messages.push(await workerSnapshotJson(100000 + i, sets, config));
  // the Prometheus series one worker contributes (sample lines)
  const one = serializePrometheus({ resource: { attributes: {} }, scopeMetrics: JSON.parse(messages[0].whole).snapshot.scopeMetrics }, { targetInfo: false });
  const seriesPerWorker = one.split('\n').filter((l) => l !== '' && !l.startsWith('#')).length;
  // whole: every answer is the whole snapshot (the protocol before deltas); delta: the master holds each
  // worker's last snapshot and applies the answer's delta to it (unchanged points keep their text)
  const run = async (mode) => {
    const hub = new ScrapeHub({ deadlineMs: 1000, retentionMs: 300_000, maxRetained: 64, maxEndpoints: 100_000, targetInfo: true });
    const bases = messages.map((m) => JSON.parse(m.whole).snapshot);
    const mergeSer = [];
    const withDecode = [];
    let bytes = 0;
    const start = performance.now();
    for (let it = 0; it < maxIters; it++) {
      const t0 = performance.now();
      for (let w = 0; w < messages.length; w++) {
        hub.update(mode === 'whole' ? JSON.parse(messages[w].whole).snapshot : applySnapshotDelta(bases[w], JSON.parse(messages[w].delta).delta));
      }
      const t1 = performance.now();
      const text = await hub.scrape(() => master.collect());
      // the scrape server sends Content-Length: measuring it flattens the text, as the response write would
      bytes = Buffer.byteLength(text);
      const t2 = performance.now();
      mergeSer.push(t2 - t1);
      withDecode.push(t2 - t0);
      if (it + 1 >= minIters && performance.now() - start > budgetMs) break;
    }
    mergeSer.sort((a, b) => a - b);
    withDecode.sort((a, b) => a - b);
    return { mergeSer, withDecode, bytes };
  };
  const whole = await run('whole');
  const delta = await run('delta');
  // the headline figures are the protocol in use (deltas); `whole` is the protocol before them
  const mergeSer = delta.mergeSer;
  const withDecode = delta.withDecode;
  const bytes = delta.bytes;
  await master.shutdown();
  mergeSer.sort((a, b) => a - b);
  withDecode.sort((a, b) => a - b);
  return {
    workers, labelSetsPerWorker: sets, seriesPerWorker, totalSeries: seriesPerWorker * workers, iterations: mergeSer.length, bytes,
    snapshotBytes: messages.reduce((a, m) => a + m.whole.length, 0),
    deltaBytes: messages.reduce((a, m) => a + m.delta.length, 0),
    mergeSerializeMs: { p50: pct(mergeSer, 50), p99: pct(mergeSer, 99) },
    decodeMergeSerializeMs: { p50: pct(withDecode, 50), p99: pct(withDecode, 99) },
    whole: {
      mergeSerializeMs: { p50: pct(whole.mergeSer, 50), p99: pct(whole.mergeSer, 99) },
      decodeMergeSerializeMs: { p50: pct(whole.withDecode, 50), p99: pct(whole.withDecode, 99) },
    },
  };
}

export async function runScrape({ workers = [1, 4, 16], series = [100, 1000, 5000], labelSets = false, quick = false, log = console.log } = {}) {
  const out = [];
  for (const w of workers) {
    for (const s of series) {
      const big = w * s * (labelSets ? 18 : 1) >= 200_000;
      const r = await scrapeCell(w, s, { labelSets, ...(quick ? { minIters: 3, maxIters: 20, budgetMs: 500 } : { minIters: big ? 5 : 30, budgetMs: big ? 5000 : 2500 }) });
      log(`scrape ${String(w).padStart(2)} workers × ${r.seriesPerWorker} series (${r.labelSetsPerWorker} label sets): merge+serialize p50 ${r.mergeSerializeMs.p50.toFixed(1)} ms, p99 ${r.mergeSerializeMs.p99.toFixed(1)} ms; with IPC decode p99 ${r.decodeMergeSerializeMs.p99.toFixed(1)} ms; ${(r.bytes / 1e6).toFixed(2)} MB (${r.iterations} iterations)`
        + ` (deltas: ${(r.deltaBytes / 1e3).toFixed(0)} kB per scrape) | whole snapshots (${(r.snapshotBytes / 1e3).toFixed(0)} kB): merge+serialize p50 ${r.whole.mergeSerializeMs.p50.toFixed(1)} ms, p99 ${r.whole.mergeSerializeMs.p99.toFixed(1)} ms; with decode p99 ${r.whole.decodeMergeSerializeMs.p99.toFixed(1)} ms`);
      out.push(r);
    }
  }
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const num = (flag) => { const i = args.indexOf(flag); return i >= 0 ? args[i + 1].split(',').map(Number) : undefined; };
  if (args.includes('--e2e')) {
    // the end-to-end figure of the issue (16 workers × ~1,000 series, GET /metrics timed to the last
    // byte), as bench/run.mjs records it: node:cluster under the preload and the runner -k async
    const { runE2eScrape, runnerAvailable } = await import('./load.mjs');
    const workers = num('-w')?.[0] ?? 16;
    const scrapes = num('-n')?.[0] ?? 100;
    await runE2eScrape(undefined, { variant: 'clusterPreload', workers, labelSets: 55, scrapes });
    if (runnerAvailable()) await runE2eScrape(undefined, { variant: 'runner', workers, labelSets: 55, scrapes });
  } else {
    await runScrape({ workers: num('-w'), series: num('-s'), quick: args.includes('--quick'), labelSets: args.includes('--label-sets') });
  }
}
