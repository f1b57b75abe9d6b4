// gzip on the metrics endpoint, measured on a real 16-worker scrape: the runner (-w 16 -k async)
// after every worker has served ~55 (method, endpoint) label sets (≈ 1,000 series per worker).
//  - on the wire: bytes, scrape latency (p50/p99) and the master's CPU per scrape (utime+stime from
//    /proc/<pid>/stat over all scrapes), once with `Accept-Encoding: identity`, once with `gzip`
//    (what Prometheus sends);
//  - offline, on the same text: bytes and CPU per compression at zlib levels 1, 6 and 9
//    (process.cpuUsage around gzipSync), to show why the endpoint uses level 1.
import { readFileSync } from 'node:fs';
import { get } from 'node:http';
import { performance } from 'node:perf_hooks';
import { gunzipSync, gzipSync } from 'node:zlib';
import { loadPaths, percentile, startServer } from './load.mjs';

const TICK_MS = 10; // USER_HZ = 100 on Linux

function cpuTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime
}

function scrape(port, encoding) {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path: '/metrics', headers: { 'accept-encoding': encoding }, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ body: Buffer.concat(chunks), encoding: res.headers['content-encoding'] ?? 'identity' }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

export async function runScrapeGzip({ workers = 16, labelSets = 55, scrapes = 40, quick = false, log = console.log } = {}) {
  if (quick) scrapes = 8;
  const server = await startServer('cluster', 'runner', { env: { BENCH_WORKERS: String(workers) } });
  try {
    await loadPaths(server.url, labelSets * workers * 8, 'routes', { count: labelSets, close: true });
    const out = { workers, labelSetsPerWorker: labelSets, scrapes, wire: {}, offline: [] };
    let text = '';
    for (const encoding of ['identity', 'gzip']) {
      for (let i = 0; i < 2; i++) await scrape(server.metricsPort, encoding); // warm up
      const times = [];
      let bytes = 0;
      const t0 = cpuTicks(server.pid);
      for (let i = 0; i < scrapes; i++) {
        const s0 = performance.now();
        const r = await scrape(server.metricsPort, encoding);
        times.push(performance.now() - s0);
        bytes += r.body.length;
        if (r.encoding !== encoding) throw new Error(`asked for ${encoding}, got ${r.encoding}`);
        if (encoding === 'identity') text = r.body.toString();
        else if (i === 0) gunzipSync(r.body); // it is valid gzip
      }
      const cpuMs = ((cpuTicks(server.pid) - t0) * TICK_MS) / scrapes;
      times.sort((a, b) => a - b);
      out.wire[encoding] = { bytes: Math.round(bytes / scrapes), masterCpuMsPerScrape: +cpuMs.toFixed(1), p50: percentile(times, 50), p99: percentile(times, 99) };
    }
    out.series = text.split('\n').filter((l) => l !== '' && !l.startsWith('#')).length;
    for (const level of [1, 6, 9]) {
      const n = quick ? 3 : 15;
      const c0 = process.cpuUsage();
      let size = 0;
      for (let i = 0; i < n; i++) size = gzipSync(text, { level }).length;
      const c = process.cpuUsage(c0);
      out.offline.push({ level, bytes: size, ratio: +(Buffer.byteLength(text) / size).toFixed(1), cpuMsPerScrape: +((c.user + c.system) / 1000 / n).toFixed(2) });
    }
    const w = out.wire;
    log(`gzip scrape, runner -w ${workers}, ${out.series} series: identity ${(w.identity.bytes / 1e6).toFixed(2)} MB, master CPU ${w.identity.masterCpuMsPerScrape} ms/scrape, p50 ${w.identity.p50.toFixed(1)} ms; `
      + `gzip ${(w.gzip.bytes / 1e3).toFixed(0)} KB (${(w.identity.bytes / w.gzip.bytes).toFixed(1)}×), master CPU ${w.gzip.masterCpuMsPerScrape} ms/scrape, p50 ${w.gzip.p50.toFixed(1)} ms`);
    for (const o of out.offline) log(`  zlib level ${o.level}: ${(o.bytes / 1e3).toFixed(0)} KB (${o.ratio}×), ${o.cpuMsPerScrape} ms CPU per scrape`);
    return out;
  } finally {
    await server.stop();
  }
}

// run alone: node bench/scrape-gzip.mjs [--quick]
if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runScrapeGzip({ quick: process.argv.includes('--quick') });
  console.log(JSON.stringify(r, null, 2));
}
