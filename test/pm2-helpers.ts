/**
 * The real `pm2` (devDependency) for tests: a PM2 daemon in a temporary PM2_HOME, commands with a
 * bounded time, `pm2 kill` and removal of the home at the end (call `kill()` in afterAll).
 */
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { ROOT, tmpDir } from './helpers';

/** the pm2 package: the devDependency, or another version's directory in PM2_PACKAGE_DIR (e.g. a 5.x installed under /tmp) */
const PM2_DIR = process.env.PM2_PACKAGE_DIR || join(ROOT, 'node_modules/pm2');
export const PM2_BIN = join(PM2_DIR, 'bin/pm2');
export const PM2_RUNTIME_BIN = join(PM2_DIR, 'bin/pm2-runtime');

export interface Pm2Proc { pid: number; name: string; status: string; pmId: number; instance: unknown }

export class Pm2 {
  readonly home = tmpDir('prefork-otel-pm2home-');
  constructor(readonly cwd: string, readonly env: Record<string, string> = {}) {}

  /** The environment of a pm2 command: this one's, PM2_HOME, no NODE_OPTIONS of the test runner. */
  commandEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    return { ...process.env, NODE_OPTIONS: '', PM2_HOME: this.home, ...this.env, ...extra };
  }

  /** `pm2 ...args`; rejects with its output when it fails or takes longer than `timeoutMs`. */
  run(args: string[], extra: Record<string, string> = {}, timeoutMs = 60_000): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(process.execPath, [PM2_BIN, ...args], { cwd: this.cwd, env: this.commandEnv(extra), timeout: timeoutMs, maxBuffer: 16 << 20 },
        (err, stdout, stderr) => (err ? reject(new Error(`pm2 ${args.join(' ')}: ${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout)));
    });
  }

  async list(): Promise<Pm2Proc[]> {
    const out = await this.run(['jlist']);
    const j = JSON.parse(out.slice(out.indexOf('['))) as { pid: number; name: string; pm_id: number; pm2_env: { status: string; NODE_APP_INSTANCE?: unknown } }[];
    return j.map((p) => ({ pid: p.pid, name: p.name, status: p.pm2_env.status, pmId: p.pm_id, instance: p.pm2_env.NODE_APP_INSTANCE }));
  }

  /** pids of the app's online instances, as strings, sorted */
  async onlinePids(name: string): Promise<string[]> {
    return (await this.list()).filter((p) => p.name === name && p.status === 'online' && p.pid > 0).map((p) => String(p.pid)).sort();
  }

  /** `pm2 kill` (bounded), then remove PM2_HOME; never throws. */
  async kill(): Promise<void> {
    await this.run(['kill'], {}, 30_000).catch(() => undefined);
    rmSync(this.home, { recursive: true, force: true });
  }
}

/** GET on a new connection (node:cluster round-robins connections, not requests); resolves with status and body. */
export function freshGet(port: number, path: string, timeoutMs = 10_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} on ${port}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject).end();
  });
}

/** `n` GETs of `path`, each on a new connection, one after the other; fails on any status but 200. */
export async function sendRequests(port: number, path: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const r = await freshGet(port, path);
    if (r.status !== 200) throw new Error(`GET ${path}: ${r.status}`);
  }
}
