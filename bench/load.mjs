// Real-HTTP benchmarks: hello-world servers (node:http, Express) bare and instrumented four ways,
// loaded from 127.0.0.1 by wrk (Debian package; installed on first use when possible) or autocannon
// (npm) as the fallback. Runs are interleaved and repeated; every figure is reported as the median of
// per-round ratios (or differences) to the bare server of the same round. The server's own CPU time
// (process.cpuUsage(), read through bench/probe.cjs) divided by the requests it answered gives the
// CPU per request, which is far less noisy on a shared machine than req/s.
import { spawn, spawnSync } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BENCH = join(ROOT, 'bench');
const PROBE = join(BENCH, 'probe.cjs');
const REGISTER = join(ROOT, 'dist/cjs/register.js');
const OTEL_SDK = join(BENCH, 'variants/otel-sdk.cjs');
const CLI = join(ROOT, 'dist/cjs/cli.js');
export const APPS = { http: join(BENCH, 'apps/http.cjs'), express: join(BENCH, 'apps/express.cjs'), cluster: join(BENCH, 'apps/cluster.cjs') };

/** The variants of one app, as node arguments + environment. */
export const VARIANTS = {
  bare: { label: 'bare', preload: [], env: {} },
  prefork: { label: 'prefork-otel preload', preload: [REGISTER], env: { PROMETHEUS_BIND_ADDRESS: '127.0.0.1' }, metricsEnv: 'PROMETHEUS_METRICS_PORT' },
  prom: { label: 'prom-client middleware', preload: [], env: { BENCH_VARIANT: 'prom' }, metricsEnv: 'BENCH_METRICS_PORT' },
  otel: { label: 'OTel sdk-node + instrumentation-http', preload: [OTEL_SDK], env: {}, metricsEnv: 'BENCH_METRICS_PORT' },
  // two workers: node:cluster bare / under the preload (the primary aggregates), and the runner
  clusterBare: { label: 'node:cluster, 2 workers, bare', preload: [], env: { BENCH_WORKERS: '2' }, pin: false, argv: () => [APPS.cluster] },
  clusterPreload: { label: 'node:cluster, 2 workers + preload', preload: [REGISTER], env: { BENCH_WORKERS: '2', PROMETHEUS_BIND_ADDRESS: '127.0.0.1' }, metricsEnv: 'PROMETHEUS_METRICS_PORT', pin: false, argv: () => [APPS.cluster] },
  runner: {
    label: 'prefork-otel runner -w 2 -k async', preload: [], env: { PROMETHEUS_BIND_ADDRESS: '127.0.0.1' }, metricsEnv: 'PROMETHEUS_METRICS_PORT', pin: false, waitPort: true,
    // -k async: Node's own model (one event loop per worker), as node:cluster; the default `sync` class
    // serves one request at a time per worker, as gunicorn's sync worker does
    argv: (port, env) => [CLI, '-w', env.BENCH_WORKERS ?? '2', '-k', 'async', '-b', `127.0.0.1:${port}`, APPS.http],
  },
};

