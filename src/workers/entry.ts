/**
 * A runner worker process (forked by the master): read the boot settings, start heartbeats, take
 * the listening sockets the master sends, then run the worker class. See master/arbiter.ts.
 */
import { ConfigError, loadConfig } from '../config';
import type { WorkerKind } from '../config/runner';
import { pickHooks } from '../hooks/server';
import { RunnerLog } from '../util/logger';
import type { SocketHandle } from './acceptor';
import { dropPrivileges } from './app';
import { heartbeat, type BaseWorker } from './base';
import { BOOT_ENV, WORKER_BOOT_ERROR, isTagged, type ListenMessage, type WorkerBoot } from './protocol';
import type { PrometheusWorker } from './sync';

type WorkerClass = new (...a: ConstructorParameters<typeof PrometheusWorker>) => BaseWorker;
/** only the worker's own class is loaded (a sync worker does not load gthread's node:inspector, merge, …) */
const CLASSES: Record<WorkerKind, () => Promise<WorkerClass>> = {
  sync: async () => (await import('./sync')).PrometheusWorker,
  gthread: async () => (await import('./gthread')).PrometheusThreadWorker,
  eventlet: async () => (await import('./async')).PrometheusEventletWorker,
  gevent: async () => (await import('./async')).PrometheusGeventWorker,
};

/** the master's sockets: `binds` × `copies` handles, each in its own IPC message */
function receiveHandles(boot: WorkerBoot): Promise<SocketHandle[][]> {
  const out: SocketHandle[][] = Array.from({ length: boot.binds }, () => []);
  let missing = boot.binds * boot.copies;
  return new Promise((resolve) => {
    if (missing === 0) return resolve(out);
    const onMessage = (m: unknown, handle: unknown) => {
      if (!isTagged(m, 'listen') || !handle) return;
      const { index, copy } = m as ListenMessage;
      out[index]![copy] = handle as SocketHandle;
      if (--missing === 0) {
        process.off('message', onMessage);
        resolve(out);
      }
    };
    process.on('message', onMessage);
  });
}

function fail(e: unknown, log: RunnerLog): never {
  if (e instanceof ConfigError) {
    process.stderr.write(e.message + '\n');
    process.exit(e.exitCode);
  }
  log.error(`Exception in worker process\n${(e as Error)?.stack ?? e}`);
  // gunicorn: an exception before the worker booted (the app threw at import) is WORKER_BOOT_ERROR
  process.exit(WORKER_BOOT_ERROR);
}

async function main(): Promise<void> {
  const boot = JSON.parse(process.env[BOOT_ENV] ?? 'null') as WorkerBoot | null;
  if (!boot || !process.send) {
    process.stderr.write('prefork-otel: this is the runner\'s worker entry point; start the runner with `prefork-otel APP`\n');
    process.exit(2);
  }
  delete process.env[BOOT_ENV];
  process.title = `prefork-otel: worker${boot.procName ? ` [${boot.procName}]` : ''}`;
  heartbeat.start(boot.beatMs);
  const log = new RunnerLog(boot.logLevel);
  // gunicorn's lines, logged by the worker itself (under its own pid)
  log.info(`Booting worker with pid: ${process.pid}`);
  process.once('exit', () => log.info(`Worker exiting (pid: ${process.pid})`));
  let worker: BaseWorker;
  try {
    const config = loadConfig(process.env);
    // config/runner (the SETTINGS table, shell-quote) only for a config file's hooks
    const user = boot.configFile ? pickHooks(await (await import('../config/runner')).readConfigFile(boot.configFile)) : {};
    worker = new (await CLASSES[boot.kind]())(boot, config, log, user);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(e.message + '\n');
      process.exit(WORKER_BOOT_ERROR);
    }
    throw e;
  }
  const handles = await receiveHandles(boot);
  try {
    dropPrivileges();
  } catch (e) {
    fail(e, log);
  }
  await worker.run(handles).catch((e) => fail(e, log));
}

void main();
