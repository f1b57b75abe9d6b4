/**
 * The runner's configuration (`prefork-otel [options] APP`): gunicorn's settings, each defined once
 * in SETTINGS (CLI flag, config-file key, validation, default, help), merged
 * defaults < config file (-c) < environment < command line, and validated with the shared parsers.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { parse as shellParse } from 'shell-quote';
import { dynamicImport, SERVE_ENV } from './boot';
import { ConfigError, invalid } from './errors';
import { parseBool, parseEnum, parseHost, parseInteger, parseNumber, parsePort } from './parse';
import { HOOK_NAMES, type RawHooks } from './hooks';

export { dynamicImport, SERVE_ENV };

type Env = Record<string, string | undefined>;

/** Worker classes: canonical kind of every accepted `-k` value (gunicorn short names and our class names). */
export const WORKER_CLASSES = {
  sync: 'sync',
  PrometheusWorker: 'sync',
  gthread: 'gthread',
  PrometheusThreadWorker: 'gthread',
  eventlet: 'eventlet',
  PrometheusEventletWorker: 'eventlet',
  gevent: 'gevent',
  PrometheusGeventWorker: 'gevent',
  async: 'gevent',
} as const;
export type WorkerKind = (typeof WORKER_CLASSES)[keyof typeof WORKER_CLASSES];
/** the class name reported in logs for each kind */
export const WORKER_CLASS_NAMES: Record<WorkerKind, string> = {
  sync: 'PrometheusWorker', gthread: 'PrometheusThreadWorker', eventlet: 'PrometheusEventletWorker', gevent: 'PrometheusGeventWorker',
};

export const LOG_LEVELS = ['debug', 'info', 'warning', 'error', 'critical'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** One listening address: `host:port`, `[v6]:port`, `host` (port 8000), `unix:/path`, `fd://N`. */
export type Bind =
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string }
  | { kind: 'fd'; fd: number };

/** The APP argument: `path/to/app.js`, `path/to/app.js:exportName`, `path/to/app.mjs:create()`. */
export interface AppSpec {
  /** as written on the command line */
  raw: string;
  /** absolute path of the module */
  path: string;
  /** the export to use (default: the module's default export / module.exports) */
  exportName?: string;
  /** `name()` was written: call the export as a factory */
  call: boolean;
}

/** The typed, validated settings of the runner (everything but the APP and the hooks). */
export interface RunnerSettings {
  bind: Bind[];
  workers: number;
  workerClass: WorkerKind;
  threads: number;
  workerConnections: number;
  /** seconds; 0 = no timeout */
  timeout: number;
  /** a worker blocked past --timeout aborts itself first (watchdog thread): TimeoutError, worker_abort, final snapshot */
  abortOnTimeout: boolean;
  gracefulTimeout: number;
  keepAlive: number;
  maxRequests: number;
  maxRequestsJitter: number;
  pidfile: string | undefined;
  procName: string | undefined;
  logLevel: LogLevel;
  /** `-` = stderr */
  errorLog: string;
  /** KEY=VALUE pairs put in the workers' environment */
  rawEnv: Record<string, string>;
  chdir: string | undefined;
  /** the metrics endpoint's web config (exporter-toolkit YAML: TLS, basic auth); over PROMETHEUS_WEB_CONFIG_FILE */
  metricsWebConfig: string | undefined;
  /** OpenTelemetry's host metrics from the master (as PREFORK_OTEL_HOST_METRICS=true); read at start */
  hostMetrics: boolean;
  /** the APP from the config file (gunicorn's wsgi_app), used when the command line names none */
  wsgiApp: string | undefined;
  /** access log: undefined = none, `-` = stdout, else an absolute path */
  accessLog: string | undefined;
  accessLogFormat: string;
  /** peers trusted for X-Forwarded-For / secure_scheme_headers; `*` = every peer */
  forwardedAllowIps: string[];
  /** gunicorn's secure_scheme_headers: header → value that means https (from a trusted peer) */
  secureSchemeHeaders: Record<string, string>;
  captureOutput: boolean;
  certfile: string | undefined;
  keyfile: string | undefined;
  caCerts: string | undefined;
  /** 0 CERT_NONE, 1 CERT_OPTIONAL, 2 CERT_REQUIRED (Python's ssl constants, as gunicorn) */
  certReqs: number;
  ciphers: string | undefined;
  doHandshakeOnConnect: boolean;
  suppressRaggedEofs: boolean;
  /** 0 = unlimited */
  limitRequestLine: number;
  limitRequestFields: number;
  limitRequestFieldSize: number;
  /** numeric uid / gid the workers run as (undefined = unchanged) */
  user: number | undefined;
  group: number | undefined;
  /** the user name for initgroups (when --user was a name or a known uid) */
  userName: string | undefined;
  /** --user's primary group (/etc/passwd): the workers' group when --group is not given */
  userGid: number | undefined;
  initgroups: boolean;
  umask: number | undefined;
  reload: boolean;
  reloadEngine: 'auto' | 'poll' | 'inotify';
  reloadExtraFiles: string[];
  preloadApp: boolean;
  daemon: boolean;
  /** PROXY protocol header on each connection from a --proxy-allow-from peer: which versions are read */
  proxyProtocol: ProxyProtocolMode;
  /** peers whose PROXY header is accepted (others get 403 for one); `*` = every peer */
  proxyAllowIps: string[];
}
/** gunicorn 26's --proxy-protocol values (20.1's bare flag = v1; ours = auto, which also reads v1) */
export type ProxyProtocolMode = 'off' | 'v1' | 'v2' | 'auto';

export interface RunnerConfig extends RunnerSettings {
  app: AppSpec;
  /** absolute path of the -c file, when given */
  configFile: string | undefined;
  /** user hooks from the config file (master side; workers load the file again for theirs) */
  hooks: RawHooks;
  checkConfig: boolean;
  printConfig: boolean;
}

/** What the command line asked for. */
export type CliRequest =
  | { kind: 'help' }
  | { kind: 'version' }
  | { kind: 'run'; config: RunnerConfig; warnings: string[] };

type Raw = unknown;
/** works: as in gunicorn; differs: works, with a difference docs/runner.md names; warns: no effect in Node (one warning) */
export type SettingStatus = 'works' | 'differs' | 'warns';
interface Setting<K extends keyof RunnerSettings = keyof RunnerSettings> {
  /** where the value goes; absent: a gunicorn setting with no meaning in Node (accepted, one warning) */
  key?: K;
  /** the gunicorn config-file name (also accepted in the -c file) */
  file: string;
  /** the gunicorn command-line flag (without --); absent: config file only */
  long?: string;
  /** more spellings of the flag */
  aliases?: string[];
  short?: string;
  /** gunicorn's store_true / store_const flags: no value on the command line (true/false in the file) */
  flag?: boolean;
  /** argparse's nargs='?': the value of the bare flag (a following word is its value only if it is one of `choices`) */
  bare?: { value: string; choices: string[] };
  multiple?: boolean;
  meta?: string;
  help: string;
  status: SettingStatus;
  /** the difference, or why it has no effect (docs/runner.md's flag table, and the warning) */
  note?: string;
  /** the default, from the environment where gunicorn takes it from there */
  dflt?: (env: Env) => RunnerSettings[K];
  /** validate one raw value (a string from the CLI/env, any JSON/JS value from the config file) */
  parse: (source: string, raw: Raw, prev: RunnerSettings[K]) => RunnerSettings[K];
}

