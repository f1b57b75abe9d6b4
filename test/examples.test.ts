/**
 * examples/, run as their READMEs say. Each example folder is copied into a fresh project where the
 * package as `npm pack` makes it is installed with the frameworks the examples use (the examples'
 * first command, `npm install`, would fetch `prefork-otel` from the registry, where it is not published
 * yet: that one step is replaced by installing the tarball). Then the README's own command is run
 * exactly, as a shell would (`npm start`), and the README's expected scrape line is checked against
 * the real endpoint with exact counts.
 *
 * docker/ and kubernetes/ cannot run here (no Docker engine, no cluster): the Dockerfiles' CMDs are run
 * exactly, in a copy of the folder, with the images' ENV; the Kubernetes YAML is parsed and checked
 * for consistency (ports, names, timings, credentials) and its runner arguments are run for real.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import bcrypt from 'bcryptjs';
import { parseWebConfigText } from '../src/config/web';
import { ROOT, freePort, hit, parseMetrics, scrapeText, select, tmpDir, total, waitFor, type Sample } from './helpers';

const EXAMPLES = join(ROOT, 'examples');
const dev = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).devDependencies as Record<string, string>;
const DEPS = ['express', 'fastify', 'koa', '@koa/router'].map((n) => `${n}@${dev[n]}`);
const GUNICORN = '/usr/bin/python3';
const hasGunicorn = spawnSync(GUNICORN, ['-m', 'gunicorn', '--version']).status === 0;

let work: string;
let project: string;

function npm(args: string[], cwd: string): string {
  return execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
}

beforeAll(() => {
  work = tmpDir('prefork-otel-examples-');
  const packed = JSON.parse(npm(['pack', '--ignore-scripts', '--json', '--pack-destination', work], ROOT))[0];
  project = join(work, 'project');
  execFileSync('mkdir', [project]);
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'examples', version: '1.0.0', private: true }));
  npm(['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', join(work, packed.filename), ...DEPS], project);
}, 180_000);

/** a process group started by a shell command (npm start → sh → node …), stopped as a whole */
interface Running { child: ChildProcess; out: () => string; stop: (signal?: NodeJS.Signals) => Promise<string> }
const running: Running[] = [];

function run(command: string[] | string, cwd: string, env: Record<string, string>): Running {
  const [file, args] = typeof command === 'string' ? ['sh', ['-c', command]] : [command[0]!, command.slice(1)];
  const child = spawn(file, args, { cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '', ...env } });
  let out = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { out += d; });
  // how the group leader ended: 'exit N' or 'signal SIG'
  const exited = new Promise<string>((r) => child.once('exit', (code, sig) => r(code === null ? `signal ${sig}` : `exit ${code}`)));
  const r: Running = {
    child,
    out: () => out,
    async stop(signal = 'SIGTERM') {
      try { process.kill(-child.pid!, signal); } catch { /* gone */ }
      const t = setTimeout(() => { try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ } }, 15_000);
      const code = await exited;
      clearTimeout(t);
      // the group may outlive its leader for a moment (workers draining)
      await waitFor(() => { try { process.kill(-child.pid!, 0); return false; } catch { return true; } }, 20_000, 'process group gone');
      return code;
    },
  };
  running.push(r);
  return r;
}

afterAll(async () => {
  await Promise.all(running.map((r) => r.stop('SIGKILL').catch(() => undefined)));
  if (work) rmSync(work, { recursive: true, force: true });
});

