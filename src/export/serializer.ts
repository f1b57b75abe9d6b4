import { DataPointType, type DataPoint, type Histogram, type MetricData, type ResourceMetrics } from '@opentelemetry/sdk-metrics';

/** Content type of the Prometheus text exposition format the OTel serializer writes. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/*
 * The one serializer. Its output is byte for byte that of OpenTelemetry's PrometheusSerializer
 * (@opentelemetry/exporter-prometheus 0.223.0) constructed as `new PrometheusSerializer(undefined,
 * false, undefined, !targetInfo, true)`: no prefix, no timestamps, no resource constant labels, no
 * scope labels (so every series carries exactly the reference's labels), `target_info` unless
 * disabled. test/equivalence.test.ts compares the two on the same input.
 *
 * Why not call OTel's: it rebuilds every label set for every line (Object.entries, five regex passes
 * per label, an Object.assign per histogram bucket), which made a master's scrape of 16 workers ×
 * 1,000 series take ≈ 2.5 s. Here a data point's label text is built once and reused for its count,
 * sum and bucket lines; escaping is skipped for values that need none.
 */

const NEEDS_ESCAPE = /[\\\n"]/;
const INVALID_NAME_CHARS = /[^a-z0-9_]/gi;
const MULTI_UNDERSCORE = /_{2,}/g;

function escapeString(str: string): string {
  return str.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function escapeLabelValue(v: unknown): string {
  const s = v === undefined ? '' : typeof v === 'string' ? v : String(JSON.stringify(v));
  return NEEDS_ESCAPE.test(s) ? escapeString(s).replace(/"/g, '\\"') : s;
}

function sanitizeName(name: string): string {
  return name.replace(INVALID_NAME_CHARS, '_').replace(MULTI_UNDERSCORE, '_');
}

const labelNames = new Map<string, string>();
function labelName(key: string): string {
  let n = labelNames.get(key);
  if (n === undefined) {
    n = sanitizeName(key);
    if (labelNames.size < 10_000) labelNames.set(key, n);
  }
  return n;
}

/** `k1="v1",k2="v2"` (no braces); '' for no attributes */
function labelPairs(attributes: object): string {
  let out = '';
  for (const key in attributes) {
    if (!Object.prototype.hasOwnProperty.call(attributes, key)) continue;
    const pair = `${labelName(key)}="${escapeLabelValue((attributes as Record<string, unknown>)[key])}"`;
    out = out.length > 0 ? `${out},${pair}` : pair;
  }
  return out;
}

function valueString(value: number): string {
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return `${value}`;
}

/** `,le="0.005"} ` style suffixes per boundary value (few distinct values, reused across points) */
const leSuffixes = new Map<number | undefined, { withPairs: string; alone: string }>();
function leSuffix(bound: number | undefined): { withPairs: string; alone: string } {
  let s = leSuffixes.get(bound);
  if (s === undefined) {
    const le = bound === undefined || bound === Infinity ? '+Inf' : String(bound);
    s = { withPairs: `,le="${le}"} `, alone: `{le="${le}"} ` };
    if (leSuffixes.size < 10_000) leSuffixes.set(bound, s);
  }
  return s;
}

function prometheusType(m: MetricData): string {
  switch (m.dataPointType) {
    case DataPointType.SUM: return m.isMonotonic ? 'counter' : 'gauge';
    case DataPointType.GAUGE: return 'gauge';
    case DataPointType.HISTOGRAM: return 'histogram';
    default: return 'untyped';
  }
}

function metricName(m: MetricData): string {
  let name = sanitizeName(escapeString(m.descriptor.name));
  if (name === '' || name === '_') return '';
  if (name[0]! >= '0' && name[0]! <= '9') name = `_${name}`;
  if (!name.endsWith('_total') && m.dataPointType === DataPointType.SUM && m.isMonotonic) name += '_total';
  return name;
}

/** the value text of the last line written (to apply OTel's trim() without flattening the block) */
let lastValue = '';

/**
 * The count, sum and bucket lines of one histogram point; its label text is built once. The lines
 * are joined into one flat string here, so the short-lived line strings die young instead of
 * surviving as the leaves of one huge concatenation (which made GC the main cost of a big scrape).
 */
const lineBuf: string[] = [];
function histogramLines(name: string, p: DataPoint<Histogram>): string {
  const pairs = labelPairs(p.attributes);
  const labels = pairs.length > 0 ? `{${pairs}} ` : ' ';
  const h = p.value;
  const lines = lineBuf;
  lines.length = 0;
  if (h.count != null) lines.push(`${name}_count${labels}${(lastValue = valueString(h.count))}\n`);
  if (h.sum != null) lines.push(`${name}_sum${labels}${(lastValue = valueString(h.sum))}\n`);
  const { boundaries, counts } = h.buckets;
  const prefix = pairs.length > 0 ? `${name}_bucket{${pairs}` : `${name}_bucket`;
  let cumulative = 0;
  let infinityBoundary = false;
  for (let i = 0; i < counts.length; i++) {
    cumulative += counts[i]!;
    const bound = boundaries[i];
    if (bound === undefined && infinityBoundary) break;
    if (bound === Infinity) infinityBoundary = true;
    const le = leSuffix(bound);
    lines.push(`${prefix}${pairs.length > 0 ? le.withPairs : le.alone}${(lastValue = valueString(cumulative))}\n`);
  }
  const text = lines.join('');
  lines.length = 0;
  return text;
}

const WHITESPACE = /\s/;

/**
 * Text already written for a data point object under a metric name. A master keeps the point objects
 * of a worker's series that did not change (src/export/snapshot.ts deltas), so their lines are reused
 * instead of written again. Only for points that are never mutated (the hub's).
 */
export type LineCache = WeakMap<object, { name: string; text: string }>;

function cachedLines(cache: LineCache | undefined, name: string, p: object, write: () => string): string {
  if (!cache) return write();
  const hit = cache.get(p);
  if (hit !== undefined && hit.name === name) return hit.text;
  const text = write();
  cache.set(p, { name, text });
  return text;
}

/** One metric's block as OTel writes it: trimmed, plus one newline ('' when the name is unusable). */
function metricText(m: MetricData, cache?: LineCache): string {
  const name = metricName(m);
  if (name === '') return '';
  const unit = m.descriptor.unit ? `\n# UNIT ${name} ${escapeString(m.descriptor.unit)}` : '';
  let out = `# HELP ${name} ${escapeString(m.descriptor.description || 'description missing')}${unit}\n# TYPE ${name} ${prometheusType(m)}\n`;
  lastValue = 'x';
  switch (m.dataPointType) {
    case DataPointType.SUM:
    case DataPointType.GAUGE:
      for (const p of m.dataPoints) {
        out += cachedLines(cache, name, p, () => {
          const pairs = labelPairs(p.attributes);
          return `${name}${pairs.length > 0 ? `{${pairs}}` : ''} ${valueString(p.value)}\n`;
        });
      }
      break;
    case DataPointType.HISTOGRAM:
      for (const p of m.dataPoints) out += cachedLines(cache, name, p, () => histogramLines(name, p));
      break;
    default:
      break;
  }
  // Every line ends with a newline after a value or the type name, so OTel's trim() only drops the
  // last newline; were the last value to end in whitespace (a number cannot), trim as OTel does.
  if (lastValue.length > 0 && !WHITESPACE.test(lastValue[lastValue.length - 1]!)) return out;
  return out.trim() + '\n';
}

/**
 * The exposition text of collected metrics: `target_info` (unless `targetInfo` is false), then every
 * metric once, with exactly its data points' labels.
 */
export function serializePrometheus(rm: ResourceMetrics, opts: { targetInfo: boolean }, cache?: LineCache): string {
  let text = '';
  if (opts.targetInfo) {
    const pairs = labelPairs(rm.resource.attributes);
    text = `# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info${pairs.length > 0 ? `{${pairs}}` : ''} 1\n`;
  }
  let any = false;
  for (const sm of rm.scopeMetrics) {
    for (const m of sm.metrics) {
      const block = metricText(m, cache);
      if (block !== '') {
        text += block;
        any = true;
      }
    }
  }
  if (!any) text += '# no registered metrics\n';
  return text;
}
