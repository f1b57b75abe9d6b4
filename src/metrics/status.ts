import { ERROR_TYPES, type ErrorType } from './contract';

/**
 * The error type of a finished response's status code, as docs/metrics.md defines it: 504 and 408 are
 * `TimeoutError`, any other 5xx `RequestError`; undefined for a success (1xx–4xx but 408). The HTTP
 * observer (src/hooks/http.ts) and the library's `post_request` hook (src/hooks/library.ts) both count
 * this way.
 */
export function statusErrorType(status: number): ErrorType | undefined {
  const i = statusErrorIndex(status);
  return i < 0 ? undefined : ERROR_TYPES[i];
}

/** REQUEST_ERROR / TIMEOUT_ERROR: their indices in ERROR_TYPES (the hot path counts by index) */
export const REQUEST_ERROR = ERROR_TYPES.indexOf('RequestError');
export const TIMEOUT_ERROR = ERROR_TYPES.indexOf('TimeoutError');

/** The same as an index into ERROR_TYPES (-1: not a failure): what the HTTP observer uses per request. */
export function statusErrorIndex(status: number): number {
  if (status >= 500) return status === 504 ? TIMEOUT_ERROR : REQUEST_ERROR;
  return status === 408 ? TIMEOUT_ERROR : -1;
}
