// An app that uses node:cluster itself: the primary forks 2 workers, each serves HTTP. Under the
// preload the primary becomes the master and serves every worker's metrics on one endpoint.
const cluster = require('node:cluster');
const http = require('node:http');

if (cluster.isPrimary) {
  for (let i = 0; i < 2; i++) cluster.fork();
  cluster.on('exit', (worker, code) => {
    if (code !== 0) cluster.fork(); // replace crashed workers (restarts_total{reason="crash"})
  });
} else {
  const port = Number(process.env.PORT || 8000);
  http.createServer((req, res) => {
    if (req.url === '/crash') {
      res.end('bye\n', () => process.exit(1));
      return;
    }
    res.end(`hello from ${process.pid}\n`);
  }).listen(port, '127.0.0.1', () => console.log(`worker ${process.pid} listening on 127.0.0.1:${port}`));
}
