/**
 * The preload: `node -r prefork-otel/register app.js` or `node --import prefork-otel/register app.js`.
 * Wires the layers for a process we did not start: config → worker runtime → scrape endpoint.
 */
import { exitOnUserError, loadConfig } from './config';
import { startSingleProcess } from './modes/single';

function main(): void {
  let config;
  try {
    config = loadConfig();
  } catch (e) {
    exitOnUserError(e);
  }
  if (config.disabled) return;
  startSingleProcess(config).catch(exitOnUserError);
}

main();
