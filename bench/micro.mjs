// Hot-path micro-harness (tinybench): the CPU one request costs in the diagnostics_channel handlers,
// the label resolution and the records, measured as the difference to the same request objects and
// channel publishes with no subscriber. Each task runs BATCH requests per sample; tasks run in
// several interleaved rounds and the median of each round's difference to the baseline is reported.
import { createRequire } from 'node:module';
import diagnostics from 'node:diagnostics_channel';
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { median } from './load.mjs';

const require = createRequire(import.meta.url);
const dist = (p) => fileURLToPath(new URL(`../dist/cjs/${p}`, import.meta.url));
const { Metrics } = require(dist('metrics/Metrics.js'));
const { RequestMetricProducer } = require(dist('metrics/producer.js'));
const { EndpointPolicy, methodIndex } = require(dist('metrics/labels.js'));
const { HttpObserver } = require(dist('hooks/http.js'));
const { resolveEndpoint } = require(dist('hooks/routes.js'));
const { MeterProvider } = require('@opentelemetry/sdk-metrics');
const promClient = require('prom-client');

const BATCH = 1000;
const start = diagnostics.channel('http.server.request.start');
const finish = diagnostics.channel('http.server.response.finish');
const socket = new Socket();
const server = {};
const URLS = ['/users/1234', '/orders/77/items?x=1', '/', '/health', '/api/v1/things/abc'];

/** One request as node:http publishes it: fresh IncomingMessage / ServerResponse, start, finish, close. */
function oneRequest(i) {
  const request = new IncomingMessage(socket);
  request.method = 'GET';
  request.url = URLS[i % URLS.length];
  const response = new ServerResponse(request);
  const msg = { request, response, socket, server };
  start.publish(msg);
  finish.publish(msg);
  response.emit('close');
}
function requests() {
  for (let i = 0; i < BATCH; i++) oneRequest(i);
}

/** prefork-otel's observer, fast (accumulators) or otel (synchronous instruments) recording */
function observer(recording) {
  const meterProvider = new MeterProvider();
  const metrics = new Metrics({ meterProvider, workerId: '12345', recording, producer: new RequestMetricProducer() });
  return new HttpObserver(metrics, new EndpointPolicy(500));
}

/** prom-client counter + histogram with the same labels, fed from the same two channels */
function promSubscribers() {
  const registry = new promClient.Registry();
  const labelNames = ['worker_id', 'method', 'endpoint'];
  const counter = new promClient.Counter({ name: 'requests_total', help: 'h', labelNames, registers: [registry] });
  const hist = new promClient.Histogram({ name: 'duration_seconds', help: 'h', labelNames, registers: [registry], buckets: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10] });
  const T0 = Symbol('t0');
  const onStart = (m) => { m.request[T0] = performance.now(); };
  const onFinish = (m) => {
    const req = m.request;
    const url = req.url;
    const q = url.indexOf('?');
    const labels = { worker_id: '12345', method: req.method, endpoint: q >= 0 ? url.slice(0, q) : url };
    counter.inc(labels);
    hist.observe(labels, (performance.now() - req[T0]) / 1000);
  };
  return {
    start() { diagnostics.subscribe('http.server.request.start', onStart); diagnostics.subscribe('http.server.response.finish', onFinish); },
    stop() { diagnostics.unsubscribe('http.server.request.start', onStart); diagnostics.unsubscribe('http.server.response.finish', onFinish); },
  };
}

/** ns per request of each task, per round */
async function rounds(tasks, { rounds: n, time }) {
  const per = Object.fromEntries(tasks.map((t) => [t.name, []]));
  for (let r = 0; r < n; r++) {
    const order = r % 2 ? [...tasks].reverse() : tasks;
    for (const t of order) {
      const bench = new Bench({ time, warmupTime: Math.min(200, time / 2), throws: true });
      bench.add(t.name, t.fn, { beforeAll: t.before, afterAll: t.after });
      await bench.run();
      const res = bench.tasks[0].result;
      per[t.name].push((res.latency.mean * 1e6) / (t.batch ?? BATCH));
    }
  }
  return per;
}

