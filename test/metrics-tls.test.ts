/**
 * TLS, basic auth and gzip on the metrics endpoint (exporter-toolkit's web config and upstream's
 * PROMETHEUS_SSL_*), for real: certificates made by `openssl` in a temp dir, real processes in
 * every mode (preload, runner, node:cluster primary, `prefork-otel exporter`), a real Prometheus
 * scraping over https with tls_config and basic_auth, and Node's https client for the failures.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, FIXTURES, REGISTER_CJS, freePort, hit, startApp, startNode, waitFor, type Proc } from './helpers';
import { fingerprintOf, makeCerts, type Certs } from './fixtures/certs';
import { startPrometheus, type PromServer } from './fixtures/prometheus';

let certs: Certs;
let dir = '';
const f = (name: string) => join(dir, name);

const PASSWORD = 'correct horse battery staple';
let HASH = '';

interface Reply { status: number; headers: Record<string, string | string[] | undefined>; body: Buffer; fingerprint: string }

/** One https GET with Node's client; rejects on a TLS or connection failure. */
function get(port: number, o: { auth?: string; cert?: string; key?: string; headers?: Record<string, string>; path?: string; method?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1', port, path: o.path ?? '/metrics', method: o.method ?? 'GET', agent: false,
      ca: read(f('ca.crt')), cert: o.cert, key: o.key,
      headers: { ...(o.auth ? { authorization: `Basic ${Buffer.from(o.auth).toString('base64')}` } : {}), ...o.headers },
      timeout: 10_000,
    }, (res) => {
      const chunks: Buffer[] = [];
      const fingerprint = (res.socket as import('node:tls').TLSSocket).getPeerCertificate().fingerprint256;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks), fingerprint }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

const read = (file: string) => readFileSync(file, 'utf8');
const webConfig = (name: string, yaml: string) => {
  writeFileSync(f(name), yaml);
  return f(name);
};
const APP = join(FIXTURES, 'http-app.cjs');

beforeAll(() => {
  certs = makeCerts();
  dir = certs.dir;
  HASH = bcrypt.hashSync(PASSWORD, 10);
});

