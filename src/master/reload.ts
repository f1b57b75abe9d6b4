/**
 * --reload / --reload-extra-file / --reload-engine: the master watches the APP's source tree and the
 * extra files, and on a change reloads the workers gracefully — it sends itself SIGHUP, so the
 * reload is exactly the operator's HUP (new workers first, then the old ones drain).
 *
 * What is watched: the APP's directory and its subdirectories (not node_modules, not dot
 * directories; at most MAX_DIRS directories), for files ending in .js .cjs .mjs .json .ts .mts
 * .cts; the config file; every --reload-extra-file. Changes within DEBOUNCE_MS make one reload.
 * `auto` / `inotify` use fs.watch (inotify), `poll` uses fs.watchFile on each file (1 s period).
 */
import { readdirSync, statSync, watch, watchFile, type FSWatcher } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { RunnerConfig } from '../config/runner';
import type { Logger } from '../util/logger';

const MAX_DIRS = 1000;
const MAX_POLLED_FILES = 5000;
const DEBOUNCE_MS = 200;
const SOURCE = /\.(c|m)?(js|ts)$|\.json$/;

function sourceDirs(root: string): string[] {
  const out: string[] = [];
  const queue = [root];
  while (queue.length > 0 && out.length < MAX_DIRS) {
    const dir = queue.shift()!;
    out.push(dir);
    let entries: import('node:fs').Dirent[] = [];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) if (e.isDirectory() && e.name !== 'node_modules' && !e.name.startsWith('.')) queue.push(join(dir, e.name));
  }
  return out;
}

export function watchForReload(config: RunnerConfig, log: Logger): () => void {
  const watchers: FSWatcher[] = [];
  const polled: string[] = [];
  let timer: NodeJS.Timeout | undefined;
  const changed = (file: string) => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      log.info(`Worker reloading: ${file} modified`);
      process.kill(process.pid, 'SIGHUP');
    }, DEBOUNCE_MS);
  };
  const extra = new Set([...config.reloadExtraFiles, ...(config.configFile ? [config.configFile] : [])]);
  const dirs = sourceDirs(dirname(config.app.path));
  if (config.reloadEngine === 'poll') {
    const files = [...extra];
    for (const d of dirs) {
      try {
        for (const f of readdirSync(d)) if (SOURCE.test(f) && files.length < MAX_POLLED_FILES) files.push(join(d, f));
      } catch { /* gone */ }
    }
    for (const f of files) {
      watchFile(f, { interval: 1000, persistent: false }, (cur, prev) => { if (cur.mtimeMs !== prev.mtimeMs) changed(f); });
      polled.push(f);
    }
  } else {
    for (const d of dirs) {
      try {
        watchers.push(watch(d, { persistent: false }, (_e, name) => { if (name && SOURCE.test(String(name))) changed(join(d, String(name))); }));
      } catch { /* not watchable */ }
    }
    // extra files: their directory, filtered by name (survives editors that replace the file)
    for (const f of extra) {
      try {
        statSync(dirname(f));
        watchers.push(watch(dirname(f), { persistent: false }, (_e, name) => { if (name && String(name) === basename(f)) changed(f); }));
      } catch {
        log.warning(`--reload-extra-file ${f}: its directory cannot be watched`);
      }
    }
  }
  return () => {
    for (const w of watchers) w.close();
    if (timer) clearTimeout(timer);
  };
}
