// Source of grafana/dashboards/prefork-otel.json: node otel-collector/grafana/build-dashboard.mjs
// (test/dashboard.test.ts checks that the committed JSON is what this script writes).
import { writeFileSync } from 'node:fs';
const ds = { type: 'prometheus', uid: '${datasource}' };
const J = 'job="$job"';
const JW = 'job="$job", worker_id=~"$worker_id"';
const RI = '$__rate_interval';
let id = 0;
const panels = [];
let y = 0;
function row(title) { panels.push({ type: 'row', title, id: ++id, collapsed: false, gridPos: { h: 1, w: 24, x: 0, y }, panels: [] }); y += 1; }
let x = 0; let rowH = 0;
function place(w, h) { if (x + w > 24) { x = 0; y += rowH; rowH = 0; } const g = { h, w, x, y }; x += w; rowH = Math.max(rowH, h); return g; }
function endRow() { if (x > 0) { y += rowH; x = 0; rowH = 0; } }
function targets(list) { return list.map(([expr, legendFormat, extra], i) => ({ refId: String.fromCharCode(65 + i), datasource: ds, expr, legendFormat, range: true, ...(extra || {}) })); }
function ts(title, description, unit, list, w = 12, h = 8, opts = {}) {
  panels.push({
    type: 'timeseries', id: ++id, title, description, datasource: ds, gridPos: place(w, h),
    fieldConfig: { defaults: { unit, min: opts.min ?? 0, custom: { drawStyle: opts.bars ? 'bars' : 'line', fillOpacity: opts.bars ? 80 : 10, lineWidth: 1, showPoints: 'never', stacking: { mode: opts.stack ? 'normal' : 'none', group: 'A' } } }, overrides: [] },
    options: { legend: { displayMode: 'table', placement: 'bottom', showLegend: true, calcs: ['mean', 'max', 'lastNotNull'] }, tooltip: { mode: 'multi', sort: 'desc' } },
    targets: targets(list),
  });
}
function stat(title, description, unit, expr, w = 6, h = 4, thresholds) {
  panels.push({
    type: 'stat', id: ++id, title, description, datasource: ds, gridPos: place(w, h),
    fieldConfig: { defaults: { unit, thresholds: thresholds || { mode: 'absolute', steps: [{ color: 'green', value: null }] } }, overrides: [] },
    options: { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'value', graphMode: 'area', textMode: 'auto', justifyMode: 'auto', orientation: 'auto' },
    targets: targets([[expr, '']]),
  });
}
function table(title, description, unit, expr, w = 12, h = 8) {
  panels.push({
    type: 'table', id: ++id, title, description, datasource: ds, gridPos: place(w, h),
    fieldConfig: { defaults: { unit }, overrides: [] },
    options: { showHeader: true, sortBy: [{ displayName: 'worker_id', desc: false }] },
    transformations: [{ id: 'organize', options: { excludeByName: { Time: true, __name__: true, job: true, instance: true }, renameByName: { Value: 'seconds in state' } } }],
    targets: targets([[expr, '', { format: 'table', instant: true, range: false }]]),
  });
}
const bucket = `gunicorn_worker_request_duration_seconds_bucket{${J}}`;
const q = (p, by = 'le') => `histogram_quantile(${p}, sum by (${by}) (rate(${bucket}[${RI}])))`;

row('Traffic');
stat('Requests / s', 'sum(rate(gunicorn_worker_requests_total)) over all workers', 'reqps', `sum(rate(gunicorn_worker_requests_total{${J}}[${RI}]))`);
stat('Failed requests', 'gunicorn_worker_failed_requests_total / gunicorn_worker_requests_total', 'percentunit',
  `sum(rate(gunicorn_worker_failed_requests_total{${J}}[${RI}])) / sum(rate(gunicorn_worker_requests_total{${J}}[${RI}]))`, 6, 4,
  { mode: 'absolute', steps: [{ color: 'green', value: null }, { color: 'orange', value: 0.01 }, { color: 'red', value: 0.05 }] });
