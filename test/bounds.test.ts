/**
 * The bounds of docs/metrics.md ("Bounds: the worst case, as a formula"), against the real runner:
 * hostile traffic (random paths, 8 KB paths, several methods) while --max-requests recycles workers.
 * Every scrape taken during and after the attack stays within the formula's series count and size,
 * the union the master serves has at most PREFORK_OTEL_MAX_ENDPOINTS endpoint values (+ __overflow__),
 * at most PREFORK_OTEL_MAX_RETAINED exited workers are held, and the master's RSS after three times
 * the warm-up's traffic stays within a bound derived from the same formula.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES, parseMetrics, scrapeText, type Sample } from './helpers';
import { startRunner, type Runner } from './runner-helpers';

// the settings of this run, and the formula's other terms
const E = 20; // PREFORK_OTEL_MAX_ENDPOINTS
const R = 3; // PREFORK_OTEL_MAX_RETAINED
const B = 2; // boundaries in PREFORK_OTEL_BUCKETS
const W = 2; // --workers
const M = 10; // method values (9 standard + OTHER)
const L = 1024; // the longest endpoint value the master lets through (src/export/fold.ts)
const MAX_REQUESTS = 40;

/** docs/metrics.md: the most series one scrape can have (K: restart series, signals: signal series) */
function maxSeries(k: number): number {
  const held = 2 * W + R; // live (a leaving worker and its replacement at once) + retained
  return held * M * (E + 1) * (B + 12) + 2 * W * 4 + 2 * W + 4 + 1 + k + 9 + 1;
}
/** docs/metrics.md: the most bytes one scrape can have with `series` series */
function maxBytes(series: number): number {
  return series * (L + 200) + 16 * 1024;
}

const LETTERS = 'ghijklmnopqrstuvwxyz'; // no digits, no hex: never collapsed to :id by normalisation
function randomSegment(n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += LETTERS[Math.floor(Math.random() * LETTERS.length)];
  return s;
}

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

/** `n` requests: random 8-letter paths, every `longEvery`-th an 8 KB path; GET / POST / PUT / DELETE; 4 at a time */
async function attack(r: Runner, n: number, longEvery = 5): Promise<number> {
  const methods = ['GET', 'POST', 'PUT', 'DELETE'];
  let next = 0;
  let ok = 0;
  const one = async () => {
    while (next < n) {
      const i = next++;
      const path = i % longEvery === 0 ? `/${randomSegment(8000)}` : `/p/${randomSegment(8)}`;
      try {
        const res = await fetch(r.url(path), { method: methods[i % methods.length] });
        await res.arrayBuffer();
        if (res.status === 200) ok++;
      } catch { /* a reset during recycling: not what this test is about (test/runner-*.test.ts) */ }
    }
  };
  await Promise.all(Array.from({ length: 4 }, one));
  return ok;
}

interface Checked { series: number; bytes: number; endpoints: number; samples: Sample[] }

/** one scrape, checked against the formula */
async function checkedScrape(r: Runner): Promise<Checked> {
  const text = await scrapeText(r.metricsPort);
  const samples = parseMetrics(text);
  const k = samples.filter((s) => s.name === 'gunicorn_master_worker_restarts_total').length;
  const endpoints = new Set(samples.filter((s) => s.labels.endpoint !== undefined).map((s) => s.labels.endpoint!));
  const bytes = Buffer.byteLength(text);
  expect(samples.length, 'series within the formula').toBeLessThanOrEqual(maxSeries(k));
  expect(bytes, 'bytes within the formula').toBeLessThanOrEqual(maxBytes(maxSeries(k)));
  expect([...endpoints].filter((e) => e !== '__overflow__').length, 'union endpoint cap').toBeLessThanOrEqual(E);
  for (const e of endpoints) expect(e.length).toBeLessThanOrEqual(L);
  return { series: samples.length, bytes, endpoints: endpoints.size, samples };
}

/** scrape in a loop while `work` runs (several at once now and then: they share one collection) */
async function scrapingDuring<T>(r: Runner, work: Promise<T>): Promise<{ result: T; scrapes: Checked[] }> {
  const scrapes: Checked[] = [];
  let done = false;
  const loop = (async () => {
    for (let i = 0; !done; i++) {
      if (i % 3 === 0) scrapes.push(...await Promise.all([checkedScrape(r), checkedScrape(r), checkedScrape(r)]));
      else scrapes.push(await checkedScrape(r));
    }
  })();
  const result = await work.finally(() => { done = true; });
  await loop;
  return { result, scrapes };
}

