/**
 * The pure parts of the metrics endpoint's web config, fast: the YAML parser and its one-line errors,
 * PROMETHEUS_SSL_*, Accept-Encoding, the basic-auth cache; then every client_auth_type policy,
 * client_allowed_sans, headers and the rate limit against a real in-process HTTPS server on 127.0.0.1
 * (certificates from openssl).
 */
import { writeFileSync } from 'node:fs';
import { request } from 'node:https';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, loadWebConfig, type WebSources } from '../src/config';
import { parseWebConfigText } from '../src/config/web';
import { BasicAuth } from '../src/export/basic-auth';
import { acceptsGzip, startMetricsServer, type MetricsServer } from '../src/export/server';
import { makeCerts, type Certs } from './fixtures/certs';

const NONE: WebSources = { webConfigFile: undefined, sslCertFile: undefined, sslKeyFile: undefined, sslClientCaFile: undefined, sslClientCaPath: undefined, sslClientAuthRequired: false };
const HASH = bcrypt.hashSync('pw', 4);
const basic = (s: string) => `Basic ${Buffer.from(s).toString('base64')}`;

function fails(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as ConfigError).exitCode).toBe(2);
    expect((e as ConfigError).message.split('\n')).toHaveLength(1);
    return e as ConfigError;
  }
  throw new Error('did not throw');
}

describe('parseWebConfigText', () => {
  it('reads every key of exporter-toolkit\'s format', () => {
    const c = parseWebConfigText([
      'tls_server_config:',
      '  cert_file: tls/server.crt',
      '  key_file: /abs/server.key',
      '  client_ca_file: ca.crt',
      '  client_auth_type: RequireAndVerifyClientCert',
      '  client_allowed_sans: [scraper.example]',
      '  min_version: TLS13',
      '  max_version: TLS13',
      '  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]',
      '  prefer_server_cipher_suites: false',
      '  curve_preferences: [X25519, CurveP256]',
      'http_server_config:',
      '  http2: false',
      '  headers:',
      '    X-Frame-Options: deny',
      '    Strict-Transport-Security: max-age=31536000',
      'basic_auth_users:',
      `  alice: ${HASH}`,
      'rate_limit:',
      '  interval: 1m30s',
      '  burst: 20',
      '',
    ].join('\n'), '/etc/web/web.yml');
    expect(c.tls).toEqual({
      cert: { file: '/etc/web/tls/server.crt' }, key: { file: '/abs/server.key' }, clientCa: [{ file: '/etc/web/ca.crt' }],
      clientAuthType: 'RequireAndVerifyClientCert', clientAllowedSans: ['scraper.example'],
      minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3',
      ciphers: 'ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305', honorCipherOrder: false, ecdhCurve: 'X25519:prime256v1',
    });
    expect([...c.users]).toEqual([['alice', HASH]]);
    expect(c.headers).toEqual({ 'X-Frame-Options': 'deny', 'Strict-Transport-Security': 'max-age=31536000' });
    expect(c.rateLimit).toEqual({ intervalMs: 90_000, burst: 20 });
    expect(c.files).toEqual(['/etc/web/web.yml', '/etc/web/tls/server.crt', '/abs/server.key', '/etc/web/ca.crt']);
  });

  it('an empty file and a file with only users are valid (no TLS, no auth / auth only)', () => {
    expect(parseWebConfigText('', '/w.yml')).toMatchObject({ tls: undefined, users: new Map(), rateLimit: undefined });
    expect(parseWebConfigText(`basic_auth_users:\n  bob: ${HASH}\n`, '/w.yml').users.get('bob')).toBe(HASH);
    expect(parseWebConfigText('tls_server_config:\n  cert: "-----BEGIN"\n  key: "k"\n  client_auth_type: RequireClientCert\n', '/w.yml').tls)
      .toMatchObject({ cert: { pem: '-----BEGIN' }, key: { pem: 'k' }, clientAuthType: 'RequireAnyClientCert' });
  });

  const T = 'tls_server_config:\n  cert_file: c\n  key_file: k\n';
  it.each([
    ['a: [1\n', /not valid YAML at line \d+, column \d+/],
    ['a: 1\na: 2\n', /not valid YAML.*unique/],
    ['- 1\n', /\(top level\)=.*expected a mapping/],
    ['tls: {}\n', /unknown key "tls": expected one of tls_server_config, http_server_config, basic_auth_users, rate_limit/],
    [T + '  key_fiel: x\n', /unknown key "tls_server_config\.key_fiel"/],
    ['tls_server_config:\n  key_file: k\n', /tls_server_config\.cert_file="": missing/],
    ['tls_server_config:\n  cert_file: c\n', /tls_server_config\.key_file="": missing/],
    [T + '  cert: x\n', /set either cert_file or cert, not both/],
    [T + '  client_auth_type: 3\n', /client_auth_type="3": expected a string/],
    [T + '  client_auth_type: Required\n', /client_auth_type="Required": expected one of NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert/],
    [T + '  client_ca_file: ca\n', /without a client auth policy/],
    [T + '  client_auth_type: VerifyClientCertIfGiven\n', /needs client_ca_file/],
    [T + '  min_version: TLS14\n', /min_version="TLS14": expected one of TLS10, TLS11, TLS12, TLS13/],
    [T + '  min_version: TLS13\n  max_version: TLS12\n', /max_version="TLS12": expected a version at or above min_version TLS13/],
    [T + '  cipher_suites: [RC4]\n', /cipher_suites="RC4": expected Go cipher suite names/],
    [T + '  curve_preferences: [P-256]\n', /curve_preferences="P-256": expected one of CurveP256, CurveP384, CurveP521, X25519/],
    [T + '  prefer_server_cipher_suites: maybe\n', /prefer_server_cipher_suites="maybe": expected true or false/],
    ['basic_auth_users:\n  alice: secret\n', /basic_auth_users\.alice="secret": expected a bcrypt hash/],
    ['basic_auth_users:\n  alice: 12\n', /basic_auth_users\.alice="12": expected a bcrypt hash/],
    [`basic_auth_users:\n  alice: ${HASH.replace('$04$', '$03$')}\n`, /expected a bcrypt cost from 04 to 31/],
    [`basic_auth_users:\n  "a:b": ${HASH}\n`, /cannot contain ":"/],
    ['http_server_config:\n  headers:\n    X-Frame-Options: allow\n', /X-Frame-Options="allow": expected one of deny, sameorigin/],
    ['http_server_config:\n  headers:\n    Server: me\n', /unknown key "http_server_config\.headers\.Server"/],
    ['rate_limit:\n  interval: soon\n  burst: 1\n', /rate_limit\.interval="soon": expected a duration/],
    ['rate_limit:\n  interval: 1s\n', /rate_limit\.burst="0": expected an integer ≥ 1/],
  ])('%j → one line', (yaml, message) => {
    const e = fails(() => parseWebConfigText(yaml, '/etc/w.yml'));
    expect(e.message).toMatch(/^prefork-otel: invalid web config \/etc\/w\.yml: /);
    expect(e.message).toMatch(message);
  });
});