/** a negative number: "must be ≥ min" (gunicorn's validate_pos_int says so too), not the generic range */
function notNegative(source: string, raw: Raw, min: number, what: string): void {
  if (Number(typeof raw === 'string' ? raw.trim() : raw) < 0) throw invalid(source, raw, `must be ≥ ${min} (${what})`);
}
const int = (min: number, max: number) => (source: string, raw: Raw) => {
  notNegative(source, raw, min, `an integer from ${min} to ${max}`);
  return parseInteger(source, raw, min, max);
};
const secs = (max: number) => (source: string, raw: Raw) => {
  notNegative(source, raw, 0, `a number from 0 to ${max} seconds`);
  return parseNumber(source, raw, 0, max, 'seconds');
};
const str = (source: string, raw: Raw) => {
  if (typeof raw !== 'string' || raw === '') throw invalid(source, raw, 'expected a non-empty string');
  return raw;
};
const bool = (source: string, raw: Raw) => parseBool(source, raw);
const anyStr = (source: string, raw: Raw) => {
  if (typeof raw !== 'string' && typeof raw !== 'number') throw invalid(source, raw, 'expected a string');
  return String(raw);
};
const strList = (source: string, raw: Raw) => {
  const list = Array.isArray(raw) ? raw : [raw];
  for (const r of list) if (typeof r !== 'string') throw invalid(source, r, 'expected a string');
  return list as string[];
};
const dict = (source: string, raw: Raw) => {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw invalid(source, typeof raw, 'expected an object of header names to values');
  return raw;
};
const filePath = (source: string, raw: Raw) => {
  const p = resolve(str(source, raw));
  if (!existsSync(p) || !statSync(p).isFile()) throw invalid(source, raw, 'expected an existing file');
  return p;
};
const optFile = (source: string, raw: Raw) => filePath(source, raw) as string | undefined;

/** a comma-separated address list (gunicorn's validate_string_to_addr_list): IPs, CIDR-less, or `*` */
function addrList(source: string, raw: Raw): string[] {
  const parts = (Array.isArray(raw) ? raw.map(String) : String(raw).split(',')).map((s) => s.trim()).filter((s) => s !== '');
  for (const p of parts) if (p !== '*' && !isIP(p) && !/^[0-9a-fA-F.:]+\/\d{1,3}$/.test(p)) throw invalid(source, raw, 'expected a comma-separated list of IP addresses (or CIDR networks), or "*"');
  return parts;
}

/** a user name or uid → uid (and the name, for initgroups) */
function lookupUser(source: string, raw: Raw): { uid: number; name: string | undefined; gid: number | undefined } {
  const s = String(raw).trim();
  const passwd = readIfExists('/etc/passwd');
  if (/^\d+$/.test(s)) {
    const uid = parseInteger(source, s, 0, 2 ** 32 - 2);
    const row = passwd.find((f) => f[2] === s);
    return { uid, name: row?.[0], gid: row ? Number(row[3]) : undefined };
  }
  const row = passwd.find((f) => f[0] === s);
  if (!row) throw invalid(source, raw, 'expected a user name from /etc/passwd or a numeric uid');
  return { uid: Number(row[2]), name: s, gid: Number(row[3]) };
}

function lookupGroup(source: string, raw: Raw): number {
  const s = String(raw).trim();
  if (/^\d+$/.test(s)) return parseInteger(source, s, 0, 2 ** 32 - 2);
  const row = readIfExists('/etc/group').find((f) => f[0] === s);
  if (!row) throw invalid(source, raw, 'expected a group name from /etc/group or a numeric gid');
  return Number(row[2]);
}

function readIfExists(file: string): string[][] {
  try {
    return readFileSync(file, 'utf8').split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(':'));
  } catch {
    return [];
  }
}

/** gunicorn's umask: an int, octal with 0o / 0 prefix, or hex (auto_int) */
function parseUmask(source: string, raw: Raw): number {
  const s = String(raw).trim();
  let n = NaN;
  if (typeof raw === 'number') n = raw;
  else if (/^0[oO]?[0-7]+$/.test(s)) n = parseInt(s.replace(/^0[oO]?/, '') || '0', 8);
  else if (/^0[xX][0-9a-fA-F]+$/.test(s)) n = parseInt(s.slice(2), 16);
  else if (/^\d+$/.test(s)) n = Number(s);
  else if (/^-/.test(s)) throw invalid(source, raw, 'must be ≥ 0 (a umask such as 0o022, 022 or 18)');
  if (!Number.isInteger(n) || n < 0 || n > 0o777) throw invalid(source, raw, 'expected a umask from 0 to 0o777 (e.g. 0o022, 022, 18)');
  return n;
}

/** a setting with no meaning in Node: validated as gunicorn would, then ignored with one warning */
function ignored(file: string, long: string | undefined, kind: 'flag' | 'str' | 'int' | 'list' | 'dict' | 'hook', note: string, extra: Partial<Setting> = {}): Setting {
  const parse = kind === 'flag' ? bool : kind === 'int' ? int(0, 2 ** 31 - 1) : kind === 'list' ? strList : kind === 'dict' ? dict
    : kind === 'hook' ? (s: string, r: Raw) => { if (typeof r !== 'function') throw invalid(s, typeof r, 'expected a function (a server hook)'); return r; }
      : anyStr;
  return {
    file, ...(long ? { long } : {}), flag: kind === 'flag', multiple: kind === 'list', meta: kind === 'int' ? 'INT' : 'VALUE',
    help: `no effect: ${note}`, status: 'warns', note, parse: parse as never, ...extra,
  };
}

export function parseBind(source: string, raw: Raw): Bind {
  const s = typeof raw === 'string' ? raw.trim() : '';
  if (s.startsWith('unix:')) {
    const path = s.slice(5);
    if (path === '') throw invalid(source, raw, 'expected unix:PATH with a socket path');
    return { kind: 'unix', path: resolve(path) };
  }
  if (s.startsWith('fd://')) return { kind: 'fd', fd: parseInteger(source, s.slice(5), 0, 65535) };
  const allowed = 'expected HOST:PORT, HOST, [IPv6]:PORT, unix:PATH or fd://N (e.g. 127.0.0.1:8000, 0.0.0.0:80, unix:/tmp/app.sock)';
  if (s === '') throw invalid(source, raw, allowed);
  let host: string;
  let port = '8000';
  const v6 = /^\[([^\]]+)\](?::(.*))?$/.exec(s);
  if (v6) {
    host = v6[1]!;
    if (v6[2] !== undefined) port = v6[2];
  } else if ((s.match(/:/g) ?? []).length === 1) {
    [host, port] = s.split(':') as [string, string];
    if (host === '') host = '0.0.0.0';
  } else if (s.includes(':')) {
    throw invalid(source, raw, allowed);
  } else {
    host = s;
  }
  try {
    return { kind: 'tcp', host: parseHost(source, host), port: parsePort(source, port) };
  } catch {
    throw invalid(source, raw, allowed);
  }
}