describe('bounded series, scrape and memory under hostile traffic and recycling (runner)', () => {
  let r: Runner;
  beforeAll(async () => {
    r = await startRunner(['-w', String(W), '--max-requests', String(MAX_REQUESTS), join(FIXTURES, 'runner-http.cjs')], {
      workers: W,
      env: {
        PREFORK_OTEL_MAX_ENDPOINTS: String(E), PREFORK_OTEL_MAX_RETAINED: String(R), PREFORK_OTEL_BUCKETS: '0.1,1',
        PREFORK_OTEL_RETENTION: '600', PREFORK_OTEL_SNAPSHOT_INTERVAL: '0.5',
      },
    });
  });
  afterAll(async () => {
    await r?.stop();
  });

  it('every scrape stays within the formula; the union keeps ≤ E endpoints; ≤ R exited workers held; master RSS flat', async () => {
    const master = r.proc.child.pid!;
    // warm-up: one round of the attack (recycles about 6 workers), then the steady state
    const warm = await scrapingDuring(r, attack(r, 240));
    expect(warm.result).toBeGreaterThan(0);
    for (let i = 0; i < 3; i++) await checkedScrape(r);
    const rssWarm = rssBytes(master);

    // three times as much: RSS must not follow the traffic
    const hot = await scrapingDuring(r, attack(r, 720));
    const after = await checkedScrape(r);
    for (let i = 0; i < 3; i++) await checkedScrape(r);
    const rssAfter = rssBytes(master);

    const restarts = after.samples.filter((s) => s.name === 'gunicorn_master_worker_restarts_total' && s.labels.reason === 'max_requests');
    expect(restarts.length, 'workers were recycled').toBeGreaterThanOrEqual(Math.floor((240 + 720) / (MAX_REQUESTS + 4)) - 2 * W);
    // what the hub holds: the live workers and at most R exited ones
    const workerIds = new Set(after.samples.filter((s) => s.name === 'gunicorn_worker_requests_total').map((s) => s.labels.worker_id));
    const live = new Set(after.samples.filter((s) => s.name === 'gunicorn_worker_uptime_seconds').map((s) => s.labels.worker_id));
    expect(workerIds.size - [...workerIds].filter((w) => live.has(w)).length).toBeLessThanOrEqual(R);
    // the cap was reached and folded (both the random paths and the 8 KB ones)
    const folded = after.samples.filter((s) => s.name === 'prefork_otel_series_overflow_total' && (s.labels.reason === 'endpoint_cap' || s.labels.reason === 'endpoint_length'))
      .reduce((a, s) => a + s.value, 0);
    expect(folded).toBeGreaterThan(0);
    expect(after.samples.some((s) => s.labels.endpoint === '__overflow__')).toBe(true);
    expect(after.samples.filter((s) => s.name === 'prefork_otel_series_overflow_total' && s.labels.reason === 'retained_workers')[0]!.value).toBeGreaterThan(0);

    // RSS: the held state is bounded by the formula, so three times the traffic may cost at most a few
    // scrapes' worth of memory (the text, its parsed snapshots, garbage not yet collected) plus slack
    const scrapeBound = maxBytes(maxSeries(restarts.length + 50));
    const allowed = 4 * scrapeBound + 48 * 1024 * 1024;
    expect(rssAfter - rssWarm, `master RSS ${(rssWarm / 1e6).toFixed(1)} MB → ${(rssAfter / 1e6).toFixed(1)} MB (allowed +${(allowed / 1e6).toFixed(1)} MB)`).toBeLessThanOrEqual(allowed);
    // and the largest scrape seen is a small fraction of what the unbounded code produced
    const largest = Math.max(...[...warm.scrapes, ...hot.scrapes].map((s) => s.bytes));
    console.log(`bounds: ${warm.scrapes.length + hot.scrapes.length} scrapes, largest ${largest} B (formula ${scrapeBound} B), last ${after.series} series / ${after.endpoints} endpoint values, ${restarts.length} recycled, folded ${folded}; master RSS ${(rssWarm / 1e6).toFixed(1)} → ${(rssAfter / 1e6).toFixed(1)} MB`);
    expect(largest).toBeLessThanOrEqual(scrapeBound);
  }, 240_000);
});
