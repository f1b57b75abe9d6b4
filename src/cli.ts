/** `prefork-otel`: the runner's entry point (see docs/runner.md). */
process.stderr.write('prefork-otel: the runner is not built yet\n');
process.exit(2);
