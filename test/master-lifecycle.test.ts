/**
 * Fast unit tests for the master's pure parts: a worker's lifecycle (WorkerProcess) and the one
 * restart-reason decision (exit-reason.ts). The real-process behaviour is in runner-signals.test.ts
 * and runner-gunicorn.test.ts; here the ChildProcess is a stand-in object (only pid, exitCode,
 * signalCode and kill() are read), because these tests check state transitions, not processes.
 */
import { describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import type { WorkerLink } from '../src/export/ipc';
import { abortsOnUncaughtException, classifyExit, restartReason, type ExitFacts } from '../src/master/exit-reason';
import { WorkerProcess } from '../src/master/worker-process';
import { gunicornAddress } from '../src/master/sockets';

function worker(): { w: WorkerProcess; sent: string[] } {
  const sent: string[] = [];
  const child = { pid: 4242, exitCode: null, signalCode: null, kill: (s: string) => { sent.push(s); return true; } };
  return { w: new WorkerProcess(child as unknown as ChildProcess, {} as WorkerLink, 1), sent };
}

describe('WorkerProcess: booting → running → leaving(reason) → exited', () => {
  it('walks the phases once, and the state hooks see follows', () => {
    const { w } = worker();
    expect([w.phase, w.state, w.staying, w.restartReason]).toEqual(['booting', 'booting', true, undefined]);
    expect(w.ready()).toBe(true);
    expect(w.ready()).toBe(false);
    expect([w.phase, w.state]).toEqual(['running', 'running']);
    expect(w.leave('max_requests')).toBe(true);
    expect([w.phase, w.state, w.staying, w.restartReason]).toEqual(['leaving', 'stopping', false, 'max_requests']);
    w.exited(0, null);
    expect([w.phase, w.alive, w.exitCode, w.signal]).toEqual(['exited', false, 0, null]);
  });

  it('the first reason to leave stays (a later stop does not turn a reload into a scale-down)', () => {
    const { w } = worker();
    w.ready();
    expect(w.leave('reload')).toBe(true);
    expect(w.leave('shutdown')).toBe(false);
    expect(w.leaveReason).toBe('reload');
  });

  it('scale_down and shutdown are not restarts', () => {
    for (const reason of ['scale_down', 'shutdown'] as const) {
      const { w } = worker();
      w.leave(reason);
      expect(w.restartReason).toBeUndefined();
    }
  });

  it('a reload supersedes a running worker: it no longer counts, it is outdated until it leaves', () => {
    const { w } = worker();
    w.ready();
    w.supersede();
    expect([w.staying, w.outdated, w.phase]).toEqual([false, true, 'running']);
    w.leave('reload');
    expect(w.outdated).toBe(false);
  });

  it('may die in any phase (booting: no leave reason); killedByMaster tells who sent the SIGKILL', () => {
    const { w, sent } = worker();
    w.exited(null, 'SIGKILL');
    expect([w.phase, w.leaveReason, w.killedByMaster]).toEqual(['exited', undefined, false]);
    w.kill('SIGTERM');
    expect(sent).toEqual([]); // an exited worker is not signalled
    const b = worker();
    b.w.kill('SIGKILL');
    expect([b.sent, b.w.killedByMaster]).toEqual([['SIGKILL'], true]);
  });
});

describe('restartReason: the one decision of both masters', () => {
  const base: ExitFacts = { leaving: undefined, code: null, signal: null, stopping: false, oomRose: false, abortOnUncaught: false };
  it.each([
    [{ leaving: 'reload' }, 'reload'],
    [{ leaving: 'max_requests', code: 0 }, 'max_requests'],
    [{ leaving: 'timeout', signal: 'SIGKILL' }, 'timeout'],
    [{ leaving: 'signal', code: 0 }, 'signal'],
    [{ leaving: 'scale_down', code: 0 }, undefined],
    [{ leaving: 'shutdown', code: 0 }, undefined],
    [{ leaving: 'reload', stopping: true }, undefined],
    [{ code: 1 }, 'crash'],
    [{ code: 0 }, 'crash'],
    [{ signal: 'SIGKILL' }, 'signal'],
    [{ signal: 'SIGKILL', oomRose: true }, 'oom'],
    [{ signal: 'SIGABRT' }, 'oom'],
    [{ code: 134 }, 'oom'],
    [{ signal: 'SIGABRT', abortOnUncaught: true }, 'crash'],
    [{ signal: 'SIGTRAP', abortOnUncaught: true }, 'crash'],
    [{ signal: 'SIGTRAP' }, 'signal'],
    [{ signal: 'SIGTERM' }, 'signal'],
  ] as Array<[Partial<ExitFacts>, string | undefined]>)('%j → %s', (facts, reason) => {
    expect(restartReason({ ...base, ...facts })).toBe(reason);
  });

  it('classifyExit is the unasked branch', () => {
    expect(classifyExit(null, 'SIGKILL', true)).toBe('oom');
    expect(classifyExit(1, null, false)).toBe('crash');
  });

  it('--abort-on-uncaught-exception is found on the command line or in NODE_OPTIONS', () => {
    expect(abortsOnUncaughtException(['--abort-on-uncaught-exception'])).toBe(true);
    expect(abortsOnUncaughtException(['--abort_on_uncaught_exception'])).toBe(true);
    expect(abortsOnUncaughtException([], '--max-old-space-size=64 --abort-on-uncaught-exception')).toBe(true);
    expect(abortsOnUncaughtException(['--inspect'], '--max-old-space-size=64')).toBe(false);
  });
});

describe('gunicornAddress: how gunicorn names an address in its log', () => {
  it('a TCP address is the Python tuple, a unix socket its path', () => {
    expect(gunicornAddress({ kind: 'tcp', host: '127.0.0.1', port: 8000 })).toBe("('127.0.0.1', 8000)");
    expect(gunicornAddress({ kind: 'unix', path: '/run/app.sock' })).toBe('/run/app.sock');
  });
});
