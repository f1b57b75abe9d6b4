// The Node service that replaces app.py: a plain request listener, exported for the runner.
module.exports = (req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' }).end('hello\n');
};
