#!/usr/bin/env node
// Compiles the CLI, the engine and the task kinds into dist/, which bin/pipeline.js runs.
// `npm install`/`npm ci` run it (the `prepare` script), so `npx pipeline` works with no
// extra command.
//
//   node scripts/build.mjs              always compile
//   node scripts/build.mjs --if-stale   compile only when the sources differ from what dist/ was built from
//
// Two steps. tsc (tsconfig.build.json) type-checks, emits the declarations (.d.ts) and the
// JavaScript; esbuild then bundles that JavaScript into the three entry points (the CLI,
// the engine's index, the package's index) and the chunks they share, so a run loads a
// handful of files rather than forty: module resolution and reads were a sizeable part of
// a no-op run's start-up. The entries share their chunks, so a config importing the
// package gets the same module instances as the CLI (instanceof Failure holds).
// Packages stay external: the consumer's node_modules provides them.
//
// The build goes to a temp directory that replaces dist/ only once both steps succeeded,
// so a failed build leaves the previous one whole, and dist/ never holds files of sources
// since removed. dist/.source-hash records what it was built from.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { builtHash, sourceHash, STAMP_FILE } from './source-hash.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
/** What bin/pipeline.js and the package's exports load (package.json "exports"). */
const ENTRY_POINTS = ['src/cli', 'src/index', 'index', 'tasks/init'];
const hash = sourceHash(root); // before compiling: an edit during the build leaves it stale
if (process.argv.includes('--if-stale') && builtHash(root) === hash) process.exit(0);

const temp = join(root, `dist.building-${process.pid}`);
const old = join(root, `dist.old-${process.pid}`);
rmSync(temp, { recursive: true, force: true });
try {
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', temp], { cwd: root, stdio: 'inherit' });
} catch (error) {
  rmSync(temp, { recursive: true, force: true });
  console.error(`build: tsc failed${error.status ? ` (exit ${error.status})` : ''}; dist/ left as it was`);
  process.exit(1);
}
try {
  await bundle(temp);
  writeFileSync(join(temp, STAMP_FILE.replace(/^dist\//, '')), `${hash}\n`);
} catch (error) {
  rmSync(temp, { recursive: true, force: true });
  console.error(`build: bundling failed: ${error.message}; dist/ left as it was`);
  process.exit(1);
}
const dist = join(root, 'dist');
if (existsSync(dist)) renameSync(dist, old);
renameSync(temp, dist);
rmSync(old, { recursive: true, force: true });

/** Replaces tsc's JavaScript in `dir` by the bundled entry points and their chunks (declarations stay). */
async function bundle(dir) {
  const { build } = await import('esbuild');
  const out = join(dir, '.bundle');
  await build({
    entryPoints: Object.fromEntries(ENTRY_POINTS.map((entry) => [entry, join(dir, `${entry}.js`)])),
    outdir: out,
    bundle: true,
    splitting: true,
    chunkNames: 'chunks/[name]-[hash]',
    format: 'esm',
    platform: 'node',
    target: 'node20.19',
    // Packages stay external but xxhash-wasm, which every run loads: bundled, it costs no
    // package resolution (its package.json and exports map) and no module of its own.
    plugins: [
      {
        name: 'packages-external-but-xxhash',
        setup(builder) {
          builder.onResolve({ filter: /^[^./]/ }, (args) => (args.path === 'xxhash-wasm' ? undefined : { path: args.path, external: true }));
        },
      },
    ],
    logLevel: 'error',
  });
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath ?? entry.path, entry.name);
    if (entry.isFile() && entry.name.endsWith('.js') && !relative(dir, path).startsWith('.bundle')) rmSync(path);
  }
  for (const entry of readdirSync(out, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const from = join(entry.parentPath ?? entry.path, entry.name);
    const to = join(dir, relative(out, from));
    mkdirSync(dirname(to), { recursive: true });
    renameSync(from, to);
  }
  rmSync(out, { recursive: true, force: true });
  dropEmptyChunks(dir);
}

/**
 * esbuild gives src/index.js, an entry that other entries also import, a shared chunk of
 * its own, which is empty (the module only re-exports). An empty module does nothing when
 * imported, so the chunk and the bare imports of it go: the package ships no empty file.
 */
function dropEmptyChunks(dir) {
  const chunks = join(dir, 'chunks');
  const empty = readdirSync(chunks).filter((name) => name.endsWith('.js') && statSync(join(chunks, name)).size === 0);
  if (empty.length === 0) return;
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath ?? entry.path, entry.name);
    if (!entry.isFile() || !entry.name.endsWith('.js')) continue;
    const text = readFileSync(path, 'utf8');
    let kept = text;
    // From an entry the import is "../chunks/NAME"; from another chunk, "./NAME".
    for (const name of empty) kept = kept.replace(new RegExp(`^import "(?:\\./|\\.\\./)+(?:chunks/)?${name.replace(/[.]/g, '\\.')}";\\n`, 'gm'), '');
    if (kept !== text) writeFileSync(path, kept);
  }
  for (const name of empty) rmSync(join(chunks, name));
}