stat('p95 latency', 'histogram_quantile(0.95) of gunicorn_worker_request_duration_seconds', 's', q(0.95));
stat('Workers running', 'workers whose gunicorn_worker_state is running', 'none', `count(gunicorn_worker_state{${J}, state="running"})`);
endRow();
ts('Request rate by method and endpoint', 'rate(gunicorn_worker_requests_total) by method, endpoint', 'reqps',
  [[`sum by (method, endpoint) (rate(gunicorn_worker_requests_total{${J}}[${RI}]))`, '{{method}} {{endpoint}}']]);
ts('Request rate per worker', 'rate(gunicorn_worker_requests_total) by worker_id', 'reqps',
  [[`sum by (worker_id) (rate(gunicorn_worker_requests_total{${JW}}[${RI}]))`, 'worker {{worker_id}}']], 12, 8, { stack: true });
endRow();

row('Latency');
ts('Request duration p50 / p95 / p99', 'histogram_quantile over the gunicorn_worker_request_duration_seconds buckets of all workers', 's',
  [[q(0.5), 'p50'], [q(0.95), 'p95'], [q(0.99), 'p99']]);
ts('p95 by endpoint', 'histogram_quantile(0.95) by endpoint', 's', [[q(0.95, 'le, endpoint'), '{{endpoint}}']]);
ts('Mean request duration per worker', 'rate(_sum) / rate(_count) of gunicorn_worker_request_duration_seconds', 's',
  [[`sum by (worker_id) (rate(gunicorn_worker_request_duration_seconds_sum{${JW}}[${RI}])) / sum by (worker_id) (rate(gunicorn_worker_request_duration_seconds_count{${JW}}[${RI}]))`, 'worker {{worker_id}}']]);
endRow();

row('Errors');
ts('Failed requests by error_type', 'rate(gunicorn_worker_failed_requests_total) by error_type (RequestError: 5xx / thrown; TimeoutError: 408 / timed out; …)', 'reqps',
  [[`sum by (error_type) (rate(gunicorn_worker_failed_requests_total{${J}}[${RI}]))`, '{{error_type}}']], 8, 8, { stack: true });
ts('Handled errors by error_type', 'rate(gunicorn_worker_error_handling_total) by error_type', 'reqps',
  [[`sum by (error_type) (rate(gunicorn_worker_error_handling_total{${J}}[${RI}]))`, '{{error_type}}']], 8, 8, { stack: true });
ts('Failed requests by endpoint', 'rate(gunicorn_worker_failed_requests_total) by method, endpoint, error_type', 'reqps',
  [[`sum by (method, endpoint, error_type) (rate(gunicorn_worker_failed_requests_total{${J}}[${RI}]))`, '{{method}} {{endpoint}} {{error_type}}']], 8, 8);
endRow();

row('Workers');
ts('Memory per worker', 'gunicorn_worker_memory_bytes (RSS)', 'bytes', [[`gunicorn_worker_memory_bytes{${JW}}`, 'worker {{worker_id}}']], 8);
ts('CPU per worker', 'gunicorn_worker_cpu_percent (100 = one core)', 'percent', [[`gunicorn_worker_cpu_percent{${JW}}`, 'worker {{worker_id}}']], 8);
ts('Uptime per worker', 'gunicorn_worker_uptime_seconds', 's', [[`gunicorn_worker_uptime_seconds{${JW}}`, 'worker {{worker_id}}']], 8);
endRow();
ts('Workers by state', 'count(gunicorn_worker_state) by state (booting, running, stopping)', 'none',
  [[`count by (state) (gunicorn_worker_state{${J}})`, '{{state}}']], 12, 8, { stack: true });
table('Worker state', 'each worker\'s current state and how long it has been in it (gunicorn_worker_state holds the time it entered the state)', 's',
  `time() - gunicorn_worker_state{${JW}}`);
endRow();

row('Master');
ts('Worker restarts by reason', 'increase(gunicorn_master_worker_restarts_total) by reason (crash, timeout, max_requests, reload, oom, signal, scale)', 'none',
  [[`sum by (reason) (increase(gunicorn_master_worker_restarts_total{${J}}[${RI}]))`, '{{reason}}']], 12, 8, { bars: true, stack: true });
