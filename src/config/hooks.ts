/**
 * The names of gunicorn's server hooks. The config loader accepts them as keys of a config file; their
 * signatures and defaults live in hooks/server.ts (a layer above), which narrows these to `UserHooks`.
 */
export const HOOK_NAMES = [
  'on_starting', 'on_reload', 'when_ready', 'pre_fork', 'post_fork', 'post_worker_init', 'worker_int', 'worker_abort',
  'pre_exec', 'pre_request', 'post_request', 'child_exit', 'worker_exit', 'nworkers_changed', 'on_exit',
] as const;
export type HookName = (typeof HOOK_NAMES)[number];

/** hooks as the loader found them: functions by hook name, not yet typed by their signatures */
export type RawHooks = Partial<Record<HookName, (...args: never[]) => unknown>>;
