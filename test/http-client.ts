/**
 * Client-side helpers for the preload tests: many requests over keep-alive connections with bounded
 * concurrency, and a request the client abandons once the handler has started answering.
 */
import { Agent, request } from 'node:http';

export interface Req { method: string; path: string; headers?: Record<string, string>; body?: string }

/**
 * Send `reqs` to 127.0.0.1:`port` over at most `concurrency` keep-alive connections; resolves with
 * the count of each status once every response has been read completely.
 */
export async function sendAll(port: number, reqs: Req[], concurrency = 8): Promise<Map<number, number>> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const statuses = new Map<number, number>();
  let next = 0;
  const one = (r: Req) => new Promise<void>((resolve, reject) => {
    const headers = { ...(r.headers ?? {}) };
    if (r.body !== undefined) headers['content-length'] = String(Buffer.byteLength(r.body));
    const req = request({ host: '127.0.0.1', port, method: r.method, path: r.path, agent, headers }, (res) => {
      res.on('data', () => undefined);
      res.on('end', () => {
        statuses.set(res.statusCode!, (statuses.get(res.statusCode!) ?? 0) + 1);
        resolve();
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(r.body);
  });
  const lane = async () => {
    while (next < reqs.length) await one(reqs[next++]!);
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, reqs.length) }, lane));
  } finally {
    agent.destroy();
  }
  return statuses;
}

/**
 * GET `path` and destroy the connection as soon as the first body bytes arrive: the handler is
 * running (it wrote headers and a first chunk) and the client goes away mid-response.
 */
export function abortMidResponse(port: number, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'GET', path, agent: false }, (res) => {
      res.on('error', () => undefined); // "aborted" after destroy: expected
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', (e) => {
      if (!req.destroyed) reject(e);
    });
    req.end();
  });
}
