// PM2 cluster mode with prefork-otel: one /metrics endpoint with every instance's counts.
// See README.md here and docs/cluster.md ("PM2").
const path = require('node:path');

module.exports = {
  apps: [{
    name: 'api',
    script: path.join(__dirname, 'server.js'),
    exec_mode: 'cluster',
    instances: 2,
    // An absolute path: PM2's daemon resolves `-r` from the directory it was first started in, not from
    // the app's. ES modules: ['--import', require.resolve('prefork-otel/register')].
    node_args: ['-r', require.resolve('prefork-otel/register')],
    // time for the final write of each instance before PM2's SIGKILL
    kill_timeout: 5000,
    env: {
      PORT: process.env.PORT || '3000',
      HOST: process.env.HOST || '0.0.0.0',
      // one directory for all instances, owned by the user PM2 runs the app as
      PROMETHEUS_MULTIPROC_DIR: process.env.PROMETHEUS_MULTIPROC_DIR || path.join(__dirname, 'metrics'),
      // every instance serves the same union here
      PROMETHEUS_METRICS_PORT: process.env.PROMETHEUS_METRICS_PORT || '9091',
      PROMETHEUS_BIND_ADDRESS: process.env.PROMETHEUS_BIND_ADDRESS || '0.0.0.0',
    },
  }],
};
