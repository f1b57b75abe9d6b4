/**
 * The metrics endpoint's web configuration, the Prometheus way: exporter-toolkit's YAML file
 * (`PROMETHEUS_WEB_CONFIG_FILE`, the runner's `--metrics-web-config`) and upstream
 * gunicorn-prometheus-exporter's `PROMETHEUS_SSL_*` variables, validated into one WebConfig.
 *
 * Kept apart from loadConfig because it reads files (only the process that serves the endpoint
 * reads them, never the workers). The `yaml` package is loaded only when a file is parsed: it costs
 * ~9 MB of RSS, which every worker would pay otherwise. Every error is one ConfigError line naming the file, the key, the
 * value and what is allowed (exit 2).
 */
import type { SecureContextOptions } from 'node:tls';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import type { Node as YamlNode } from 'yaml';
import { ConfigError } from './errors';

export const CLIENT_AUTH_TYPES = [
  'NoClientCert', 'RequestClientCert', 'RequireAnyClientCert', 'VerifyClientCertIfGiven', 'RequireAndVerifyClientCert',
] as const;
export type ClientAuthType = (typeof CLIENT_AUTH_TYPES)[number];

/** exporter-toolkit's version names → Node's */
const TLS_VERSIONS = { TLS10: 'TLSv1', TLS11: 'TLSv1.1', TLS12: 'TLSv1.2', TLS13: 'TLSv1.3' } as const;
type NodeTlsVersion = (typeof TLS_VERSIONS)[keyof typeof TLS_VERSIONS];

/** Go's crypto/tls cipher suite names (those `tls.CipherSuites()` returns for TLS ≤ 1.2) → OpenSSL's. */
const CIPHERS: Record<string, string> = {
  TLS_RSA_WITH_AES_128_CBC_SHA: 'AES128-SHA',
  TLS_RSA_WITH_AES_256_CBC_SHA: 'AES256-SHA',
  TLS_RSA_WITH_AES_128_GCM_SHA256: 'AES128-GCM-SHA256',
  TLS_RSA_WITH_AES_256_GCM_SHA384: 'AES256-GCM-SHA384',
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA: 'ECDHE-ECDSA-AES128-SHA',
  TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA: 'ECDHE-ECDSA-AES256-SHA',
  TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA: 'ECDHE-RSA-AES128-SHA',
  TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA: 'ECDHE-RSA-AES256-SHA',
  TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: 'ECDHE-ECDSA-AES128-GCM-SHA256',
  TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: 'ECDHE-ECDSA-AES256-GCM-SHA384',
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: 'ECDHE-RSA-AES128-GCM-SHA256',
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: 'ECDHE-RSA-AES256-GCM-SHA384',
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: 'ECDHE-ECDSA-CHACHA20-POLY1305',
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: 'ECDHE-RSA-CHACHA20-POLY1305',
};

/** Go's curve names → OpenSSL's */
const CURVES: Record<string, string> = { CurveP256: 'prime256v1', CurveP384: 'secp384r1', CurveP521: 'secp521r1', X25519: 'X25519' };

/** The response headers exporter-toolkit lets `http_server_config.headers` set, with their allowed values. */
const HEADERS: Record<string, readonly string[] | undefined> = {
  'Content-Security-Policy': undefined,
  'X-Frame-Options': ['deny', 'sameorigin'],
  'X-Content-Type-Options': ['nosniff'],
  'X-XSS-Protection': undefined,
  'Strict-Transport-Security': undefined,
};

/** A bcrypt hash as htpasswd -B, Go's bcrypt and bcryptjs write it. */
const BCRYPT = /^\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}$/;

