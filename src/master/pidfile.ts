import { existsSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { ConfigError } from '../config';
import { pidAlive } from '../util/pid';

/**
 * gunicorn's --pid file: refuses to start over a live master, removed on exit. A master started by
 * USR2 writes `FILE.2` and renames it to `FILE` when it is promoted (its parent, the old master, exited).
 */
export class Pidfile {
  constructor(public path: string) {}

  create(pid = process.pid): void {
    if (existsSync(this.path)) {
      const old = Number(readFileSync(this.path, 'utf8').trim());
      if (Number.isInteger(old) && old > 0 && old !== pid && old !== process.ppid && pidAlive(old)) {
        throw new ConfigError(`prefork-otel: already running on pid ${old} (pid file ${this.path}); stop it or remove the file`, 1);
      }
    }
    writeFileSync(this.path, `${pid}\n`);
  }

  rename(to: string): void {
    try {
      renameSync(this.path, to);
      this.path = to;
    } catch { /* removed meanwhile */ }
  }

  unlink(): void {
    try {
      if (Number(readFileSync(this.path, 'utf8').trim()) === process.pid) unlinkSync(this.path);
    } catch { /* already gone */ }
  }
}