function defaultWorkers(env: Env): number {
  if (env.GUNICORN_WORKERS) return parseInteger('GUNICORN_WORKERS', env.GUNICORN_WORKERS, 1, 1024);
  if (env.WEB_CONCURRENCY) return parseInteger('WEB_CONCURRENCY', env.WEB_CONCURRENCY, 1, 1024);
  return 1;
}

/** Every gunicorn setting (gunicorn 26.1's config.py, and Debian's 20.1), once: flag, config-file key, default, validation, help, status. */
export const SETTINGS: Setting[] = [
  // --- server socket
  {
    key: 'bind', file: 'bind', long: 'bind', short: 'b', multiple: true, meta: 'ADDRESS', status: 'works',
    help: 'listen on HOST:PORT, unix:PATH or fd://N; repeatable [127.0.0.1:8000, or 0.0.0.0:$PORT]',
    dflt: (env) => [env.PORT ? { kind: 'tcp', host: '0.0.0.0', port: parsePort('PORT', env.PORT) } : { kind: 'tcp', host: '127.0.0.1', port: 8000 }],
    parse: (source, raw) => (Array.isArray(raw) ? raw : [raw]).map((r) => parseBind(source, r)),
  },
  ignored('backlog', 'backlog', 'int', 'the master listens with Node\'s backlog (511)'),
  // --- worker processes
  {
    key: 'workers', file: 'workers', long: 'workers', short: 'w', meta: 'INT', status: 'works',
    help: 'number of worker processes [$GUNICORN_WORKERS, else $WEB_CONCURRENCY, else 1]',
    dflt: () => 1, parse: int(1, 1024),
  },
  {
    key: 'workerClass', file: 'worker_class', long: 'worker-class', short: 'k', meta: 'CLASS', status: 'differs',
    note: 'Node event loops stand in for gunicorn\'s classes (see "Worker classes")',
    help: 'sync | gthread | eventlet | gevent | async (or PrometheusWorker, PrometheusThreadWorker, PrometheusEventletWorker, PrometheusGeventWorker) [sync]',
    dflt: () => 'sync',
    parse: (source, raw) => WORKER_CLASSES[parseEnum(source, raw, Object.keys(WORKER_CLASSES) as (keyof typeof WORKER_CLASSES)[])],
  },
  { key: 'threads', file: 'threads', long: 'threads', meta: 'INT', status: 'differs', note: 'gthread threads are worker_threads, each an event loop with its own copy of the app', help: 'worker threads per gthread worker (sync with more than 1 becomes gthread) [1]', dflt: () => 1, parse: int(1, 256) },
  {
    key: 'workerConnections', file: 'worker_connections', long: 'worker-connections', meta: 'INT', status: 'works',
    help: 'maximum simultaneous connections per worker (eventlet, gevent, gthread) [1000]', dflt: () => 1000, parse: int(1, 1_000_000),
  },
  { key: 'maxRequests', file: 'max_requests', long: 'max-requests', meta: 'INT', status: 'works', help: 'restart a worker after this many requests; 0 disables [0]', dflt: () => 0, parse: int(0, 1e12) },
  { key: 'maxRequestsJitter', file: 'max_requests_jitter', long: 'max-requests-jitter', meta: 'INT', status: 'works', help: 'add up to this many to --max-requests, per worker [0]', dflt: () => 0, parse: int(0, 1e12) },
  { key: 'timeout', file: 'timeout', long: 'timeout', short: 't', meta: 'SECONDS', status: 'differs', note: 'see "Timeouts"', help: 'kill and replace a worker silent for this long; 0 disables [30]', dflt: () => 30, parse: secs(86400) },
  {
    key: 'abortOnTimeout', file: 'abort_on_timeout', long: 'abort-on-timeout', meta: 'BOOL', status: 'works', note: 'prefork-otel only',
    help: 'a worker whose event loop is blocked past --timeout counts its requests failed (TimeoutError), runs worker_abort and sends its metrics before it dies (a watchdog thread per worker, ~9 MB) [true]',
    dflt: () => true, parse: bool,
  },
  { key: 'gracefulTimeout', file: 'graceful_timeout', long: 'graceful-timeout', meta: 'SECONDS', status: 'works', help: 'time a stopping worker gets to finish its requests [30]', dflt: () => 30, parse: secs(86400) },
  { key: 'keepAlive', file: 'keepalive', long: 'keep-alive', meta: 'SECONDS', status: 'works', help: 'idle keep-alive connection timeout (server.keepAliveTimeout; sync closes every connection, as gunicorn); 0 disables keep-alive [2]', dflt: () => 2, parse: secs(3600) },
  ignored('asgi_loop', 'asgi-loop', 'str', 'no ASGI in Node'),
  ignored('asgi_lifespan', 'asgi-lifespan', 'str', 'no ASGI in Node'),
  ignored('asgi_disconnect_grace_period', 'asgi-disconnect-grace-period', 'int', 'no ASGI in Node'),
  ignored('http_parser', 'http-parser', 'str', 'Node\'s own parser (llhttp) parses every request'),
  // --- security
  {
    key: 'limitRequestLine', file: 'limit_request_line', long: 'limit-request-line', meta: 'INT', status: 'works',
    help: 'longest request line in bytes, answered 400 beyond (as gunicorn); 0 = unlimited (Node\'s header limit still applies) [4094, max 8190]', dflt: () => 4094, parse: int(0, 8190),
  },
  {
    key: 'limitRequestFields', file: 'limit_request_fields', long: 'limit-request-fields', meta: 'INT', status: 'works',
    help: 'most header fields in a request, answered 431 beyond [100, max 32768]', dflt: () => 100, parse: int(0, 32768),
  },
  {
    key: 'limitRequestFieldSize', file: 'limit_request_field_size', long: 'limit-request-field-size', aliases: ['limit-request-field_size'], meta: 'INT', status: 'works',
    help: 'longest header field (name: value) in bytes, answered 431 beyond; 0 = 8190 [8190]', dflt: () => 8190, parse: int(0, 1_000_000),
  },
  // --- debugging
  {
    key: 'reload', file: 'reload', long: 'reload', flag: true, status: 'differs', note: 'watches the APP\'s directory tree (not node_modules) and --reload-extra-file, then reloads the workers gracefully (as HUP)',
    help: 'reload the workers when a source file changes (the APP\'s directory, not node_modules)', dflt: () => false, parse: bool,
  },
  {
    key: 'reloadEngine', file: 'reload_engine', long: 'reload-engine', meta: 'ENGINE', status: 'differs', note: 'auto and inotify use fs.watch, poll uses fs.watchFile',
    help: 'auto | poll | inotify [auto]', dflt: () => 'auto', parse: (s, r) => parseEnum(s, r, ['auto', 'poll', 'inotify'] as const),
  },
  {
    key: 'reloadExtraFiles', file: 'reload_extra_files', long: 'reload-extra-file', multiple: true, meta: 'FILE', status: 'works',
    help: 'also reload when FILE changes; repeatable (implies nothing without --reload)', dflt: () => [],
    parse: (source, raw, prev) => [...(prev as string[]), ...(Array.isArray(raw) ? raw : [raw]).map((r) => resolve(str(source, r)))],
  },
  ignored('spew', 'spew', 'flag', 'Python tracing'),
  // --- server mechanics
  {
    key: 'preloadApp', file: 'preload_app', long: 'preload', flag: true, status: 'differs',
    note: 'the master loads the APP once to fail fast before forking; workers load it again (Node cannot fork a loaded heap: nothing is shared copy-on-write)',
    help: 'load the APP in the master first and exit before forking if it fails', dflt: () => false, parse: bool,
  },
  ignored('sendfile', 'no-sendfile', 'flag', 'Node streams files itself'),
  ignored('reuse_port', 'reuse-port', 'flag', 'the master binds each address once and shares the socket'),
  {
    key: 'chdir', file: 'chdir', long: 'chdir', meta: 'DIR', status: 'works', help: 'change to DIR before loading the app',
    dflt: () => undefined,
    parse: (source, raw) => {
      const dir = resolve(str(source, raw));
      if (!existsSync(dir) || !statSync(dir).isDirectory()) throw invalid(source, raw, 'expected an existing directory');
      return dir;
    },
  },
  { key: 'daemon', file: 'daemon', long: 'daemon', short: 'D', flag: true, status: 'works', help: 'detach from the terminal and run in the background', dflt: () => false, parse: bool },
  {
    key: 'rawEnv', file: 'raw_env', long: 'env', short: 'e', multiple: true, meta: 'KEY=VALUE', status: 'works', help: 'set an environment variable in the workers; repeatable',
    dflt: () => ({}),
    parse: (source, raw, prev) => {
      const out = { ...(prev as Record<string, string>) };
      for (const r of Array.isArray(raw) ? raw : [raw]) {
        const m = typeof r === 'string' ? /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(r) : null;
        if (!m) throw invalid(source, r, 'expected KEY=VALUE');
        out[m[1]!] = m[2]!;
      }
      return out;
    },
  },
  { key: 'pidfile', file: 'pidfile', long: 'pid', short: 'p', meta: 'FILE', status: 'works', help: 'write the master pid to FILE', dflt: () => undefined, parse: (s, r) => resolve(str(s, r)) },
  ignored('worker_tmp_dir', 'worker-tmp-dir', 'str', 'workers heartbeat over IPC, not through a temp file'),
  {
    key: 'user', file: 'user', long: 'user', short: 'u', meta: 'USER', status: 'works', help: 'run the workers as USER (name or uid), after binding',
    dflt: () => undefined, parse: (s, r) => lookupUser(s, r).uid,
  },
  { key: 'group', file: 'group', long: 'group', short: 'g', meta: 'GROUP', status: 'works', help: 'run the workers as GROUP (name or gid), after binding', dflt: () => undefined, parse: lookupGroup },
  { key: 'umask', file: 'umask', long: 'umask', short: 'm', meta: 'INT', status: 'works', help: 'umask of the workers (e.g. 0o022) [unchanged]', dflt: () => undefined, parse: parseUmask },
  { key: 'initgroups', file: 'initgroups', long: 'initgroups', flag: true, status: 'works', help: 'give the workers all groups of --user (else only --group)', dflt: () => false, parse: bool },
  ignored('tmp_upload_dir', undefined, 'str', 'Node apps choose their own upload directory'),
  {
    key: 'secureSchemeHeaders', file: 'secure_scheme_headers', status: 'works', help: 'headers (from a --forwarded-allow-ips peer) that mean https (config file only)',
    dflt: () => ({ 'X-FORWARDED-PROTOCOL': 'ssl', 'X-FORWARDED-PROTO': 'https', 'X-FORWARDED-SSL': 'on' }),
    parse: (s, r) => Object.fromEntries(Object.entries(dict(s, r) as Record<string, unknown>).map(([k, v]) => [k.toUpperCase(), String(v)])),
  },
  {
    key: 'forwardedAllowIps', file: 'forwarded_allow_ips', long: 'forwarded-allow-ips', meta: 'IPS', status: 'differs',
    note: 'also decides whether %(h)s is the first X-Forwarded-For address (gunicorn keeps the peer there)',
    help: 'peers whose X-Forwarded-For / secure scheme headers are trusted; "*" = all [$FORWARDED_ALLOW_IPS, else 127.0.0.1,::1]',
    dflt: (env) => addrList('FORWARDED_ALLOW_IPS', env.FORWARDED_ALLOW_IPS ?? '127.0.0.1,::1'), parse: addrList,
  },
  {
    key: 'wsgiApp', file: 'wsgi_app', help: 'the APP, when the command line names none (config file only)', status: 'works',
    dflt: () => undefined, parse: str,
  },
  ignored('pythonpath', 'pythonpath', 'str', 'Node resolves modules with NODE_PATH / node_modules'),
  ignored('paste', 'paste', 'str', 'PasteDeploy is Python', { aliases: ['paster'] }),
  ignored('raw_paste_global_conf', 'paste-global', 'list', 'PasteDeploy is Python'),
  {
    key: 'proxyProtocol', file: 'proxy_protocol', long: 'proxy-protocol', meta: '[off|v1|v2|auto]', status: 'works',
    bare: { value: 'auto', choices: ['off', 'v1', 'v2', 'auto'] },
    help: 'read a PROXY protocol header (v1 text, v2 binary, auto = either) before the request: its client address becomes the peer [off; bare flag = auto]',
    dflt: () => 'off',
    parse: (source, raw) => {
      if (raw === true || raw === false) return raw ? 'auto' : 'off';
      const v = String(raw).trim().toLowerCase();
      if (v === 'true') return 'auto';
      if (v === 'false') return 'off';
      if (v === 'off' || v === 'v1' || v === 'v2' || v === 'auto') return v;
      throw invalid(source, raw, 'expected off, v1, v2 or auto (or true/false)');
    },
  },
  {
    key: 'proxyAllowIps', file: 'proxy_allow_ips', long: 'proxy-allow-from', meta: 'IPS', status: 'works',
    help: 'peers whose PROXY header is accepted (others: 403); "*" = all [127.0.0.1,::1]',
    dflt: () => ['127.0.0.1', '::1'], parse: addrList,
  },
  ignored('protocol', 'protocol', 'str', 'HTTP only (no uwsgi protocol)'),
  ignored('uwsgi_allow_ips', 'uwsgi-allow-from', 'str', 'HTTP only (no uwsgi protocol)'),
  ignored('permit_obsolete_folding', 'permit-obsolete-folding', 'flag', 'Node\'s parser decides header folding'),
  ignored('strip_header_spaces', 'strip-header-spaces', 'flag', 'Node\'s parser decides header whitespace'),
  ignored('permit_unconventional_http_method', 'permit-unconventional-http-method', 'flag', 'Node\'s parser accepts only its known methods'),
  ignored('permit_unconventional_http_version', 'permit-unconventional-http-version', 'flag', 'Node\'s parser accepts HTTP/1.0 and 1.1'),
  ignored('casefold_http_method', 'casefold-http-method', 'flag', 'Node\'s parser decides method case'),
  ignored('forwarder_headers', 'forwarder-headers', 'str', 'no WSGI environ (SCRIPT_NAME / PATH_INFO)'),
  ignored('header_map', 'header-map', 'str', 'no WSGI environ: headers reach the app as sent'),
  ignored('tolerate_dangerous_framing', 'tolerate-dangerous-framing', 'flag', 'Node\'s parser rejects ambiguous framing'),
  ignored('root_path', 'root-path', 'str', 'no ASGI root_path'),
  // --- logging
  {
    key: 'accessLog', file: 'accesslog', long: 'access-logfile', meta: 'FILE', status: 'works',
    help: 'access log file ("-" = stdout); one line per request, reopened on SIGUSR1 [none]',
    dflt: () => undefined, parse: (s, r) => (str(s, r) === '-' ? '-' : resolve(r as string)),
  },
  ignored('disable_redirect_access_to_syslog', 'disable-redirect-access-to-syslog', 'flag', 'no syslog'),
  {
    key: 'accessLogFormat', file: 'access_log_format', long: 'access-logformat', meta: 'FORMAT', status: 'works',
    help: 'access log line: gunicorn\'s atoms h l u t r m U q H s B b f a T D M L p, %({header}i)s, %({header}o)s, %({var}e)s [gunicorn\'s]',
    dflt: () => DEFAULT_ACCESS_LOG_FORMAT, parse: str,
  },
  {
    key: 'errorLog', file: 'errorlog', long: 'error-logfile', aliases: ['log-file'], meta: 'FILE', status: 'works',
    help: 'log file ("-" = stderr); workers\' stderr goes there too; reopened on SIGUSR1 [-]', dflt: () => '-', parse: (s, r) => (str(s, r) === '-' ? '-' : resolve(r as string)),
  },
  { key: 'logLevel', file: 'loglevel', long: 'log-level', meta: 'LEVEL', status: 'works', help: 'debug | info | warning | error | critical [info]', dflt: () => 'info', parse: (s, r) => parseEnum(s, r, LOG_LEVELS) },
  {
    key: 'captureOutput', file: 'capture_output', long: 'capture-output', flag: true, status: 'differs',
    note: 'workers\' stderr always goes to --error-logfile; this adds their stdout',
    help: 'send the workers\' stdout to --error-logfile too', dflt: () => false, parse: bool,
  },
  ignored('logger_class', 'logger-class', 'str', 'Python logging classes'),
  ignored('logconfig', 'log-config', 'str', 'Python logging configuration'),
  ignored('logconfig_dict', undefined, 'dict', 'Python logging configuration'),
  ignored('logconfig_json', 'log-config-json', 'str', 'Python logging configuration'),
  ignored('syslog_addr', 'log-syslog-to', 'str', 'no syslog'),
  ignored('syslog', 'log-syslog', 'flag', 'no syslog'),
  ignored('syslog_prefix', 'log-syslog-prefix', 'str', 'no syslog'),
  ignored('syslog_facility', 'log-syslog-facility', 'str', 'no syslog'),
  ignored('enable_stdio_inheritance', 'enable-stdio-inheritance', 'flag', 'Node does not buffer stdio like Python', { short: 'R' }),
  ignored('statsd_host', 'statsd-host', 'str', 'metrics are served as Prometheus / OTLP, not StatsD'),
  ignored('dogstatsd_tags', 'dogstatsd-tags', 'str', 'metrics are served as Prometheus / OTLP, not StatsD'),
  ignored('statsd_prefix', 'statsd-prefix', 'str', 'metrics are served as Prometheus / OTLP, not StatsD'),
  ignored('enable_backlog_metric', 'enable-backlog-metric', 'flag', 'StatsD only'),
  // --- process naming
  { key: 'procName', file: 'proc_name', long: 'name', short: 'n', meta: 'NAME', status: 'works', help: 'process title suffix (prefork-otel: master [NAME])', dflt: () => undefined, parse: str },
  ignored('default_proc_name', undefined, 'str', 'the title is always prefork-otel: master / worker'),
  // --- SSL
  { key: 'keyfile', file: 'keyfile', long: 'keyfile', meta: 'FILE', status: 'works', help: 'TLS private key (PEM); with --certfile the app is served over HTTPS', dflt: () => undefined, parse: optFile },
  { key: 'certfile', file: 'certfile', long: 'certfile', meta: 'FILE', status: 'works', help: 'TLS certificate chain (PEM)', dflt: () => undefined, parse: optFile },
  ignored('ssl_version', 'ssl-version', 'str', 'deprecated in gunicorn; Node negotiates TLS 1.2/1.3'),
  {
    key: 'certReqs', file: 'cert_reqs', long: 'cert-reqs', meta: 'INT', status: 'works', help: 'client certificates: 0 none, 1 optional, 2 required (verified against --ca-certs) [0]',
    dflt: () => 0, parse: int(0, 2),
  },
  { key: 'caCerts', file: 'ca_certs', long: 'ca-certs', meta: 'FILE', status: 'works', help: 'CA certificates (PEM) that client certificates are verified against', dflt: () => undefined, parse: optFile },
  {
    key: 'suppressRaggedEofs', file: 'suppress_ragged_eofs', long: 'suppress-ragged-eofs', flag: true, status: 'differs', note: 'Node always treats a ragged EOF as the end of the connection',
    help: 'accepted (Node always tolerates a TLS EOF without close_notify) [true]', dflt: () => true, parse: bool,
  },
  {
    key: 'doHandshakeOnConnect', file: 'do_handshake_on_connect', long: 'do-handshake-on-connect', flag: true, status: 'differs', note: 'Node always starts the TLS handshake when the connection is accepted',
    help: 'accepted (Node handshakes as soon as a connection is served) [false]', dflt: () => false, parse: bool,
  },
  { key: 'ciphers', file: 'ciphers', long: 'ciphers', meta: 'CIPHERS', status: 'works', help: 'OpenSSL cipher list for TLS 1.2 (e.g. ECDHE+AESGCM) [Node\'s default]', dflt: () => undefined, parse: str },
  // --- HTTP/2
  ignored('http_protocols', 'http-protocols', 'str', 'HTTP/1.1 only'),
  ignored('http2_cleartext', 'http2-cleartext', 'str', 'HTTP/1.1 only'),
  ignored('http2_max_concurrent_streams', 'http2-max-concurrent-streams', 'int', 'HTTP/1.1 only'),
  ignored('http2_initial_window_size', 'http2-initial-window-size', 'int', 'HTTP/1.1 only'),
  ignored('http2_max_frame_size', 'http2-max-frame-size', 'int', 'HTTP/1.1 only'),
  ignored('http2_max_header_list_size', 'http2-max-header-list-size', 'int', 'HTTP/1.1 only'),
  // --- dirty arbiters, control socket (gunicorn 25+)
  ignored('dirty_apps', 'dirty-app', 'list', 'no dirty arbiters'),
  ignored('dirty_workers', 'dirty-workers', 'int', 'no dirty arbiters'),
  ignored('dirty_timeout', 'dirty-timeout', 'int', 'no dirty arbiters'),
  ignored('dirty_threads', 'dirty-threads', 'int', 'no dirty arbiters'),
  ignored('dirty_graceful_timeout', 'dirty-graceful-timeout', 'int', 'no dirty arbiters'),
  ignored('control_socket', 'control-socket', 'str', 'no control socket: use signals'),
  ignored('control_socket_mode', 'control-socket-mode', 'int', 'no control socket: use signals'),
  ignored('control_socket_disable', 'no-control-socket', 'flag', 'no control socket: use signals'),
  // --- hooks without a Node counterpart (the others are in config/hooks.ts)
  ignored('ssl_context', undefined, 'hook', 'TLS options come from --certfile / --keyfile / --ca-certs / --ciphers'),
  ...['on_dirty_starting', 'dirty_post_fork', 'dirty_worker_init', 'dirty_worker_exit'].map((h) => ignored(h, undefined, 'hook', 'no dirty arbiters')),
  // --- prefork-otel's own
  { key: 'metricsWebConfig', file: 'metrics_web_config', long: 'metrics-web-config', meta: 'FILE', status: 'works', help: 'TLS and basic auth for the metrics endpoint: a Prometheus web config file (docs/configuration.md) [PROMETHEUS_WEB_CONFIG_FILE]', dflt: () => undefined, parse: (s, r) => resolve(str(s, r)) },
  {
    key: 'hostMetrics', file: 'host_metrics', long: 'host-metrics', flag: true, status: 'works', note: 'prefork-otel only',
    help: 'serve OpenTelemetry\'s host metrics (system_*, process_*) from the master beside gunicorn_*; read at start, not on HUP [false, or PREFORK_OTEL_HOST_METRICS]',
    dflt: () => false, parse: bool,
  },
];

