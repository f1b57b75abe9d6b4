// A sync worker accepts only when it is free (docs/runner.md, "sync"), measured side by side with real
// gunicorn: `-w 2 -k sync`, an app whose every request waits HOLD ms (a timer in Node, time.sleep in
// Python). Each round sends K requests at once on fresh connections and takes the wall time until the
// last answer. With 2 workers that each take one request at a time, the ideal is ceil(K / 2) × HOLD;
// a worker that queues connections behind its busy one while the other sits idle makes some rounds
// take longer. The figure is the median and the worst round, in units of HOLD, for both servers.
//
//   node bench/sync-accept.mjs [--quick]        (also run by `npm run bench`, --only=syncaccept)
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, median, waitForPort } from './load.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
// BENCH_CLI: another build's cli.js, to compare (e.g. a checkout from before the change)
const CLI = process.env.BENCH_CLI || join(ROOT, 'dist/cjs/cli.js');
const PYTHON = '/usr/bin/python3';
const HOLD = 200;

function get(port) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
  });
}

async function rounds(port, k, n) {
  const times = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await Promise.all(Array.from({ length: k }, () => get(port)));
    times.push((performance.now() - t0) / HOLD);
  }
  return times;
}

async function serve(name, start, k, n) {
  const port = await freePort();
  const child = start(port);
  try {
    await waitForPort(port);
    await rounds(port, 2, 3); // both workers up and warm
    const times = await rounds(port, k, n);
    return { server: name, k, ideal: Math.ceil(k / 2), median: +median(times).toFixed(2), worst: +Math.max(...times).toFixed(2), rounds: n };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
}

export async function runSyncAccept({ quick = false, log = console.log } = {}) {
  const dir = mkdtempSync(join(os.tmpdir(), 'prefork-otel-sync-'));
  writeFileSync(join(dir, 'app.js'), `module.exports = (req, res) => setTimeout(() => res.end('ok'), ${HOLD});\n`);
  writeFileSync(join(dir, 'app.py'), `import time\ndef app(environ, start_response):\n    time.sleep(${HOLD / 1000})\n    start_response("200 OK", [("Content-Length", "2")])\n    return [b"ok"]\n`);
  const n = quick ? 5 : 20;
  const hasGunicorn = spawnSync(PYTHON, ['-m', 'gunicorn', '--version']).status === 0;
  const env = { ...process.env, NODE_OPTIONS: '', PROMETHEUS_METRICS_PORT: '0', PROMETHEUS_BIND_ADDRESS: '127.0.0.1' };
  const ours = (port) => spawn(process.execPath, [CLI, '-w', '2', '-k', 'sync', '-b', `127.0.0.1:${port}`, join(dir, 'app.js')], { cwd: dir, env, stdio: 'ignore' });
  const theirs = (port) => spawn(PYTHON, ['-m', 'gunicorn', '-w', '2', '-k', 'sync', '-b', `127.0.0.1:${port}`, '--chdir', dir, 'app:app'], { cwd: dir, stdio: 'ignore' });
  const out = [];
  try {
    for (const k of [2, 4]) {
      out.push(await serve('prefork-otel', ours, k, n));
      if (hasGunicorn) out.push(await serve('gunicorn', theirs, k, n));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  for (const r of out) log(`  ${r.server.padEnd(12)} ${r.k} at once: median ${r.median} × hold, worst ${r.worst} × hold (ideal ${r.ideal}) over ${r.rounds} rounds`);
  if (!hasGunicorn) log('  (gunicorn not installed: apt-get install python3-gunicorn for the side-by-side rows)');
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await runSyncAccept({ quick: process.argv.includes('--quick') });
