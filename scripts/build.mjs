#!/usr/bin/env node
// Compiles the CLI, the engine and the task kinds to JavaScript with declarations in
// dist/ (tsc -p tsconfig.build.json), which bin/pipeline.js runs. `npm install`/`npm ci`
// run it (the `prepare` script), so `npx pipeline` works with no extra command.
//
//   node scripts/build.mjs              always compile
//   node scripts/build.mjs --if-stale   compile only when the sources differ from what dist/ was built from
//
// The build goes to a temp directory that replaces dist/ only once tsc succeeded, so a
// failed build leaves the previous one whole, and dist/ never holds files of sources
// since removed. dist/.source-hash records what it was built from.
import { execFileSync } from 'node:child_process';
import { rmSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { builtHash, sourceHash, STAMP_FILE } from './source-hash.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const hash = sourceHash(root); // before compiling: an edit during the build leaves it stale
if (process.argv.includes('--if-stale') && builtHash(root) === hash) process.exit(0);

const temp = join(root, `dist.building-${process.pid}`);
const old = join(root, `dist.old-${process.pid}`);
rmSync(temp, { recursive: true, force: true });
try {
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', temp], { cwd: root, stdio: 'inherit' });
  writeFileSync(join(temp, STAMP_FILE.replace(/^dist\//, '')), `${hash}\n`);
} catch (error) {
  rmSync(temp, { recursive: true, force: true });
  console.error(`build: tsc failed${error.status ? ` (exit ${error.status})` : ''}; dist/ left as it was`);
  process.exit(1);
}
const dist = join(root, 'dist');
if (existsSync(dist)) renameSync(dist, old);
renameSync(temp, dist);
rmSync(old, { recursive: true, force: true });
