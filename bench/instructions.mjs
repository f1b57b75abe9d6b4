// Instructions per request, counted by valgrind's callgrind: the one per-request cost figure this
// shared, noisy machine can resolve. CPU time per request swings by ±5–10 µs between windows here;
// an instruction count does not depend on what else the machine is doing (the same run twice gives
// the same figure to a fraction of a percent).
//
// Each variant is the node:http hello world (bench/apps/http.cjs) started under
//   valgrind --tool=callgrind node --single-threaded …
// (--single-threaded: V8 compiles and collects garbage on the main thread, so every instruction is
// counted in one place and nothing depends on thread timing). A client in this process sends
// `warm` requests (V8 keeps tiering Node's HTTP code up for ~40k requests), the counters are zeroed
// (callgrind_control -z), `n` more are sent and the counters dumped (callgrind_control -d). The dump
// is split with callgrind_annotate into JIT compilation (V8 still optimising a function), garbage
// collection and the rest (the program itself, "mutator"); the per-request figures are those ÷ n.
//
// What it cannot see: kernel time (system calls; a third of a request's CPU here) and how fast the
// instructions run (cache misses, branch mispredictions). Converting to µs uses bare's user CPU per
// request from the throughput part of the same run.
//
//   node bench/instructions.mjs [--quick] [--app=http|express] [--variants=bare,prefork,prom]
//                               [--warmup=N] [--requests=N] [--windows=N] [--repeats=N] [--no-pin-young] [--keep=DIR]
//   --keep=DIR keeps the callgrind dumps (and, with node's --perf-basic-prof, /tmp/perf-PID.map names
//   the JIT-compiled functions' addresses in them): BENCH_NODE_FLAGS=--perf-basic-prof
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { APPS, VARIANTS, ensureDebianTool, freePort, has, median, waitForPort } from './load.mjs';
import { selfCosts } from './callgrind-diff.mjs';

/**
 * node flags of every counted server.
 * --no-memory-reducer: V8's memory reducer starts full (mark-compact) collections when the allocation
 *   rate *per millisecond* is low. Under valgrind a busy server runs ~50× slower and looks idle to it,
 *   so without this flag a window may or may not hold a mark-compact a loaded server would never run
 *   (one is ≈ 140 million instructions here: ±3,500 a request over a 40,000-request window).
 *   Collections caused by allocation still run.
 * --min-/--max-semi-space-size=2: the same young generation for every variant, the size bare's
 *   server settles at by itself (and the runner's workers' --max-semi-space-size=2). Left alone, V8
 *   sizes it from what survived the process's start-up: the preload's start-up (it loads
 *   OpenTelemetry) left it at 4 MB a semi-space where bare's stayed at 2, so the preload ran half as
 *   many scavenges (--trace-gc: 19 against 38 per 10,000 requests) and its whole-process figure came
 *   out *below* bare's; in another run it was the other way round. Both are accidents of start-up,
 *   not costs of a request; with the size pinned both run the same number of scavenges (75 and 75–76
 *   per 10,000 at 1 MB), so the GC that is counted is the GC a request's allocations cause.
 */
const NODE_FLAGS = process.env.BENCH_NO_DEFAULT_FLAGS ? [] : ['--no-memory-reducer', '--min-semi-space-size=2', '--max-semi-space-size=2'];
const PIN_YOUNG = /^--(min|max)-semi-space-size=/;
/** how the figure is counted; the regression guard (bench/run.mjs) compares only figures counted alike */
export const METHOD = 'whole process (callgrind summary, every thread), --no-memory-reducer, young generation pinned (semi-space 2 MB), consecutive windows after a warm-up, median of paired runs';
/**
 * warm-up, counted requests per window, windows and repeats per app. A repeat is a new pair of
 * processes: V8's inlining decisions differ from one process to the next (the same code counted
 * twice differed by up to ±500 instructions a request, run to run, while windows within a run agree
 * to ±50), so one pair is one sample and the figure is the median of the pairs' differences.
 */
