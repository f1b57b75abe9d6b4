/**
 * Basic authentication for the metrics endpoint against exporter-toolkit's `basic_auth_users`
 * (bcrypt hashes), with what exporter-toolkit does against timing and CPU abuse:
 *  - an unknown user is checked against a fixed dummy hash, so it costs the same bcrypt as a known one;
 *  - one bcrypt comparison at a time (bcryptjs runs on the main thread; a flood of bad passwords
 *    queues behind the connection limit instead of multiplying the CPU);
 *  - results are cached, so a scraper does not pay bcrypt (~50-100 ms at cost 10) on every scrape.
 *    The cache holds SHA-256 digests of user, hash and password, never a password; a verified
 *    password is recognised again with a constant-time comparison of digests. Both caches are
 *    bounded (AUTH_CACHE_ENTRIES), the oldest entry going first.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

/** entries of each cache (verified, rejected) */
export const AUTH_CACHE_ENTRIES = 100;
/** bcrypt of "fakepassword" (exporter-toolkit's dummy hash for unknown users) */
const DUMMY_HASH = '$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi';

function digest(user: string, hash: string, password: string): Buffer {
  return createHash('sha256').update(user).update('\0').update(hash).update('\0').update(password).digest();
}

function remember<V>(m: Map<string, V>, k: string, v: V): void {
  m.delete(k);
  m.set(k, v);
  if (m.size > AUTH_CACHE_ENTRIES) m.delete(m.keys().next().value!);
}

export class BasicAuth {
  /** user → digests of passwords verified by bcrypt (most users have one) */
  private readonly verified = new Map<string, Buffer[]>();
  private readonly rejected = new Map<string, true>();
  private queue: Promise<unknown> = Promise.resolve();
  /** bcrypt comparisons made so far (each costs ~50-100 ms at cost 10): what the caches save */
  comparisons = 0;

  constructor(private readonly users: ReadonlyMap<string, string>) {}

  get enabled(): boolean {
    return this.users.size > 0;
  }

  /** Does this `Authorization` header carry a configured user and its password? */
  async check(header: string | undefined): Promise<boolean> {
    if (!header || !/^basic /i.test(header)) return false;
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return false;
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    const known = this.users.get(user);
    const hash = known ?? DUMMY_HASH;
    const d = digest(user, hash, password);
    if (known !== undefined) {
      for (const v of this.verified.get(user) ?? []) if (timingSafeEqual(v, d)) return true;
    }
    const key = d.toString('hex');
    if (this.rejected.has(key)) return false;
    const ok = await this.serially(() => {
      this.comparisons++;
      // loaded at the first comparison: only a process that checks passwords pays for the module
      return (require('bcryptjs') as typeof import('bcryptjs')).compare(password, hash);
    });
    if (ok && known !== undefined) {
      const list = this.verified.get(user) ?? [];
      list.push(d);
      if (list.length > 4) list.shift();
      remember(this.verified, user, list);
      return true;
    }
    remember(this.rejected, key, true);
    return false;
  }

  private serially<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