export interface WebTls {
  /** PEM files (absolute) or inline PEM text; a file is re-read when it changes */
  cert: { file: string } | { pem: string };
  key: { file: string } | { pem: string };
  /** CA certificates for client certificates: files (PROMETHEUS_SSL_CLIENT_CAPATH: every file of a directory) or inline */
  clientCa: Array<{ file: string } | { pem: string }>;
  clientAuthType: ClientAuthType;
  minVersion: NodeTlsVersion;
  maxVersion: NodeTlsVersion;
  /** OpenSSL cipher list for TLS ≤ 1.2 (undefined: Node's default) */
  ciphers: string | undefined;
  /** server's cipher order (prefer_server_cipher_suites, default true) */
  honorCipherOrder: boolean;
  /** OpenSSL curve list (undefined: Node's default) */
  ecdhCurve: string | undefined;
  /** client_allowed_sans: a client certificate must carry one of these SANs exactly */
  clientAllowedSans: string[] | undefined;
}

export interface WebRateLimit { intervalMs: number; burst: number }

export interface WebConfig {
  /** where it came from, for log lines: `web config /path` or `PROMETHEUS_SSL_*` */
  origin: string;
  tls: WebTls | undefined;
  /** basic_auth_users: user → bcrypt hash; empty: no authentication */
  users: ReadonlyMap<string, string>;
  /** http_server_config.headers */
  headers: Readonly<Record<string, string>>;
  rateLimit: WebRateLimit | undefined;
  /** the files whose change means: load everything again (the YAML file, certificate, key, CAs) */
  files: string[];
}

/** The settings that say where the web configuration comes from (fields of ExporterConfig). */
export interface WebSources {
  /** PROMETHEUS_WEB_CONFIG_FILE, or the runner's --metrics-web-config */
  webConfigFile: string | undefined;
  /** PROMETHEUS_SSL_CERTFILE */
  sslCertFile: string | undefined;
  /** PROMETHEUS_SSL_KEYFILE */
  sslKeyFile: string | undefined;
  /** PROMETHEUS_SSL_CLIENT_CAFILE */
  sslClientCaFile: string | undefined;
  /** PROMETHEUS_SSL_CLIENT_CAPATH */
  sslClientCaPath: string | undefined;
  /** PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED */
  sslClientAuthRequired: boolean;
  /** PREFORK_OTEL_METRICS_MAX_CONNECTIONS: open connections the metrics server holds at most */
  metricsMaxConnections?: number;
}

/** default of PREFORK_OTEL_METRICS_MAX_CONNECTIONS */
export const METRICS_MAX_CONNECTIONS = 64;

/** Is any of the web settings set? (nothing set: plain HTTP, no authentication, no file is read) */
export function hasWebConfig(s: WebSources): boolean {
  return Boolean(s.webConfigFile || s.sslCertFile || s.sslKeyFile || s.sslClientCaFile || s.sslClientAuthRequired || s.sslClientCaPath);
}

class Ctx {
  constructor(readonly origin: string, readonly dir: string) {}
  bad(key: string, value: unknown, allowed: string): ConfigError {
    const v = typeof value === 'string' ? value : JSON.stringify(value) ?? String(value);
    return new ConfigError(`prefork-otel: invalid ${this.origin}: ${key}=${JSON.stringify(v)}: ${allowed}`);
  }
  path(p: string): string {
    return isAbsolute(p) ? p : resolve(this.dir, p);
  }
}

function readText(origin: string, what: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`prefork-otel: invalid ${origin}: ${what}=${JSON.stringify(file)}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): expected a readable file`);
  }
}

type Plain = null | boolean | number | string | Plain[] | { [k: string]: Plain };

/** a YAML mapping with only `allowed` keys (exporter-toolkit reads strictly: an unknown key is an error) */
function mapping(ctx: Ctx, key: string, v: Plain | undefined, allowed: readonly string[] | undefined): Record<string, Plain> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw ctx.bad(key || '(top level)', v, 'expected a mapping');
  if (allowed) {
    for (const k of Object.keys(v)) {
      if (!allowed.includes(k)) {
        throw new ConfigError(`prefork-otel: invalid ${ctx.origin}: unknown key ${JSON.stringify(key ? `${key}.${k}` : k)}: expected one of ${allowed.join(', ')}${key ? ` under ${key}` : ''}`);
      }
    }
  }
  return v;
}

