// A plain node:http request listener. Exported, the runner serves it in each worker; run directly
// (`node app.js`) it listens by itself — the same file works both ways.
const http = require('node:http');

function app(req, res) {
  if (req.url === '/fail') {
    res.writeHead(500).end('failed\n');
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain' }).end(`hello from ${process.pid}\n`);
}

module.exports = app;
if (require.main === module) {
  const port = Number(process.env.PORT || 8000);
  http.createServer(app).listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
}
