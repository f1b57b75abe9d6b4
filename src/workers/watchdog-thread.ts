/** The watchdog thread of a runner worker: see watchdog.ts. */
import { Session } from 'node:inspector';
import { workerData } from 'node:worker_threads';
import type { WatchdogData } from './watchdog';

const { tick: buffer, timeoutMs, pollMs, ppid: parent } = workerData as WatchdogData;
const tick = new Float64Array(buffer);
let fired = false;
/** a worker whose master (`parent`) is gone (killed with SIGKILL) and whose loop is blocked ends here */
const ORPHAN_STALL_MS = Math.max(1000, pollMs * 10);

setInterval(() => {
  if (fired) return;
  const stalled = Date.now() - tick[0]!;
  // orphaned: the main loop would notice the IPC disconnect and leave gracefully, unless it is blocked
  if (process.ppid !== parent && stalled > ORPHAN_STALL_MS) {
    fired = true;
    process.kill(process.pid, 'SIGKILL');
    return;
  }
  if (stalled <= timeoutMs) return;
  fired = true;
  const session = new Session();
  session.connectToMainThread();
  // runs at V8's next interrupt check inside the blocked JavaScript; then the process ends
  session.post('Runtime.evaluate', { expression: 'globalThis[Symbol.for("prefork-otel.abort")]?.()' }, () => {
    session.disconnect();
    process.kill(process.pid, 'SIGKILL');
  });
}, pollMs);
