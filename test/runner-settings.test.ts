/**
 * Every gunicorn setting on the runner's command line and in its config file (gunicorn 26.1's
 * config.py, and Debian's 20.1 where python3-gunicorn is installed): a setting with a Node
 * meaning is taken, one without gets one warning line naming it and the runner still starts, a bad
 * value is one line with exit 2; GUNICORN_CMD_ARGS is split with shell quoting; negative numbers
 * say "must be ≥ N". Real processes (`prefork-otel --print-config`, and a started runner).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, FIXTURES, tmpDir } from './helpers';
import { startRunner, type Runner } from './runner-helpers';

const APP = join(FIXTURES, 'runner-http.cjs');

function run(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    env: { ...process.env, NODE_OPTIONS: '', PROMETHEUS_METRICS_PORT: '0', PROMETHEUS_BIND_ADDRESS: '127.0.0.1', GUNICORN_CMD_ARGS: '', ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function printConfig(args: string[], env: Record<string, string> = {}) {
  const r = run([...args, '--print-config', APP], env);
  expect(r.code, r.stderr).toBe(0);
  return { config: JSON.parse(r.stdout) as Record<string, unknown>, warnings: r.stderr.trimEnd().split('\n').filter((l) => l !== '') };
}

let runner: Runner | undefined;
afterEach(async () => {
  await runner?.stop();
  runner = undefined;
});

/** gunicorn's own settings list: name → flags, read from Debian's gunicorn 20.1 config.py */
function debianSettings(): Array<{ name: string; flags: string[] }> | undefined {
  const file = '/usr/lib/python3/dist-packages/gunicorn/config.py';
  if (!existsSync(file)) return undefined;
  const src = readFileSync(file, 'utf8');
  return src.split(/\nclass \w+\(Setting\):/).slice(1).map((body) => ({
    name: /\n {4}name = "(\w+)"/.exec(body)![1]!,
    flags: [...(/\n {4}cli = \[([^\]]*)\]/.exec(body)?.[1] ?? '').matchAll(/"(-[^"]+)"/g)].map((m) => m[1]!),
  }));
}

