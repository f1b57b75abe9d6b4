/**
 * The serving loop's pure parts (workers/loop.ts), in-process and fast: the --max-requests quota,
 * its jitter, and the drain state machine. The real-process behaviour is in runner-churn / runner-sync.
 */
import { describe, expect, it } from 'vitest';
import { Drain, jitteredMaxRequests, quota } from '../src/workers/loop';

describe('quota (--max-requests)', () => {
  it('no limit: every request is served', () => {
    for (const n of [1, 2, 1000, 1e9]) expect(quota(n, 0)).toBe('serve');
  });
  it('the request that reaches the limit is the last, later ones (other connections) are over', () => {
    expect([1, 2, 3, 4, 5].map((n) => quota(n, 3))).toEqual(['serve', 'serve', 'last', 'over', 'over']);
    expect(quota(1, 1)).toBe('last');
  });
});

describe('jitteredMaxRequests', () => {
  it('0 stays 0 (no limit), whatever the jitter', () => {
    expect(jitteredMaxRequests(0, 50, () => 0.99)).toBe(0);
  });
  it('max + randint(0, jitter), both ends included (gunicorn)', () => {
    expect(jitteredMaxRequests(100, 10, () => 0)).toBe(100);
    expect(jitteredMaxRequests(100, 10, () => 0.999999)).toBe(110);
    expect(jitteredMaxRequests(100, 10, () => 0.5)).toBe(105);
    expect(jitteredMaxRequests(100, 0, () => 0.999)).toBe(100);
  });
  it('every value of the range occurs, none outside it', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 1100; i++) seen.add(jitteredMaxRequests(50, 10, () => (i % 11) / 11 + 1e-9));
    expect([...seen].sort((a, b) => a - b)).toEqual([50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60]);
  });
});

describe('Drain', () => {
  const settled = async (p: Promise<void>) => {
    let done = false;
    void p.then(() => { done = true; });
    await new Promise((r) => setImmediate(r));
    return done;
  };
  it('serving: connections come and go, nothing resolves', async () => {
    const d = new Drain();
    d.opened(); d.opened(); d.closed(); d.closed();
    expect(d.state).toBe('serving');
    expect(await settled(d.done)).toBe(false);
  });
  it('begin with nothing open: drained at once', async () => {
    const d = new Drain();
    expect(await settled(d.begin())).toBe(true);
    expect(d.state).toBe('drained');
  });
  it('begin with connections open: draining until the last one closes', async () => {
    const d = new Drain();
    d.opened(); d.opened();
    const done = d.begin();
    expect(d.state).toBe('draining');
    d.closed();
    expect(await settled(done)).toBe(false);
    expect(d.connections).toBe(1);
    d.closed();
    expect(await settled(done)).toBe(true);
    expect(d.state).toBe('drained');
  });
  it('a connection accepted while draining (already in the process) is waited for too', async () => {
    const d = new Drain();
    d.opened();
    const done = d.begin();
    d.opened();
    d.closed();
    expect(await settled(done)).toBe(false);
    d.closed();
    expect(await settled(done)).toBe(true);
  });
  it('finish (the graceful time ran out) ends the drain with connections still open; begin again is a no-op', async () => {
    const d = new Drain();
    d.opened();
    const done = d.begin();
    d.finish();
    expect(await settled(done)).toBe(true);
    expect(d.begin()).toBe(done);
    d.closed();
    expect(d.state).toBe('drained');
  });
  it('more closes than opens never go below zero', () => {
    const d = new Drain();
    d.closed();
    expect(d.connections).toBe(0);
  });
});