function string(ctx: Ctx, key: string, v: Plain | undefined): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw ctx.bad(key, v, 'expected a string');
  return v;
}

function strings(ctx: Ctx, key: string, v: Plain | undefined): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw ctx.bad(key, v, 'expected a list of strings');
  return v as string[];
}

function oneOf<T extends string>(ctx: Ctx, key: string, v: Plain | undefined, allowed: readonly T[], dflt: T): T {
  const s = string(ctx, key, v);
  if (s === undefined) return dflt;
  if (!(allowed as readonly string[]).includes(s)) throw ctx.bad(key, s, `expected one of ${allowed.join(', ')}`);
  return s as T;
}

/** Go's time.ParseDuration subset: 500ms, 1s, 1m30s, 0 */
function duration(ctx: Ctx, key: string, v: Plain | undefined): number {
  const s = typeof v === 'number' && v === 0 ? '0' : string(ctx, key, v) ?? '0';
  if (s === '0') return 0;
  const units: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let ms = 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  let m: RegExpExecArray | null;
  let at = 0;
  while ((m = re.exec(s)) !== null) {
    ms += Number(m[1]) * units[m[2]!]!;
    at = re.lastIndex;
  }
  if (at !== s.length || at === 0) throw ctx.bad(key, s, 'expected a duration such as 500ms, 1s or 1m');
  return ms;
}

function pemSource(ctx: Ctx, tls: Record<string, Plain>, fileKey: string, inlineKey: string): { file: string } | { pem: string } | undefined {
  const file = string(ctx, `tls_server_config.${fileKey}`, tls[fileKey]);
  const pem = string(ctx, `tls_server_config.${inlineKey}`, tls[inlineKey]);
  if (file !== undefined && pem !== undefined) {
    throw ctx.bad(`tls_server_config.${inlineKey}`, '(inline PEM)', `set either ${fileKey} or ${inlineKey}, not both`);
  }
  if (file !== undefined) return { file: ctx.path(file) };
  return pem !== undefined ? { pem } : undefined;
}

