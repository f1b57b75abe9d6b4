import { metrics as otelMetrics, type MeterProvider } from '@opentelemetry/api';

const KEY = Symbol.for('prefork-otel.process-meter-provider');
type Slot = { [KEY]?: MeterProvider };

/**
 * Where `Metrics` / `MasterMetrics` created without a `meterProvider` record: the process's
 * prefork-otel pipeline once one exists (the preload's, a runner or cluster worker's), else the global
 * MeterProvider (the app's own, or the OTel API's no-op). prefork-otel does not make its provider the
 * global one for this (that would take over an app's own NodeSDK: docs/opentelemetry-coexistence.md).
 * Kept on globalThis, so the CommonJS and ESM entry points and two copies of the package agree.
 */
export function defaultMeterProvider(): MeterProvider {
  return (globalThis as Slot)[KEY] ?? otelMetrics.getMeterProvider();
}

/** Set (or, with `undefined`, clear) the process's prefork-otel provider. */
export function setDefaultMeterProvider(provider: MeterProvider | undefined): void {
  if (provider) (globalThis as Slot)[KEY] = provider;
  else delete (globalThis as Slot)[KEY];
}

/** Is `provider` the process's prefork-otel provider? */
export function isDefaultMeterProvider(provider: MeterProvider): boolean {
  return (globalThis as Slot)[KEY] === provider;
}