/** Whether the runner (src/cli.ts) is built: `prefork-otel --help` exits 0. */
export function runnerAvailable() {
  const r = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8', timeout: 20_000 });
  return r.status === 0 && !/not built yet/.test(`${r.stdout}${r.stderr}`);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function has(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/**
 * Whether `cmd` is on PATH, after installing the Debian package `pkg` for it when it is missing and
 * this runs as root with apt-get (`apt-get update` only if the first install fails).
 */
export function ensureDebianTool(cmd, pkg, log = console.log, timeoutMs = 180_000) {
  if (has(cmd)) return true;
  if (process.getuid?.() !== 0 || !has('apt-get')) return false;
  log(`bench: ${cmd} not found; installing the Debian package (apt-get install -y ${pkg}) ...`);
  spawnSync('sh', ['-c', `apt-get install -y ${pkg} >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y ${pkg} >/dev/null 2>&1)`], { stdio: 'ignore', timeout: timeoutMs });
  return has(cmd);
}

/** wrk if present (or installable with apt-get as root), else autocannon; `BENCH_LOADGEN` forces one. */
export function detectLoadGenerator(log = console.log) {
  if (process.env.BENCH_LOADGEN === 'autocannon') return 'autocannon';
  if (ensureDebianTool('wrk', 'wrk', log)) return 'wrk';
  log('bench: wrk unavailable; using autocannon (it runs in node and needs more CPU: absolute req/s are lower)');
  return 'autocannon';
}

/** `taskset -c N` prefix when available and pinning is on (server on CPU 0, load generator on CPU 1). */
let pinning = true;
export function setPinning(on) { pinning = on && has('taskset'); }
function pinned(cpu, cmd, args) {
  return pinning && cpu !== undefined ? ['taskset', ['-c', String(cpu), cmd, ...args]] : [cmd, args];
}

/**
 * Start one server (app × variant). Resolves when it listens. `stats()` asks the probe for its CPU
 * time and memory; `gc` forces a full collection first (needs `exposeGc`).
 */
export async function startServer(app, variantName, { exposeGc = false, cpu = 0, env = {} } = {}) {
  const v = VARIANTS[variantName];
  if (v.pin === false) cpu = undefined;
  const port = await freePort();
  const metricsPort = await freePort();
  const childEnv = { ...process.env, NODE_OPTIONS: '', PORT: String(port), BENCH_METRICS_PORT: String(metricsPort), ...v.env, ...env };
  const nodeArgs = [...(exposeGc ? ['--expose-gc'] : []), '-r', PROBE, ...v.preload.flatMap((p) => ['-r', p]), ...(v.argv ? v.argv(port, childEnv) : [APPS[app]])];
  if (v.metricsEnv) childEnv[v.metricsEnv] = String(metricsPort);
  const [cmd, argv] = pinned(cpu, process.execPath, nodeArgs);
  const child = spawn(cmd, argv, { cwd: ROOT, env: childEnv, stdio: ['pipe', 'pipe', 'pipe'] });
  // stderr is kept (the tail) and shown only if the server dies before it is stopped
  let stderr = '';
  let stopping = false;
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  let out = '';
  const waiting = { probe: [], listening: [] };
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    out += d;
    let i;
    while ((i = out.indexOf('\n')) >= 0) {
      const line = out.slice(0, i);
      out = out.slice(i + 1);
      if (line.startsWith('@@probe ')) waiting.probe.shift()?.resolve(JSON.parse(line.slice(8)));
      else if (line === '@@listening') waiting.listening.shift()?.resolve('listening');
    }
  });
  const exited = new Promise((r) => child.once('exit', (code, sig) => {
    if (!stopping && stderr) process.stderr.write(`bench: server ${app}/${variantName} exited (${code ?? sig}):\n${stderr}\n`);
    r({ code, sig });
  }));
  const next = (kind = 'probe') => new Promise((resolve, reject) => {
    waiting[kind].push({ resolve });
    exited.then((e) => reject(new Error(`server ${app}/${variantName} exited (${e.code ?? e.sig})`)));
  });
  if (!v.waitPort) {
    const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await next('listening');
    clearTimeout(t);
  } else {
    await waitForPort(port);
  }
  return {
    app, variant: variantName, port, metricsPort, pid: child.pid, child,
    url: `http://127.0.0.1:${port}/`,
    /** probe command: 'stats', 'gc', 'observer-off', 'observer-on' */
    stats(cmd = 'stats') {
      const p = next();
      child.stdin.write(`${cmd === true ? 'gc' : cmd}\n`);
      return p;
    },
    stderr: () => stderr,
    async stop() {
      stopping = true;
      child.stdin.end();
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

export async function waitForPort(port, timeoutMs = 30_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((r) => {
      const s = connect(port, '127.0.0.1', () => { s.destroy(); r(true); });
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`port ${port} did not open`);
    await sleep(100);
  }
}

function run(cmd, args, timeoutMs) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(t);
      if (code !== 0) reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err.slice(-500)}`));
      else resolve(out);
    });
  });
}

/**
 * Closed-loop load for `seconds`: { requests, rps, latency µs {mean,p50,p90,p99}, errors }.
 * wrk -t1 -cC, or autocannon -cC in its own process.
 */
export async function load(gen, url, { seconds, connections = 32, cpu = 1 } = {}) {
  if (gen === 'wrk') {
    const [cmd, args] = pinned(cpu, 'wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '-s', join(BENCH, 'wrk-report.lua'), url]);
    const out = await run(cmd, args, (seconds + 30) * 1000);
    const line = out.split('\n').find((l) => l.startsWith('@@wrk '));
    const r = JSON.parse(line.slice(6));
    return {
      requests: r.requests, rps: r.requests / (r.durationUs / 1e6), errors: r.errors + r.non2xx,
      latencyUs: { mean: r.meanUs, p50: r.p50Us, p90: r.p90Us, p99: r.p99Us },
    };
  }
  const ac = join(ROOT, 'node_modules/autocannon/autocannon.js');
  const [cmd, args] = pinned(cpu, process.execPath, [ac, '-c', String(connections), '-d', String(seconds), '-j', url]);
  const r = JSON.parse(await run(cmd, args, (seconds + 30) * 1000));
  return {
    requests: r.requests.total, rps: r.requests.total / (r.duration || seconds), errors: r.errors + r.timeouts + (r.non2xx ?? 0),
    latencyUs: { mean: r.latency.average * 1000, p50: r.latency.p50 * 1000, p90: r.latency.p90 * 1000, p99: r.latency.p99 * 1000 },
  };
}

/**
 * Exactly `n` requests over a path pattern ('routes': /route0…/route{count-1}; 'random': /p/<8 random
 * letters>). autocannon (`amount`) in this process: wrk can stop sending after n responses but then
 * still waits out its whole duration.
 */
export async function loadPaths(url, n, mode, { count = 200, seed = 42, connections = 32, close = false } = {}) {
  const { default: autocannon } = await import('autocannon');
  let i = 0;
  let x = seed;
  const rnd = () => { x = (x * 1103515245 + 12345) % 2147483648; return x / 2147483648; };
  const path = () => {
    if (mode === 'random') {
      let s = '/p/';
      for (let k = 0; k < 8; k++) s += String.fromCharCode(97 + Math.floor(rnd() * 26));
      return s;
    }
    return `/route${i++ % count}`;
  };
  const r = await autocannon({
    url: url.replace(/\/$/, ''), connections, amount: n, timeout: 30,
    ...(close ? { headers: { connection: 'close' } } : {}),
    requests: [{ setupRequest: (req) => ({ ...req, path: path() }) }],
  });
  return { requests: r.requests.total, errors: r.errors + r.timeouts + (r.non2xx ?? 0) };
}

/** the p-th percentile (0–100) by linear interpolation */
export function percentile(xs, p) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const k = ((s.length - 1) * p) / 100;
  const lo = Math.floor(k);
  const hi = Math.ceil(k);
  return s[lo] + (s[hi] - s[lo]) * (k - lo);
}

/** mean of the middle 60 % (drops the 20 % lowest and highest) */
export function trimmedMean(xs) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  const t = s.slice(Math.floor(s.length * 0.2), Math.ceil(s.length * 0.8));
  return t.length ? t.reduce((a, b) => a + b, 0) / t.length : NaN;
}

export function median(xs) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** One measured run: start, warm up, read CPU, load, read CPU, stop. */
export async function measure(gen, app, variant, { seconds, warmup = 1, connections = 32 } = {}) {
  const server = await startServer(app, variant);
  const cpu = VARIANTS[variant].pin === false ? undefined : 1;
  try {
    await load(gen, server.url, { seconds: warmup, connections, cpu });
    const before = await server.stats();
    const r = await load(gen, server.url, { seconds, connections, cpu });
    const after = await server.stats();
    const cpuUs = after.cpuUs + after.childrenCpuUs - before.cpuUs - before.childrenCpuUs;
    const userUs = after.userUs + after.childrenUserUs - before.userUs - before.childrenUserUs;
    return { ...r, cpuUs, cpuNsPerRequest: (cpuUs * 1000) / r.requests, userNsPerRequest: (userUs * 1000) / r.requests, rssMB: after.rss / 1048576 };
  } finally {
    await server.stop();
  }
}

/**
 * Throughput, latency and server CPU per request for each app × variant, `reps` interleaved rounds
 * (the order rotates each round). Medians of per-round ratios / differences to bare.
 */
export async function runThroughput(gen, { apps = ['http', 'express'], variants = ['bare', 'prefork', 'prom', 'otel'], reps = 3, seconds = 5, warmup = 1, baseline = 'bare', log = console.log } = {}) {
  const results = {};
  for (const app of apps) {
    const rounds = [];
    for (let r = 0; r < reps; r++) {
      const order = variants.map((_, i) => variants[(i + r) % variants.length]);
      const round = {};
      for (const v of order) {
        round[v] = await measure(gen, app, v, { seconds, warmup });
        log(`load ${app.padEnd(7)} round ${r + 1}/${reps} ${VARIANTS[v].label.padEnd(38)} ${round[v].rps.toFixed(0).padStart(6)} req/s  ${(round[v].cpuNsPerRequest / 1000).toFixed(2).padStart(6)} µs CPU/req (user ${(round[v].userNsPerRequest / 1000).toFixed(2)})  p99 ${(round[v].latencyUs.p99 / 1000).toFixed(2)} ms  (${round[v].requests} req${round[v].errors ? `, ${round[v].errors} errors` : ''})`);
      }
      rounds.push(round);
    }
    const summary = {};
    for (const v of variants) {
      const runs = rounds.map((rd) => rd[v]);
      summary[v] = {
        label: VARIANTS[v].label,
        rps: median(runs.map((x) => x.rps)),
        ratioToBare: median(rounds.map((rd) => rd[v].rps / rd[baseline].rps)),
        ratioIqr: [percentile(rounds.map((rd) => rd[v].rps / rd[baseline].rps), 25), percentile(rounds.map((rd) => rd[v].rps / rd[baseline].rps), 75)],
        cpuUsPerRequest: median(runs.map((x) => x.cpuNsPerRequest / 1000)),
        addedCpuUsPerRequest: median(rounds.map((rd) => (rd[v].cpuNsPerRequest - rd[baseline].cpuNsPerRequest) / 1000)),
        addedCpuIqr: [percentile(rounds.map((rd) => (rd[v].cpuNsPerRequest - rd[baseline].cpuNsPerRequest) / 1000), 25), percentile(rounds.map((rd) => (rd[v].cpuNsPerRequest - rd[baseline].cpuNsPerRequest) / 1000), 75)],
        userCpuUsPerRequest: median(runs.map((x) => x.userNsPerRequest / 1000)),
        addedUserCpuUsPerRequest: median(rounds.map((rd) => (rd[v].userNsPerRequest - rd[baseline].userNsPerRequest) / 1000)),
        latencyMs: { p50: median(runs.map((x) => x.latencyUs.p50 / 1000)), p99: median(runs.map((x) => x.latencyUs.p99 / 1000)) },
        requestsMeasured: runs.reduce((a, x) => a + x.requests, 0),
        errors: runs.reduce((a, x) => a + x.errors, 0),
        runs: runs.map((x) => ({ rps: Math.round(x.rps), cpuNsPerRequest: Math.round(x.cpuNsPerRequest), userNsPerRequest: Math.round(x.userNsPerRequest), requests: x.requests, p99Ms: x.latencyUs.p99 / 1000 })),
      };
    }
    results[app] = summary;
  }
  return results;
}

/**
 * Memory of one worker: after `n` requests over 200 routes (RSS and heap after a full GC), then after
 * `n` more requests to random paths (each a new endpoint: bounded by the cap for prefork-otel).
 */
export async function runMemory(gen, { app = 'http', variants = ['bare', 'prefork', 'prom', 'otel'], n = 100_000, log = console.log } = {}) {
  const out = {};
  for (const v of variants) {
    const server = await startServer(app, v, { exposeGc: true });
    try {
      const idle = await server.stats(true);
      const routes = await loadPaths(server.url, n, 'routes', { count: 200 });
      const afterRoutes = await server.stats(true);
      const random = await loadPaths(server.url, n, 'random', { seed: 7 });
      const afterRandom = await server.stats(true);
      const mb = (b) => b / 1048576;
      out[v] = {
        label: VARIANTS[v].label,
        idle: { rssMB: mb(idle.rss), privateMB: mb(idle.privateBytes), heapUsedMB: mb(idle.heapUsed) },
        routes: { requests: routes.requests, errors: routes.errors, rssMB: mb(afterRoutes.rss), privateMB: mb(afterRoutes.privateBytes), heapUsedMB: mb(afterRoutes.heapUsed) },
        random: { requests: random.requests, errors: random.errors, rssMB: mb(afterRandom.rss), privateMB: mb(afterRandom.privateBytes), heapUsedMB: mb(afterRandom.heapUsed) },
      };
      if (v === 'prefork') out[v].endpointsExported = await countEndpoints(server.metricsPort);
      log(`memory ${app.padEnd(7)} ${v.padEnd(8)} idle ${mb(idle.rss).toFixed(1)} MB RSS; after ${routes.requests} req / 200 routes ${mb(afterRoutes.rss).toFixed(1)} MB RSS (private ${mb(afterRoutes.privateBytes).toFixed(1)}), heap ${mb(afterRoutes.heapUsed).toFixed(1)} MB; after ${random.requests} random paths ${mb(afterRandom.rss).toFixed(1)} MB RSS (private ${mb(afterRandom.privateBytes).toFixed(1)}), heap ${mb(afterRandom.heapUsed).toFixed(1)} MB`);
    } finally {
      await server.stop();
    }
  }
  return out;
}

async function countEndpoints(port) {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
  const text = await r.text();
  const eps = new Set();
  for (const m of text.matchAll(/^gunicorn_worker_requests_total\{[^}]*endpoint="([^"]*)"/gm)) eps.add(m[1]);
  return eps.size;
}


/**
 * In-process A/B: one prefork-otel server, its HTTP observer switched off and on between windows
 * (ABBA order), so both sides share the process, its JIT state and the machine's load of the moment.
 * Added CPU per request = median over window pairs of (on − off).
 */
export async function runToggle(gen, { app = 'http', windows = 8, seconds = 2, log = console.log } = {}) {
  const server = await startServer(app, 'prefork');
  try {
    await load(gen, server.url, { seconds: 1 });
    const per = { on: [], off: [] };
    const users = { on: [], off: [] };
    let requests = 0;
    for (let w = 0; w < windows; w++) {
      const order = w % 2 ? ['on', 'off'] : ['off', 'on'];
      for (const state of order) {
        const before = await server.stats(`observer-${state}-lite`);
        if (!before.observer) throw new Error('the preload runtime was not found (globalThis[Symbol.for("prefork-otel.single")])');
        const r = await load(gen, server.url, { seconds });
        const after = await server.stats('stats-lite');
        per[state].push(((after.cpuUs - before.cpuUs) * 1000) / r.requests);
        users[state].push(((after.userUs - before.userUs) * 1000) / r.requests);
        requests += r.requests;
      }
    }
    const added = per.on.map((v, i) => v - per.off[i]);
    const addedUser = users.on.map((v, i) => v - users.off[i]);
    const out = {
      windows, secondsPerWindow: seconds, requests,
      offCpuUsPerRequest: median(per.off) / 1000, onCpuUsPerRequest: median(per.on) / 1000,
      addedCpuUsPerRequest: median(added) / 1000, addedUserCpuUsPerRequest: median(addedUser) / 1000,
      addedCpuTrimmedMeanUs: trimmedMean(added) / 1000, addedCpuIqrUs: [percentile(added, 25) / 1000, percentile(added, 75) / 1000],
      windowsUs: { off: per.off.map((x) => +(x / 1000).toFixed(2)), on: per.on.map((x) => +(x / 1000).toFixed(2)) },
    };
    log(`toggle ${app}: observer off ${out.offCpuUsPerRequest.toFixed(2)} µs/req, on ${out.onCpuUsPerRequest.toFixed(2)} µs/req: added (median of ${windows} pairs) ${out.addedCpuUsPerRequest.toFixed(2)} µs, trimmed mean ${out.addedCpuTrimmedMeanUs.toFixed(2)} µs, IQR ${out.addedCpuIqrUs.map((x) => x.toFixed(2)).join('…')} µs (user ${out.addedUserCpuUsPerRequest.toFixed(2)} µs) over ${requests} requests`);
    return out;
  } finally {
    await server.stop();
  }
}

/**
 * One real end-to-end scrape point: node:cluster with `workers` workers under the preload (the primary
 * aggregates over IPC), each worker holding about `labelSets` request label sets; the master's
 * /metrics fetched `scrapes` times in a row. Latency = request sent → whole body received.
 */
export async function runE2eScrape(gen, { variant = 'clusterPreload', workers = 16, labelSets = 55, scrapes = 30, log = console.log } = {}) {
  const server = await startServer('cluster', variant, { env: { BENCH_WORKERS: String(workers) } });
  try {
    // every route to every worker: a new connection per request, so every worker accepts some
    // (node:cluster's primary deals them round-robin; the runner's workers share the listening socket)
    await loadPaths(server.url, labelSets * workers * 8, 'routes', { count: labelSets, close: true });
    const url = `http://127.0.0.1:${server.metricsPort}/metrics`;
    let text = '';
    const times = [];
    for (let i = 0; i < scrapes + 2; i++) {
      const t0 = performance.now();
      const r = await fetch(url);
      text = await r.text();
      if (i >= 2) times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    const lines = text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
    const workerIds = new Set();
    for (const l of lines) {
      const m = /^gunicorn_worker_requests_total\{[^}]*worker_id="(\d+)"/.exec(l);
      if (m) workerIds.add(m[1]);
    }
    const out = {
      variant, label: VARIANTS[variant].label.replace(/, 2 workers|-w 2 /, ''), workers, workersReporting: workerIds.size, labelSetsPerWorker: labelSets, series: lines.length, bytes: Buffer.byteLength(text), scrapes,
      latencyMs: { p50: times[Math.floor(times.length / 2)], p99: times[Math.min(times.length - 1, Math.ceil(times.length * 0.99) - 1)], max: times[times.length - 1] },
    };
    log(`e2e scrape: ${out.label}, ${workers} workers (${out.workersReporting} reporting), ${out.series} series, ${(out.bytes / 1e6).toFixed(2)} MB: p50 ${out.latencyMs.p50.toFixed(1)} ms, p99 ${out.latencyMs.p99.toFixed(1)} ms`);
    return out;
  } finally {
    await server.stop();
  }
}