const DEFAULTS = { http: { warmup: 40_000, requests: 10_000, windows: 2, repeats: 5 }, express: { warmup: 60_000, requests: 5_000, windows: 4, repeats: 1 } };

/** valgrind if present (or installable with apt-get as root); else why not */
export function valgrindAvailable(log = () => {}) {
  if (ensureDebianTool('callgrind_control', 'valgrind', log, 300_000) && has('callgrind_annotate') && has('valgrind')) return { ok: true };
  return { ok: false, why: 'valgrind (callgrind) is not installed' };
}

/**
 * `n` keep-alive GET / requests, `c` at a time, on `agent`'s connections; resolves with the number
 * answered 200. Warm-up and measurement share one agent: closing and reopening the connections
 * between them makes V8 deoptimise part of Node's HTTP code (a socket closing takes paths the warm-up
 * never took), and the measured window would then count its re-optimisation.
 */
function load(agent, port, n, c = 8) {
  let sent = 0;
  let ok = 0;
  let done = 0;
  let retries = 0;
  return new Promise((resolve, reject) => {
    const one = () => {
      if (sent >= n) return;
      sent++;
      http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        if (res.statusCode === 200) ok++;
        res.resume();
        res.on('end', () => {
          if (++done === n) resolve(ok);
          else one();
        });
      }).on('error', (e) => {
        // the server closed an idle keep-alive connection (its 5 s keepAliveTimeout: under valgrind a
        // callgrind_control call can take that long) as this request went out on it: send it again
        if ((e.code === 'ECONNRESET' || e.code === 'EPIPE') && retries++ < 100) {
          sent--;
          one();
          return;
        }
        reject(e);
      });
    };
    for (let i = 0; i < Math.min(c, n); i++) one();
  });
}

/** valgrind processes still running: killed if this process exits early (an error in the other of a pair) */
const live = new Set();
process.on('exit', () => { for (const c of live) c.kill('SIGKILL'); });

/**
 * One dump: `summary` is everything the process executed between two callgrind_control calls, on
 * every thread (callgrind merges threads into one dump unless told otherwise): the program, V8's JIT,
 * garbage collection, timers, the thread pool. The inclusive counts of the GC and JIT entry points
 * are split out for the report only.
 */
