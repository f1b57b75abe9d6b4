// Hello world on Express (one route, `GET /`; other paths answer through a catch-all route so the
// memory runs over many paths get 200s). BENCH_VARIANT=prom adds express-prom-bundle (method + path
// labels, the same buckets) serving /metrics on BENCH_METRICS_PORT.
'use strict';
const express = require('express');
const http = require('node:http');

const app = express();
if (process.env.BENCH_VARIANT === 'prom') {
  const promBundle = require('express-prom-bundle');
  const metricsApp = express();
  const bundle = promBundle({
    includeMethod: true, includePath: true, autoregister: false,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10],
    customLabels: { worker_id: String(process.pid) },
  });
  app.use(bundle);
  metricsApp.use(bundle.metricsMiddleware);
  http.createServer(metricsApp).listen(Number(process.env.BENCH_METRICS_PORT), '127.0.0.1');
}
app.get('/', (req, res) => { res.type('text/plain').send('Hello World!'); });
app.get('/{*rest}', (req, res) => { res.type('text/plain').send('Hello World!'); });
app.listen(Number(process.env.PORT), '127.0.0.1', () => { process.stdout.write('@@listening\n'); });
