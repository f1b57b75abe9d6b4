/**
 * The preload as a guest in someone else's process: a bad environment value stops start-up with one
 * line (variable, value, what is allowed) and a non-zero exit, before the app runs; a metrics port in
 * use warns once (or is fatal on request); and the preload never keeps a process alive nor changes
 * its exit code or signal.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { FIXTURES, REGISTER_CJS, REGISTER_ESM, freePort, hit, startNode, waitFor } from './helpers';

const APP = `process.stdout.write('app ran\\n'); setTimeout(() => {}, 200);`;

interface Bad { env: Record<string, string>; name: string; value: string; allowed: string }

const BAD: Bad[] = [
  { env: { PROMETHEUS_METRICS_PORT: 'abc' }, name: 'PROMETHEUS_METRICS_PORT', value: 'abc', allowed: 'expected an integer from 0 to 65535' },
  { env: { PROMETHEUS_METRICS_PORT: '70000' }, name: 'PROMETHEUS_METRICS_PORT', value: '70000', allowed: 'expected an integer from 0 to 65535' },
  { env: { PROMETHEUS_METRICS_PORT: '-1' }, name: 'PROMETHEUS_METRICS_PORT', value: '-1', allowed: 'expected an integer from 0 to 65535' },
  { env: { PROMETHEUS_BIND_ADDRESS: 'not an address' }, name: 'PROMETHEUS_BIND_ADDRESS', value: 'not an address', allowed: 'expected an IPv4/IPv6 address or a host name' },
  { env: { PROMETHEUS_BIND_ADDRESS: '300.1.2.3' }, name: 'PROMETHEUS_BIND_ADDRESS', value: '300.1.2.3', allowed: 'expected an IPv4/IPv6 address or a host name' },
  { env: { PROMETHEUS_BIND_ADDRESS: 'a\nb' }, name: 'PROMETHEUS_BIND_ADDRESS', value: 'a\nb', allowed: 'expected an IPv4/IPv6 address or a host name' },
  { env: { PREFORK_OTEL_ON_PORT_IN_USE: 'maybe' }, name: 'PREFORK_OTEL_ON_PORT_IN_USE', value: 'maybe', allowed: 'expected one of warn, exit' },
  { env: { PREFORK_OTEL_BUCKETS: '1,0.5' }, name: 'PREFORK_OTEL_BUCKETS', value: '1,0.5', allowed: 'expected strictly increasing positive numbers of seconds' },
  { env: { PREFORK_OTEL_BUCKETS: '0,1' }, name: 'PREFORK_OTEL_BUCKETS', value: '0,1', allowed: 'expected strictly increasing positive numbers of seconds' },
  { env: { OTEL_METRICS_EXPORTER: 'nope' }, name: 'OTEL_METRICS_EXPORTER', value: 'nope', allowed: 'prometheus, otlp, console, none' },
  { env: { OTEL_METRICS_EXPORTER: 'prometheus,nope' }, name: 'OTEL_METRICS_EXPORTER', value: 'prometheus,nope', allowed: 'prometheus, otlp, console, none' },
  { env: { GUNICORN_WORKERS: '0' }, name: 'GUNICORN_WORKERS', value: '0', allowed: 'expected an integer from 1 to 1024' },
  { env: { GUNICORN_WORKERS: '2.5' }, name: 'GUNICORN_WORKERS', value: '2.5', allowed: 'expected an integer from 1 to 1024' },
  { env: { PREFORK_OTEL_MAX_ENDPOINTS: '0' }, name: 'PREFORK_OTEL_MAX_ENDPOINTS', value: '0', allowed: 'expected an integer from 1 to 100000' },
  { env: { PREFORK_OTEL_METRICS_PATH: 'metrics' }, name: 'PREFORK_OTEL_METRICS_PATH', value: 'metrics', allowed: 'expected a URL path starting with "/"' },
  { env: { PREFORK_OTEL_MEMORY_INTERVAL: '0' }, name: 'PREFORK_OTEL_MEMORY_INTERVAL', value: '0', allowed: 'expected a number from 0.1 to 86400 seconds' },
  { env: { PREFORK_OTEL_CPU_INTERVAL: 'often' }, name: 'PREFORK_OTEL_CPU_INTERVAL', value: 'often', allowed: 'expected a number from 0.1 to 86400 seconds' },
  { env: { PREFORK_OTEL_SCRAPE_TIMEOUT: '100' }, name: 'PREFORK_OTEL_SCRAPE_TIMEOUT', value: '100', allowed: 'expected a number from 0.01 to 60 seconds' },
  { env: { PREFORK_OTEL_SNAPSHOT_INTERVAL: '0' }, name: 'PREFORK_OTEL_SNAPSHOT_INTERVAL', value: '0', allowed: 'expected a number from 0.05 to 3600 seconds' },
  { env: { PREFORK_OTEL_RETENTION: '-5' }, name: 'PREFORK_OTEL_RETENTION', value: '-5', allowed: 'expected a number from 0 to 604800 seconds' },
  { env: { PREFORK_OTEL_TARGET_INFO: 'perhaps' }, name: 'PREFORK_OTEL_TARGET_INFO', value: 'perhaps', allowed: 'expected one of true, false, 1, 0, yes, no, on, off' },
  { env: { PREFORK_OTEL_RECORDING: 'slow' }, name: 'PREFORK_OTEL_RECORDING', value: 'slow', allowed: 'expected one of fast, otel' },
  { env: { PREFORK_OTEL_DISABLED: '2' }, name: 'PREFORK_OTEL_DISABLED', value: '2', allowed: 'expected one of true, false, 1, 0, yes, no, on, off' },
  { env: { OTEL_METRIC_EXPORT_INTERVAL: '0' }, name: 'OTEL_METRIC_EXPORT_INTERVAL', value: '0', allowed: 'expected an integer from 1 to 86400000' },
];

/** stderr is exactly one line, with no trace of a stack */
function oneLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l !== '');
  expect(lines, `stderr: ${stderr}`).toHaveLength(1);
  expect(stderr).not.toMatch(/^\s+at /m);
  expect(stderr).not.toMatch(/node:internal|\.js:\d+/);
  return lines[0]!;
}