ts('Signals handled', 'increase(gunicorn_master_signals_total) by signal, action', 'none',
  [[`sum by (signal, action) (increase(gunicorn_master_signals_total{${J}}[${RI}]))`, '{{signal}} → {{action}}']], 12, 8, { bars: true, stack: true });
endRow();
stat('Restarts in range', 'sum(increase(gunicorn_master_worker_restarts_total[$__range]))', 'none', `sum(increase(gunicorn_master_worker_restarts_total{${J}}[$__range]))`, 12, 4);
stat('Signals in range', 'sum(increase(gunicorn_master_signals_total[$__range]))', 'none', `sum(increase(gunicorn_master_signals_total{${J}}[$__range]))`, 12, 4);

row('Scrape health (direct scrape only: prefork_otel_* describe the endpoint\'s own collection)');
ts('Scrape collection duration', 'prefork_otel_scrape_duration_seconds: asking every worker, waiting (at most PREFORK_OTEL_SCRAPE_TIMEOUT), merging', 's',
  [[`prefork_otel_scrape_duration_seconds{${J}}`, '{{instance}}']], 8);
ts('Worker snapshot age', 'prefork_otel_worker_snapshot_age_seconds: 0 when the worker answered the scrape; above 0, the data served for it is that old (blocked, busy or dying worker)', 's',
  [[`max by (worker_id) (prefork_otel_worker_snapshot_age_seconds{${JW}})`, 'worker {{worker_id}}']], 8);
ts('Series folded or dropped by the bounds', 'increase(prefork_otel_series_overflow_total) by reason: endpoint_cap / endpoint_length (folded into __overflow__), retained_workers (exited workers dropped early), unfoldable', 'none',
  [[`sum by (reason) (increase(prefork_otel_series_overflow_total{${J}}[${RI}]))`, '{{reason}}']], 8, 8, { bars: true, stack: true });
endRow();

const dashboard = {
  uid: 'prefork-otel',
  title: 'prefork-otel — gunicorn worker / master metrics',
  description: 'The gunicorn-prometheus-exporter metrics (gunicorn_worker_*, gunicorn_master_*) of a Node.js service observed by prefork-otel, by direct scrape or through an OpenTelemetry Collector.',
  tags: ['prefork-otel', 'gunicorn', 'nodejs', 'opentelemetry'],
  editable: true,
  graphTooltip: 1,
  refresh: '30s',
  schemaVersion: 39,
  version: 1,
  time: { from: 'now-1h', to: 'now' },
  timepicker: {},
  timezone: '',
  annotations: { list: [{ builtIn: 1, datasource: { type: 'grafana', uid: '-- Grafana --' }, enable: true, hide: true, iconColor: 'rgba(0, 211, 255, 1)', name: 'Annotations & Alerts', type: 'dashboard' }] },
  links: [],
  templating: {
    list: [
      { name: 'datasource', label: 'Data source', type: 'datasource', query: 'prometheus', current: {}, hide: 0, refresh: 1, regex: '', options: [] },
      {
        name: 'job', label: 'Job', type: 'query', datasource: ds,
        description: 'One path at a time: the direct scrape job (prefork-otel) or the service.name that came through the collector. Summing over both would count every request twice.',
        definition: 'label_values(gunicorn_worker_requests_total, job)',
        query: { query: 'label_values(gunicorn_worker_requests_total, job)', refId: 'job' },
        refresh: 2, multi: false, includeAll: false, sort: 1, hide: 0, current: {}, options: [], regex: '',
      },
      {
        name: 'worker_id', label: 'Worker', type: 'query', datasource: ds,
        definition: 'label_values(gunicorn_worker_uptime_seconds{job="$job"}, worker_id)',
        query: { query: 'label_values(gunicorn_worker_uptime_seconds{job="$job"}, worker_id)', refId: 'worker_id' },
        refresh: 2, multi: true, includeAll: true, allValue: '.*', sort: 3, hide: 0, current: {}, options: [], regex: '',
      },
    ],
  },
  panels,
};
const out = process.argv[2] ?? new URL("./dashboards/prefork-otel.json", import.meta.url);
writeFileSync(out, JSON.stringify(dashboard, null, 2) + "\n");
console.log(panels.length, 'panels');
