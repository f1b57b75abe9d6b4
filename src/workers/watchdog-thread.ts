/** The watchdog thread of a runner worker: see watchdog.ts. */
import { Session } from 'node:inspector';
import { workerData } from 'node:worker_threads';
import type { WatchdogData } from './watchdog';

const { tick: buffer, timeoutMs, pollMs } = workerData as WatchdogData;
const tick = new Float64Array(buffer);
let fired = false;

setInterval(() => {
  if (fired || Date.now() - tick[0]! <= timeoutMs) return;
  fired = true;
  const session = new Session();
  session.connectToMainThread();
  // runs at V8's next interrupt check inside the blocked JavaScript; then the process ends
  session.post('Runtime.evaluate', { expression: 'globalThis[Symbol.for("prefork-otel.abort")]?.()' }, () => {
    session.disconnect();
    process.kill(process.pid, 'SIGKILL');
  });
}, pollMs);