function parseTls(ctx: Ctx, raw: Plain | undefined): WebTls | undefined {
  if (raw === undefined || raw === null) return undefined;
  const t = mapping(ctx, 'tls_server_config', raw, [
    'cert', 'key', 'client_ca', 'cert_file', 'key_file', 'client_auth_type', 'client_ca_file', 'client_allowed_sans',
    'min_version', 'max_version', 'cipher_suites', 'prefer_server_cipher_suites', 'curve_preferences',
  ]);
  const cert = pemSource(ctx, t, 'cert_file', 'cert');
  const key = pemSource(ctx, t, 'key_file', 'key');
  if (!cert) throw ctx.bad('tls_server_config.cert_file', '', 'missing: tls_server_config needs cert_file (or cert)');
  if (!key) throw ctx.bad('tls_server_config.key_file', '', 'missing: tls_server_config needs key_file (or key)');
  const clientCa = pemSource(ctx, t, 'client_ca_file', 'client_ca');
  const clientAuthType = oneOf(ctx, 'tls_server_config.client_auth_type', t.client_auth_type === 'RequireClientCert' ? 'RequireAnyClientCert' : t.client_auth_type, CLIENT_AUTH_TYPES, 'NoClientCert');
  if (clientCa && clientAuthType === 'NoClientCert') {
    throw ctx.bad('tls_server_config.client_auth_type', 'NoClientCert', 'client_ca_file is set without a client auth policy: set client_auth_type (RequireAndVerifyClientCert to require verified client certificates)');
  }
  if (!clientCa && (clientAuthType === 'RequireAndVerifyClientCert' || clientAuthType === 'VerifyClientCertIfGiven')) {
    throw ctx.bad('tls_server_config.client_auth_type', clientAuthType, 'verifying client certificates needs client_ca_file (or client_ca)');
  }
  const versions = Object.keys(TLS_VERSIONS) as Array<keyof typeof TLS_VERSIONS>;
  const min = oneOf(ctx, 'tls_server_config.min_version', t.min_version, versions, 'TLS12');
  const max = oneOf(ctx, 'tls_server_config.max_version', t.max_version, versions, 'TLS13');
  if (versions.indexOf(max) < versions.indexOf(min)) throw ctx.bad('tls_server_config.max_version', max, `expected a version at or above min_version ${min}`);
  const suites = strings(ctx, 'tls_server_config.cipher_suites', t.cipher_suites);
  const ciphers = suites?.map((s) => {
    const o = CIPHERS[s];
    if (!o) throw ctx.bad('tls_server_config.cipher_suites', s, `expected Go cipher suite names: ${Object.keys(CIPHERS).join(', ')}`);
    return o;
  });
  const curves = strings(ctx, 'tls_server_config.curve_preferences', t.curve_preferences)?.map((c) => {
    const o = CURVES[c];
    if (!o) throw ctx.bad('tls_server_config.curve_preferences', c, `expected one of ${Object.keys(CURVES).join(', ')}`);
    return o;
  });
  const prefer = t.prefer_server_cipher_suites;
  if (prefer !== undefined && prefer !== null && typeof prefer !== 'boolean') throw ctx.bad('tls_server_config.prefer_server_cipher_suites', prefer, 'expected true or false');
  return {
    cert, key, clientCa: clientCa ? [clientCa] : [], clientAuthType,
    minVersion: TLS_VERSIONS[min], maxVersion: TLS_VERSIONS[max],
    ciphers: ciphers && ciphers.length ? ciphers.join(':') : undefined,
    honorCipherOrder: prefer === undefined || prefer === null ? true : prefer,
    ecdhCurve: curves && curves.length ? curves.join(':') : undefined,
    clientAllowedSans: strings(ctx, 'tls_server_config.client_allowed_sans', t.client_allowed_sans),
  };
}

function parseUsers(ctx: Ctx, raw: Plain | undefined): Map<string, string> {
  const users = new Map<string, string>();
  for (const [user, hash] of Object.entries(mapping(ctx, 'basic_auth_users', raw, undefined))) {
    if (typeof hash !== 'string' || !BCRYPT.test(hash)) {
      throw ctx.bad(`basic_auth_users.${user}`, typeof hash === 'string' ? hash : String(hash), 'expected a bcrypt hash ($2y$10$ followed by 53 characters, e.g. from `htpasswd -nBC 10 "" | tr -d \':\\n\'`)');
    }
    const cost = Number(BCRYPT.exec(hash)![1]);
    if (cost < 4 || cost > 31) throw ctx.bad(`basic_auth_users.${user}`, hash, 'expected a bcrypt cost from 04 to 31');
    if (user.includes(':')) throw ctx.bad('basic_auth_users', user, 'a user name cannot contain ":" (basic auth separates user and password with it)');
    users.set(user, hash);
  }
  return users;
}

function parseHttp(ctx: Ctx, raw: Plain | undefined): Record<string, string> {
  const http = mapping(ctx, 'http_server_config', raw, ['http2', 'headers']);
  if (http.http2 !== undefined && http.http2 !== null && typeof http.http2 !== 'boolean') throw ctx.bad('http_server_config.http2', http.http2, 'expected true or false');
  const headers: Record<string, string> = {};
  for (const [name, v] of Object.entries(mapping(ctx, 'http_server_config.headers', http.headers, Object.keys(HEADERS)))) {
    const s = string(ctx, `http_server_config.headers.${name}`, v);
    if (s === undefined) continue;
    const allowed = HEADERS[name];
    if (allowed && !allowed.includes(s.toLowerCase())) throw ctx.bad(`http_server_config.headers.${name}`, s, `expected one of ${allowed.join(', ')}`);
    headers[name] = s;
  }
  return headers;
}

