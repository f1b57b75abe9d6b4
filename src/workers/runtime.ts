import type { MetricProducer } from '@opentelemetry/sdk-metrics';
import type { ExporterConfig } from '../config';
import { Telemetry } from '../export/telemetry';
import { HttpObserver, type RequestHooks } from '../hooks/http';
import { EndpointPolicy } from '../metrics/labels';
import { Metrics, processProducer } from '../metrics/Metrics';
import { ResourceSampler } from '../metrics/sampler';

/**
 * Everything one serving process needs to be observed: its Telemetry (one MeterProvider, readers),
 * its Metrics, the HTTP observer (default pre_request / post_request) and the resource sampler.
 * Used by the preload, the runner's workers and cluster workers alike.
 */
export class WorkerRuntime {
  readonly telemetry: Telemetry;
  readonly metrics: Metrics;
  readonly observer: HttpObserver;
  readonly sampler: ResourceSampler;

  /**
   * `opts.producers`: more fast-path producers for this process's readers (the gthread worker's
   * threads, whose accumulators live in other isolates).
   */
  constructor(readonly config: ExporterConfig, hooks: RequestHooks = {},
    opts: { workerId?: string | number; setGlobal?: boolean; producers?: MetricProducer[] } = {}) {
    this.telemetry = new Telemetry(config, [processProducer, ...(opts.producers ?? [])]);
    // the process's prefork-otel provider; the OTel global only with PREFORK_OTEL_GLOBAL=true (src/export/telemetry.ts)
    if (opts.setGlobal !== false) this.telemetry.registerAsProcessProvider();
    this.metrics = new Metrics({
      meterProvider: this.telemetry.meterProvider,
      workerId: opts.workerId,
      buckets: config.buckets,
      recording: config.recording,
    });
    this.metrics.updateWorkerState('booting');
    this.observer = new HttpObserver(this.metrics, new EndpointPolicy(config.maxEndpoints), hooks).start();
    this.sampler = new ResourceSampler(this.metrics, config.cpuIntervalMs, config.memoryIntervalMs).start();
  }

  /** stop observing and sampling; flush push readers */
  async close(): Promise<void> {
    this.observer.stop();
    this.sampler.stop();
    await this.telemetry.shutdown();
  }
}