/** gunicorn's default access log format */
export const DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"';

/**
 * Settings only the command line takes (no RunnerSettings key); in a config file they warn.
 * `config` / `check_config` / `print_config` are gunicorn settings too (docs table).
 */
const CLI_ONLY = {
  config: { type: 'string', short: 'c' },
  'check-config': { type: 'boolean' },
  'print-config': { type: 'boolean' },
  version: { type: 'boolean', short: 'v' },
  help: { type: 'boolean', short: 'h' },
} as const;
const CLI_ONLY_FILE_KEYS = ['config', 'check_config', 'print_config'];

/** the flags of a setting, first the canonical one */
function longs(s: Setting): string[] {
  return s.long ? [s.long, ...(s.aliases ?? [])] : [];
}

function parseOptions() {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = { ...CLI_ONLY };
  for (const s of SETTINGS) {
    longs(s).forEach((l, i) => {
      options[l] = { type: s.flag ? 'boolean' : 'string', ...(s.short && i === 0 ? { short: s.short } : {}), ...(s.multiple ? { multiple: true } : {}) };
    });
  }
  return options;
}

/** the one warning of a setting without a meaning in Node */
function ignoredWarning(s: Setting, where: string): string {
  return `${where} has no effect in prefork-otel (${s.note}); ignored`;
}

