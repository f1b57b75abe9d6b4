import type { Counter, MeterProvider } from '@opentelemetry/api';
import { defaultMeterProvider } from './default-provider';
import { M, SCOPE, type RestartReason } from './contract';

/** The master process metrics of the reference: worker restarts and signals (rare events: plain OTel counters). */
export class MasterMetrics {
  private readonly restarts: Counter;
  private readonly signals: Counter;
  constructor(options: { meterProvider?: MeterProvider } = {}) {
    const meter = (options.meterProvider ?? defaultMeterProvider()).getMeter(SCOPE.name, SCOPE.version);
    this.restarts = meter.createCounter(M.workerRestarts.name, { description: M.workerRestarts.help });
    this.signals = meter.createCounter(M.signals.name, { description: M.signals.help });
  }

  /** record_worker_restart: worker `workerId` (its pid) was replaced because of `reason`. */
  recordWorkerRestart(workerId: string | number, reason: RestartReason): void {
    this.restarts.add(1, { worker_id: String(workerId), reason });
  }

  /** record_signal: the master received `signal` (lower case without SIG, as upstream: SIGHUP → "hup") and took `action`. */
  recordSignal(signal: string, action: string): void {
    this.signals.add(1, { signal, action });
  }
}