function parseRateLimit(ctx: Ctx, raw: Plain | undefined): WebRateLimit | undefined {
  if (raw === undefined || raw === null) return undefined;
  const r = mapping(ctx, 'rate_limit', raw, ['interval', 'burst']);
  const intervalMs = duration(ctx, 'rate_limit.interval', r.interval);
  const burst = r.burst ?? 0;
  if (typeof burst !== 'number' || !Number.isInteger(burst) || burst < 0) throw ctx.bad('rate_limit.burst', burst, 'expected an integer ≥ 0');
  if (intervalMs === 0) return undefined;
  if (burst < 1) throw ctx.bad('rate_limit.burst', burst, 'expected an integer ≥ 1 when rate_limit.interval is set');
  return { intervalMs, burst };
}

/** Parse exporter-toolkit's YAML text (`file` for messages and relative paths). */
export function parseWebConfigText(text: string, file: string): WebConfig {
  const ctx = new Ctx(`web config ${file}`, dirname(file));
  const doc = yaml().parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const at = e.linePos?.[0] ? ` at line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '';
    throw new ConfigError(`prefork-otel: invalid ${ctx.origin}: not valid YAML${at}: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`);
  }
  checkScalarKeys(ctx, doc.contents);
  const top = mapping(ctx, '', (doc.toJS() ?? null) as Plain, ['tls_server_config', 'http_server_config', 'basic_auth_users', 'rate_limit']);
  const tls = parseTls(ctx, top.tls_server_config);
  return {
    origin: ctx.origin,
    tls,
    users: parseUsers(ctx, top.basic_auth_users),
    headers: parseHttp(ctx, top.http_server_config),
    rateLimit: parseRateLimit(ctx, top.rate_limit),
    files: [file, ...(tls ? tlsFiles(tls) : [])],
  };
}

/** the `yaml` package, loaded at the first parse */
const yaml = (): typeof import('yaml') => require('yaml') as typeof import('yaml');

/** map keys must be plain strings (a YAML `? [a]: b` would otherwise become "a") */
function checkScalarKeys(ctx: Ctx, node: YamlNode | null | undefined): void {
  const { isMap, isScalar, isSeq } = yaml();
  if (isMap(node)) {
    for (const pair of node.items) {
      if (!isScalar(pair.key) || typeof pair.key.value !== 'string') throw ctx.bad('(key)', String(pair.key), 'expected plain string keys');
      checkScalarKeys(ctx, pair.value as YamlNode);
    }
  } else if (isSeq(node)) {
    for (const item of node.items) checkScalarKeys(ctx, item as YamlNode);
  }
}

function tlsFiles(tls: WebTls): string[] {
  return [tls.cert, tls.key, ...tls.clientCa].flatMap((s) => ('file' in s ? [s.file] : []));
}

/** PROMETHEUS_SSL_* (upstream gunicorn-prometheus-exporter's variables, as prometheus_client uses them) */
function fromSslEnv(s: WebSources): WebTls | undefined {
  const ctx = new Ctx('PROMETHEUS_SSL_* settings', process.cwd());
  const anySet = s.sslCertFile || s.sslKeyFile || s.sslClientCaFile || s.sslClientCaPath || s.sslClientAuthRequired;
  if (!anySet) return undefined;
  if (!s.sslCertFile || !s.sslKeyFile) {
    const missing = !s.sslCertFile ? 'PROMETHEUS_SSL_CERTFILE' : 'PROMETHEUS_SSL_KEYFILE';
    throw new ConfigError(`prefork-otel: invalid PROMETHEUS_SSL_* settings: ${missing} is not set: serving TLS needs both PROMETHEUS_SSL_CERTFILE and PROMETHEUS_SSL_KEYFILE`);
  }
  const clientCa: Array<{ file: string }> = [];
  if (s.sslClientCaFile) clientCa.push({ file: ctx.path(s.sslClientCaFile) });
  if (s.sslClientCaPath) {
    let names: string[];
    try {
      names = readdirSync(s.sslClientCaPath).filter((n) => /\.(pem|crt|cer|\d+)$/.test(n)).sort();
    } catch (e) {
      throw ctx.bad('PROMETHEUS_SSL_CLIENT_CAPATH', s.sslClientCaPath, `expected a readable directory of PEM CA certificates (${(e as NodeJS.ErrnoException).code})`);
    }
    for (const n of names) clientCa.push({ file: join(ctx.path(s.sslClientCaPath), n) });
  }
  return {
    cert: { file: ctx.path(s.sslCertFile) },
    key: { file: ctx.path(s.sslKeyFile) },
    clientCa,
    // prometheus_client: CERT_REQUIRED when client auth is required (the CAs given, else the system's), CERT_NONE otherwise
    clientAuthType: s.sslClientAuthRequired ? 'RequireAndVerifyClientCert' : 'NoClientCert',
    minVersion: 'TLSv1.2', maxVersion: 'TLSv1.3', ciphers: undefined, honorCipherOrder: true, ecdhCurve: undefined, clientAllowedSans: undefined,
  };
}

/**
 * The web configuration from the settings, or undefined when none is set (plain HTTP). Reads and
 * validates the YAML file and the certificate material (a key that does not match its certificate is
 * an error here, not at the first scrape). Precedence: the file's `tls_server_config` or
 * PROMETHEUS_SSL_* for TLS (both: an error), the file alone for basic auth, headers and rate limit.
 */
export function loadWebConfig(s: WebSources): WebConfig | undefined {
  if (!hasWebConfig(s)) return undefined;
  let cfg: WebConfig = { origin: 'PROMETHEUS_SSL_* settings', tls: undefined, users: new Map(), headers: {}, rateLimit: undefined, files: [] };
  if (s.webConfigFile) {
    const file = resolve(s.webConfigFile);
    cfg = parseWebConfigText(readText(`web config ${file}`, 'file', file), file);
  }
  const envTls = fromSslEnv(s);
  if (envTls) {
    if (cfg.tls) {
      throw new ConfigError(`prefork-otel: invalid PROMETHEUS_SSL_CERTFILE=${JSON.stringify(s.sslCertFile ?? '')}: ${cfg.origin} has a tls_server_config too: set TLS in one place (unset PROMETHEUS_SSL_* or remove tls_server_config)`);
    }
    cfg = { ...cfg, tls: envTls, files: [...cfg.files, ...tlsFiles(envTls)] };
  }
  if (cfg.tls) secureContextOptions(cfg);
  return cfg;
}

/**
 * Node's TLS server options for `cfg.tls`, reading the PEM files now; throws a ConfigError naming
 * the file when one cannot be read or the key does not fit the certificate.
 */
export function secureContextOptions(cfg: WebConfig): SecureContextOptions {
  const t = cfg.tls!;
  const read = (what: string, s: { file: string } | { pem: string }) => ('file' in s ? readText(cfg.origin, what, s.file) : s.pem);
  const opts: SecureContextOptions = {
    cert: read('tls_server_config.cert_file', t.cert),
    key: read('tls_server_config.key_file', t.key),
    minVersion: t.minVersion,
    maxVersion: t.maxVersion,
    honorCipherOrder: t.honorCipherOrder,
  };
  if (t.clientCa.length > 0) opts.ca = t.clientCa.map((c) => read('tls_server_config.client_ca_file', c));
  if (t.ciphers) opts.ciphers = t.ciphers;
  if (t.ecdhCurve) opts.ecdhCurve = t.ecdhCurve;
  try {
    (require('node:tls') as typeof import('node:tls')).createSecureContext(opts);
  } catch (e) {
    const files = [t.cert, t.key, ...t.clientCa].map((s) => ('file' in s ? s.file : '(inline PEM)')).join(', ');
    throw new ConfigError(`prefork-otel: invalid ${cfg.origin}: TLS material ${files}: ${(e as Error).message.split('\n')[0]}: expected a PEM certificate, its matching PEM private key (unencrypted) and PEM CA certificates`);
  }
  return opts;
}
