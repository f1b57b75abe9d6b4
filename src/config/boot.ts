/**
 * The two things a runner worker needs from the runner's configuration at boot, kept out of
 * config/runner.ts so that a worker process does not load the SETTINGS table and shell-quote
 * (≈ 1 MB of heap; docs/runner.md "Memory"). config/runner.ts re-exports both.
 */

/** the environment variable carrying ServeSettings (config/runner.ts) from the runner to its workers */
export const SERVE_ENV = 'PREFORK_OTEL_SERVE';

/** `import()` that TypeScript's CommonJS output leaves alone, so ES-module apps and configs load. */
export const dynamicImport = new Function('specifier', 'return import(specifier)') as (specifier: string) => Promise<unknown>;