describe('bad environment values: one line, exit code 2, the app never runs', () => {
  it.each(BAD)('$name=$value', async (c) => {
    // --import for every other case, so both preload forms are covered
    const esm = BAD.indexOf(c) % 2 === 1;
    const p = startNode([esm ? '--import' : '-r', esm ? REGISTER_ESM : REGISTER_CJS, '-e', APP], {
      PROMETHEUS_METRICS_PORT: '0', PROMETHEUS_BIND_ADDRESS: '127.0.0.1', ...c.env,
    });
    const { code, signal } = await p.exited;
    expect(signal).toBeNull();
    expect(code).toBe(2);
    const line = oneLine(p.stderr);
    expect(line.startsWith(`prefork-otel: invalid ${c.name}=`)).toBe(true);
    expect(line).toContain(JSON.stringify(c.value));
    expect(line).toContain(c.allowed);
    expect(p.stdout).not.toContain('app ran');
  });
});

describe('metrics port in use', () => {
  let blocker: Server;
  let busy: number;
  beforeAll(async () => {
    busy = await freePort();
    blocker = createServer((s) => s.destroy());
    await new Promise<void>((r) => blocker.listen(busy, '127.0.0.1', r));
  });
  afterAll(() => new Promise<void>((r) => blocker.close(() => r())));

  it('default policy: warns once (one line) and the app still serves', async () => {
    const appPort = await freePort();
    const app = startNode(['-r', REGISTER_CJS, join(FIXTURES, 'http-app.cjs')], {
      APP_PORT: String(appPort), PROMETHEUS_METRICS_PORT: String(busy), PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
    });
    try {
      await waitFor(() => app.stdout.includes('listening') && app.stderr.includes('\n'), 20_000, 'the app and the warning');
      for (let i = 0; i < 5; i++) expect(await hit(`http://127.0.0.1:${appPort}/users/${i}`)).toBe(200);
      const line = oneLine(app.stderr);
      expect(line).toContain('PROMETHEUS_METRICS_PORT');
      expect(line).toContain(`127.0.0.1:${busy}`);
      expect(line).toContain('in use');
      expect(line).toContain('PREFORK_OTEL_ON_PORT_IN_USE=exit');
      expect(app.child.exitCode).toBeNull();
    } finally {
      await app.stop();
    }
  });

  it('PREFORK_OTEL_ON_PORT_IN_USE=exit: exits non-zero with one line', async () => {
    const app = startNode(['--import', REGISTER_ESM, join(FIXTURES, 'http-app.cjs')], {
      APP_PORT: String(await freePort()), PROMETHEUS_METRICS_PORT: String(busy), PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
      PREFORK_OTEL_ON_PORT_IN_USE: 'exit',
    });
    const { code } = await app.exited;
    expect(code).toBe(1);
    const line = oneLine(app.stderr);
    expect(line).toContain('PROMETHEUS_METRICS_PORT');
    expect(line).toContain(`127.0.0.1:${busy}`);
    expect(line).toContain('in use');
  });
});

