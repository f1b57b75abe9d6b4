/**
 * Issue 8 item 6 (runner worker memory): the master starts each worker with V8's young generation
 * capped (`--max-semi-space-size=2`, docs/runner.md "Memory"), unless the user chose a size.
 * Checked in the real worker process: its execArgv, and its young generation's size after a burst of
 * allocations that makes V8 grow it to its limit (2 semi-spaces of 2 MB = 4 MB with the cap; V8's
 * default limit is 16 MB per semi-space). The memory figures themselves are measured in
 * bench/memory-runner.mjs (no thresholds in tests).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { FIXTURES } from './helpers';
import { startRunner, type Runner } from './runner-helpers';
import { WORKER_SEMI_SPACE_MB, workerExecArgv } from '../src/workers/protocol';

const APP = join(FIXTURES, 'worker-v8.cjs');
const report = async (url: string) => (await (await fetch(url)).json()) as { execArgv: string[]; newSpaceMB: number };
let r: Runner | undefined;
afterEach(async () => {
  await r?.stop();
  r = undefined;
});

describe('workerExecArgv', () => {
  it('adds the semi-space cap after the master\'s own flags', () => {
    expect(WORKER_SEMI_SPACE_MB).toBe(2);
    expect(workerExecArgv([])).toEqual(['--max-semi-space-size=2']);
    expect(workerExecArgv(['--enable-source-maps'], '--no-warnings')).toEqual(['--enable-source-maps', '--max-semi-space-size=2']);
  });
  it('leaves a size the user chose (execArgv or NODE_OPTIONS, either spelling)', () => {
    expect(workerExecArgv(['--max-semi-space-size=8'])).toEqual(['--max-semi-space-size=8']);
    expect(workerExecArgv(['--max_semi_space_size', '8'])).toEqual(['--max_semi_space_size', '8']);
    expect(workerExecArgv([], '--no-warnings --max-semi-space-size=16')).toEqual([]);
    // a different flag with the same prefix is not a choice of size
    expect(workerExecArgv(['--max-semi-space-sizes=3'])).toEqual(['--max-semi-space-sizes=3', '--max-semi-space-size=2']);
  });
});

describe('runner workers', () => {
  it('run with --max-semi-space-size=2 by default', async () => {
    r = await startRunner(['-w', '1', APP], { workers: 1 });
    const w = await report(r.url('/'));
    expect(w.execArgv).toContain('--max-semi-space-size=2');
    expect(w.newSpaceMB).toBeLessThanOrEqual(2 * WORKER_SEMI_SPACE_MB);
  }, 30_000);

  it('keep the size given in NODE_OPTIONS', async () => {
    r = await startRunner(['-w', '1', APP], { workers: 1, env: { NODE_OPTIONS: '--max-semi-space-size=8' } });
    const w = await report(r.url('/'));
    expect(w.execArgv.some((a) => a.includes('semi-space'))).toBe(false);
    // NODE_OPTIONS' 8 MB applies: the young generation grows past the runner's 4 MB
    expect(w.newSpaceMB).toBeGreaterThan(2 * WORKER_SEMI_SPACE_MB);
  }, 30_000);
});