describe('every gunicorn setting', () => {
  it("each of Debian's gunicorn 20.1 settings is a key of the config file, and each flag is accepted on the command line", () => {
    const settings = debianSettings();
    if (!settings) return expect.fail('python3-gunicorn is not installed (/usr/lib/python3/dist-packages/gunicorn/config.py)');
    const dir = tmpDir();
    const hooks = new Set(['on_starting', 'on_reload', 'when_ready', 'pre_fork', 'post_fork', 'post_worker_init', 'worker_int', 'worker_abort', 'pre_exec', 'pre_request', 'post_request', 'child_exit', 'worker_exit', 'nworkers_changed', 'on_exit', 'ssl_context']);
    const keys = settings.filter((s) => !hooks.has(s.name) && !['config', 'check_config', 'print_config'].includes(s.name));
    // the config file: every key at once (a key we do not know is "unknown setting", exit 2)
    const file = join(dir, 'all.json');
    writeFileSync(file, JSON.stringify(Object.fromEntries(keys.map((s) => [s.name, sample(s.name)]))));
    const f = run(['-c', file, '--print-config', APP]);
    expect(f.stderr.split('\n').filter((l) => l && !/^prefork-otel: warning: config file .*: \w+ has no effect in prefork-otel \(.+\); ignored$/.test(l))).toEqual([]);
    expect(f.code).toBe(0);
    // the command line: every flag at once (an unknown flag is "unknown option", exit 2)
    const args: string[] = [];
    for (const s of keys) {
      const value = sample(s.name);
      if (typeof value === 'object' && !Array.isArray(value)) continue; // dict settings are config-file only, as in gunicorn
      for (const flag of s.flags) {
        if (flag === '--log-file' || flag === '-D' || flag === '--daemon') continue; // --log-file = --error-logfile; -D is tested on its own
        args.push(...(typeof value === 'boolean' ? [flag] : [flag, String(Array.isArray(value) ? value[0] : value)]));
      }
    }
    expect(args.length).toBeGreaterThan(100);
    const c = run([...args, '--print-config', APP]);
    expect(c.stderr.split('\n').filter((l) => l && !/^prefork-otel: warning: -[-\w]+ has no effect in prefork-otel \(.+\); ignored$/.test(l))).toEqual([]);
    expect(c.code).toBe(0);
    // the same settings warn in both places
    const names = (text: string) => text.split('\n').filter((l) => l).length;
    expect(names(f.stderr)).toBeGreaterThan(20);
    expect(names(c.stderr)).toBeGreaterThan(20);
  }, 120_000);

  it.each([
    [['--worker-tmp-dir', '/dev/shm'], '--worker-tmp-dir'],
    [['--statsd-host', 'localhost:8125'], '--statsd-host'],
    [['--paste', 'development.ini'], '--paste'],
    [['--no-sendfile'], '--no-sendfile'],
    [['--dogstatsd-tags', 'a:b'], '--dogstatsd-tags'],
    [['--http-protocols', 'h2,h1'], '--http-protocols'],
    [['--dirty-workers', '2'], '--dirty-workers'],
  ])('%j: one warning line naming it, and the settings are resolved', (args, name) => {
    const { warnings } = printConfig(args);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(new RegExp(`^prefork-otel: warning: ${name} has no effect in prefork-otel \\(.+\\); ignored$`));
  });

  it('the config file and the command line agree: the same warning, the same values', () => {
    const dir = tmpDir();
    const file = join(dir, 'conf.json');
    writeFileSync(file, JSON.stringify({ worker_tmp_dir: '/dev/shm', statsd_host: 'localhost:8125', keepalive: 7, limit_request_line: 1000, preload_app: true, accesslog: '-', forwarded_allow_ips: '10.0.0.1,10.0.0.2' }));
    const f = printConfig(['-c', file]);
    const c = printConfig(['--worker-tmp-dir', '/dev/shm', '--statsd-host', 'localhost:8125', '--keep-alive', '7', '--limit-request-line', '1000', '--preload', '--access-logfile', '-', '--forwarded-allow-ips', '10.0.0.1,10.0.0.2']);
    for (const k of ['keepAlive', 'limitRequestLine', 'preloadApp', 'accessLog', 'forwardedAllowIps']) expect(f.config[k], k).toEqual(c.config[k]);
    expect(c.config).toMatchObject({ keepAlive: 7, limitRequestLine: 1000, preloadApp: true, accessLog: '-', forwardedAllowIps: ['10.0.0.1', '10.0.0.2'] });
    expect(f.warnings).toEqual([
      `prefork-otel: warning: config file ${file}: worker_tmp_dir has no effect in prefork-otel (workers heartbeat over IPC, not through a temp file); ignored`,
      `prefork-otel: warning: config file ${file}: statsd_host has no effect in prefork-otel (metrics are served as Prometheus / OTLP, not StatsD); ignored`,
    ]);
    expect(c.warnings).toEqual([
      'prefork-otel: warning: --worker-tmp-dir has no effect in prefork-otel (workers heartbeat over IPC, not through a temp file); ignored',
      'prefork-otel: warning: --statsd-host has no effect in prefork-otel (metrics are served as Prometheus / OTLP, not StatsD); ignored',
    ]);
  });

  it('a runner with settings that have no meaning in Node starts, and logs one warning per setting', async () => {
    runner = await startRunner(['--worker-tmp-dir', '/dev/shm', '--statsd-host', 'localhost:8125', '--statsd-prefix', 'app', APP], { workers: 1 });
    const r = await fetch(runner.url('/'));
    expect(await r.text()).toBe('ok');
    const lines = runner.proc.stderr.split('\n').filter((l) => / \[WARNING\] .*has no effect/.test(l));
    expect(lines.map((l) => l.replace(/^.*\[WARNING\] /, ''))).toEqual([
      '--worker-tmp-dir has no effect in prefork-otel (workers heartbeat over IPC, not through a temp file); ignored',
      '--statsd-host has no effect in prefork-otel (metrics are served as Prometheus / OTLP, not StatsD); ignored',
      '--statsd-prefix has no effect in prefork-otel (metrics are served as Prometheus / OTLP, not StatsD); ignored',
    ]);
  });

  it('docs/runner.md\'s flag table names every setting with its status', async () => {
    const { settingsTable } = await import('../dist/cjs/config/runner.js') as { settingsTable: () => Array<{ file: string; status: string }> };
    const doc = readFileSync(join(FIXTURES, '..', '..', 'docs', 'runner.md'), 'utf8');
    const rows = settingsTable();
    expect(rows.length).toBeGreaterThan(100);
    for (const r of rows) {
      const row = doc.split('\n').find((l) => l.startsWith(`| \`${r.file}\` |`));
      expect(row, r.file).toBeDefined();
      expect(row!.split(' | ')[2], r.file).toBe(r.status);
    }
  });

  it('wsgi_app in the config file is the APP when the command line names none', () => {
    const dir = tmpDir();
    const file = join(dir, 'conf.json');
    writeFileSync(file, JSON.stringify({ wsgi_app: APP }));
    const r = run(['-c', file, '--print-config']);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { app: { path: string } }).app.path).toBe(APP);
  });
});