/** util.parseArgs errors → one line with the flag and what is allowed. */
function parseCommandLine(args: string[], what: string): { values: Record<string, string | string[] | boolean | undefined>; positionals: string[] } {
  const options = parseOptions();
  try {
    return parseArgs({ args: joinNegativeValues(args, options), options, allowPositionals: true, strict: true }) as never;
  } catch (e) {
    const err = e as Error & { code?: string };
    const m = /'([^']+)'/.exec(err.message);
    if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new ConfigError(`prefork-otel: unknown option ${m?.[1] ?? ''} in ${what} (see prefork-otel --help)`);
    if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      if (/ does not take an argument/.test(err.message)) throw new ConfigError(`prefork-otel: option ${m?.[1] ?? ''} in ${what} takes no value (see prefork-otel --help)`);
      throw new ConfigError(`prefork-otel: option ${m?.[1] ?? ''} in ${what} needs a value (see prefork-otel --help)`);
    }
    throw new ConfigError(`prefork-otel: ${err.message.split('\n')[0]} (in ${what})`);
  }
}

/**
 * `-w -1`, `--timeout -5`: a value that looks like a negative number is the option's value (as
 * gunicorn's argparse takes it), so the validator can say "must be ≥ 1" instead of "needs a value".
 */
const BARE = new Map(SETTINGS.flatMap((s) => (s.bare ? longs(s).map((l) => [l, s.bare!] as const) : [])));

