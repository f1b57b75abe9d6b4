/**
 * `prefork-otel exporter`: serves the union of a PROMETHEUS_MULTIPROC_DIR directory written by
 * preloaded processes (PM2 cluster mode, several processes sharing a volume) on one endpoint.
 * It reads the files at each scrape and marks the files of processes that ended (their gauges are
 * dropped, their counters and histograms kept), as prometheus_client's mark_process_dead does.
 */
import { parseArgs } from 'node:util';
import {
  ConfigError, exitOnUserError, loadConfig, parseHost, parsePath, parsePort,
} from '../config';
import { HostMetricsSource } from '../export/host-metrics';
import { MultiprocReader, checkMultiprocDir } from '../export/multiproc';
import { processResource } from '../export/resource';
import { startMetricsServer, type MetricsServer } from '../export/server';

export const DEFAULT_MULTIPROC_DIR = '/tmp/prometheus_multiproc';

export const EXPORTER_USAGE = `usage: prefork-otel exporter [--port PORT] [--bind ADDRESS] [--dir DIR] [--path PATH]

Serves the union of the metrics files preloaded processes write to PROMETHEUS_MULTIPROC_DIR.
  -p, --port PORT      port to listen on (default: PROMETHEUS_METRICS_PORT, else 9091)
  -b, --bind ADDRESS   address to listen on (default: PROMETHEUS_BIND_ADDRESS, else 0.0.0.0)
  -d, --dir DIR        the directory (default: PROMETHEUS_MULTIPROC_DIR, else ${DEFAULT_MULTIPROC_DIR})
      --path PATH      URL path (default: PREFORK_OTEL_METRICS_PATH, else /metrics)
  -h, --help           this text
`;

const OPTIONS = {
  port: { type: 'string', short: 'p' },
  bind: { type: 'string', short: 'b' },
  dir: { type: 'string', short: 'd' },
  path: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

const ALLOWED = '--port, --bind, --dir, --path, --help';

/** parseArgs' errors as our one line */
function usageError(e: NodeJS.ErrnoException): ConfigError {
  const option = /'(-[^']*)'/.exec(e.message)?.[1];
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return new ConfigError(`prefork-otel exporter: unknown option ${JSON.stringify(option ?? e.message)}: expected one of ${ALLOWED}`);
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      return new ConfigError(`prefork-otel exporter: option ${/--[a-z]+/.exec(e.message)?.[0] ?? option} needs a value`);
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return new ConfigError(`prefork-otel exporter: unexpected argument ${JSON.stringify(/'([^']*)'/.exec(e.message)?.[1] ?? '')}: the exporter takes only options (${ALLOWED})`);
    default:
      return new ConfigError(`prefork-otel exporter: ${e.message.split('\n')[0]}`);
  }
}

export interface ExporterOptions { port: number; host: string; dir: string; path: string; help: boolean }

/** Flags over environment over defaults; throws ConfigError (one line) on anything invalid. */
export function exporterOptions(argv: string[], env: NodeJS.ProcessEnv = process.env): ExporterOptions {
  let values: { port?: string; bind?: string; dir?: string; path?: string; help?: boolean };
  try {
    ({ values } = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }));
  } catch (e) {
    throw usageError(e as NodeJS.ErrnoException);
  }
  if (values.help) return { port: 0, host: '', dir: '', path: '', help: true };
  const config = loadConfig(env);
  return {
    port: values.port !== undefined ? parsePort('--port', values.port) : config.metricsPort,
    host: values.bind !== undefined ? parseHost('--bind', values.bind) : config.bindAddress,
    dir: values.dir !== undefined
      ? checkMultiprocDir('--dir', values.dir)
      : checkMultiprocDir('PROMETHEUS_MULTIPROC_DIR', config.multiprocDir ?? DEFAULT_MULTIPROC_DIR),
    path: values.path !== undefined ? parsePath('--path', values.path) : config.metricsPath,
    help: false,
  };
}

/**
 * Run the exporter until SIGTERM / SIGINT. Resolves once it listens. A user error (bad flag, bad
 * value, unwritable directory, port in use) prints one line and exits non-zero (2 for usage).
 */
export async function runExporter(argv: string[]): Promise<void> {
  let server: MetricsServer;
  let o: ExporterOptions;
  try {
    o = exporterOptions(argv);
    if (o.help) {
      process.stdout.write(EXPORTER_USAGE);
      return;
    }
    const config = loadConfig();
    const resource = processResource(config);
    const reader = new MultiprocReader(o.dir, { deadlineMs: config.scrapeTimeoutMs });
    // PREFORK_OTEL_HOST_METRICS=true: the exporter is the one process of the host that serves them
    const host = HostMetricsSource.start();
    server = await startMetricsServer({
      host: o.host, port: o.port, path: o.path, ref: true, web: config,
      gather: () => reader.scrape(resource, config, async () => (host ? [await host.collect()] : [])),
    });
  } catch (e) {
    exitOnUserError(e);
  }
  const stop = () => void server.close().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  process.stdout.write(`prefork-otel exporter: serving ${o.dir} on ${server.scheme}://${o.host}:${server.port}${o.path}\n`);
}