describe('bad values: one line, exit 2', () => {
  it.each([
    [['-w', '-1'], 'prefork-otel: invalid --workers="-1": must be ≥ 1 (an integer from 1 to 1024)'],
    [['--workers', '-3'], 'prefork-otel: invalid --workers="-3": must be ≥ 1 (an integer from 1 to 1024)'],
    [['-t', '-5'], 'prefork-otel: invalid --timeout="-5": must be ≥ 0 (a number from 0 to 86400 seconds)'],
    [['--max-requests', '-1'], 'prefork-otel: invalid --max-requests="-1": must be ≥ 0 (an integer from 0 to 1000000000000)'],
    [['--keep-alive', '-2'], 'prefork-otel: invalid --keep-alive="-2": must be ≥ 0 (a number from 0 to 3600 seconds)'],
    [['--backlog', '-1'], 'prefork-otel: invalid --backlog="-1": must be ≥ 0 (an integer from 0 to 2147483647)'],
    [['--limit-request-line', '9000'], 'prefork-otel: invalid --limit-request-line="9000": expected an integer from 0 to 8190'],
    [['--cert-reqs', '3'], 'prefork-otel: invalid --cert-reqs="3": expected an integer from 0 to 2'],
    [['--certfile', '/nonexistent.pem'], 'prefork-otel: invalid --certfile="/nonexistent.pem": expected an existing file'],
    [['--user', 'no-such-user-here'], 'prefork-otel: invalid --user="no-such-user-here": expected a user name from /etc/passwd or a numeric uid'],
    [['--umask', 'abc'], 'prefork-otel: invalid --umask="abc": expected a umask from 0 to 0o777 (e.g. 0o022, 022, 18)'],
    [['--forwarded-allow-ips', 'not-an-ip'], 'prefork-otel: invalid --forwarded-allow-ips="not-an-ip": expected a comma-separated list of IP addresses (or CIDR networks), or "*"'],
    [['--reload-engine', 'magic'], 'prefork-otel: invalid --reload-engine="magic": expected one of auto, poll, inotify'],
    [['--preload=yes'], 'prefork-otel: option --preload in the command line takes no value (see prefork-otel --help)'],
  ])('%j', (args, message) => {
    const r = run([...args, APP]);
    expect(r.stderr).toBe(message + '\n');
    expect(r.code).toBe(2);
  });

  it('--certfile without --keyfile', () => {
    const dir = tmpDir();
    writeFileSync(join(dir, 'c.pem'), 'x');
    const r = run(['--certfile', join(dir, 'c.pem'), APP]);
    expect(r.stderr).toBe('prefork-otel: --certfile and --keyfile go together (got only --certfile): HTTPS needs both\n');
    expect(r.code).toBe(2);
  });
});

