/**
 * PM2: how the preload learns the environment PM2 gives the application.
 *
 * PM2's cluster mode forks every instance with `node:cluster` from PM2's daemon, whose
 * `cluster.setupPrimary({ exec })` is PM2's own container script (`lib/ProcessContainer.js`). The
 * daemon does not put the app's `env` (the ecosystem file's `env`, the shell's variables at
 * `pm2 start`) into the worker's environment: it hands it over as one JSON string, `process.env.pm2_env`,
 * and the container script copies its keys into `process.env` — after `node_args` preloads
 * (`-r` / `--import`) have already run. So a preload that reads `process.env` sees neither
 * `PROMETHEUS_MULTIPROC_DIR` nor `PROMETHEUS_METRICS_PORT` of the app.
 *
 * The preload reads the same handover instead: `appEnv()` is `process.env` with `pm2_env`'s keys laid
 * over it exactly as the container script will lay them (every key, primitive values as strings),
 * without touching `process.env` itself (the container script still does that, and deletes `pm2_env`).
 * The mode is then decided at once, before the application's first line, as for every other process:
 * no deferral to the main module, so the first request is observed too.
 *
 * PM2's fork mode spawns `node <node_args> ProcessContainerFork.js` with the app's env already in the
 * environment (and no `pm2_env`): nothing to do there. `pm2-runtime` runs the same daemon in the
 * foreground: same two cases.
 */

/** What PM2 tells a process about itself (undefined: not started by PM2). */
export interface Pm2Process {
  mode: 'cluster' | 'fork';
  /** the app's name in PM2 */
  name: string | undefined;
  /** NODE_APP_INSTANCE (or the app's `instance_var`) */
  instance: string | undefined;
}

type Env = Record<string, string | undefined>;

/** PM2's handover (`pm2_env`, a JSON object), or undefined when there is none or it is not an object. */
function handover(env: Env): Record<string, unknown> | undefined {
  const raw = env.pm2_env;
  if (raw === undefined || raw === '' || raw[0] !== '{') return undefined;
  try {
    const v = JSON.parse(raw) as unknown;
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? v as Record<string, unknown> : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The environment the application will see once PM2's container script has run: `env` with the keys
 * of PM2's handover laid over it (`process.env[k] = v` turns every value into a string; objects become
 * "[object Object]", which no variable of ours accepts — they are left out). Without a handover: `env`.
 */
export function appEnv(env: Env = process.env): Env {
  const h = handover(env);
  if (!h) return env;
  const out: Env = { ...env };
  for (const [k, v] of Object.entries(h)) {
    if (v === null || v === undefined || typeof v === 'object') continue;
    out[k] = String(v);
  }
  return out;
}

/** Was this process started by PM2, and how? (`env`: the result of appEnv) */
export function pm2Process(env: Env): Pm2Process | undefined {
  if (env.pm_id === undefined || env.pm_exec_path === undefined) return undefined;
  const mode = env.exec_mode === 'cluster_mode' ? 'cluster' : 'fork';
  const instanceVar = env.instance_var || 'NODE_APP_INSTANCE';
  return { mode, name: env.name, instance: env[instanceVar] };
}

/** The one line a PM2 cluster instance without PROMETHEUS_MULTIPROC_DIR prints (see docs/troubleshooting.md). */
export function pm2ClusterWarning(p: Pm2Process, pid = process.pid): string {
  return `prefork-otel: pid ${pid} is PM2 cluster instance ${p.instance ?? '?'} of "${p.name ?? '?'}": without `
    + 'PROMETHEUS_MULTIPROC_DIR each scrape reaches one instance only; set PROMETHEUS_MULTIPROC_DIR in the app\'s env '
    + '(see docs/cluster.md, "PM2")\n';
}