describe('the environment', () => {
  it('loadConfig reads the endpoint settings; nothing set means no web config and no file read', () => {
    const c = loadConfig({ PROMETHEUS_WEB_CONFIG_FILE: '/w.yml', PROMETHEUS_SSL_CERTFILE: 'c', PROMETHEUS_SSL_KEYFILE: 'k', PROMETHEUS_SSL_CLIENT_CAFILE: 'ca', PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED: 'yes', PREFORK_OTEL_METRICS_MAX_CONNECTIONS: '10' });
    expect(c).toMatchObject({ webConfigFile: '/w.yml', sslCertFile: 'c', sslKeyFile: 'k', sslClientCaFile: 'ca', sslClientAuthRequired: true, metricsMaxConnections: 10 });
    expect(loadConfig({}).metricsMaxConnections).toBe(64);
    expect(loadWebConfig(NONE)).toBeUndefined();
    expect(fails(() => loadConfig({ PREFORK_OTEL_METRICS_MAX_CONNECTIONS: '0' })).message).toMatch(/PREFORK_OTEL_METRICS_MAX_CONNECTIONS="0": expected an integer from 1 to 65535/);
  });

  it('PROMETHEUS_SSL_*: both files needed; a missing file named', () => {
    expect(fails(() => loadWebConfig({ ...NONE, sslKeyFile: 'k' })).message).toMatch(/PROMETHEUS_SSL_CERTFILE is not set/);
    expect(fails(() => loadWebConfig({ ...NONE, sslClientAuthRequired: true })).message).toMatch(/PROMETHEUS_SSL_CERTFILE is not set/);
    expect(fails(() => loadWebConfig({ ...NONE, sslCertFile: '/nope.crt', sslKeyFile: '/nope.key' })).message)
      .toMatch(/invalid PROMETHEUS_SSL_\* settings: tls_server_config\.cert_file="\/nope\.crt": cannot read it \(ENOENT\)/);
    expect(fails(() => loadWebConfig({ ...NONE, webConfigFile: '/nonexistent/web.yml' })).message)
      .toMatch(/invalid web config \/nonexistent\/web\.yml: file="\/nonexistent\/web\.yml": cannot read it \(ENOENT\)/);
  });
});

describe('acceptsGzip', () => {
  it.each([
    ['gzip', true], ['gzip, deflate', true], ['deflate, gzip;q=1.0, *;q=0.5', true], ['*', true], ['x-gzip', true],
    ['GZIP', true], [undefined, false], ['', false], ['identity', false], ['gzip;q=0', false], ['br, deflate', false], ['gzip;q=0.000', false],
  ])('%j → %s', (header, want) => expect(acceptsGzip(header as string | undefined)).toBe(want));
});

