import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

/**
 * `work`, but no longer than `ms`: resolves when it settles (a rejection is swallowed) or when the time
 * is up, whichever comes first. The timer does not keep the process alive.
 */
export function withDeadline(work: Promise<unknown>, ms: number): Promise<void> {
  return Promise.race([work.then(() => undefined, () => undefined), sleep(ms, undefined, { ref: false })]);
}
