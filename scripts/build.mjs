// Build: TypeScript → CommonJS (dist/cjs, with .d.ts), then thin ESM entry points (dist/esm) that
// re-export the CommonJS build, so `import` and `require` share one instance (one MeterProvider,
// one set of accumulators) — no dual-package hazard.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// --clean (used by prepack) starts from an empty dist/; a plain build overwrites in place so that
// tests running in parallel never see dist/ vanish.
if (process.argv.includes('--clean')) rmSync(join(root, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.json')], { stdio: 'inherit' });

const esm = join(root, 'dist/esm');
mkdirSync(esm, { recursive: true });
const require = createRequire(import.meta.url);
const lib = require(join(root, 'dist/cjs/index.js'));
const names = Object.keys(lib).filter((n) => n !== 'default' && n !== '__esModule');
writeFileSync(join(esm, 'index.mjs'),
  `import lib from '../cjs/index.js';\nexport const { ${names.join(', ')} } = lib;\nexport default lib;\n`);
writeFileSync(join(esm, 'index.d.mts'), `export * from '../cjs/index.js';\n`);
writeFileSync(join(esm, 'register.mjs'), `import '../cjs/register.js';\n`);
writeFileSync(join(esm, 'register.d.mts'), `export {};\n`);

const cli = join(root, 'dist/cjs/cli.js');
const src = readFileSync(cli, 'utf8');
if (!src.startsWith('#!')) writeFileSync(cli, '#!/usr/bin/env node\n' + src);
chmodSync(cli, 0o755);
console.log(`built dist/cjs and dist/esm (${names.length} exports)`);
