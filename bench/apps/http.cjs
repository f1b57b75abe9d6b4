// Hello world on node:http. BENCH_VARIANT=prom adds a hand-written prom-client middleware recording
// a counter and a histogram with prefork-otel's labels (worker_id, method, endpoint = path without
// query) and serves the registry on BENCH_METRICS_PORT. Every other variant is this same app with a
// preload (-r) or nothing.
'use strict';
const http = require('node:http');

const body = 'Hello World!';
let handler = (req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
};

if (process.env.BENCH_VARIANT === 'prom') {
  const client = require('prom-client');
  const labelNames = ['worker_id', 'method', 'endpoint'];
  const requests = new client.Counter({ name: 'http_requests_total', help: 'requests', labelNames });
  const duration = new client.Histogram({ name: 'http_request_duration_seconds', help: 'duration', labelNames,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10] });
  const workerId = String(process.pid);
  const app = handler;
  handler = (req, res) => {
    const t0 = process.hrtime.bigint();
    res.on('finish', () => {
      const url = req.url;
      const q = url.indexOf('?');
      const labels = { worker_id: workerId, method: req.method, endpoint: q >= 0 ? url.slice(0, q) : url };
      requests.inc(labels);
      duration.observe(labels, Number(process.hrtime.bigint() - t0) / 1e9);
    });
    app(req, res);
  };
  http.createServer(async (req, res) => {
    res.setHeader('content-type', client.register.contentType);
    res.end(await client.register.metrics());
  }).listen(Number(process.env.BENCH_METRICS_PORT), '127.0.0.1');
}

http.createServer(handler).listen(Number(process.env.PORT), '127.0.0.1', () => {
  // under node:cluster (bench/apps/cluster.cjs) the primary reports once all workers listen
  if (!require('node:cluster').isWorker) process.stdout.write('@@listening\n');
});