function joinNegativeValues(args: string[], options: ReturnType<typeof parseOptions>): string[] {
  const byShort = new Map(Object.entries(options).filter(([, o]) => o.short).map(([l, o]) => [o.short!, l]));
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const next = args[i + 1];
    const long = a.startsWith('--') ? a.slice(2) : /^-[A-Za-z]$/.test(a) ? byShort.get(a.slice(1)) : undefined;
    const bare = long && !a.includes('=') ? BARE.get(long) : undefined;
    if (bare) {
      // nargs='?': `--proxy-protocol v2` takes the word, a bare `--proxy-protocol` is its const
      if (next !== undefined && bare.choices.includes(next)) { out.push(`--${long}=${next}`); i++; } else out.push(`--${long}=${bare.value}`);
    } else if (long && !a.includes('=') && options[long]?.type === 'string' && next !== undefined && /^-\d/.test(next)) {
      out.push(`--${long}=${next}`);
      i++;
    } else {
      out.push(a);
      if (a === '--') { out.push(...args.slice(i + 1)); break; }
    }
  }
  return out;
}

/**
 * GUNICORN_CMD_ARGS → arguments, with POSIX shell quoting (gunicorn uses shlex.split): quotes,
 * backslashes; no variable expansion, no globbing. An unclosed quote or a shell operator is an error.
 */
export function splitCommandArgs(text: string): string[] {
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote === "'") { if (c === "'") quote = undefined; continue; }
    if (c === '\\') { i++; continue; }
    if (quote === '"') { if (c === '"') quote = undefined; continue; }
    if (c === '"' || c === "'") quote = c;
  }
  if (quote) throw invalid('GUNICORN_CMD_ARGS', text, `unclosed ${quote} quote (quote values as in a shell: --name "my app")`);
  const out: string[] = [];
  for (const t of shellParse(text, (name) => `$${name}`)) {
    if (typeof t === 'string') out.push(t);
    else if ('op' in t && t.op === 'glob') out.push((t as { pattern: string }).pattern);
    else throw invalid('GUNICORN_CMD_ARGS', text, `shell operator ${JSON.stringify('op' in t ? t.op : '#')} is not allowed (quote it)`);
  }
  return out;
}

