// Memory of one runner worker against the same app run bare (issue 8 item 6): RSS and private memory
// (/proc/PID/smaps_rollup) of the serving process after `n` requests over 200 routes, for
//   bare                   node bench/apps/http.cjs
//   runner (defaults)      prefork-otel -w 1 bench/apps/http.cjs (sync, --timeout 30: watchdog on)
//   runner -k async        prefork-otel -w 1 -k async …
//   runner --timeout 0     prefork-otel -w 1 -k async --timeout 0 (no watchdog)
//   bare --max-semi-space-size=2   the young-generation cap the runner gives its workers, on the bare app
// so that "added over bare" and the watchdog's own share can be read off. No forced GC in either
// (the runner's worker is not started with --expose-gc): both are measured the same way.
//
//   node bench/memory-runner.mjs [--quick]        prints one line per variant and a JSON summary
//   import { runRunnerMemory } from './memory-runner.mjs'   (bench/run.mjs)
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, loadPaths, waitForPort, APPS } from './load.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'dist/cjs/cli.js');

const VARIANTS = {
  bare: { label: 'bare node:http', args: (port) => [APPS.http], env: (port) => ({ PORT: String(port) }) },
  // sync closes every connection (as gunicorn's): its bare baseline gets the same load, one connection per request
  bareClose: { label: 'bare node:http, Connection: close', close: true, args: (port) => [APPS.http], env: (port) => ({ PORT: String(port) }) },
  // the runner caps its workers' V8 semi-spaces at 2 MB (workers/protocol.ts WORKER_SEMI_SPACE_MB): the same flag on the bare app, for comparison
  bareCloseSemi2: { label: 'bare, Connection: close, --max-semi-space-size=2', close: true, args: (port) => ['--max-semi-space-size=2', APPS.http], env: (port) => ({ PORT: String(port) }) },
  runnerDefaults: { label: 'runner -w 1 (defaults: sync, watchdog)', close: true, args: (port) => [CLI, '-w', '1', '-b', `127.0.0.1:${port}`, APPS.http] },
  runnerSyncNoWatchdog: { label: 'runner -w 1 --timeout 0 (sync, no watchdog)', close: true, args: (port) => [CLI, '-w', '1', '--timeout', '0', '-b', `127.0.0.1:${port}`, APPS.http] },
  runnerAsync: { label: 'runner -w 1 -k async (watchdog)', args: (port) => [CLI, '-w', '1', '-k', 'async', '-b', `127.0.0.1:${port}`, APPS.http] },
  runnerNoWatchdog: { label: 'runner -w 1 -k async --timeout 0 (no watchdog)', args: (port) => [CLI, '-w', '1', '-k', 'async', '--timeout', '0', '-b', `127.0.0.1:${port}`, APPS.http] },
};

function memOf(pid) {
  const kb = (text, key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  const roll = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  return {
    rssMB: kb(roll, 'Rss') / 1024,
    privateMB: (kb(roll, 'Private_Clean') + kb(roll, 'Private_Dirty')) / 1024,
    threads: Number(/^Threads:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]),
  };
}

function childrenOf(pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function measureOne(name, n) {
  const v = VARIANTS[name];
  const port = await freePort();
  const metricsPort = await freePort();
  const child = spawn(process.execPath, v.args(port), {
    cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: '', PROMETHEUS_BIND_ADDRESS: '127.0.0.1', PROMETHEUS_METRICS_PORT: String(metricsPort), ...(v.env ? v.env(port) : {}) },
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-2000); });
  try {
    await waitForPort(port);
    // the serving process: the app itself, or the runner's one worker
    const pid = name.startsWith('bare') ? child.pid : childrenOf(child.pid)[0];
    if (!pid) throw new Error(`${name}: no worker process (${stderr})`);
    const idle = memOf(pid);
    const r = await loadPaths(`http://127.0.0.1:${port}/`, n, 'routes', { count: 200, connections: 16, close: !!v.close });
    await new Promise((res) => setTimeout(res, 500));
    const loaded = memOf(pid);
    return { label: v.label, requests: r.requests, errors: r.errors, idle, loaded };
  } finally {
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await new Promise((res) => child.once('exit', res));
    clearTimeout(t);
  }
}

/** every variant, `n` requests each; `added*` = variant − bare after load */
export async function runRunnerMemory({ n = 20_000, log = console.log, only } = {}) {
  const out = {};
  for (const name of Object.keys(VARIANTS)) {
    if (only && !name.startsWith('bare') && !only.includes(name)) continue;
    out[name] = await measureOne(name, n);
    const m = out[name];
    log(`memory-runner ${m.label.padEnd(48)} idle ${m.idle.rssMB.toFixed(1)} MB RSS; after ${m.requests} req ${m.loaded.rssMB.toFixed(1)} MB RSS (private ${m.loaded.privateMB.toFixed(1)} MB), ${m.loaded.threads} threads, ${m.errors} errors`);
  }
  for (const name of Object.keys(out)) {
    if (name.startsWith('bare')) continue;
    // against the bare app under the same load (sync: one connection per request)
    const base = VARIANTS[name].close ? out.bareClose : out.bare;
    out[name].addedRssMB = +(out[name].loaded.rssMB - base.loaded.rssMB).toFixed(1);
    out[name].addedPrivateMB = +(out[name].loaded.privateMB - base.loaded.privateMB).toFixed(1);
  }
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const quick = process.argv.includes('--quick');
  const only = process.argv.find((a) => a.startsWith('--only='))?.slice(7).split(',');
  const r = await runRunnerMemory({ n: quick ? 3000 : 20_000, only });
  console.log(JSON.stringify(Object.fromEntries(Object.entries(r).map(([k, v]) => [k, { rssMB: +v.loaded.rssMB.toFixed(1), privateMB: +v.loaded.privateMB.toFixed(1), addedRssMB: v.addedRssMB, addedPrivateMB: v.addedPrivateMB }])), null, 1));
}
