/** Helpers for the runner's tests: start `prefork-otel` for real, send load, read its scrape. */
import { CLI, freePort, scrape, select, startNode, waitFor, type Proc, type Sample } from './helpers';

export interface Runner {
  proc: Proc;
  port: number;
  metricsPort: number;
  url(path: string): string;
  scrape(): Promise<Sample[]>;
  /** worker pids whose state is `running`, from the scrape */
  running(): Promise<string[]>;
  /** wait until exactly `n` workers are running (and, optionally, none of `gone`) */
  waitRunning(n: number, gone?: string[], timeoutMs?: number): Promise<string[]>;
  signal(sig: NodeJS.Signals): void;
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export async function startRunner(args: string[], opts: { workers: number; env?: Record<string, string>; port?: number }): Promise<Runner> {
  const port = opts.port ?? await freePort();
  const metricsPort = await freePort();
  const proc = startNode([CLI, '-b', `127.0.0.1:${port}`, ...args], {
    PROMETHEUS_METRICS_PORT: String(metricsPort),
    PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
    ...opts.env,
  });
  const r: Runner = {
    proc,
    port,
    metricsPort,
    url: (path) => `http://127.0.0.1:${port}${path}`,
    scrape: () => scrape(metricsPort),
    async running() {
      return select(await scrape(metricsPort), 'gunicorn_worker_state', { state: 'running' }).map((s) => s.labels.worker_id!).sort();
    },
    async waitRunning(n, gone = [], timeoutMs = 30_000) {
      return waitFor(async () => {
        if (proc.child.exitCode !== null) throw new Error(`runner exited ${proc.child.exitCode}: ${proc.stderr}`);
        const pids = await r.running();
        return pids.length === n && !pids.some((p) => gone.includes(p)) ? pids : undefined;
      }, timeoutMs, `${n} running workers${gone.length ? ` (none of ${gone.join(',')})` : ''}`);
    },
    signal: (sig) => { proc.child.kill(sig); },
    stop: () => proc.stop('SIGTERM', 20_000),
  };
  await r.waitRunning(opts.workers);
  return r;
}

/** `n` GET requests to `url`, `concurrency` at a time; returns the statuses (0 = network error). */
export async function load(url: string, n: number, concurrency = 8, init: RequestInit = {}): Promise<number[]> {
  const statuses: number[] = [];
  let next = 0;
  const one = async () => {
    while (next < n) {
      next++;
      try {
        const r = await fetch(url, init);
        await r.arrayBuffer();
        statuses.push(r.status);
      } catch {
        statuses.push(0);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, one));
  return statuses;
}

/**
 * gunicorn's log lines, `[2026-… +0000] [1234] [INFO] msg` → { pid: '1234', level: 'INFO', msg }; also
 * one that follows, on the same line, output a crashing process left without its final newline
 */
export function logLines(out: string): Array<{ pid: string; level: string; msg: string }> {
  return [...out.matchAll(/\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[(\d+)\] \[([A-Z]+)\] (.*)$/gm)].map((m) => ({ pid: m[1]!, level: m[2]!, msg: m[3]! }));
}
