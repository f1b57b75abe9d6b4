/** The node:cluster primary's restart reasons go through the one classifier (restartReason): pure, fast. */
import { describe, expect, it } from 'vitest';
import { exitReason } from '../src/modes/cluster';

describe('exitReason (node:cluster primary) = restartReason with cluster facts', () => {
  it.each([
    ['asked for (worker.disconnect() / kill())', 0, null, { asked: true }, undefined],
    ['asked for, then killed by a signal', null, 'SIGTERM', { asked: true }, undefined],
    ['exit 0 on its own', 0, null, {}, undefined],
    ['while the primary stops gracefully', 1, null, { stopping: true }, undefined],
    ['kill -9', null, 'SIGKILL', {}, 'signal'],
    ['SIGTERM from outside', null, 'SIGTERM', {}, 'signal'],
    ['uncaught exception', 1, null, {}, 'crash'],
    ['V8 heap abort', null, 'SIGABRT', {}, 'oom'],
    ['abort under --abort-on-uncaught-exception (execArgv)', null, 'SIGABRT', { execArgv: ['node', '--abort-on-uncaught-exception', 'app.js'] }, 'crash'],
    ['abort under --abort-on-uncaught-exception (NODE_OPTIONS)', null, 'SIGABRT', { nodeOptions: '-r x --abort-on-uncaught-exception' }, 'crash'],
  ] as const)('%s', async (_what, code, signal, opts, reason) => {
    expect(await exitReason(code, signal, opts)).toBe(reason);
  });
});