describe('GUNICORN_CMD_ARGS: shell quoting', () => {
  it('quotes and backslashes as in a shell; no expansion', () => {
    const { config } = printConfig([], { GUNICORN_CMD_ARGS: `--name "my app" -w 3 --access-logformat '%(h)s "%(r)s"' -e A=x\\ y -e B=$HOME` });
    expect(config).toMatchObject({ procName: 'my app', workers: 3, accessLogFormat: '%(h)s "%(r)s"', rawEnv: { A: 'x y', B: '$HOME' } });
  });

  it.each([
    ['--name "my app', 'prefork-otel: invalid GUNICORN_CMD_ARGS="--name \\"my app": unclosed " quote (quote values as in a shell: --name "my app")'],
    ["--name 'x", 'prefork-otel: invalid GUNICORN_CMD_ARGS="--name \'x": unclosed \' quote (quote values as in a shell: --name "my app")'],
    ['-w -1', 'prefork-otel: invalid --workers (in GUNICORN_CMD_ARGS)="-1": must be ≥ 1 (an integer from 1 to 1024)'],
    ['--name a|b', 'prefork-otel: invalid GUNICORN_CMD_ARGS="--name a|b": shell operator "|" is not allowed (quote it)'],
  ])('%j: one line, exit 2', (value, message) => {
    const r = run([APP], { GUNICORN_CMD_ARGS: value });
    expect(r.stderr).toBe(message + '\n');
    expect(r.code).toBe(2);
  });
});

/** a value gunicorn would accept for `name`, of the setting's kind */
function sample(name: string): unknown {
  const samples: Record<string, unknown> = {
    bind: '127.0.0.1:8000', workers: 2, worker_class: 'sync', chdir: '/tmp', user: 'nobody', group: 'nogroup', umask: '0o022',
    certfile: '/etc/hostname', keyfile: '/etc/hostname', ca_certs: '/etc/hostname', cert_reqs: 0, raw_env: ['A=1'], forwarded_allow_ips: '127.0.0.1',
    proxy_allow_ips: '127.0.0.1', loglevel: 'info', reload_engine: 'auto', reload_extra_files: ['/tmp/x.txt'], secure_scheme_headers: { 'X-FORWARDED-PROTO': 'https' },
    logconfig_dict: {}, limit_request_line: 4094, limit_request_fields: 100, limit_request_field_size: 8190, accesslog: '-', errorlog: '-',
    wsgi_app: APP, pythonpath: '/tmp', paste: 'x.ini', raw_paste_global_conf: ['a=b'], syslog_addr: 'udp://localhost:514', statsd_host: 'localhost:8125',
    worker_tmp_dir: '/dev/shm', pidfile: '/tmp/prefork-otel-settings-test.pid', ciphers: 'ECDHE+AESGCM', ssl_version: '2', tmp_upload_dir: '/tmp', header_map: 'drop',
  };
  if (name in samples) return samples[name];
  if (/^(reload|spew|preload_app|sendfile|reuse_port|daemon|initgroups|capture_output|syslog|enable_stdio_inheritance|suppress_ragged_eofs|do_handshake_on_connect|strip_header_spaces|permit_\w+|casefold_http_method|disable_redirect_access_to_syslog|tolerate_dangerous_framing|proxy_protocol|check_config|print_config)$/.test(name)) return true;
  if (/^(backlog|threads|worker_connections|max_requests|max_requests_jitter|timeout|graceful_timeout|keepalive)$/.test(name)) return 5;
  return 'x';
}