/** The APP argument → absolute module path, export name, factory call. */
export function parseAppSpec(raw: string, cwd = process.cwd()): AppSpec {
  // `file.js:name` / `file.js:name()`; a Windows drive letter's colon is not a separator
  const m = /^(.+?)(?::([A-Za-z_$][\w$]*)(\(\))?)?$/.exec(raw);
  if (!m || m[1] === undefined) throw invalid('APP', raw, 'expected MODULE[:EXPORT] or MODULE:FACTORY() (e.g. app.js, app.mjs:app, app.js:createApp())');
  const path = isAbsolute(m[1]) ? m[1] : resolve(cwd, m[1]);
  if (!existsSync(path) || !statSync(path).isFile()) {
    // exit 3: gunicorn's WORKER_BOOT_ERROR, what gunicorn exits with for a module it cannot import
    throw new ConfigError(`prefork-otel: APP module not found: ${JSON.stringify(m[1])} (looked for ${path}): expected a .js, .cjs or .mjs file`, 3);
  }
  return { raw, path, exportName: m[2], call: m[3] !== undefined };
}

/** A config file's values (JSON, CommonJS or ES module; gunicorn's keys; hooks as functions). */
export async function readConfigFile(file: string, cwd = process.cwd()): Promise<Record<string, unknown>> {
  const path = resolve(cwd, file);
  if (!existsSync(path) || !statSync(path).isFile()) throw new ConfigError(`prefork-otel: config file not found: ${JSON.stringify(file)} (-c/--config expects a .js, .cjs, .mjs or .json file)`);
  let mod: unknown;
  try {
    if (path.endsWith('.json')) {
      mod = createRequire(path)(path);
    } else {
      // import() loads CommonJS and ES modules alike (kept out of TypeScript's CommonJS rewrite)
      const ns = await dynamicImport(pathToFileURL(path).href) as Record<string, unknown>;
      mod = ns.default !== undefined && Object.keys(ns).every((k) => k === 'default' || k === 'module.exports') ? ns.default : { ...(ns.default as Record<string, unknown> | undefined), ...ns };
    }
  } catch (e) {
    throw new ConfigError(`prefork-otel: cannot load config file ${JSON.stringify(file)}: ${((e as Error).message ?? String(e)).split('\n')[0]}`);
  }
  if (!mod || typeof mod !== 'object') throw new ConfigError(`prefork-otel: config file ${JSON.stringify(file)} must export an object of settings (gunicorn names, e.g. { workers: 4, bind: '0.0.0.0:8000' })`);
  const out = { ...(mod as Record<string, unknown>) };
  delete out.default;
  delete out['module.exports'];
  return out;
}


function defaults(env: Env): RunnerSettings {
  const out = {} as Record<string, unknown>;
  for (const s of SETTINGS) if (s.key) out[s.key] = s.dflt!(env);
  out.userName = undefined;
  out.userGid = undefined;
  return out as unknown as RunnerSettings;
}

/** one value of one setting into `target` (an ignored setting: validated, then one warning) */
function applyOne(target: RunnerSettings, s: Setting, source: string, raw: unknown, warnings: string[], where: string): void {
  if (!s.key) {
    s.parse(source, raw, undefined as never);
    const w = ignoredWarning(s, where);
    if (!warnings.includes(w)) warnings.push(w);
    return;
  }
  (target as unknown as Record<string, unknown>)[s.key] = s.parse(source, raw, target[s.key] as never);
  if (s.key === 'user') {
    const u = lookupUser(source, raw);
    target.userName = u.name;
    target.userGid = u.gid;
  }
}

function applyValues(target: RunnerSettings, values: Record<string, unknown>, suffix: string, warnings: string[]): void {
  for (const s of SETTINGS) {
    for (const l of longs(s)) {
      const v = values[l];
      if (v === undefined) continue;
      applyOne(target, s, `--${l}${suffix}`, v, warnings, `--${l}${suffix}`);
    }
  }
}

/** Config-file keys → settings and hooks; unknown keys are errors, gunicorn keys without a Node meaning warnings. */
function applyFile(target: RunnerSettings, file: string, values: Record<string, unknown>, warnings: string[]): RawHooks {
  const hooks: RawHooks = {};
  const byFile = new Map(SETTINGS.map((s) => [s.file, s]));
  for (const [key, v] of Object.entries(values)) {
    if ((HOOK_NAMES as readonly string[]).includes(key)) {
      if (typeof v !== 'function') throw invalid(`${key} (in ${file})`, typeof v, 'expected a function (a server hook)');
      (hooks as Record<string, unknown>)[key] = v;
      continue;
    }
    const s = byFile.get(key);
    if (s) {
      applyOne(target, s, `${key} (in ${file})`, v, warnings, `config file ${file}: ${key}`);
    } else if (CLI_ONLY_FILE_KEYS.includes(key)) {
      warnings.push(`config file ${file}: ${key} has no effect in a config file (use --${key.replace(/_/g, '-')} on the command line); ignored`);
    } else {
      throw new ConfigError(`prefork-otel: unknown setting ${JSON.stringify(key)} in config file ${file}: expected one of ${SETTINGS.filter((x) => x.key).map((x) => x.file).join(', ')}, another gunicorn setting (docs/runner.md) or a hook (${HOOK_NAMES.join(', ')})`);
    }
  }
  return hooks;
}

/**
 * The command line (+ environment, + the -c file) → what to do. Throws ConfigError (one line) on
 * any bad flag, value, file or missing APP.
 */