describe('a preloaded app with a web config: TLS + basic auth, scraped by a real Prometheus', () => {
  let app: Proc;
  let appPort: number;
  let metricsPort: number;
  let prom: PromServer;
  let config: string;

  beforeAll(async () => {
    config = webConfig('web.yml', [
      'tls_server_config:',
      '  cert_file: server.crt', // relative to the file, as exporter-toolkit resolves it
      `  key_file: ${f('server.key')}`,
      'basic_auth_users:',
      `  alice: ${HASH}`,
      '',
    ].join('\n'));
    ({ app, appPort, metricsPort } = await startApp(['-r', REGISTER_CJS, APP], { PROMETHEUS_WEB_CONFIG_FILE: config }));
    await waitFor(async () => (await get(metricsPort, { auth: `alice:${PASSWORD}` })).status === 200, 15_000, 'https endpoint');
    const tlsBlock = ['scheme: https', 'tls_config:', `  ca_file: ${f('ca.crt')}`];
    prom = await startPrometheus([
      { job: 'tls', target: `127.0.0.1:${metricsPort}`, extra: [...tlsBlock, 'basic_auth:', '  username: alice', `  password: ${JSON.stringify(PASSWORD)}`] },
      { job: 'wrong-password', target: `127.0.0.1:${metricsPort}`, extra: [...tlsBlock, 'basic_auth:', '  username: alice', '  password: nope'] },
      { job: 'no-auth', target: `127.0.0.1:${metricsPort}`, extra: tlsBlock },
    ]);
  }, 60_000);
  afterAll(async () => {
    await prom?.stop();
    await app?.stop();
  });

  it('Prometheus scrapes over https with basic_auth and has the exact request count; bad credentials are down', async () => {
    const n = 37;
    for (let i = 0; i < n; i++) expect(await hit(`http://127.0.0.1:${appPort}/users/${i}`)).toBe(200);
    await waitFor(async () => (await prom.query(`sum(gunicorn_worker_requests_total{job="tls"}) == ${n}`)).length === 1, 30_000, `${n} requests in Prometheus`);
    expect(await prom.scalar('sum(gunicorn_worker_requests_total{job="tls"})')).toBe(n);
    expect(await prom.scalar('up{job="tls"}')).toBe(1);
    // Prometheus' own scrapes are not app traffic, over https as over http
    expect(await prom.query('gunicorn_worker_requests_total{endpoint=~"/metrics.*"}')).toEqual([]);
    await waitFor(async () => (await prom.query('up{job=~"wrong-password|no-auth"} == 0')).length === 2, 30_000, 'the two bad jobs down');
    const targets = await (await fetch(`${prom.url}/api/v1/targets`)).json() as { data: { activeTargets: Array<{ labels: { job: string }; lastError: string }> } };
    const errors = Object.fromEntries(targets.data.activeTargets.map((t) => [t.labels.job, t.lastError]));
    expect(errors['wrong-password']).toMatch(/401/);
    expect(errors['no-auth']).toMatch(/401/);
    expect(errors.tls).toBe('');
  });

  it('no credentials, a wrong password, an unknown user: 401 with WWW-Authenticate; the right ones: 200 over TLS', async () => {
    for (const auth of [undefined, 'alice:wrong', 'mallory:' + PASSWORD, 'alice', `alice:${PASSWORD}x`]) {
      const r = await get(metricsPort, { auth });
      expect(r.status, String(auth)).toBe(401);
      expect(r.headers['www-authenticate']).toMatch(/^Basic realm="[^"]+"/);
      expect(r.body.toString()).not.toMatch(/gunicorn_worker/);
    }
    // also for another path: auth comes first, as exporter-toolkit does
    expect((await get(metricsPort, { path: '/other' })).status).toBe(401);
    const ok = await get(metricsPort, { auth: `alice:${PASSWORD}` });
    expect(ok.status).toBe(200);
    expect(ok.fingerprint).toBe(fingerprintOf(f('server.crt')));
    expect(ok.body.toString()).toMatch(/^gunicorn_worker_requests_total\{/m);
    // plain http on the TLS port gets no metrics
    await expect(fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text())).rejects.toThrow();
  });

  it('gzip when the scraper accepts it (Prometheus always does): same text, fewer bytes; identity otherwise', async () => {
    const auth = `alice:${PASSWORD}`;
    const plain = await get(metricsPort, { auth });
    expect(plain.headers['content-encoding']).toBeUndefined();
    const gz = await get(metricsPort, { auth, headers: { 'accept-encoding': 'gzip, deflate' } });
    expect(gz.headers['content-encoding']).toBe('gzip');
    expect(gz.headers.vary).toMatch(/Accept-Encoding/);
    expect(Number(gz.headers['content-length'])).toBe(gz.body.length);
    const text = gunzipSync(gz.body).toString();
    // the two scrapes are moments apart: the request series (nothing was sent in between) are equal
    const requests = (t: string) => t.split('\n').filter((l) => l.startsWith('gunicorn_worker_requests_total')).join('\n');
    expect(requests(text)).toBe(requests(plain.body.toString()));
    expect(requests(text)).not.toBe('');
    expect(gz.body.length).toBeLessThan(plain.body.length / 3);
    const refused = await get(metricsPort, { auth, headers: { 'accept-encoding': 'gzip;q=0, identity' } });
    expect(refused.headers['content-encoding']).toBeUndefined();
    // OpenMetrics asked for (as Prometheus does first): the serializer writes text format 0.0.4, so that is what is served
    const om = await get(metricsPort, { auth, headers: { accept: 'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1' } });
    expect(om.status).toBe(200);
    expect(om.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
  });

  it('certificates are re-read when their files change: the served certificate changes without a restart', async () => {
    const auth = `alice:${PASSWORD}`;
    expect((await get(metricsPort, { auth })).fingerprint).toBe(fingerprintOf(f('server.crt')));
    // rotate the way cert-manager / a kubelet secret update does: new files renamed into place
    writeFileSync(f('server.crt.new'), read(f('server2.crt')));
    writeFileSync(f('server.key.new'), read(f('server2.key')));
    renameSync(f('server.key.new'), f('server.key'));
    renameSync(f('server.crt.new'), f('server.crt'));
    const want = fingerprintOf(f('server2.crt'));
    await waitFor(async () => (await get(metricsPort, { auth })).fingerprint === want, 15_000, 'the rotated certificate served');
    expect(app.child.exitCode).toBeNull();
    // a broken rotation (a key that does not fit) is reported and the previous certificate stays
    writeFileSync(f('server.key'), read(f('client.key')));
    await waitFor(() => /keeping the previous web config/.test(app.stderr), 15_000, 'the bad rotation reported');
    const r = await get(metricsPort, { auth });
    expect(r.status).toBe(200);
    expect(r.fingerprint).toBe(want);
    writeFileSync(f('server.key'), read(f('server2.key')));
  });

  it('a change of basic_auth_users in the file applies without a restart', async () => {
    writeFileSync(config, read(config).replace(/^  alice: .*$/m, `  bob: ${HASH}`));
    await waitFor(async () => (await get(metricsPort, { auth: `bob:${PASSWORD}` })).status === 200, 15_000, 'bob let in');
    expect((await get(metricsPort, { auth: `alice:${PASSWORD}` })).status).toBe(401);
    expect(app.child.exitCode).toBeNull();
  });
});

describe('client certificates', () => {
  let app: Proc;
  let metricsPort: number;

  beforeAll(async () => {
    const config = webConfig('mtls.yml', [
      'tls_server_config:',
      `  cert_file: ${f('server2.crt')}`,
      `  key_file: ${f('server2.key')}`,
      `  client_ca_file: ${f('ca.crt')}`,
      '  client_auth_type: RequireAndVerifyClientCert',
      '  min_version: TLS13',
      '',
    ].join('\n'));
    ({ app, metricsPort } = await startApp(['-r', REGISTER_CJS, APP], { PROMETHEUS_WEB_CONFIG_FILE: config }));
    await waitFor(async () => (await get(metricsPort, { cert: read(f('client.crt')), key: read(f('client.key')) })).status === 200, 15_000, 'mTLS endpoint');
  });
  afterAll(async () => { await app?.stop(); });

  it('RequireAndVerifyClientCert: no certificate or one from another CA fails the TLS connection; the CA\'s client gets 200', async () => {
    await expect(get(metricsPort)).rejects.toThrow(/certificate|alert|socket hang up|ECONNRESET/i);
    await expect(get(metricsPort, { cert: read(f('rogue.crt')), key: read(f('rogue.key')) })).rejects.toThrow(/certificate|alert|socket hang up|ECONNRESET|unknown ca/i);
    const ok = await get(metricsPort, { cert: read(f('client.crt')), key: read(f('client.key')) });
    expect(ok.status).toBe(200);
    expect(ok.body.toString()).toMatch(/gunicorn_worker_/);
    // min_version TLS13: a TLS 1.2 client is refused
    const tls12 = new Promise<void>((resolve, reject) => {
      const req = request({
        host: '127.0.0.1', port: metricsPort, path: '/metrics', agent: false, maxVersion: 'TLSv1.2',
        ca: read(f('ca.crt')), cert: read(f('client.crt')), key: read(f('client.key')),
      }, () => reject(new Error('a TLS 1.2 client was served')));
      req.on('error', () => resolve());
      req.end();
    });
    await tls12;
  });
});

describe('PROMETHEUS_SSL_* (upstream\'s variables) in every mode', () => {
  const clientTls = () => ({ cert: read(f('client.crt')), key: read(f('client.key')) });
  const sslEnv = () => ({
    PROMETHEUS_SSL_CERTFILE: f('server2.crt'), PROMETHEUS_SSL_KEYFILE: f('server2.key'),
    PROMETHEUS_SSL_CLIENT_CAFILE: f('ca.crt'), PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED: 'true',
  });
  const procs: Proc[] = [];
  afterAll(async () => { await Promise.all(procs.map((p) => p.stop())); });

  it('the runner (--metrics-web-config with basic auth, then PROMETHEUS_SSL_* with a client certificate)', async () => {
    const port = await freePort();
    const metricsPort = await freePort();
    const config = webConfig('runner.yml', `tls_server_config:\n  cert_file: ${f('server2.crt')}\n  key_file: ${f('server2.key')}\nbasic_auth_users:\n  bob: ${HASH}\n`);
    const runner = startNode([CLI, '-b', `127.0.0.1:${port}`, '-w', '2', '--metrics-web-config', config, join(FIXTURES, 'runner-http.cjs')], {
      PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
    });
    procs.push(runner);
    const running = async () => {
      if (runner.child.exitCode !== null) throw new Error(`runner exited ${runner.child.exitCode}: ${runner.stderr}`);
      return countRunning(runner);
    };
    const countRunning = async (_r: Proc) => (await get(metricsPort, { auth: `bob:${PASSWORD}` })).body.toString().split('\n')
      .filter((l) => l.startsWith('gunicorn_worker_state{') && l.includes('state="running"')).length;
    await waitFor(async () => (await running()) === 2, 30_000, 'two workers running over https')
      .catch((e: Error) => { throw new Error(`${e.message}; runner stderr: ${runner.stderr}`); });
    for (let i = 0; i < 12; i++) expect(await hit(`http://127.0.0.1:${port}/who`)).toBe(200);
    const text = await waitFor(async () => {
      const t = (await get(metricsPort, { auth: `bob:${PASSWORD}` })).body.toString();
      const sum = t.split('\n').filter((l) => l.startsWith('gunicorn_worker_requests_total{')).reduce((a, l) => a + Number(l.split(' ').pop()), 0);
      return sum === 12 ? t : undefined;
    }, 15_000, '12 requests in the runner\'s scrape');
    expect(text).toMatch(/gunicorn_worker_requests_total/);
    expect((await get(metricsPort, { auth: 'bob:nope' })).status).toBe(401);
    expect(runner.stderr).toMatch(new RegExp(`Metrics at: https://127\\.0\\.0\\.1:${metricsPort}/metrics`));
    await runner.stop();

    const runner2 = startNode([CLI, '-b', `127.0.0.1:${port}`, '-w', '1', join(FIXTURES, 'runner-http.cjs')], {
      PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1', ...sslEnv(),
    });
    procs.push(runner2);
    await waitFor(async () => (await get(metricsPort, clientTls())).status === 200, 30_000, 'runner with PROMETHEUS_SSL_*');
    await expect(get(metricsPort)).rejects.toThrow();
    await runner2.stop();
  }, 90_000);

  it('the preload in a node:cluster primary and `prefork-otel exporter`', async () => {
    const appPort = await freePort();
    const metricsPort = await freePort();
    const app = startNode(['-r', REGISTER_CJS, join(FIXTURES, 'cluster-app.cjs')], {
      ...sslEnv(), CLUSTER_WORKERS: '2', APP_PORT: String(appPort), PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
    });
    procs.push(app);
    // the primary serves its two workers' series: both answered the scrape over mTLS
    const workers = async () => new Set((await get(metricsPort, clientTls())).body.toString().split('\n')
      .filter((l) => l.startsWith('gunicorn_worker_state{')).map((l) => /worker_id="(\d+)"/.exec(l)?.[1])).size;
    await waitFor(async () => (await workers()) === 2, 20_000, 'cluster primary with 2 workers over mTLS');
    for (let i = 0; i < 9; i++) expect(await hit(`http://127.0.0.1:${appPort}/pid`)).toBe(200);
    await waitFor(async () => (await get(metricsPort, clientTls())).body.toString().split('\n')
      .filter((l) => l.startsWith('gunicorn_worker_requests_total{')).reduce((a, l) => a + Number(l.split(' ').pop()), 0) === 9, 15_000, '9 requests');
    await expect(get(metricsPort)).rejects.toThrow();

    const exporterPort = await freePort();
    const exporter = startNode([CLI, 'exporter', '--port', String(exporterPort), '--bind', '127.0.0.1', '--dir', join(dir, 'multiproc')], sslEnv());
    procs.push(exporter);
    await waitFor(async () => (await get(exporterPort, clientTls())).status === 200, 20_000, 'exporter over mTLS');
    expect(exporter.stdout).toMatch(new RegExp(`https://127\\.0\\.0\\.1:${exporterPort}/metrics`));
    await expect(get(exporterPort)).rejects.toThrow();
  }, 60_000);
});

describe('a bad web config: one line naming the file, key and value, exit 2, in every mode', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['bad YAML', 'tls_server_config:\n  cert_file: [unclosed\n', /invalid web config .*bad-0\.yml: not valid YAML at line \d+/],
    ['unknown key', `tls_server_config:\n  cert_file: x\n  key_file: y\n  cert_fil: z\n`, /unknown key "tls_server_config\.cert_fil": expected one of .*cert_file/],
    ['bad hash', 'basic_auth_users:\n  alice: plaintext\n', /basic_auth_users\.alice="plaintext": expected a bcrypt hash/],
    ['bad client_auth_type', () => `tls_server_config:\n  cert_file: ${f('server.crt')}\n  key_file: ${f('server.key')}\n  client_auth_type: Always\n`, /client_auth_type="Always": expected one of NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert/] as never,
    ['bad min_version', () => `tls_server_config:\n  cert_file: ${f('server.crt')}\n  key_file: ${f('server.key')}\n  min_version: TLS14\n`, /min_version="TLS14": expected one of TLS10, TLS11, TLS12, TLS13/] as never,
    ['missing cert file', 'tls_server_config:\n  cert_file: /nonexistent/cert.pem\n  key_file: /nonexistent/key.pem\n', /tls_server_config\.cert_file="\/nonexistent\/cert\.pem": cannot read it \(ENOENT\)/],
    ['key of another certificate', () => `tls_server_config:\n  cert_file: ${f('server2.crt')}\n  key_file: ${f('client.key')}\n`, /TLS material .*server2\.crt.*client\.key: .*(key values mismatch|KEY_VALUES_MISMATCH)/i] as never,
    ['CA without a policy', () => `tls_server_config:\n  cert_file: ${f('server.crt')}\n  key_file: ${f('server.key')}\n  client_ca_file: ${f('ca.crt')}\n`, /client_ca_file is set without a client auth policy/] as never,
  ];

  it.each(cases.map((c, i) => [i, ...c] as const))('%i %s', async (i, _name, yaml, message) => {
    const file = webConfig(`bad-${i}.yml`, typeof yaml === 'function' ? (yaml as () => string)() : yaml);
    const metricsPort = String(await freePort());
    const runs: Proc[] = [
      startNode(['-r', REGISTER_CJS, APP], { APP_PORT: String(await freePort()), PROMETHEUS_METRICS_PORT: metricsPort, PROMETHEUS_WEB_CONFIG_FILE: file }),
      startNode([CLI, '-b', `127.0.0.1:${await freePort()}`, '--metrics-web-config', file, join(FIXTURES, 'runner-http.cjs')], { PROMETHEUS_METRICS_PORT: metricsPort }),
      startNode([CLI, 'exporter', '--port', metricsPort, '--dir', join(dir, 'multiproc')], { PROMETHEUS_WEB_CONFIG_FILE: file }),
    ];
    for (const p of runs) {
      const { code } = await waitFor(() => p.exited, 20_000, 'exit').catch(async (e) => { await p.stop('SIGKILL'); throw e; });
      const lines = p.stderr.trim().split('\n');
      expect(code, p.stderr).toBe(2);
      expect(lines, p.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^prefork-otel: invalid /);
      expect(lines[0]).toMatch(message);
      expect(lines[0]).not.toMatch(/^\s+at /m);
    }
  }, 60_000);

  it('the runner\'s --check-config checks the web config too', async () => {
    const file = webConfig('check.yml', 'basic_auth_users:\n  alice: plaintext\n');
    const p = startNode([CLI, '--check-config', '--metrics-web-config', file, join(FIXTURES, 'runner-http.cjs')]);
    const { code } = await p.exited;
    expect(code, p.stderr).toBe(2);
    expect(p.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^prefork-otel: invalid web config .*check\.yml: basic_auth_users\.alice="plaintext": expected a bcrypt hash/)]);
    const good = webConfig('check-good.yml', `basic_auth_users:\n  alice: ${HASH}\n`);
    const ok = startNode([CLI, '--check-config', '--metrics-web-config', good, join(FIXTURES, 'runner-http.cjs')]);
    expect((await ok.exited).code, ok.stderr).toBe(0);
  });

  it('PROMETHEUS_SSL_CERTFILE without a key, and TLS set in two places', async () => {
    const both = webConfig('both.yml', `tls_server_config:\n  cert_file: ${f('server.crt')}\n  key_file: ${f('server.key')}\n`);
    for (const [env, message] of [
      [{ PROMETHEUS_SSL_CERTFILE: f('server.crt') }, /PROMETHEUS_SSL_KEYFILE is not set/],
      [{ PROMETHEUS_SSL_CERTFILE: f('server.crt'), PROMETHEUS_SSL_KEYFILE: f('server.key'), PROMETHEUS_WEB_CONFIG_FILE: both }, /has a tls_server_config too: set TLS in one place/],
      [{ PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED: 'maybe' }, /invalid PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED="maybe": expected one of true, false/],
    ] as const) {
      const p = startNode(['-r', REGISTER_CJS, APP], { APP_PORT: String(await freePort()), PROMETHEUS_METRICS_PORT: String(await freePort()), ...env });
      const { code } = await p.exited;
      expect(code, p.stderr).toBe(2);
      expect(p.stderr.trim().split('\n')).toHaveLength(1);
      expect(p.stderr).toMatch(message);
    }
  }, 30_000);
});
