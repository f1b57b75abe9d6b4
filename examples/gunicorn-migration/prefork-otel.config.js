// prefork-otel.config.js: gunicorn.conf.py, moved. The keys are gunicorn's; hooks get the Node
// equivalents of gunicorn's arguments (docs/runner.md).
//   prefork-otel -c prefork-otel.config.js app.js
module.exports = {
  bind: `127.0.0.1:${process.env.PORT || 8000}`,
  workers: 2,
  worker_class: 'gthread',
  threads: 2,
  timeout: 30,
  graceful_timeout: 20,
  keepalive: 5,
  max_requests: 1000,
  max_requests_jitter: 100,
  accesslog: '-',
  errorlog: '-',
  loglevel: 'info',

  when_ready(server) {
    server.log.info('service ready');
  },

  post_fork(server, worker) {
    server.log.info(`worker ${worker.pid} forked`);
  },
};
