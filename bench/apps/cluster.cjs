// node:cluster with BENCH_WORKERS (default 2) workers, each serving bench/apps/http.cjs on the shared
// port. The primary only forks. Under `-r prefork-otel/register` the primary becomes the aggregating
// master and serves every worker's metrics.
'use strict';
const cluster = require('node:cluster');
const { join } = require('node:path');

if (cluster.isPrimary) {
  const n = Number(process.env.BENCH_WORKERS || 2);
  cluster.setupPrimary({ exec: join(__dirname, 'http.cjs') });
  let listening = 0;
  cluster.on('listening', () => {
    if (++listening === n) process.stdout.write('@@listening\n');
  });
  for (let i = 0; i < n; i++) cluster.fork();
  const stop = () => {
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 200).unref();
  };
  process.on('SIGTERM', stop);
}
