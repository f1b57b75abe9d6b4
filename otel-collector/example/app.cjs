// The demo service of docker-compose.yml: a plain request listener, run by the runner
// (prefork-otel -w 2 … otel-collector/example/app.cjs), which pre-forks the workers, supervises them
// and serves every worker's metrics on one endpoint.
//   GET /                 ok            GET /users/:id    ok (endpoint label /users/:id)
//   GET /slow             20-800 ms     GET /fail         503 (failed_requests_total, RequestError)
//   GET /crash            the worker exits with code 1 after answering: the master replaces it
//                         (gunicorn_master_worker_restarts_total{reason="crash"})
// Signals to try: docker compose kill -s TTIN app (one more worker), -s TTOU, -s HUP (reload):
// gunicorn_master_signals_total.
module.exports = (req, res) => {
  const path = req.url.split('?')[0];
  if (path === '/slow') { setTimeout(() => res.end('slow'), 20 + Math.random() * 780); return; }
  if (path === '/fail') { res.statusCode = 503; res.end('unavailable'); return; }
  if (path === '/crash') { res.end('bye', () => process.exit(1)); return; }
  res.end('ok');
};