describe('BasicAuth', () => {
  it('pays bcrypt once per credential, not per scrape; rejects unknown users, wrong passwords and malformed headers', async () => {
    const auth = new BasicAuth(new Map([['alice', HASH]]));
    expect(await auth.check(basic('alice:pw'))).toBe(true);
    expect(auth.comparisons).toBe(1);
    for (let i = 0; i < 5; i++) expect(await auth.check(basic('alice:pw'))).toBe(true);
    expect(auth.comparisons).toBe(1);
    expect(await auth.check(basic('alice:pw2'))).toBe(false);
    expect(await auth.check(basic('alice:pw2'))).toBe(false);
    expect(auth.comparisons).toBe(2);
    // an unknown user costs a comparison too (the dummy hash), then is cached as rejected
    expect(await auth.check(basic('mallory:pw'))).toBe(false);
    expect(auth.comparisons).toBe(3);
    for (const h of [undefined, '', 'Bearer x', 'Basic', basic('alicepw'), basic(':pw'), 'basic ' + Buffer.from('alice:pw').toString('base64')]) {
      expect(await auth.check(h)).toBe(h?.startsWith('basic ') ?? false);
    }
    // concurrent first checks are serialised, each still answered
    const auth2 = new BasicAuth(new Map([['a', HASH], ['b', HASH]]));
    expect(await Promise.all([auth2.check(basic('a:pw')), auth2.check(basic('b:pw')), auth2.check(basic('a:no'))])).toEqual([true, true, false]);
  });
});

describe('client certificate policies, SANs, headers and the rate limit (real HTTPS server in-process)', () => {
  let certs: Certs;
  const servers: MetricsServer[] = [];
  beforeAll(() => { certs = makeCerts(); });
  afterAll(async () => { await Promise.all(servers.map((s) => s.close())); });

  async function serve(tlsExtra: string, more = ''): Promise<number> {
    const file = certs.f(`w-${servers.length}.yml`);
    writeFileSync(file, `tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n${tlsExtra}${more}`);
    const s = await startMetricsServer({ host: '127.0.0.1', port: 0, path: '/metrics', gather: async () => 'up 1\n', web: { ...NONE, webConfigFile: file } });
    servers.push(s);
    expect(s.scheme).toBe('https');
    return s.port;
  }
  function get(port: number, client?: 'client' | 'rogue'): Promise<{ status: number; headers: Record<string, unknown> }> {
    return new Promise((resolve, reject) => {
      const req = request({
        host: '127.0.0.1', port, path: '/metrics', agent: false, ca: certs.read('ca.crt'),
        ...(client ? { cert: certs.read(`${client}.crt`), key: certs.read(`${client}.key`) } : {}),
      }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers }));
      });
      req.on('error', reject);
      req.end();
    });
  }
  const ca = () => `  client_ca_file: ${certs.f('ca.crt')}\n`;

  it('RequestClientCert: any or none', async () => {
    const port = await serve('  client_auth_type: RequestClientCert\n');
    expect((await get(port)).status).toBe(200);
    expect((await get(port, 'rogue')).status).toBe(200);
  });
  it('RequireAnyClientCert: one is needed, not checked', async () => {
    const port = await serve('  client_auth_type: RequireAnyClientCert\n');
    await expect(get(port)).rejects.toThrow();
    expect((await get(port, 'rogue')).status).toBe(200);
  });
  it('VerifyClientCertIfGiven: none is fine, a bad one is not', async () => {
    const port = await serve('  client_auth_type: VerifyClientCertIfGiven\n' + ca());
    expect((await get(port)).status).toBe(200);
    expect((await get(port, 'client')).status).toBe(200);
    await expect(get(port, 'rogue')).rejects.toThrow();
  });
  it('client_allowed_sans: the SAN must be listed', async () => {
    const ok = await serve('  client_auth_type: RequireAndVerifyClientCert\n' + ca() + '  client_allowed_sans: [scraper.example]\n');
    expect((await get(ok, 'client')).status).toBe(200);
    const other = await serve('  client_auth_type: RequireAndVerifyClientCert\n' + ca() + '  client_allowed_sans: [other.example]\n');
    await expect(get(other, 'client')).rejects.toThrow();
  });
  it('http_server_config.headers on every response; rate_limit answers 429 past the burst', async () => {
    const port = await serve('', 'http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\nrate_limit:\n  interval: 1h\n  burst: 2\n');
    const a = await get(port);
    expect(a.status).toBe(200);
    expect(a.headers['x-content-type-options']).toBe('nosniff');
    expect((await get(port)).status).toBe(200);
    expect((await get(port)).status).toBe(429);
  });
});
