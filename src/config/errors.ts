/**
 * A user error in configuration: a bad environment variable, flag, config-file value, a port in use,
 * a missing app file. Entry points print `message` as one line (no stack) and exit non-zero.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  /** exit code the entry point should use (2 = usage, as gunicorn / getopt tools do) */
  readonly exitCode: number;
  /** 'port_in_use': the one user error the preload may survive (PREFORK_OTEL_ON_PORT_IN_USE=warn) */
  readonly reason: 'port_in_use' | undefined;
  constructor(message: string, exitCode = 2, reason?: 'port_in_use') {
    super(message);
    this.exitCode = exitCode;
    this.reason = reason;
  }
}

/** One line: what was wrong, the value, and what is allowed. */
export function invalid(source: string, value: unknown, allowed: string): ConfigError {
  return new ConfigError(`prefork-otel: invalid ${source}=${JSON.stringify(String(value))}: ${allowed}`);
}

/** Print a user error as one line and exit; anything else is re-thrown (a bug: keep its stack). */
export function exitOnUserError(err: unknown): never {
  if (err instanceof ConfigError) {
    process.stderr.write(err.message + '\n');
    process.exit(err.exitCode);
  }
  throw err;
}