describe('a bind address that is not this machine\'s', () => {
  it('is fatal whatever the port-in-use policy: one line naming PROMETHEUS_BIND_ADDRESS, exit 1', async () => {
    // 192.0.2.1 (TEST-NET-1, RFC 5737) is well-formed and never an address of this machine: listen() fails
    // with EADDRNOTAVAIL and no packet is sent anywhere
    const app = startNode(['-r', REGISTER_CJS, join(FIXTURES, 'http-app.cjs')], {
      APP_PORT: String(await freePort()), PROMETHEUS_METRICS_PORT: String(await freePort()), PROMETHEUS_BIND_ADDRESS: '192.0.2.1',
    });
    const { code } = await app.exited;
    expect(code).toBe(1);
    const line = oneLine(app.stderr);
    expect(line).toContain('PROMETHEUS_BIND_ADDRESS="192.0.2.1"');
    expect(line).toContain('not an address of this machine');
  });
});

describe('the preload never keeps a process alive nor changes how it ends', () => {
  // each script ends by itself; if the preload held the event loop open, `exited` would never resolve
  const serveOnceAndClose = `
    const http = require('node:http');
    const srv = http.createServer((req, res) => res.end('ok')).listen(0, '127.0.0.1', () => {
      http.get({ port: srv.address().port, host: '127.0.0.1', path: '/x/1' }, (res) => {
        res.resume();
        res.on('end', () => srv.close(() => process.stdout.write('served\\n')));
      });
    });`;
  const cases: Array<{ what: string; args: string[]; env?: Record<string, string>; code: number; out?: string; err?: RegExp }> = [
    { what: 'work then exit 0 (-r)', args: ['-r', REGISTER_CJS, '-e', serveOnceAndClose], code: 0, out: 'served' },
    { what: 'work then exit 0 (--import, OTLP + console push readers)', args: ['--import', REGISTER_ESM, '-e', serveOnceAndClose], env: { OTEL_METRICS_EXPORTER: 'prometheus,console', OTEL_METRIC_EXPORT_INTERVAL: '60000', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' }, code: 0, out: 'served',
      err: /^prefork-otel: metrics endpoint serving on 127\.0\.0\.1:\d+\/metrics, printing to the console every 60000 ms \(OTEL_METRICS_EXPORTER=prometheus,console; PREFORK_OTEL_EXPORTER takes precedence for prefork-otel alone\)\n$/ },
    { what: 'process.exitCode = 3', args: ['-r', REGISTER_CJS, '-e', `${serveOnceAndClose}; process.exitCode = 3;`], code: 3, out: 'served' },
    { what: 'process.exit(3)', args: ['--import', REGISTER_ESM, '-e', `setTimeout(() => process.exit(3), 10)`], code: 3 },
    { what: 'an uncaught error keeps its exit code 1 and its stack', args: ['-r', REGISTER_CJS, '-e', `setTimeout(() => { throw new Error('app bug') }, 10)`], code: 1, err: /Error: app bug\n\s+at /m },
    { what: 'PREFORK_OTEL_DISABLED=1', args: ['-r', REGISTER_CJS, '-e', `${serveOnceAndClose}; process.exitCode = 4;`], env: { PREFORK_OTEL_DISABLED: '1' }, code: 4, out: 'served' },
  ];
  it.each(cases)('$what', async (c) => {
    const p = startNode(c.args, { PROMETHEUS_METRICS_PORT: '0', PROMETHEUS_BIND_ADDRESS: '127.0.0.1', ...c.env });
    const { code, signal } = await p.exited;
    expect({ code, signal }).toEqual({ code: c.code, signal: null });
    if (c.out) expect(p.stdout).toContain(c.out);
    if (c.err) expect(p.stderr).toMatch(c.err);
    else expect(p.stderr).toBe('');
  });

  it('SIGTERM still ends a server under the preload by SIGTERM, as it would without', async () => {
    const appPort = await freePort();
    const metricsPort = await freePort();
    const app = startNode(['-r', REGISTER_CJS, join(FIXTURES, 'http-app.cjs')], {
      APP_PORT: String(appPort), PROMETHEUS_METRICS_PORT: String(metricsPort), PROMETHEUS_BIND_ADDRESS: '127.0.0.1',
    });
    await waitFor(() => app.stdout.includes('listening'), 20_000, 'listening');
    expect(await hit(`http://127.0.0.1:${appPort}/`)).toBe(200);
    app.child.kill('SIGTERM');
    expect(await app.exited).toEqual({ code: null, signal: 'SIGTERM' });
  });
});
