import { closeSync, openSync, writeSync } from 'node:fs';
import type { LogLevel } from '../config/runner';

/** what every part that logs gets: gunicorn's levels */
export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warning(msg: string): void;
  error(msg: string): void;
  critical(msg: string): void;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warning: 30, error: 40, critical: 50 };

function stamp(d = new Date()): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const off = -d.getTimezoneOffset();
  const tz = `${off >= 0 ? '+' : '-'}${p(Math.floor(Math.abs(off) / 60))}${p(Math.abs(off) % 60)}`;
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())} ${tz}`;
}

/**
 * gunicorn's error log: `[2024-05-01 12:00:00 +0000] [pid] [INFO] message`, to stderr or a file
 * (`--error-logfile`), which `reopen()` opens again (SIGUSR1, after logrotate moved it).
 * Writes are synchronous: the master logs rarely, and a line must not be lost when it exits.
 */
export class RunnerLog implements Logger {
  private fd: number;
  private readonly rank: number;
  constructor(level: LogLevel, readonly file: string = '-', private readonly pid = process.pid) {
    this.rank = RANK[level];
    this.fd = file === '-' ? 2 : openSync(file, 'a');
  }

  /** the fd workers' stdout/stderr should go to (2 = inherit the master's stderr) */
  get outputFd(): number {
    return this.fd;
  }

  reopen(): void {
    if (this.file === '-') return;
    const old = this.fd;
    this.fd = openSync(this.file, 'a');
    closeSync(old);
  }

  /** raw text (a worker's output passed through) */
  write(text: string | Buffer): void {
    try {
      if (typeof text === 'string') writeSync(this.fd, text);
      else writeSync(this.fd, text);
    } catch { /* a closed stderr must not crash the master */ }
  }

  private line(level: LogLevel, msg: string): void {
    if (RANK[level] < this.rank) return;
    this.write(`[${stamp()}] [${this.pid}] [${level === 'warning' ? 'WARNING' : level.toUpperCase()}] ${msg}\n`);
  }

  debug(msg: string): void { this.line('debug', msg); }
  info(msg: string): void { this.line('info', msg); }
  warning(msg: string): void { this.line('warning', msg); }
  error(msg: string): void { this.line('error', msg); }
  critical(msg: string): void { this.line('critical', msg); }
}
