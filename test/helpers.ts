/**
 * Test helpers: real processes, real servers on 127.0.0.1, real HTTP, and a parser for the
 * Prometheus text format so assertions compare exact sample values.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const REGISTER_CJS = join(ROOT, 'dist/cjs/register.js');
export const REGISTER_ESM = join(ROOT, 'dist/esm/register.mjs');
export const CLI = join(ROOT, 'dist/cjs/cli.js');
export const FIXTURES = join(ROOT, 'test/fixtures');

export function tmpDir(prefix = 'prefork-otel-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A port that was free a moment ago (bind :0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface Proc {
  child: ChildProcess;
  readonly stdout: string;
  readonly stderr: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM (or `signal`), then wait for exit; SIGKILL after `graceMs` */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

/** Start `node ...args` with `env` added to a clean copy of this environment. */
export function startNode(args: string[], env: Record<string, string | undefined> = {}, opts: SpawnOptions = {}): Proc {
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, NODE_OPTIONS: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe', ...(opts.stdio && Array.isArray(opts.stdio) ? opts.stdio.slice(3) : [])],
    ...opts,
  } as SpawnOptions);
  live.add(child);
  let out = '';
  let err = '';
  child.stdout?.on('data', (d) => { out += d; });
  child.stderr?.on('data', (d) => { err += d; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });
  return {
    child,
    get stdout() { return out; },
    get stderr() { return err; },
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
}

/** An app started for a test on two free ports: APP_PORT for the app, PROMETHEUS_METRICS_PORT for /metrics. */
export interface App { app: Proc; appPort: number; metricsPort: number }

/**
 * Start `node ...args` with APP_PORT and PROMETHEUS_METRICS_PORT on free ports (metrics bound to
 * 127.0.0.1) and `env`; resolves once the app printed "listening" (no request is sent, so the app's
 * counts start at zero).
 */
export async function startApp(args: string[], env: Record<string, string | undefined> = {}, what = 'app'): Promise<App> {
  const appPort = await freePort();
  const metricsPort = await freePort();
  const app = startNode(args, {
    APP_PORT: String(appPort), PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1', ...env,
  });
  await waitFor(() => {
    if (app.child.exitCode !== null) throw new Error(`${what} exited ${app.child.exitCode}: ${app.stderr}`);
    return app.stdout.includes('listening');
  }, 20_000, `${what} listening (stderr: ${app.stderr})`);
  return { app, appPort, metricsPort };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns a truthy value (or throws no more); fail after `timeoutMs`. */
export async function waitFor<T>(fn: () => Promise<T> | T, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message ?? last}` : ''}`);
    await sleep(50);
  }
}

/** Wait until `url` answers any HTTP status. */
export function waitForHttp(url: string, timeoutMs = 15_000): Promise<true> {
  return waitFor(async () => {
    await fetch(url, { signal: AbortSignal.timeout(2000) });
    return true as const;
  }, timeoutMs, url);
}

/** One HTTP request; returns the status (the body is read so the connection is reused). */
export async function hit(url: string, init: RequestInit = {}): Promise<number> {
  const r = await fetch(url, init);
  await r.arrayBuffer();
  return r.status;
}

export async function scrapeText(port: number, path = '/metrics'): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(10_000) });
  if (r.status !== 200) throw new Error(`scrape status ${r.status}: ${await r.text()}`);
  return r.text();
}

export interface Sample { name: string; labels: Record<string, string>; value: number }

/** Parse the Prometheus text exposition format into samples (HELP/TYPE/UNIT lines skipped). */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$/.exec(line);
    if (!m) throw new Error(`unparseable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let lm: RegExpExecArray | null;
      while ((lm = re.exec(m[3]))) labels[lm[1]!] = lm[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    }
    const v = m[4]!;
    out.push({ name: m[1]!, labels, value: v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v) });
  }
  return out;
}

export async function scrape(port: number): Promise<Sample[]> {
  return parseMetrics(await scrapeText(port));
}

/** Samples named `name` whose labels include every pair of `match`. */
export function select(samples: Sample[], name: string, match: Record<string, string> = {}): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v));
}

/** Sum of the values of `select(...)` (0 when none). */
export function total(samples: Sample[], name: string, match: Record<string, string> = {}): number {
  return select(samples, name, match).reduce((a, s) => a + s.value, 0);
}

/** The one value of a series that must exist exactly once. */
export function value(samples: Sample[], name: string, match: Record<string, string> = {}): number {
  const found = select(samples, name, match);
  if (found.length !== 1) throw new Error(`expected exactly one ${name}${JSON.stringify(match)}, found ${found.length}`);
  return found[0]!.value;
}

/** Distinct values of one label across the samples of `name`. */
export function labelValues(samples: Sample[], name: string, label: string): string[] {
  return [...new Set(select(samples, name).map((s) => s.labels[label]!))].sort();
}

/** pids a node:cluster fixture's primary reported as forked (`forked PID`) and not yet exited (`exit PID …`) */
export function livePids(app: Proc): string[] {
  const forked = [...app.stdout.matchAll(/^forked (\d+)$/gm)].map((m) => m[1]!);
  const exited = new Set([...app.stdout.matchAll(/^exit (\d+) /gm)].map((m) => m[1]!));
  return forked.filter((p) => !exited.has(p)).sort();
}

/** i → a distinct word of the letters g..z (never an id: no digits, no hex) */
export function word(i: number): string {
  let s = '';
  do {
    s += String.fromCharCode(103 + (i % 20));
    i = Math.floor(i / 20);
  } while (i > 0);
  return s;
}

/** SIGTERM a child started with spawn() (e.g. real gunicorn) and wait until it has exited; nothing if it already has */
export async function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await gone;
}
