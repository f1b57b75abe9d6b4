// An ordinary node:http service: nothing in it knows about metrics (prefork-otel is preloaded by PM2).
const http = require('node:http');

const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || '0.0.0.0';

http.createServer((req, res) => {
  if (req.url.startsWith('/users/')) {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ id: req.url.slice(7), served_by: process.pid }));
    return;
  }
  res.end(`hello from ${process.pid}\n`);
}).listen(port, host);