export async function loadRunnerConfig(argv: string[], env: Env = process.env, cwd = process.cwd()): Promise<CliRequest> {
  const cli = parseCommandLine(argv, 'the command line');
  if (cli.values.help) return { kind: 'help' };
  if (cli.values.version) return { kind: 'version' };
  const envArgs = env.GUNICORN_CMD_ARGS?.trim() ? parseCommandLine(splitCommandArgs(env.GUNICORN_CMD_ARGS), 'GUNICORN_CMD_ARGS') : undefined;
  if (envArgs && envArgs.positionals.length > 0) throw invalid('GUNICORN_CMD_ARGS', env.GUNICORN_CMD_ARGS, 'expected options only (no APP)');

  const warnings: string[] = [];
  const settings = defaults(env);
  const configFileArg = (cli.values.config ?? envArgs?.values.config) as string | undefined;
  let hooks: RawHooks = {};
  let configFile: string | undefined;
  if (configFileArg !== undefined) {
    configFile = resolve(cwd, configFileArg);
    hooks = applyFile(settings, configFileArg, await readConfigFile(configFileArg, cwd), warnings);
  }
  // environment: GUNICORN_WORKERS / WEB_CONCURRENCY, then GUNICORN_CMD_ARGS (gunicorn's own env layer)
  if (env.GUNICORN_WORKERS || env.WEB_CONCURRENCY) settings.workers = defaultWorkers(env);
  if (envArgs) applyValues(settings, envArgs.values, ' (in GUNICORN_CMD_ARGS)', warnings);
  applyValues(settings, cli.values, '', warnings);
  // gunicorn: the sync worker with more than one thread is the gthread worker
  if (settings.workerClass === 'sync' && settings.threads > 1) settings.workerClass = 'gthread';
  if ((settings.certfile === undefined) !== (settings.keyfile === undefined)) {
    throw new ConfigError(`prefork-otel: --certfile and --keyfile go together (got only ${settings.certfile ? '--certfile' : '--keyfile'}): HTTPS needs both`);
  }
  if (settings.certReqs > 0 && !settings.certfile) throw invalid('--cert-reqs', settings.certReqs, 'client certificates need HTTPS (--certfile and --keyfile)');

  if (cli.positionals.length > 1) throw invalid('APP', cli.positionals.join(' '), 'expected exactly one APP (options go before or after it; see --help)');
  const rawApp = cli.positionals[0] ?? settings.wsgiApp;
  if (rawApp === undefined) throw new ConfigError('prefork-otel: missing APP: usage: prefork-otel [OPTIONS] APP (a module exporting a request listener, an Express/Koa/Fastify app or a factory; see --help)');
  const app = parseAppSpec(rawApp, settings.chdir ?? cwd);

  return {
    kind: 'run',
    warnings,
    config: { ...settings, app, configFile, hooks, checkConfig: !!(cli.values['check-config'] ?? envArgs?.values['check-config']), printConfig: !!(cli.values['print-config'] ?? envArgs?.values['print-config']) },
  };
}

/** The --help text, generated from SETTINGS. */
export function helpText(version: string): string {
  const lines = [
    `prefork-otel ${version}: a gunicorn-style pre-fork runner for Node HTTP apps, with gunicorn_worker_* / gunicorn_master_* metrics`,
    '',
    'usage: prefork-otel [OPTIONS] APP',
    '       prefork-otel exporter [OPTIONS]     serve the union of PROMETHEUS_MULTIPROC_DIR (see docs)',
    '',
    'APP: MODULE[:EXPORT] or MODULE:FACTORY() — a module exporting a (req, res) listener, an Express app,',
    '     a Koa app (or app.callback()), a Fastify instance, an http.Server, or a factory of one; or a script',
    '     that calls listen() itself (the runner\'s --bind is used instead). CommonJS or ES module.',
    '',
    'options:',
    '  -c, --config FILE              settings and hooks (.js, .cjs, .mjs, .json; gunicorn key names)',
  ];
  const flagOf = (s: Setting) => `${s.short ? `-${s.short}, ` : '    '}--${s.long}${s.flag ? '' : ` ${s.meta ?? 'VALUE'}`}`;
  for (const s of SETTINGS) {
    if (!s.key || !s.long) continue;
    lines.push(`  ${flagOf(s).padEnd(30)} ${s.help}`);
  }
  lines.push(
    '      --log-file FILE            same as --error-logfile',
    '      --check-config             validate the configuration, load the app once, and exit',
    '      --print-config             print the resolved configuration as JSON and exit',
    '  -v, --version                  print the version and exit',
    '  -h, --help                     print this help and exit',
    '',
    'accepted for gunicorn compatibility, no effect in Node (one warning each; docs/runner.md says why):',
  );
  let row = ' ';
  for (const s of SETTINGS) {
    if (s.key || !s.long) continue;
    const f = ` --${s.long}`;
    if (row.length + f.length > 110) { lines.push(row); row = ' '; }
    row += f;
  }
  lines.push(
    row,
    '',
    'signals (master): HUP reload workers, TTIN +1 worker, TTOU -1 worker, TERM graceful stop, INT/QUIT fast stop,',
    '                  USR1 reopen log files, USR2 upgrade (re-exec), WINCH ignored (as gunicorn, not daemonized)',
    'metrics: http://$PROMETHEUS_BIND_ADDRESS:$PROMETHEUS_METRICS_PORT/metrics (default 0.0.0.0:9091), all workers aggregated',
    'environment: GUNICORN_CMD_ARGS, GUNICORN_WORKERS, WEB_CONCURRENCY, PORT, FORWARDED_ALLOW_IPS, and the exporter variables (docs/configuration.md)',
    'docs: docs/runner.md',
  );
  return lines.join('\n') + '\n';
}

/** The settings as JSON (for --print-config and the workers' boot message); hooks by name only. */
export function describeConfig(c: RunnerConfig): Record<string, unknown> {
  const { hooks, ...rest } = c;
  return { ...rest, hooks: Object.keys(hooks) };
}

/** Every gunicorn setting with its status, for docs/runner.md's flag table (scripts and the test use it). */
export function settingsTable(): Array<{ file: string; flags: string[]; status: SettingStatus; note: string | undefined }> {
  return SETTINGS.map((s) => ({
    file: s.file,
    flags: [...(s.short ? [`-${s.short}`] : []), ...longs(s).map((l) => `--${l}`)],
    status: s.status,
    note: s.note,
  }));
}

/**
 * What a worker needs beyond its WorkerBoot to serve like gunicorn: access log, TLS, request
 * limits, privileges. The runner's entry point puts it in the environment (SERVE_ENV) before the
 * master forks; workers/app.ts reads it (threads inherit it too).
 */
export interface ServeSettings extends Pick<RunnerSettings,
  'accessLog' | 'accessLogFormat' | 'forwardedAllowIps' | 'secureSchemeHeaders' | 'limitRequestLine' | 'limitRequestFields'
  | 'limitRequestFieldSize' | 'user' | 'group' | 'userName' | 'initgroups' | 'umask' | 'proxyProtocol' | 'proxyAllowIps'> {
  /** --certfile and --keyfile both given: HTTPS */
  tls: { certfile: string; keyfile: string; caCerts: string | undefined; certReqs: number; ciphers: string | undefined } | undefined;
  /** the ports of the TCP --bind addresses: a listen() asking for one of them is the app's (workers/app.ts) */
  bindPorts: number[];
}

export function serveSettings(c: RunnerSettings): ServeSettings {
  return {
    accessLog: c.accessLog, accessLogFormat: c.accessLogFormat, forwardedAllowIps: c.forwardedAllowIps, secureSchemeHeaders: c.secureSchemeHeaders,
    tls: c.certfile && c.keyfile ? { certfile: c.certfile, keyfile: c.keyfile, caCerts: c.caCerts, certReqs: c.certReqs, ciphers: c.ciphers } : undefined,
    limitRequestLine: c.limitRequestLine, limitRequestFields: c.limitRequestFields, limitRequestFieldSize: c.limitRequestFieldSize,
    // --user without --group: the user's primary group (gunicorn would keep the master's, often root's)
    user: c.user, group: c.group ?? (c.user !== undefined ? c.userGid : undefined), userName: c.userName, initgroups: c.initgroups, umask: c.umask,
    proxyProtocol: c.proxyProtocol, proxyAllowIps: c.proxyAllowIps,
    bindPorts: c.bind.flatMap((b) => (b.kind === 'tcp' ? [b.port] : [])),
  };
}
