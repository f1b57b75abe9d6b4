/**
 * examples/pm2: runs exactly the two commands of its README's "Run" block with bash, in a copy of the
 * example directory, and compares the output with the README's "Expected" block.
 *
 * From the repository build, not the packed tarball: the copy gets `node_modules/prefork-otel` → this
 * repository (so the ecosystem file's `require.resolve('prefork-otel/register')` resolves to
 * dist/cjs/register.js through the package's `exports`, as in an install) and `node_modules/.bin/pm2`
 * → the pm2 devDependency (so `npx pm2` runs it without the network). test/package.test.ts shows the
 * packed tarball resolves `prefork-otel/register` the same way; packing and installing again here would
 * only add minutes. Two substitutions, for a test on a shared machine: the README's ports 3000 and 9091
 * become free ports (through PORT / PROMETHEUS_METRICS_PORT, which the ecosystem file reads, and in
 * the curl commands), and the servers bind 127.0.0.1. PM2_HOME is a temporary directory, killed after.
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, freePort, tmpDir, waitFor } from './helpers';
import { Pm2 } from './pm2-helpers';

const EXAMPLE = join(ROOT, 'examples/pm2');
const readme = readFileSync(join(EXAMPLE, 'README.md'), 'utf8');

function block(after: string): string {
  const at = readme.indexOf(after);
  if (at < 0) throw new Error(`README: no "${after}"`);
  const m = /```(?:sh)?\n([\s\S]*?)```/.exec(readme.slice(at));
  if (!m) throw new Error(`README: no code block after "${after}"`);
  return m[1]!;
}

/** A TCP connection is accepted (no HTTP request: nothing is counted). */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

function bash(command: string, cwd: string, env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('bash', ['-c', command], { cwd, env, timeout: 60_000 }, (err, stdout, stderr) =>
      (err ? reject(new Error(`${command}: ${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout)));
  });
}

describe('examples/pm2: the README\'s two commands', () => {
  const work = tmpDir('prefork-otel-example-pm2-');
  const project = join(work, 'pm2');
  const pm2 = new Pm2(project);
  afterAll(async () => {
    await pm2.kill();
    rmSync(work, { recursive: true, force: true });
  });

  it('start two instances, send 20 requests, and scrape both instances\' exact counts on one port', async () => {
    cpSync(EXAMPLE, project, { recursive: true });
    mkdirSync(join(project, 'node_modules/.bin'), { recursive: true });
    symlinkSync(ROOT, join(project, 'node_modules/prefork-otel'));
    symlinkSync(join(ROOT, 'node_modules/pm2/bin/pm2'), join(project, 'node_modules/.bin/pm2'));

    const appPort = await freePort();
    const metricsPort = await freePort();
    const env = pm2.commandEnv({
      PORT: String(appPort), PROMETHEUS_METRICS_PORT: String(metricsPort), HOST: '127.0.0.1', PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
    });
    const commands = block('## Run').trim().split('\n');
    expect(commands).toHaveLength(2);
    const [start, traffic] = commands.map((c) => c.replaceAll('localhost:3000', `127.0.0.1:${appPort}`).replaceAll('localhost:9091', `127.0.0.1:${metricsPort}`));

    await bash(start!, project, env);
    // a person takes a moment between the two commands: wait until both ports accept connections
    await waitFor(async () => await accepts(appPort) && await accepts(metricsPort), 30_000, 'the instances listening');
    const online = await waitFor(async () => { const p = await pm2.onlinePids('api'); return p.length === 2 ? p : undefined; }, 30_000, 'two instances online');
    // both instances have run server.js (its listen() is synchronous, before the preload's first file lands):
    // both files are in the union (a scrape is no app request: it counts nothing)
    await waitFor(async () => {
      const r = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
      const text = await r.text();
      return online.every((p) => text.includes(`gunicorn_worker_uptime_seconds{worker_id="${p}"}`));
    }, 30_000, 'both instances in the union');
    const out = await bash(traffic!, project, env);

    const pids = await pm2.onlinePids('api');
    const lines = out.trim().split('\n');
    const shape = /^gunicorn_worker_requests_total\{worker_id="(\d+)",method="GET",endpoint="\/"\} (\d+)$/;
    expect(lines.every((l) => shape.test(l)), out).toBe(true);
    expect(lines.map((l) => shape.exec(l)![1]).sort()).toEqual(pids);
    expect(lines.reduce((n, l) => n + Number(shape.exec(l)![2]), 0)).toBe(20);
    // the README's expected block has the same shape: two lines of 10
    const expected = block('Expected').trim().split('\n');
    expect(expected).toHaveLength(2);
    for (const l of expected) expect(shape.exec(l)?.[2]).toBe('10');
    for (const l of lines) expect(shape.exec(l)![2]).toBe('10');
  });
});
