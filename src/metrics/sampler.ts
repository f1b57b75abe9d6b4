import type { Metrics } from './Metrics';

/**
 * Samples the worker's resources on unref'd timers: CPU percent every `cpuIntervalMs`, RSS every
 * `memoryIntervalMs` (in-process: `process.cpuUsage()`, `process.memoryUsage.rss()`), both once at
 * start. Never keeps the process alive.
 */
export class ResourceSampler {
  private timers: NodeJS.Timeout[] = [];
  constructor(private readonly metrics: Metrics, private readonly cpuIntervalMs: number, private readonly memoryIntervalMs: number) {}

  start(): this {
    this.sample({ memory: true, cpu: true });
    this.timers.push(setInterval(() => this.sample({ cpu: true, memory: false }), this.cpuIntervalMs).unref());
    this.timers.push(setInterval(() => this.sample({ memory: true, cpu: false }), this.memoryIntervalMs).unref());
    return this;
  }

  sample(what: { memory: boolean; cpu: boolean }): Promise<void> {
    return this.metrics.updateResourceUsage(what).catch(() => undefined);
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }
}
