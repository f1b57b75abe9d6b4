// The demo service of docker-compose.yml: a node:cluster app (the preload makes its primary the
// master and each cluster worker a worker). Start: node -r prefork-otel/register app.cjs
//   GET /                 ok            GET /users/:id    ok (endpoint label /users/:id)
//   GET /slow             20-800 ms     GET /fail         503 (failed_requests_total, RequestError)
//   GET /crash            the worker exits with code 1 after answering: the primary replaces it
//                         (gunicorn_master_worker_restarts_total{reason="crash"})
const cluster = require('node:cluster');
const http = require('node:http');

const port = Number(process.env.APP_PORT || 8000);
const workers = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', (w, code, signal) => {
    if (!w.exitedAfterDisconnect) {
      process.stdout.write(`worker ${w.process.pid} exited (${signal || code}); starting a new one\n`);
      cluster.fork();
    }
  });
  const stop = () => {
    for (const w of Object.values(cluster.workers)) w.disconnect();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const server = http.createServer((req, res) => {
    const path = req.url.split('?')[0];
    if (path === '/slow') { setTimeout(() => res.end('slow'), 20 + Math.random() * 780); return; }
    if (path === '/fail') { res.statusCode = 503; res.end('unavailable'); return; }
    if (path === '/crash') { res.end('bye', () => process.exit(1)); return; }
    res.end('ok');
  });
  server.listen(port, '0.0.0.0', () => process.stdout.write(`worker ${process.pid} listening on :${port}\n`));
}
