import { defineConfig } from 'vitest/config';

// Tests start real processes and servers; they run files in parallel on 2 cores but each file's
// tests in order. Per-test timeouts are generous because the machine is shared and noisy; no test
// asserts a wall-clock duration.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    maxWorkers: 2,
    fileParallelism: true,
  },
});
