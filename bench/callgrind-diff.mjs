// Per-function difference of two callgrind dumps (instructions per request), with the JIT-compiled
// functions named from node's --perf-basic-prof maps (/tmp/perf-PID.map). How the figures in
// docs/benchmarks.md ("where the instructions go") are found:
//
//   BENCH_NODE_FLAGS=--perf-basic-prof node bench/instructions.mjs --keep=/tmp/cg
//   node bench/callgrind-diff.mjs /tmp/cg/bare.PID.1 /tmp/cg/prefork.PID.1 [--requests=N] [--top=60]
//
// Self (exclusive) cost per function, summed over every address a function's code occupied (V8
// tiers a function up several times: ~ interpreted, ^ baseline, + / * optimised; the tier prefix is
// dropped so that one function is one row). Rows: (b − a) ÷ requests, largest differences first.
import { existsSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';

/** sorted [start, end, name] ranges of /tmp/perf-PID.map (later entries win where code was reused) */
function loadPerfMap(pid) {
  const file = `/tmp/perf-${pid}.map`;
  if (!existsSync(file)) return [];
  const out = [];
  readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
    const m = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line);
    if (m) out.push({ start: parseInt(m[1], 16), end: parseInt(m[1], 16) + parseInt(m[2], 16), name: m[3], i });
  });
  out.sort((a, b) => a.start - b.start || a.i - b.i);
  return out;
}

function lookup(ranges, addr) {
  // binary search the last range starting at or before addr; scan back for the latest that covers it
  let lo = 0;
  let hi = ranges.length - 1;
  let at = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (ranges[mid].start <= addr) { at = mid; lo = mid + 1; } else hi = mid - 1;
  }
  let best;
  for (let k = at; k >= 0 && k > at - 64; k--) {
    const r = ranges[k];
    if (r.start <= addr && addr < r.end && (best === undefined || r.i > best.i)) best = r;
  }
  return best?.name;
}

/** a function's display name without V8's tier marker and without the address part */
function normalise(name) {
  return name.replace(/^(JS|LazyCompile|Function):[~^+*]/, 'JS:').replace(/'\d+$/, '');
}

/** self cost per function name of one dump */
export function selfCosts(file) {
  const pid = /\.(\d+)(\.\d+)?$/.exec(basename(file))?.[1];
  const ranges = pid ? loadPerfMap(pid) : [];
  const r = spawnSync('callgrind_annotate', ['--threshold=100', file], { encoding: 'utf8', maxBuffer: 512 * 2 ** 20 });
  if (r.status !== 0) throw new Error(`callgrind_annotate failed: ${r.stderr}`);
  const costs = new Map();
  let total = 0;
  let body = false;
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*([0-9,]+) \(\s*[0-9.]+%\)\s+(.*)$/.exec(line);
    if (!m) continue;
    const v = Number(m[1].replaceAll(',', ''));
    let fn = m[2];
    if (fn.includes('PROGRAM TOTALS')) { total = v; body = true; continue; }
    if (!body) continue;
    // the callers of main are listed with their inclusive cost in the exclusive view; skip them
    if (/(libc_start|below main|node::Start|NodeMainInstance::Run|SpinEventLoop|:main \[)/.test(fn) && v > total * 0.5) continue;
    const jit = /^\?\?\?:0x([0-9a-f]+) \[\?\?\?\]$/.exec(fn);
    if (jit) fn = lookup(ranges, parseInt(jit[1], 16)) ?? 'JIT code (unnamed)';
    else fn = fn.replace(/^\?\?\?:/, '').replace(/ \[[^\]]*\]$/, '');
    fn = normalise(fn);
    costs.set(fn, (costs.get(fn) ?? 0) + v);
  }
  return { total, costs };
}

export function diff(fileA, fileB, requests) {
  const a = selfCosts(fileA);
  const b = selfCosts(fileB);
  const names = new Set([...a.costs.keys(), ...b.costs.keys()]);
  const rows = [];
  for (const n of names) {
    const x = (a.costs.get(n) ?? 0) / requests;
    const y = (b.costs.get(n) ?? 0) / requests;
    rows.push({ name: n, a: x, b: y, d: y - x });
  }
  rows.sort((p, q) => Math.abs(q.d) - Math.abs(p.d));
  return { totalA: a.total / requests, totalB: b.total / requests, rows };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const files = args.filter((x) => !x.startsWith('--'));
  const num = (k, d) => Number(args.find((x) => x.startsWith(`--${k}=`))?.slice(k.length + 3) ?? d);
  const n = num('requests', 5000);
  const top = num('top', 60);
  const grep = args.find((x) => x.startsWith('--grep='))?.slice(7);
  const r = diff(files[0], files[1], n);
  console.log(`total per request: a ${r.totalA.toFixed(0)}  b ${r.totalB.toFixed(0)}  b−a ${(r.totalB - r.totalA).toFixed(0)}`);
  const rows = grep ? r.rows.filter((x) => new RegExp(grep).test(x.name)) : r.rows.slice(0, top);
  for (const x of rows) console.log(`${x.d >= 0 ? '+' : ''}${x.d.toFixed(1).padStart(8)}  ${x.a.toFixed(1).padStart(8)} ${x.b.toFixed(1).padStart(8)}  ${x.name.slice(0, 150)}`);
}
