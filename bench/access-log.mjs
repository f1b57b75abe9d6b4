// The access log's cost per request (docs/runner.md, "Access log"): the runner with -w 1 -k gevent
// (keep-alive, one event loop, pinned to CPU 0) serving bench/apps/http.cjs, with and without
// `--access-logfile FILE` (gunicorn's default format), in alternating windows (off, on, off, on, …)
// so drift hits both alike. The figure is the worker's CPU time per request (utime + stime from
// /proc, which a busy shared machine disturbs far less than throughput): cost = cpu/req(on) −
// cpu/req(off) in µs, and the ratio of the two; rps is reported too. Every logged request is
// checked to be one line.
//
//   node bench/access-log.mjs [--quick]      (also run by `npm run bench`, --only=accesslog)
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { APPS, detectLoadGenerator, freePort, load, median, waitForPort } from './load.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'dist/cjs/cli.js');
const TICKS = 100; // USER_HZ: /proc/PID/stat counts CPU time in 1/100 s on Linux

async function startRunner(extra) {
  const port = await freePort();
  const metricsPort = await freePort();
  const child = spawn('taskset', ['-c', '0', process.execPath, CLI, '-w', '1', '-k', 'gevent', '-b', `127.0.0.1:${port}`, ...extra, APPS.http], {
    cwd: ROOT, stdio: ['ignore', 'ignore', 'ignore'],
    env: { ...process.env, NODE_OPTIONS: '', PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1' },
  });
  await waitForPort(port);
  // the worker is up when a request is answered
  for (let i = 0; i < 100; i++) {
    try { await fetch(`http://127.0.0.1:${port}/`); break; } catch { await new Promise((r) => setTimeout(r, 100)); }
  }
  const worker = Number(readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
  return {
    url: `http://127.0.0.1:${port}/`,
    /** the worker's CPU time so far, in µs */
    cpuUs: () => {
      const f = readFileSync(`/proc/${worker}/stat`, 'utf8').split(') ')[1].split(' ');
      return ((Number(f[11]) + Number(f[12])) / TICKS) * 1e6;
    },
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    }),
  };
}

export async function runAccessLog(gen, { reps = 4, seconds = 3, log = console.log } = {}) {
  const dir = mkdtempSync(join(os.tmpdir(), 'prefork-otel-bench-'));
  const file = join(dir, 'access.log');
  const off = await startRunner([]);
  const on = await startRunner(['--access-logfile', file]);
  const rps = { off: [], on: [] };
  const cpu = { off: [], on: [] };
  const window = async (r) => {
    const c0 = r.cpuUs();
    const out = await load(gen, r.url, { seconds });
    return { ...out, cpuPerReq: (r.cpuUs() - c0) / out.requests };
  };
  let logged = 0;
  try {
    // warm-up both
    await load(gen, off.url, { seconds: 1 });
    await load(gen, on.url, { seconds: 1 });
    const warm = readFileSync(file, 'utf8').split('\n').length - 1;
    let sent = 0;
    for (let i = 0; i < reps; i++) {
      const a = await window(off);
      const b = await window(on);
      rps.off.push(a.rps);
      rps.on.push(b.rps);
      cpu.off.push(a.cpuPerReq);
      cpu.on.push(b.cpuPerReq);
      sent += b.requests;
      log(`access log: window ${i + 1}/${reps}: off ${a.rps.toFixed(0)} req/s ${a.cpuPerReq.toFixed(1)} µs CPU/req, on ${b.rps.toFixed(0)} req/s ${b.cpuPerReq.toFixed(1)} µs CPU/req`);
    }
    await on.stop();
    logged = readFileSync(file, 'utf8').split('\n').length - 1 - warm;
    // wrk counts completed responses; a request in flight at the end of a window is logged too
    if (logged < sent) throw new Error(`access log: ${sent} requests answered, ${logged} lines`);
  } finally {
    await off.stop();
    await on.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
  const offCpu = median(cpu.off);
  const onCpu = median(cpu.on);
  const result = {
    label: 'runner -w 1 -k gevent, bench/apps/http.cjs, --access-logfile FILE (gunicorn\'s default format) vs none',
    cpuUsPerRequestOff: +offCpu.toFixed(2), cpuUsPerRequestOn: +onCpu.toFixed(2), cpuRatio: +(onCpu / offCpu).toFixed(3),
    costUsPerRequest: +(onCpu - offCpu).toFixed(2), rpsOff: Math.round(median(rps.off)), rpsOn: Math.round(median(rps.on)), linesChecked: logged, reps, seconds,
  };
  log(`access log: worker CPU ${result.cpuUsPerRequestOff} → ${result.cpuUsPerRequestOn} µs per request (× ${result.cpuRatio}, +${result.costUsPerRequest} µs); ${result.rpsOff} → ${result.rpsOn} req/s; ${logged} lines, one per request`);
  return result;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const quick = process.argv.includes('--quick');
  const gen = detectLoadGenerator();
  console.log(JSON.stringify(await runAccessLog(gen, quick ? { reps: 2, seconds: 1 } : {}), null, 2));
}