/** the commands of a README's first ```sh block */
function readmeCommands(name: string): string[] {
  const md = readFileSync(join(EXAMPLES, name, 'README.md'), 'utf8');
  const block = /```sh\n([\s\S]*?)```/.exec(md);
  if (!block) throw new Error(`examples/${name}/README.md has no sh block`);
  return block[1]!.split('\n').map((l) => l.replace(/#.*$/, '').trim()).filter(Boolean);
}

/** the README's expected `gunicorn_worker_requests_total{…} N` line: its labels (pid placeholders dropped) and value */
function readmeExpected(name: string): { labels: Record<string, string>; value: number } {
  const md = readFileSync(join(EXAMPLES, name, 'README.md'), 'utf8');
  const line = /^gunicorn_worker_requests_total\{(.*)\} (\d+)$/m.exec(md);
  if (!line) throw new Error(`examples/${name}/README.md shows no expected requests_total line`);
  const labels: Record<string, string> = {};
  for (const m of line[1]!.matchAll(/(\w+)="([^"]*)"/g)) if (!m[2]!.startsWith('<')) labels[m[1]!] = m[2]!;
  return { labels, value: Number(line[2]) };
}

/** the README's first `curl http://127.0.0.1:8000/PATH` */
function readmePath(name: string): string {
  const md = readFileSync(join(EXAMPLES, name, 'README.md'), 'utf8');
  const m = /curl http:\/\/127\.0\.0\.1:8000(\/[^\s`]*)/.exec(md);
  if (!m) throw new Error(`examples/${name}/README.md names no request to 127.0.0.1:8000`);
  return m[1]!;
}

/** copy examples/NAME into the installed project; returns the copy's path. `ownModules`: the copy gets
 * node_modules of its own (a link to the project's), as an image's WORKDIR has */
function copyExample(name: string, as = name, ownModules = false): string {
  const dir = join(project, as);
  cpSync(join(EXAMPLES, name), dir, { recursive: true });
  if (ownModules) symlinkSync(join(project, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

async function ports(): Promise<{ port: number; metricsPort: number; env: Record<string, string> }> {
  const port = await freePort();
  const metricsPort = await freePort();
  return { port, metricsPort, env: { PORT: String(port), PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1' } };
}

async function served(p: Running, port: number, path = '/'): Promise<void> {
  await waitFor(async () => {
    if (p.child.exitCode !== null) throw new Error(`exited ${p.child.exitCode}: ${p.out()}`);
    return (await hit(`http://127.0.0.1:${port}${path}`)) > 0;
  }, 30_000, `serving on ${port} (${p.out()})`);
}

/** scrape until `n` requests are in (workers' snapshots may trail a request by a collection) */
async function scrapeWith(metricsPort: number, n: number): Promise<Sample[]> {
  return waitFor(async () => {
    const s = parseMetrics(await scrapeText(metricsPort));
    return total(s, 'gunicorn_worker_requests_total') === n ? s : undefined;
  }, 15_000, `${n} requests on :${metricsPort}`);
}

describe.each([
  { name: 'express', workers: 2 },
  { name: 'fastify', workers: 1 },
  { name: 'koa', workers: 1 },
  { name: 'http', workers: 2 },
  { name: 'node-cluster', workers: 2 },
])('examples/$name, as its README says', ({ name, workers }) => {
  it('npm install, npm start: the README\'s request is counted exactly as the README shows', async () => {
    const commands = readmeCommands(name);
    expect(commands).toEqual(['npm install', 'npm start']);
    const dir = copyExample(name);
    const { port, metricsPort, env } = await ports();
    const app = run(commands[1]!, dir, env);
    const path = readmePath(name);
    // wait until every worker serves (the first request may come before all have booted): requests to
    // a path outside the README's expectation, counted below
    await served(app, port, '/');
    const warm = await waitFor(async () => {
      const s = parseMetrics(await scrapeText(metricsPort));
      return new Set(select(s, 'gunicorn_worker_state').map((x) => x.labels.worker_id)).size === workers ? s : undefined;
    }, 30_000, `${workers} workers in the scrape (${app.out()})`);
    const before = total(warm, 'gunicorn_worker_requests_total');
    const expected = readmeExpected(name);
    const had = total(warm, 'gunicorn_worker_requests_total', expected.labels);
    for (let i = 0; i < expected.value; i++) expect(await hit(`http://127.0.0.1:${port}${path}`)).toBeLessThan(500);
    const s = await scrapeWith(metricsPort, before + expected.value);
    expect(total(s, 'gunicorn_worker_requests_total', expected.labels) - had).toBe(expected.value);
    expect(new Set(select(s, 'gunicorn_worker_requests_total').map((x) => x.labels.worker_id)).size).toBeLessThanOrEqual(workers);
    expect(await app.stop()).toMatch(/^(exit 0|signal SIGTERM)$/);
  });
});

describe('examples/gunicorn-migration', () => {
  const dir = () => join(project, 'gunicorn-migration');
  beforeAll(() => { copyExample('gunicorn-migration'); });

  it('npm start (-c prefork-otel.config.js) runs the moved config: 2 gthread workers, hooks, access log', async () => {
    expect(readmeCommands('gunicorn-migration')).toEqual(['npm install', 'npm start']);
    const { port, metricsPort, env } = await ports();
    const app = run('npm start', dir(), env);
    await served(app, port);
    await waitFor(() => (app.out().match(/worker \d+ forked/g) ?? []).length === 2 && app.out().includes('service ready'), 20_000, `hooks ran (${app.out()})`);
    for (let i = 0; i < 5; i++) await hit(`http://127.0.0.1:${port}/`);
    const s = await scrapeWith(metricsPort, 6);
    expect(new Set(select(s, 'gunicorn_worker_state').map((x) => x.labels.worker_id)).size).toBe(2);
    await waitFor(() => (app.out().match(/"GET \/ HTTP\/1\.1" 200 /g) ?? []).length === 6, 10_000, `6 access-log lines (${app.out()})`);
    expect(await app.stop()).toMatch(/^(exit 0|signal SIGTERM)$/);
  });

  it('the README\'s command line runs flag for flag, and gunicorn accepts the same line and the .py config', async () => {
    const md = readFileSync(join(EXAMPLES, 'gunicorn-migration', 'README.md'), 'utf8');
    const ours = /^prefork-otel (--bind .*)$/m.exec(md)![1]!;
    const theirs = /^gunicorn +(--bind .*)$/m.exec(md)![1]!;
    // the same flags, only the APP argument differs
    expect(theirs.replace(/ app:application$/, '')).toBe(ours.replace(/ app\.js$/, ''));
    const { port, metricsPort, env } = await ports();
    // as a shell with the package installed runs it (npm puts node_modules/.bin on PATH the same way)
    const PATH = `${join(project, 'node_modules/.bin')}:${process.env.PATH}`;
    const app = run(`prefork-otel ${ours.replace('127.0.0.1:8000', `127.0.0.1:${port}`)}`, dir(), { ...env, PATH });
    await served(app, port);
    expect(app.out()).toContain(`Listening at: http://127.0.0.1:${port}`);
    await waitFor(() => (app.out().match(/Booting worker with pid: \d+/g) ?? []).length === 2, 20_000, 'two workers booted');
    for (let i = 0; i < 3; i++) await hit(`http://127.0.0.1:${port}/`);
    await scrapeWith(metricsPort, 4);
    expect(await app.stop()).toMatch(/^(exit 0|signal SIGTERM)$/);
    if (!hasGunicorn) return; // .ci/run installs Debian's python3-gunicorn; without it only our side is checked
    for (const args of [['-c', 'gunicorn.conf.py', '--check-config', 'app:application'], [...theirs.split(' '), '--check-config']]) {
      const r = spawnSync(GUNICORN, ['-m', 'gunicorn', ...args], { cwd: dir(), encoding: 'utf8' });
      expect(`${r.status} ${r.stderr}`).toBe('0 ');
    }
  });
});

/** the last CMD of a Dockerfile (exec form) and its ENV */
function dockerfile(file: string): { cmd: string[]; env: Record<string, string> } {
  const text = readFileSync(join(EXAMPLES, 'docker', file), 'utf8');
  const cmd = [...text.matchAll(/^CMD (\[.*\])$/gm)].pop();
  if (!cmd) throw new Error(`${file}: no exec-form CMD`);
  const env: Record<string, string> = {};
  for (const line of text.matchAll(/^ENV (.*)$/gm)) for (const m of line[1]!.matchAll(/(\w+)=(\S+)/g)) env[m[1]!] = m[2]!;
  return { cmd: JSON.parse(cmd[1]!), env };
}

describe('examples/docker (no Docker engine here: each image\'s CMD is run exactly, with its ENV)', () => {
  it.each(['Dockerfile.runner', 'Dockerfile.preload'])('%s: CMD serves the app and /metrics on the image\'s ports, exact counts', async (file) => {
    const { cmd, env } = dockerfile(file);
    expect(env).toMatchObject({ PORT: '8000', PROMETHEUS_METRICS_PORT: '9091', PROMETHEUS_BIND_ADDRESS: '0.0.0.0' });
    const dir = copyExample('docker', `docker-${file}`, true);
    const p = await ports();
    const proc = run(cmd, dir, { ...env, PORT: String(p.port), PROMETHEUS_METRICS_PORT: String(p.metricsPort) });
    await served(proc, p.port);
    for (let i = 0; i < 4; i++) await hit(`http://127.0.0.1:${p.port}/items/${i}`);
    const s = await scrapeWith(p.metricsPort, 5);
    expect(total(s, 'gunicorn_worker_requests_total', { endpoint: '/items/:id' })).toBe(4);
    // docker stop: SIGTERM, and the process ends by it (the runner: exit 0 after its graceful stop)
    expect(await proc.stop('SIGTERM')).toMatch(file === 'Dockerfile.runner' ? /^exit 0$/ : /^(exit 0|signal SIGTERM)$/);
  });
});

describe('examples/kubernetes (no cluster here: the manifests are parsed and checked against each other)', () => {
  const docs = Object.fromEntries(['deployment', 'service', 'servicemonitor', 'web-config-secret'].map((n) => [
    n, parseAllDocuments(readFileSync(join(EXAMPLES, 'kubernetes', `${n}.yaml`), 'utf8')).map((d) => {
      if (d.errors.length) throw new Error(`${n}.yaml: ${d.errors[0]!.message}`);
      return d.toJS();
    }),
  ]));
  const deploy = docs.deployment![0];
  const pod = deploy.spec.template;
  const container = pod.spec.containers[0];
  const arg = (flag: string) => container.args[container.args.indexOf(flag) + 1];

  it('terminationGracePeriodSeconds covers preStop + --graceful-timeout; ports, names and selectors agree', () => {
    const preStop = Number(container.lifecycle.preStop.exec.command[1]);
    expect(pod.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(preStop + Number(arg('--graceful-timeout')));
    const env = Object.fromEntries(container.env.map((e: { name: string; value: string }) => [e.name, e.value]));
    const metricsPort = container.ports.find((p: { name: string }) => p.name === 'metrics').containerPort;
    expect(String(metricsPort)).toBe(env.PROMETHEUS_METRICS_PORT);
    expect(pod.metadata.annotations['prometheus.io/port']).toBe(String(metricsPort));
    const svc = docs.service![0];
    expect(svc.spec.selector).toEqual(pod.metadata.labels);
    expect(deploy.spec.selector.matchLabels).toEqual(pod.metadata.labels);
    const sm = docs.servicemonitor![0];
    expect(sm.spec.selector.matchLabels).toEqual(svc.metadata.labels);
    expect(svc.spec.ports.map((p: { name: string }) => p.name)).toContain(sm.spec.endpoints[0].port);
    expect(sm.spec.endpoints[0].scheme).toBe(pod.metadata.annotations['prometheus.io/scheme']);
  });

  it('the web config in the Secret is mounted where the env says, its files are in the mounted Secrets, its hash is the scraper\'s password', () => {
    const [webSecret, scraper] = docs['web-config-secret']!;
    const env = Object.fromEntries(container.env.map((e: { name: string; value: string }) => [e.name, e.value]));
    const mount = container.volumeMounts.find((m: { name: string }) => m.name === 'web-config').mountPath;
    const projected = pod.spec.volumes.find((v: { name: string }) => v.name === 'web-config').projected.sources
      .flatMap((s: { secret: { name: string; items: { path: string }[] } }) => s.secret.items.map((i) => ({ secret: s.secret.name, path: `${mount}/${i.path}` })));
    expect(projected.map((p: { path: string }) => p.path)).toContain(env.PROMETHEUS_WEB_CONFIG_FILE);
    const web = parseAllDocuments(webSecret.stringData['web-config.yml'])[0]!.toJS();
    for (const f of [web.tls_server_config.cert_file, web.tls_server_config.key_file]) expect(projected.map((p: { path: string }) => p.path)).toContain(f);
    const user = scraper.stringData.username;
    expect(bcrypt.compareSync(scraper.stringData.password, web.basic_auth_users[user])).toBe(true);
    const sm = docs.servicemonitor![0].spec.endpoints[0];
    expect(sm.basicAuth.username.name).toBe(scraper.metadata.name);
    // and the package's own loader takes it, with a certificate where the Secret would mount one
    const tls = tmpDir('prefork-otel-k8s-tls-');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=shop.default.svc',
      '-keyout', join(tls, 'tls.key'), '-out', join(tls, 'tls.crt')], { stdio: 'ignore' });
    const text = webSecret.stringData['web-config.yml'].replaceAll(`${mount}/tls/`, `${tls}/`);
    const loaded = parseWebConfigText(text, join(tls, 'web-config.yml'));
    expect(loaded.tls).toBeDefined();
    expect([...loaded.users.keys()]).toEqual([user]);
    rmSync(tls, { recursive: true, force: true });
  });

  it('the container\'s runner arguments run for real', async () => {
    const dir = copyExample('docker', 'k8s-app', true);
    const p = await ports();
    const args = container.args.map((a: string) => (a === '0.0.0.0:8000' ? `127.0.0.1:${p.port}` : a));
    const proc = run([...container.command, ...args], dir, p.env);
    await served(proc, p.port);
    await scrapeWith(p.metricsPort, 1);
    expect(existsSync(join(dir, 'app.js'))).toBe(true);
    expect(await proc.stop('SIGTERM')).toBe('exit 0');
  });
});
