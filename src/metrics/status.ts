import { ERROR_TYPES, type ErrorType } from './contract';

/**
 * The error type of a finished response's status code, as docs/metrics.md defines it: 504 and 408 are
 * `TimeoutError`, any other 5xx `RequestError`; undefined for a success (1xx–4xx but 408). The HTTP
 * observer (src/hooks/http.ts) and the library's `post_request` hook (src/hooks/library.ts) both count
 * this way.
 */
export function statusErrorType(status: number): ErrorType | undefined {
  if (status === 504 || status === 408) return 'TimeoutError';
  if (status >= 500) return 'RequestError';
  return undefined;
}

/** The same as an index into ERROR_TYPES (-1: not a failure), for the hot path. */
export function statusErrorIndex(status: number): number {
  const t = statusErrorType(status);
  return t === undefined ? -1 : ERROR_TYPES.indexOf(t);
}
