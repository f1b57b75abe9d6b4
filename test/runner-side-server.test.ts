/**
 * An app that starts a second HTTP server of its own (an admin / metrics server, as an OpenTelemetry
 * Prometheus exporter does) under the real runner: the app's own server is the one served on the
 * runner's --bind, the side server binds its own port in each worker, and no worker restarts.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FIXTURES, freePort, total, waitFor } from './helpers';
import { load, startRunner, type Runner } from './runner-helpers';

const APP = join(FIXTURES, 'runner-side-server.cjs');
let runner: Runner | undefined;

afterEach(async () => {
  await runner?.stop();
  runner = undefined;
});

/** `admin listening on PORT pid PID` lines → PID → PORT */
function adminPorts(stdout: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const [, port, pid] of stdout.matchAll(/^admin listening on (\d+) pid (\d+)$/gm)) m.set(pid!, Number(port));
  return m;
}

describe('an app with a side server of its own', () => {
  it('-w 2, side server first: the app (its last listen()) is served on the bind, each worker binds its own side server, no restarts', async () => {
    const own = await freePort();
    runner = await startRunner(['-w', '2', APP], { workers: 2, env: { ADMIN_PORT: '0', APP_PORT: String(own) } });
    const pids = await runner.running();
    const r = await fetch(runner.url('/hello'));
    expect(await r.text()).toMatch(/^app \d+ \/hello$/);
    expect(await load(runner.url('/x'), 9, 3)).toEqual(Array(9).fill(200));
    // the app's listen callback ran with the runner's address; the port the script asked for was never bound
    await waitFor(() => runner!.proc.stdout.split('\n').filter((l) => l.startsWith(`app listening on ${runner!.port} pid `)).length === 2, 10_000, 'both app listen callbacks');
    await expect(fetch(`http://127.0.0.1:${own}/`)).rejects.toThrow();
    // each worker's side server listens on its own ephemeral port and answers there
    const admins = await waitFor(() => { const m = adminPorts(runner!.proc.stdout); return m.size === 2 ? m : undefined; }, 10_000, 'two side servers');
    expect([...admins.keys()].sort()).toEqual(pids);
    for (const [pid, port] of admins) expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe(`admin ${pid}`);
    // no restart loop: the same two workers, no restart counted, exactly one side server per worker ever
    const s = await runner.scrape();
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(10);
    expect(total(s, 'gunicorn_master_worker_restarts_total')).toBe(0);
    expect(await runner.running()).toEqual(pids);
    expect(runner.proc.stdout.match(/^admin listening on /gm)).toHaveLength(2);
  });

  it('-w 2, side server last: the listen() on the runner\'s bind port is the app\'s, not the last one', async () => {
    const port = await freePort();
    runner = await startRunner(['-w', '2', APP], { workers: 2, port, env: { ADMIN_PORT: '0', APP_PORT: String(port), ADMIN_LAST: '1' } });
    expect(await load(runner.url('/y'), 6, 2)).toEqual(Array(6).fill(200));
    expect(await (await fetch(runner.url('/z'))).text()).toMatch(/^app \d+ \/z$/);
    const admins = await waitFor(() => { const m = adminPorts(runner!.proc.stdout); return m.size === 2 ? m : undefined; }, 10_000, 'two side servers');
    for (const [pid, p] of admins) expect(await (await fetch(`http://127.0.0.1:${p}/`)).text()).toBe(`admin ${pid}`);
    const s = await runner.scrape();
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(7);
    expect(total(s, 'gunicorn_master_worker_restarts_total')).toBe(0);
  });

  it.each([
    ['and does not listen for it: the export is served', { APP_LISTEN: '0' }],
    ['and listens for it last: the server serving the export is the app\'s', { ADMIN_LAST: '1' }],
  ])('-w 2, a module that exports its app %s; the side server binds per worker', async (_what, env) => {
    const own = await freePort();
    runner = await startRunner(['-w', '2', APP], { workers: 2, env: { ADMIN_PORT: '0', APP_PORT: String(own), EXPORT: '1', ...env } });
    expect(await load(runner.url('/e'), 8, 2)).toEqual(Array(8).fill(200));
    expect(await (await fetch(runner.url('/e'))).text()).toMatch(/^app \d+ \/e$/);
    await expect(fetch(`http://127.0.0.1:${own}/`)).rejects.toThrow();
    const admins = await waitFor(() => { const m = adminPorts(runner!.proc.stdout); return m.size === 2 ? m : undefined; }, 10_000, 'two side servers');
    for (const [pid, p] of admins) expect(await (await fetch(`http://127.0.0.1:${p}/`)).text()).toBe(`admin ${pid}`);
    const s = await runner.scrape();
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(9);
    expect(total(s, 'gunicorn_master_worker_restarts_total')).toBe(0);
  });

  it('-w 1: a side server on a fixed port answers there', async () => {
    const adminPort = await freePort();
    runner = await startRunner(['-w', '1', APP], { workers: 1, env: { ADMIN_PORT: String(adminPort), APP_PORT: String(await freePort()) } });
    const [pid] = await runner.running();
    await waitFor(() => runner!.proc.stdout.includes(`admin listening on ${adminPort} pid ${pid}\n`), 10_000, 'the side server listening');
    expect(await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text()).toBe(`admin ${pid}`);
    expect(await (await fetch(runner.url('/a'))).text()).toBe(`app ${pid} /a`);
    expect(total(await runner.scrape(), 'gunicorn_worker_requests_total')).toBe(1);
  });

  it('-w 2, @opentelemetry/exporter-prometheus started by the app on a fixed port: the app is served, one worker\'s exporter gets the port, the other\'s fails (handled by the exporter), no restarts', async () => {
    const promPort = await freePort();
    runner = await startRunner(['-w', '2', join(FIXTURES, 'runner-otel-prometheus.cjs')], { workers: 2, env: { OTEL_PROM_PORT: String(promPort), APP_PORT: String(await freePort()) } });
    const pids = await runner.running();
    const out = await waitFor(() => (runner!.proc.stdout.match(/^exporter (listening|failed)/gm)?.length === 2 ? runner!.proc.stdout : undefined), 10_000, 'both exporters tried');
    const owner = /^exporter listening pid (\d+)$/m.exec(out)?.[1];
    expect(out.match(/^exporter listening pid /gm)).toHaveLength(1);
    expect(out.match(/^exporter failed EADDRINUSE pid \d+$/gm)).toHaveLength(1);
    expect(pids).toContain(owner);
    // the runner's bind serves the app; count what the owner of the exporter's port served
    const bodies: string[] = [];
    for (let i = 0; i < 12; i++) bodies.push(await (await fetch(runner.url(`/r${i}`), { headers: { connection: 'close' } })).text());
    for (const b of bodies) expect(b).toMatch(/^app \d+$/);
    const byOwner = bodies.filter((b) => b === `app ${owner}`).length;
    const prom = await (await fetch(`http://127.0.0.1:${promPort}/metrics`)).text();
    // (no series at all while that worker served none)
    expect(Number(/^app_hits_total(?:\{[^}]*\})? (\d+)/m.exec(prom)?.[1] ?? 0)).toBe(byOwner);
    // the exporter's scrape is not the worker's traffic; nobody restarted
    const s = await runner.scrape();
    expect(total(s, 'gunicorn_worker_requests_total')).toBe(12);
    expect(total(s, 'gunicorn_master_worker_restarts_total')).toBe(0);
    expect(await runner.running()).toEqual(pids);
  });

  it('--preload -w 1: the master loads the app but binds none of its servers; the worker\'s side server gets the fixed port', async () => {
    const adminPort = await freePort();
    runner = await startRunner(['--preload', '-w', '1', APP], { workers: 1, env: { ADMIN_PORT: String(adminPort), APP_PORT: String(await freePort()) } });
    const [pid] = await runner.running();
    expect(pid).not.toBe(String(runner.proc.child.pid));
    await waitFor(() => runner!.proc.stdout.includes(`admin listening on ${adminPort} pid ${pid}\n`), 10_000, 'the worker\'s side server listening');
    expect(await (await fetch(`http://127.0.0.1:${adminPort}/`)).text()).toBe(`admin ${pid}`);
    expect(await (await fetch(runner.url('/p'))).text()).toBe(`app ${pid} /p`);
    // the master's load listened on nothing: exactly one side server line, the worker's; no restart
    expect(runner.proc.stdout.match(/^admin listening on /gm)).toHaveLength(1);
    expect(total(await runner.scrape(), 'gunicorn_master_worker_restarts_total')).toBe(0);
  });
});