export function splitDump(file) {
  const text = readFileSync(file, 'utf8');
  const summary = Number(/^summary: (\d+)/m.exec(text)?.[1] ?? NaN);
  const r = spawnSync('callgrind_annotate', ['--inclusive=yes', '--threshold=100', file], { encoding: 'utf8', maxBuffer: 256 * 2 ** 20 });
  if (r.status !== 0) throw new Error(`callgrind_annotate failed: ${r.stderr}`);
  const top = { opt: 0, osr: 0, baseline: 0, scavenge: 0, markCompact: 0, gc: 0 };
  const pats = [
    ['opt', /v8::internal::Runtime_CompileOptimized\(/],
    ['osr', /v8::internal::Runtime_CompileOptimizedOSR\(/],
    ['baseline', /v8::internal::baseline::BaselineBatchCompiler::EnqueueFunction\(/],
    ['gc', /v8::internal::Heap::CollectGarbage\(/],
    ['scavenge', /v8::internal::Heap::Scavenge\(\)/],
    ['markCompact', /v8::internal::Heap::MarkCompact\(\)/],
  ];
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*([0-9,]+) \(\s*[0-9.]+%\)\s+(.*)$/.exec(line);
    if (!m) continue;
    const v = Number(m[1].replaceAll(',', ''));
    for (const [k, re] of pats) if (re.test(m[2])) top[k] = Math.max(top[k], v);
  }
  // (Builtins_CompileLazy is not JIT work here: it runs for every new closure of an already compiled
  // function and tail-calls it, so its inclusive cost is mostly that function's own execution)
  return { total: summary, compile: top.opt + top.osr + top.baseline, gc: top.gc, scavenge: top.scavenge, markCompact: top.markCompact };
}

async function measureOne(variant, { warm, n, windows, dir, app, flags, keepDumps }) {
  const v = VARIANTS[variant] ?? customVariant(variant);
  const port = await freePort();
  const metricsPort = String(await freePort());
  // the same variants as the throughput part (bench/load.mjs), without its probe
  const env = { ...process.env, NODE_OPTIONS: '', PORT: String(port), BENCH_METRICS_PORT: metricsPort, ...v.env };
  if (v.metricsEnv) env[v.metricsEnv] = metricsPort;
  // --perf-basic-prof: V8 names its compiled code in /tmp/perf-PID.map, so that the instructions spent in
  // prefork-otel's own functions can be told apart (it writes only when code is compiled: not in the windows)
  const extra = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
  const nodeArgs = ['--single-threaded', ...flags, ...(extra.includes('--perf-basic-prof') ? [] : ['--perf-basic-prof']), ...extra, ...v.preload.flatMap((p) => ['-r', p]), APPS[app]];
  const name = variant.replace(/[^A-Za-z0-9_-]/g, '_');
  const out = join(dir, `${name}.%p`);
  const child = spawn('valgrind', ['--tool=callgrind', `--callgrind-out-file=${out}`, '--smc-check=all-non-file', '-q', process.execPath, ...nodeArgs],
    // cwd: the dump directory (node's --perf-basic-prof also leaves isolate-*.log files there)
    { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  const exited = new Promise((resolve) => child.once('exit', (code) => { live.delete(child); resolve(code); }));
  let stderr = '';
  let stdout = '';
  child.stderr.on('data', (d) => { stderr += d; });
  child.stdout.on('data', (d) => { stdout += d; });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const started = performance.now();
  const windowMs = [];
  try {
    // valgrind starts node slowly; a server that dies meanwhile fails at once (the loser of the race
    // is left to settle on its own, its rejection handled)
    const up = waitForPort(port, 900_000);
    const died = exited.then((code) => { throw new Error(`server exited (${code})`); });
    up.catch(() => {});
    died.catch(() => {});
    await Promise.race([up, died]);
    if (await load(agent, port, warm) !== warm) throw new Error('warm-up requests failed');
    if (spawnSync('callgrind_control', ['-z', String(child.pid)], { stdio: 'ignore' }).status !== 0) throw new Error('callgrind_control -z failed');
    // consecutive windows, each dumped (a dump also zeroes the counters for the next one)
    for (let w = 0; w < windows; w++) {
      const t = performance.now();
      if (await load(agent, port, n) !== n) throw new Error('measured requests failed');
      if (spawnSync('callgrind_control', ['-d', String(child.pid)], { stdio: 'ignore' }).status !== 0) throw new Error('callgrind_control -d failed');
      windowMs.push(performance.now() - t);
    }
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`${variant}: ${e.message}${stderr ? `\n${stderr.slice(-2000)}` : ''}`);
  } finally {
    agent.destroy();
  }
  child.kill('SIGTERM');
  await exited;
  if (stdout) writeFileSync(join(dir, `${name}.${child.pid}.stdout`), stdout);
  const own = v.preload.length ? ownPerRequest(dir, name, child.pid, windows, n, dirname(v.preload[0])) : undefined;
  if (!keepDumps) rmSync(`/tmp/perf-${child.pid}.map`, { force: true });
  return { label: v.label, ...summariseDumps(dir, name, child.pid, windows, n, warm), ...(own !== undefined ? { ownPerRequest: own } : {}), seconds: (performance.now() - started) / 1000, windowSeconds: windowMs.map((x) => +(x / 1000).toFixed(1)) };
}

/**
 * Instructions a request spent in the preload's own JavaScript functions (self cost of the compiled
 * code whose source is under `ownDir`, named from the perf map), over the counted windows. Unlike the
 * whole-process figure this does not move between runs of the same code (±5 a request), so the
 * regression guard checks it as well.
 */
function ownPerRequest(dir, name, pid, windows, n, ownDir) {
  // the build's root (dist/, not only dist/cjs/): the ESM wrappers are ours too
  const root = `${ownDir.replace(/\/(cjs|esm)$/, '')}/`;
  let sum = 0;
  for (let w = 1; w <= windows; w++) {
    for (const [fn, cost] of selfCosts(join(dir, `${name}.${pid}.${w}`)).costs) if (fn.startsWith('JS:') && fn.includes(root)) sum += cost;
  }
  return sum / (n * windows);
}

/**
 * Per-request figures of one counted server from its dumps ("<name>.<pid>.1" … ".<windows>", made by
 * callgrind_control -d; the final one at exit covers only what came after and is not read).
 */
export function summariseDumps(dir, name, pid, windows, n, warm) {
  const parts = [];
  for (let w = 1; w <= windows; w++) {
    const f = join(dir, `${name}.${pid}.${w}`);
    if (!existsSync(f)) throw new Error(`${name}: no callgrind dump ${f}`);
    parts.push(splitDump(f));
  }
  const sum = (k) => parts.reduce((a, p) => a + p[k], 0);
  const all = n * windows;
  return {
    requests: all,
    warmup: warm,
    pid,
    totalPerRequest: sum('total') / all,
    windowsPerRequest: parts.map((p) => Math.round(p.total / n)),
    gcPerRequest: sum('gc') / all,
    scavengePerRequest: sum('scavenge') / all,
    markCompactPerRequest: sum('markCompact') / all,
    markCompactWindows: parts.filter((p) => p.markCompact > 0).length,
    compilePerRequest: sum('compile') / all,
  };
}

/** `name:/path/to/register.js`: the preload from another build (an A/B of two versions of the code) */
function customVariant(spec) {
  const i = spec.indexOf(':');
  if (i < 0) throw new Error(`unknown variant ${spec}: expected one of ${Object.keys(VARIANTS).join(', ')} or name:/path/to/register.js`);
  return { label: spec.slice(0, i), preload: [spec.slice(i + 1)], env: { PROMETHEUS_BIND_ADDRESS: '127.0.0.1' }, metricsEnv: 'PROMETHEUS_METRICS_PORT' };
}

/**
 * Runs the variants two at a time (valgrind runs a program on one core), `repeats` times in new
 * processes, and reports instructions per request and the difference to bare: for each figure the
 * median over the repeats, and the difference as the median of the differences of runs made side by
 * side (bare and the preload in one batch).
 */
export async function runInstructions({ quick = false, log = console.log, variants = ['bare', 'prefork'], keep, app = 'http', warmup, requests, windows, repeats, pinYoung = true } = {}) {
  // pinYoung: false leaves the young generation to V8 (the figure a process started as it is gets, start-up accidents included)
  const flags = pinYoung ? NODE_FLAGS : NODE_FLAGS.filter((x) => !PIN_YOUNG.test(x));
  const avail = valgrindAvailable(log);
  if (!avail.ok) {
    log(`instructions: skipped: ${avail.why}`);
    return { skipped: avail.why };
  }
  const d = DEFAULTS[app] ?? DEFAULTS.http;
  const warm = warmup ?? (quick ? 3_000 : d.warmup);
  const n = requests ?? (quick ? 2_000 : d.requests);
  const w = windows ?? (quick ? 1 : d.windows);
  const reps = repeats ?? (quick ? 1 : d.repeats);
  const dir = keep ?? mkdtempSync(join(os.tmpdir(), 'prefork-otel-callgrind-'));
  const out = { method: pinYoung ? METHOD : `${METHOD} (young generation not pinned)`, date: new Date().toISOString(), app, warmup: warm, requests: n * w, windows: w, repeats: reps, nodeFlags: ['--single-threaded', ...flags], variants: {} };
  const runs = Object.fromEntries(variants.map((v) => [v.split(':')[0], []]));
  try {
    for (let r = 0; r < reps; r++) {
      for (let i = 0; i < variants.length; i += 2) {
        const batch = variants.slice(i, i + 2);
        const res = await Promise.all(batch.map((v) => measureOne(v, { warm, n, windows: w, dir, app, flags, keepDumps: !!keep })));
        batch.forEach((v, j) => { runs[v.split(':')[0]].push(res[j]); });
      }
      if (reps > 1) log(`instructions: repeat ${r + 1} of ${reps}: ${Object.entries(runs).map(([k, x]) => `${k} ${Math.round(x[r].totalPerRequest)}`).join(', ')}`);
    }
  } finally {
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
  for (const [k, rs] of Object.entries(runs)) {
    const m = (key) => median(rs.map((x) => x[key]));
    out.variants[k] = {
      label: rs[0].label, requests: rs[0].requests, warmup: warm, pids: rs.map((x) => x.pid),
      totalPerRequest: m('totalPerRequest'), runsPerRequest: rs.map((x) => Math.round(x.totalPerRequest)),
      windowsPerRequest: rs.flatMap((x) => x.windowsPerRequest),
      gcPerRequest: m('gcPerRequest'), scavengePerRequest: m('scavengePerRequest'), markCompactPerRequest: m('markCompactPerRequest'),
      markCompactWindows: rs.reduce((a, x) => a + x.markCompactWindows, 0), compilePerRequest: m('compilePerRequest'),
      ...(rs[0].ownPerRequest !== undefined ? { ownPerRequest: m('ownPerRequest'), ownRuns: rs.map((x) => Math.round(x.ownPerRequest)) } : {}),
      seconds: rs.reduce((a, x) => a + x.seconds, 0),
    };
  }
  const bareRuns = runs.bare;
  for (const [k, v] of Object.entries(out.variants)) {
    if (bareRuns && k !== 'bare') {
      const rs = runs[k];
      // everything the process executed, per request: the figure a user's process pays
      v.addedRuns = rs.map((x, i) => x.totalPerRequest - bareRuns[i].totalPerRequest);
      v.addedPerRequest = median(v.addedRuns);
      v.ratioToBare = v.totalPerRequest / out.variants.bare.totalPerRequest;
      // without garbage collection: what the code determines (with the young generation pinned, GC
      // differs only by what the requests allocate)
      v.addedWithoutGcRuns = rs.map((x, i) => (x.totalPerRequest - x.gcPerRequest) - (bareRuns[i].totalPerRequest - bareRuns[i].gcPerRequest));
      v.addedWithoutGcPerRequest = median(v.addedWithoutGcRuns);
    }
    const runsText = v.addedRuns ? ` (runs: ${v.addedRuns.map((x) => `${x >= 0 ? '+' : ''}${Math.round(x)}`).join(', ')})` : '';
    log(`instructions ${v.label}: ${Math.round(v.totalPerRequest)} per request, median of ${reps} runs of ${v.requests} (${v.runsPerRequest.join(', ')}; windows of ${n}: ${v.windowsPerRequest.join(', ')}; GC ${Math.round(v.gcPerRequest)} of it, mark-compact in ${v.markCompactWindows} windows; JIT ${Math.round(v.compilePerRequest)}${v.ownPerRequest !== undefined ? `; in prefork-otel's own functions ${Math.round(v.ownPerRequest)}` : ''})${v.addedPerRequest !== undefined ? `; ${v.addedPerRequest >= 0 ? '+' : ''}${Math.round(v.addedPerRequest)} (${((v.ratioToBare - 1) * 100).toFixed(1)} %) vs bare${runsText}` : ''}`);
  }
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const a = process.argv.slice(2);
  const v = a.find((x) => x.startsWith('--variants='));
  const k = a.find((x) => x.startsWith('--keep='));
  if (k) mkdirSync(k.slice(7), { recursive: true });
  const num = (name) => { const x = a.find((y) => y.startsWith(`--${name}=`)); return x ? Number(x.slice(name.length + 3)) : undefined; };
  const app = a.find((x) => x.startsWith('--app='))?.slice(6) ?? 'http';
  const r = await runInstructions({ quick: a.includes('--quick'), variants: v ? v.slice(11).split(',') : undefined, keep: k?.slice(7), app, warmup: num('warmup'), requests: num('requests'), windows: num('windows'), repeats: num('repeats'), pinYoung: !a.includes('--no-pin-young') });
  console.log(JSON.stringify(r, null, 2));
}
