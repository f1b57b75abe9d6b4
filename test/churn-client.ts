/**
 * A bounded load client for the churn tests: `n` GET requests, `concurrency` at a time, every other
 * one over a keep-alive Agent (sockets reused between requests) and the rest on a fresh connection
 * (`Connection: close`). Nothing is retried: a request that gets no complete response is a failure,
 * recorded with its error code. `at(i)` runs when request i is about to be sent (signals go there).
 */
import http from 'node:http';

export interface ChurnResult {
  sent: number;
  ok: number;
  /** non-2xx statuses and network errors, by status or error code */
  failures: Record<string, number>;
  /** how many responses came over a reused keep-alive socket */
  reused: number;
  /** worker pids that served (from the app's x-pid header, when it sends one) */
  pids: Set<string>;
}

export async function churn(port: number, n: number, concurrency: number, at: (i: number) => void = () => undefined, path = '/'): Promise<ChurnResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const res: ChurnResult = { sent: 0, ok: 0, failures: {}, reused: 0, pids: new Set() };
  const fail = (k: string) => { res.failures[k] = (res.failures[k] ?? 0) + 1; };
  const one = (i: number) => new Promise<void>((resolve) => {
    const keepAlive = i % 2 === 0;
    const req = http.request({
      host: '127.0.0.1', port, path, method: 'GET',
      agent: keepAlive ? agent : false,
      headers: keepAlive ? {} : { connection: 'close' },
    }, (r) => {
      const reused = (req as unknown as { reusedSocket?: boolean }).reusedSocket === true;
      r.resume();
      r.on('end', () => {
        if (r.statusCode === 200) res.ok++;
        else fail(String(r.statusCode));
        if (reused) res.reused++;
        const pid = r.headers['x-pid'];
        if (typeof pid === 'string') res.pids.add(pid);
        resolve();
      });
      r.on('error', (e: NodeJS.ErrnoException) => { fail(e.code ?? e.message); resolve(); });
    });
    req.on('error', (e: NodeJS.ErrnoException) => { fail(e.code ?? e.message); resolve(); });
    req.setTimeout(30_000, () => req.destroy(Object.assign(new Error('client timeout'), { code: 'CLIENT_TIMEOUT' })));
    req.end();
  });
  let next = 0;
  const lane = async () => {
    while (next < n) {
      const i = next++;
      at(i);
      res.sent++;
      await one(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, lane));
  agent.destroy();
  return res;
}
