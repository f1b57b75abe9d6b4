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
//                               [--warmup=N] [--requests=N] [--keep=DIR]
//   --keep=DIR keeps the callgrind dumps (and, with node's --perf-basic-prof, /tmp/perf-PID.map names
//   the JIT-compiled functions' addresses in them): BENCH_NODE_FLAGS=--perf-basic-prof
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { APPS, VARIANTS, ensureDebianTool, freePort, has, waitForPort } from './load.mjs';

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
      }).on('error', reject);
    };
    for (let i = 0; i < Math.min(c, n); i++) one();
  });
}

/** Inclusive instruction counts of the dump: total, JIT compilation, garbage collection. */
export function splitDump(file) {
  const r = spawnSync('callgrind_annotate', ['--inclusive=yes', '--threshold=100', file], { encoding: 'utf8', maxBuffer: 256 * 2 ** 20 });
  if (r.status !== 0) throw new Error(`callgrind_annotate failed: ${r.stderr}`);
  let total = 0;
  const top = { opt: 0, osr: 0, lazy: 0, baseline: 0, gc: 0 };
  const pats = [
    ['opt', /v8::internal::Runtime_CompileOptimized\(/],
    ['osr', /v8::internal::Runtime_CompileOptimizedOSR\(/],
    ['lazy', /:Builtins_CompileLazy \[/],
    ['baseline', /v8::internal::baseline::BaselineBatchCompiler::EnqueueFunction\(/],
    ['gc', /v8::internal::Heap::CollectGarbage\(/],
  ];
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*([0-9,]+) \(\s*[0-9.]+%\)\s+(.*)$/.exec(line);
    if (!m) continue;
    const v = Number(m[1].replaceAll(',', ''));
    if (m[2].includes('PROGRAM TOTALS')) total = v;
    for (const [k, re] of pats) if (re.test(m[2])) top[k] = Math.max(top[k], v);
  }
  const compile = top.opt + top.osr + top.lazy + top.baseline;
  return { total, compile, gc: top.gc, mutator: total - compile - top.gc };
}

async function measureOne(variant, { warm, n, dir, app }) {
  const v = VARIANTS[variant];
  const port = await freePort();
  const metricsPort = String(await freePort());
  // the same variants as the throughput part (bench/load.mjs), without its probe
  const env = { ...process.env, NODE_OPTIONS: '', PORT: String(port), BENCH_METRICS_PORT: metricsPort, ...v.env };
  if (v.metricsEnv) env[v.metricsEnv] = metricsPort;
  const nodeArgs = ['--single-threaded', ...(process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean), ...v.preload.flatMap((p) => ['-r', p]), APPS[app]];
  const out = join(dir, `${variant}.%p`);
  const child = spawn('valgrind', ['--tool=callgrind', `--callgrind-out-file=${out}`, '--smc-check=all-non-file', '-q', process.execPath, ...nodeArgs],
    { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  try {
    // valgrind starts node slowly; a server that dies meanwhile fails at once (the loser of the race
    // is left to settle on its own, its rejection handled)
    const up = waitForPort(port, 120_000);
    const died = exited.then((code) => { throw new Error(`server exited (${code})`); });
    up.catch(() => {});
    died.catch(() => {});
    await Promise.race([up, died]);
    if (await load(agent, port, warm) !== warm) throw new Error('warm-up requests failed');
    if (spawnSync('callgrind_control', ['-z', String(child.pid)], { stdio: 'ignore' }).status !== 0) throw new Error('callgrind_control -z failed');
    if (await load(agent, port, n) !== n) throw new Error('measured requests failed');
    if (spawnSync('callgrind_control', ['-d', String(child.pid)], { stdio: 'ignore' }).status !== 0) throw new Error('callgrind_control -d failed');
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`${variant}: ${e.message}${stderr ? `\n${stderr.slice(-2000)}` : ''}`);
  } finally {
    agent.destroy();
  }
  child.kill('SIGTERM');
  await exited;
  // the dump made by -d is "<file>.1"; the final one at exit covers only what came after
  const dump = readdirSync(dir).find((f) => f.startsWith(`${variant}.${child.pid}.`));
  if (!dump) throw new Error(`${variant}: no callgrind dump`);
  const s = splitDump(join(dir, dump));
  return {
    label: v.label,
    requests: n,
    warmup: warm,
    totalPerRequest: s.total / n,
    mutatorPerRequest: s.mutator / n,
    compilePerRequest: s.compile / n,
    gcPerRequest: s.gc / n,
  };
}

/**
 * Runs the variants two at a time (valgrind runs a program on one core) and reports instructions
 * per request and the difference to bare.
 */
export async function runInstructions({ quick = false, log = console.log, variants = ['bare', 'prefork'], keep, app = 'http', warmup, requests } = {}) {
  const avail = valgrindAvailable(log);
  if (!avail.ok) {
    log(`instructions: skipped: ${avail.why}`);
    return { skipped: avail.why };
  }
  const warm = warmup ?? (quick ? 3_000 : 40_000);
  const n = requests ?? (quick ? 2_000 : 10_000);
  const dir = keep ?? mkdtempSync(join(os.tmpdir(), 'prefork-otel-callgrind-'));
  const out = { app, warmup: warm, requests: n, variants: {} };
  try {
    for (let i = 0; i < variants.length; i += 2) {
      const batch = variants.slice(i, i + 2);
      const res = await Promise.all(batch.map((v) => measureOne(v, { warm, n, dir, app })));
      batch.forEach((v, j) => { out.variants[v] = res[j]; });
    }
  } finally {
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
  const bare = out.variants.bare;
  for (const [k, v] of Object.entries(out.variants)) {
    if (bare && k !== 'bare') {
      // steady state: the program and its garbage collection; JIT compilation still under way in
      // the window is left out (it ends; which functions V8 happens to optimise in these 10k
      // requests differs between runs of the same variant)
      v.addedPerRequest = (v.mutatorPerRequest + v.gcPerRequest) - (bare.mutatorPerRequest + bare.gcPerRequest);
      v.ratioToBare = (v.mutatorPerRequest + v.gcPerRequest) / (bare.mutatorPerRequest + bare.gcPerRequest);
    }
    log(`instructions ${v.label}: ${Math.round(v.totalPerRequest)} per request (program ${Math.round(v.mutatorPerRequest)}, GC ${Math.round(v.gcPerRequest)}, JIT compilation ${Math.round(v.compilePerRequest)})${v.addedPerRequest !== undefined ? `; +${Math.round(v.addedPerRequest)} (${((v.ratioToBare - 1) * 100).toFixed(1)} %) vs bare` : ''}`);
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
  const r = await runInstructions({ quick: a.includes('--quick'), variants: v ? v.slice(11).split(',') : undefined, keep: k?.slice(7), app, warmup: num('warmup'), requests: num('requests') });
  console.log(JSON.stringify(r, null, 2));
}