export async function runMicro({ quick = false, log = console.log } = {}) {
  const opts = quick ? { rounds: 3, time: 150 } : { rounds: 7, time: 400 };
  const fast = observer('fast');
  const otel = observer('otel');
  const prom = promSubscribers();
  const requestTasks = [
    { name: 'bare', fn: requests },
    { name: 'prefork-otel (fast)', fn: requests, before: () => void fast.start(), after: () => fast.stop() },
    { name: 'prefork-otel (PREFORK_OTEL_RECORDING=otel)', fn: requests, before: () => void otel.start(), after: () => otel.stop() },
    { name: 'prom-client counter+histogram', fn: requests, before: () => prom.start(), after: () => prom.stop() },
  ];
  const per = await rounds(requestTasks, opts);
  // the timed observer really recorded: every request it saw is in its store, none in flight
  const counted = fast.metrics.store.all.reduce((a, x) => a + x.count, 0);
  if (counted === 0 || counted % BATCH !== 0 || fast.inFlight !== 0) throw new Error(`micro: the fast observer recorded ${counted} requests (${fast.inFlight} in flight): not whole batches of ${BATCH}`);
  const bare = per.bare;
  const request = {};
  for (const t of requestTasks) {
    const added = per[t.name].map((v, i) => v - bare[i]);
    request[t.name] = { nsPerRequest: median(per[t.name]), addedNs: t.name === 'bare' ? 0 : median(added) };
    log(`micro  ${t.name.padEnd(44)} ${median(per[t.name]).toFixed(0).padStart(6)} ns/req  added ${request[t.name].addedNs.toFixed(0).padStart(5)} ns`);
  }

  // the parts of the fast path, alone
  const policy = new EndpointPolicy(500);
  const metrics = new Metrics({ meterProvider: new MeterProvider(), workerId: '1', producer: new RequestMetricProducer() });
  const store = metrics.store;
  const reqs = URLS.map((url) => { const r = new IncomingMessage(socket); r.method = 'GET'; r.url = url; return r; });
  const series = store.series(0, '/users/:id');
  const mp = new MeterProvider();
  const meter = mp.getMeter('m');
  const oc = meter.createCounter('c');
  const oh = meter.createHistogram('h', { advice: { explicitBucketBoundaries: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10] } });
  const promReg = new promClient.Registry();
  const pc = new promClient.Counter({ name: 'c', help: 'h', labelNames: ['worker_id', 'method', 'endpoint'], registers: [promReg] });
  const ph = new promClient.Histogram({ name: 'h', help: 'h', labelNames: ['worker_id', 'method', 'endpoint'], registers: [promReg] });
  let sink = 0;
  const loop = (f) => () => { for (let i = 0; i < BATCH; i++) f(i); };
  const partTasks = [
    { name: 'performance.now() x2', fn: loop(() => { sink += performance.now() - performance.now(); }) },
    // the observer's clock (src/hooks/http.ts nowMs)
    { name: 'process.hrtime() ms x2', fn: loop(() => { const a = process.hrtime(); const b = process.hrtime(); sink += (a[0] * 1e3 + a[1] / 1e6) - (b[0] * 1e3 + b[1] / 1e6); }) },
    { name: 'methodIndex', fn: loop((i) => { sink += methodIndex(i & 1 ? 'GET' : 'POST'); }) },
    { name: 'resolveEndpoint (raw URL, cached)', fn: loop((i) => { sink += resolveEndpoint(reqs[i % reqs.length], policy).length; }) },
    { name: 'store.series lookup', fn: loop((i) => { sink += store.series(i & 1, URLS[i % 4]).count; }) },
    { name: 'store.observe', fn: loop((i) => { store.observe(series, (i & 63) / 1000, -1); }) },
    { name: 'OTel Counter.add + Histogram.record (3 attrs)', fn: loop((i) => { const a = { worker_id: '1', method: 'GET', endpoint: URLS[i % 4] }; oc.add(1, a); oh.record((i & 63) / 1000, a); }) },
    { name: 'prom-client inc + observe (3 labels)', fn: loop((i) => { const a = { worker_id: '1', method: 'GET', endpoint: URLS[i % 4] }; pc.inc(a); ph.observe(a, (i & 63) / 1000); }) },
  ];
  const partsPer = await rounds(partTasks, { rounds: quick ? 2 : 3, time: quick ? 100 : 250 });
  const parts = {};
  for (const t of partTasks) {
    parts[t.name] = median(partsPer[t.name]);
    log(`micro  part: ${t.name.padEnd(46)} ${parts[t.name].toFixed(1).padStart(7)} ns`);
  }
  if (sink === 0.5) log('');
  return { batch: BATCH, rounds: opts.rounds, request, parts };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await runMicro({ quick: process.argv.includes('--quick') });
}
