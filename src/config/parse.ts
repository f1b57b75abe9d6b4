import { isIP } from 'node:net';
import { invalid } from './errors';

/** Value parsers shared by the environment, the CLI and the config file: one rule per kind of value. */

export function parseInteger(source: string, raw: unknown, min: number, max: number): number {
  const s = typeof raw === 'number' ? String(raw) : String(raw).trim();
  if (!/^-?\d+$/.test(s)) throw invalid(source, raw, `expected an integer from ${min} to ${max}`);
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw invalid(source, raw, `expected an integer from ${min} to ${max}`);
  return n;
}

export function parseNumber(source: string, raw: unknown, min: number, max: number, unit = ''): number {
  const s = typeof raw === 'number' ? String(raw) : String(raw).trim();
  const n = s === '' ? NaN : Number(s);
  if (!Number.isFinite(n) || n < min || n > max) {
    throw invalid(source, raw, `expected a number from ${min} to ${max}${unit ? ' ' + unit : ''}`);
  }
  return n;
}

export function parsePort(source: string, raw: unknown): number {
  return parseInteger(source, raw, 0, 65535);
}

const HOSTNAME = /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

export function parseHost(source: string, raw: unknown): string {
  let s = String(raw).trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  if (isIP(s) || (HOSTNAME.test(s) && !/^[\d.]+$/.test(s))) return s;
  throw invalid(source, raw, 'expected an IPv4/IPv6 address or a host name (e.g. 0.0.0.0, 127.0.0.1, ::, localhost)');
}

export function parseBool(source: string, raw: unknown): boolean {
  if (typeof raw === 'boolean') return raw;
  const s = String(raw).trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(s)) return true;
  if (['0', 'false', 'no', 'off', ''].includes(s)) return false;
  throw invalid(source, raw, 'expected one of true, false, 1, 0, yes, no, on, off');
}

export function parseEnum<T extends string>(source: string, raw: unknown, allowed: readonly T[]): T {
  const s = String(raw).trim();
  if ((allowed as readonly string[]).includes(s)) return s as T;
  throw invalid(source, raw, `expected one of ${allowed.join(', ')}`);
}

/** Bucket boundaries in seconds: strictly increasing positive finite numbers, comma separated. */
export function parseBuckets(source: string, raw: unknown): number[] {
  const parts = Array.isArray(raw) ? raw.map(String) : String(raw).split(',');
  const out: number[] = [];
  for (const p of parts) {
    const n = Number(p.trim());
    if (p.trim() === '' || !Number.isFinite(n) || n <= 0 || (out.length > 0 && n <= out[out.length - 1]!)) {
      throw invalid(source, raw, 'expected strictly increasing positive numbers of seconds, comma separated (e.g. 0.005,0.01,0.1,1)');
    }
    out.push(n);
  }
  if (out.length === 0) throw invalid(source, raw, 'expected at least one bucket boundary');
  return out;
}

export function parsePath(source: string, raw: unknown): string {
  const s = String(raw).trim();
  if (!/^\/[\x21-\x7e]*$/.test(s)) throw invalid(source, raw, 'expected a URL path starting with "/" (e.g. /metrics)');
  return s;
}
