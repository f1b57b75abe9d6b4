// `npm run example`: build, then run the example service under the runner with 2 workers and a live
// /metrics endpoint. A little traffic is sent at start so the first scrape has data. Ctrl-C stops it.
//   PORT (default 8000)            the service     PROMETHEUS_METRICS_PORT (default 9091)   the metrics
import { spawn, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
if (process.env.EXAMPLE_SKIP_BUILD !== '1') {
  const build = spawnSync(process.execPath, [join(root, 'scripts/build.mjs')], { cwd: root, stdio: 'inherit' });
  if (build.status !== 0) process.exit(build.status || 1);
}

const port = process.env.PORT || '8000';
const metricsPort = process.env.PROMETHEUS_METRICS_PORT || '9091';
const host = process.env.EXAMPLE_HOST || '127.0.0.1';
const runner = spawn(process.execPath, [
  join(root, 'dist/cjs/cli.js'), '-w', '2', '-b', `${host}:${port}`, '--max-requests', '5000', '--max-requests-jitter', '500',
  join(root, 'examples/express-service.cjs'),
], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, PROMETHEUS_METRICS_PORT: metricsPort, PROMETHEUS_BIND_ADDRESS: process.env.PROMETHEUS_BIND_ADDRESS || host },
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => runner.kill(sig === 'SIGINT' ? 'SIGTERM' : sig));
runner.on('exit', (code, signal) => process.exit(code ?? (signal ? 0 : 1)));

const base = `http://${host}:${port}`;
async function warmUp() {
  let sent = 0;
  const send = (path, init) => fetch(base + path, init).then((r) => { sent++; return r.arrayBuffer(); }, () => undefined);
  for (let i = 0; i < 100; i++) {
    try {
      await (await fetch(base + '/')).arrayBuffer();
      sent++;
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const paths = ['/', '/users/1', '/users/2', '/users/3', '/slow', '/fail', '/boom'];
  for (let i = 0; i < 40; i++) await send(paths[i % paths.length]);
  await send('/orders', { method: 'POST' });
  console.log(`
ready: ${sent} requests sent
example service:  ${base}/   ${base}/users/42   ${base}/slow   ${base}/fail   ${base}/crash
metrics:          curl http://${host}:${metricsPort}/metrics
signals:          kill -TTIN ${runner.pid} (one more worker), -TTOU (one less), -HUP (reload)
stop:             Ctrl-C
`);
}
warmUp();
