/**
 * What a real Prometheus (test/fixtures/prometheus.ts) sees across --max-requests recycling, as
 * docs/metrics.md ("Counting across recycling") says: no series ever goes backwards (resets() is 0),
 * the sum over workers never decreases within the retention window, `sum(x) - sum(x offset w)` is
 * exact, and `sum(increase(x[w]))` is at least the raw per-series deltas: it misses only what a new
 * worker served before its first scrape, plus Prometheus' own extrapolation.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES, waitFor } from './helpers';
import { load, startRunner, type Runner } from './runner-helpers';
import { startPrometheus, type PromServer } from './fixtures/prometheus';

const METRIC = 'gunicorn_worker_requests_total{job="runner"}';

describe('a real Prometheus across --max-requests recycling', () => {
  let r: Runner;
  let prom: PromServer;
  beforeAll(async () => {
    r = await startRunner(['-w', '2', '--max-requests', '15', join(FIXTURES, 'runner-http.cjs')], {
      workers: 2, env: { PREFORK_OTEL_RETENTION: '600', PREFORK_OTEL_SNAPSHOT_INTERVAL: '1' },
    });
    prom = await startPrometheus([{ job: 'runner', target: `127.0.0.1:${r.metricsPort}` }]);
  });
  afterAll(async () => {
    await prom?.stop();
    await r?.stop();
  });

  const promTime = async () => (await prom.query('time()'))[0]!.value;
  const seen = (n: number) => waitFor(async () => (await prom.query(`sum(${METRIC}) == ${n}`)).length === 1, 30_000, `Prometheus sees ${n}`);

  it('no series goes backwards, the sum never decreases, offsets are exact, increase() misses only first samples', async () => {
    await waitFor(async () => (await prom.query('up{job="runner"} == 1')).length === 1, 30_000, 'target up');
    expect((await load(r.url('/'), 40, 2)).filter((s) => s === 200)).toHaveLength(40);
    await seen(40);
    // one more scrape after the sum reached 40, so `offset` below lands on a sample of 40
    const t1 = await promTime();
    await waitFor(async () => (await prom.query(`sum(${METRIC} offset 1s) == 40`)).length === 1, 30_000, 'a second sample of 40');
    let sent = 40;
    for (let batch = 0; batch < 2; batch++) {
      const ok = (await load(r.url('/'), 40, 2)).filter((s) => s === 200).length;
      sent += ok;
      await seen(sent);
    }
    const restarts = (await prom.query('gunicorn_master_worker_restarts_total{reason="max_requests"}')).length;
    expect(restarts, 'workers were recycled').toBeGreaterThanOrEqual(3);
    const now = await promTime();
    const w = Math.ceil(now - t1) + 1;

    // 1. no counter reset in any series: a recycled worker is a new series, an exited one stays flat
    expect(await prom.scalar(`sum(resets(${METRIC}[${w + 60}s]))`)).toBe(0);

    // 2. the sum over workers, second by second, never goes down (exited workers are retained)
    const range = await fetch(`${prom.url}/api/v1/query_range?query=${encodeURIComponent(`sum(${METRIC})`)}&start=${t1 - 5}&end=${now}&step=1`)
      .then((x) => x.json()) as { data: { result: Array<{ values: Array<[number, string]> }> } };
    const values = range.data.result[0]!.values.map(([, v]) => Number(v));
    expect(values.length).toBeGreaterThanOrEqual(3);
    for (let i = 1; i < values.length; i++) expect(values[i]!, `sample ${i}`).toBeGreaterThanOrEqual(values[i - 1]!);
    expect(values.at(-1)).toBeLessThanOrEqual(sent);
    expect(values[0]).toBeLessThanOrEqual(40);

    // 3. exact: what was served since t1 is the difference of the sums (within the retention window)
    const since = Math.max(1, Math.floor(now - t1));
    expect(await prom.scalar(`sum(${METRIC}) - sum(${METRIC} offset ${since}s)`)).toBe(sent - 40);

    // 4. increase(): per series last − first inside the window, extrapolated; a worker born inside the
    //    window contributes nothing of what it served before its first sample
    const raw = await fetch(`${prom.url}/api/v1/query?query=${encodeURIComponent(`${METRIC}[${w}s]`)}&time=${now}`)
      .then((x) => x.json()) as { data: { result: Array<{ values: Array<[number, string]> }> } };
    let deltas = 0;
    let firstOfNew = 0;
    let lastOfAll = 0;
    let firstOfOld = 0;
    for (const s of raw.data.result) {
      const first = Number(s.values[0]![1]);
      const last = Number(s.values.at(-1)![1]);
      deltas += last - first;
      lastOfAll += last;
      if (s.values[0]![0] > t1 + 0.5) firstOfNew += first;
      else firstOfOld += first;
    }
    expect(lastOfAll - firstOfOld).toBe(sent - 40); // the exact figure, from the raw samples
    expect(deltas + firstOfNew).toBe(sent - 40); // what increase() starts from, plus what it cannot see
    const increase = await prom.scalar(`sum(increase(${METRIC}[${w}s]))`);
    expect(increase).toBeGreaterThanOrEqual(deltas - 1e-9);
    console.log(`recycling: ${restarts} recycled; served since t1 ${sent - 40}; sum(increase) ${increase.toFixed(2)}; raw deltas ${deltas}; first samples of new workers ${firstOfNew}`);
  });
});
