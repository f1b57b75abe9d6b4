/**
 * The label policy's pure parts, in milliseconds: path normalisation, the endpoint cap and the
 * endpoint length cap (src/metrics/labels.ts). The real-process side (a preloaded server under a
 * path scan and 8 KB paths) is test/preload-overflow.test.ts.
 */
import { describe, expect, it } from 'vitest';
import {
  EndpointPolicy, MAX_ENDPOINT_LENGTH, OVERFLOW_ENDPOINT, TRUNCATED_MARKER, URL_CACHE_MAX_LENGTH, capEndpoint, normalizePath,
} from '../src/metrics/labels';
import { word } from './helpers';

describe('normalizePath', () => {
  it.each([
    ['/users/123?x=1', '/users/:id'],
    ['/users/123/', '/users/:id'],
    ['/', '/'],
    ['', '/'],
    ['/a/b#frag', '/a/b'],
    ['/o/550e8400-e29b-41d4-a716-446655440000', '/o/:id'],
    ['/h/0123456789abcdef0123', '/h/:id'],
    ['/t/abcDEF123_-abcdefghij', '/t/:id'],
    ['/t/abcdefghijklmnopqrstuvwxyz', '/t/abcdefghijklmnopqrstuvwxyz'],
    ['http://example.com/x/7?q', '/x/:id'],
    ['http://example.com', '/'],
  ])('%s → %s', (url, ep) => {
    expect(normalizePath(url)).toBe(ep);
  });
});

describe('capEndpoint (MAX_ENDPOINT_LENGTH)', () => {
  it('leaves a value of at most the maximum alone', () => {
    const p = '/' + 'a'.repeat(MAX_ENDPOINT_LENGTH - 1);
    expect(p.length).toBe(MAX_ENDPOINT_LENGTH);
    expect(capEndpoint(p)).toBe(p);
  });

  it('cuts a longer value at a segment boundary and marks it', () => {
    const p = '/api/v1/' + 'z'.repeat(8192);
    expect(capEndpoint(p)).toBe('/api/v1' + TRUNCATED_MARKER);
    // many short segments: as many whole segments as fit, then the marker
    const many = Array.from({ length: 400 }, (_, i) => '/' + word(i)).join('');
    const cut = capEndpoint(many);
    expect(cut.length).toBeLessThanOrEqual(MAX_ENDPOINT_LENGTH);
    expect(cut.endsWith(TRUNCATED_MARKER)).toBe(true);
    const kept = cut.slice(0, -TRUNCATED_MARKER.length);
    expect(many.startsWith(kept + '/')).toBe(true);
    // the next segment would not have fitted
    const next = many.indexOf('/', kept.length + 1);
    expect(next + TRUNCATED_MARKER.length).toBeGreaterThan(MAX_ENDPOINT_LENGTH);
  });

  it('one huge first segment folds to the marker alone', () => {
    expect(capEndpoint('/' + 'q'.repeat(10_000))).toBe(TRUNCATED_MARKER);
  });

  it('never exceeds the maximum, for any length and any maximum', () => {
    for (const max of [TRUNCATED_MARKER.length, 20, 64, MAX_ENDPOINT_LENGTH, 256]) {
      for (let n = 1; n < 600; n += 7) {
        const p = ('/' + 'ab'.repeat(n % 13 + 1)).repeat(Math.ceil(n / 3)).slice(0, n);
        expect(capEndpoint(p, max).length).toBeLessThanOrEqual(Math.max(max, TRUNCATED_MARKER.length));
      }
    }
  });
});

describe('EndpointPolicy', () => {
  it('admits at most maxEndpoints normalised values, then folds to __overflow__', () => {
    const policy = new EndpointPolicy(3);
    expect(['/a', '/b/1', '/b/2', '/c', '/d', '/e?x'].map((u) => policy.fromUrl(u))).toEqual(['/a', '/b/:id', '/b/:id', '/c', OVERFLOW_ENDPOINT, OVERFLOW_ENDPOINT]);
    expect(policy.admitted).toBe(3);
    // an admitted value stays admitted
    expect(policy.fromUrl('/b/99')).toBe('/b/:id');
  });

  it('8 KB paths: every value ≤ MAX_ENDPOINT_LENGTH, ids still collapse first, the cap still holds', () => {
    const policy = new EndpointPolicy(50);
    const out = new Set<string>();
    for (let i = 0; i < 2_000; i++) {
      // distinct 8 KB paths of three shapes: one long segment, many short ones, a long id
      const shape = i % 3;
      const url = shape === 0 ? `/p/${word(i)}${'x'.repeat(8192)}`
        : shape === 1 ? Array.from({ length: 1200 }, (_, k) => `/${word(i + k)}`).join('').slice(0, 8192)
          : `/items/${'7'.repeat(8192)}?i=${i}`;
      const ep = policy.fromUrl(url);
      expect(ep.length).toBeLessThanOrEqual(MAX_ENDPOINT_LENGTH);
      out.add(ep);
    }
    expect(out.has('/p' + TRUNCATED_MARKER)).toBe(true);
    expect(out.has('/items/:id')).toBe(true);
    expect(out.size).toBeLessThanOrEqual(50 + 1);
    expect(policy.admitted).toBeLessThanOrEqual(50);
  });

  it('a custom maximum length', () => {
    const policy = new EndpointPolicy(10, 32);
    const ep = policy.fromUrl('/alpha/beta/gamma/delta/epsilon/zeta');
    expect(ep).toBe('/alpha/beta/gamma' + TRUNCATED_MARKER); // 17 + 14 = 31 characters
    expect(ep.length).toBeLessThanOrEqual(32);
  });

  it('the same long URL twice gives the same value (long URLs are not cached, but normalised alike)', () => {
    const policy = new EndpointPolicy(10);
    const url = '/long/' + 'k'.repeat(URL_CACHE_MAX_LENGTH + 10);
    expect(policy.fromUrl(url)).toBe('/long' + TRUNCATED_MARKER);
    expect(policy.fromUrl(url)).toBe('/long' + TRUNCATED_MARKER);
    expect(policy.admitted).toBe(1);
  });

  it('a mounted prefix is capped, the template after it never is', () => {
    const policy = new EndpointPolicy(10);
    const template = '/:a' + '/x'.repeat(100);
    const ep = policy.admitRoute(policy.normalise('/mount/' + 'm'.repeat(500)) + template);
    expect(ep).toBe('/mount' + TRUNCATED_MARKER + template);
    expect(ep.endsWith(template)).toBe(true);
  });
});
