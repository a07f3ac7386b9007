#!/usr/bin/env node
// The CLI runs JavaScript compiled ahead of time into dist/ (`npm run build`, which
// `npm install` runs as `prepare`), so no TypeScript tooling loads at start-up.
const { existsSync, readFileSync } = process.getBuiltinModule('node:fs');
const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  // Answered before importing anything: the cheapest question costs only Node's start-up.
  process.stdout.write(`${JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version}\n`);
} else {
  shortRunSettings();
  const cli = new URL('../dist/src/cli.js', import.meta.url);
  if (!existsSync(cli)) {
    process.stderr.write('pipeline: the compiled CLI (dist/) is missing: run npm run build (npm install runs it)\n');
    process.exit(2);
  }
  const { main } = await import(cli.href);
  // Commands that need no config (the engine's CLI knows none by name): `init` lays out a
  // new image repository from this package's templates.
  const starters = { init: async () => (await import(new URL('../dist/tasks/init.js', import.meta.url).href)).initCommand };
  const code = await main(args, undefined, starters);
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  // With its output written and nothing else in flight, the process leaves at once rather
  // than tearing down a heap no one will use again, a noticeable part of a no-op run.
  // Anything else still open (a socket, a timer, a file write, a child) gets the ordinary
  // exit, which waits for it.
  if (onlyStdioLeft()) process.exit(code);
  process.exitCode = code;
}

/**
 * V8 settings for a short run, set before the CLI loads. Page faults are dear in a VM, and
 * a no-op run touched several times the pages `node -e 0` does; two V8 defaults made most
 * of the difference (figures in docs/benchmarks/notebook.md, "The optimising compiler in a short run"
 * and "The young generation in a short run"). A setting the user gave (`node
 * --interrupt-budget=N bin/pipeline.js`, or --max-semi-space-size in NODE_OPTIONS, the one
 * of these Node accepts there) is left alone.
 */
function shortRunSettings() {
  const options = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  // V8 takes a flag spelt with dashes or underscores, with its value after `=`.
  const given = (flag) => [flag, flag.replaceAll('-', '_')].some((name) => options.some((arg) => arg === `--${name}` || arg.startsWith(`--${name}=`)));
  const v8 = process.getBuiltinModule('node:v8');
  // The optimising compiler (TurboFan) compiled, on the second core, functions that had
  // only warmed up, spending CPU time and compiler memory a short run never earns back.
  // With four times the budget a function must spend in the interpreter and baseline
  // code first, a short run compiles almost nothing, and the hot code of a long one (a
  // download, a hash) is still optimised, a little later. The default budget is Node
  // 20's V8 default (`node --v8-options`).
  if (!given('interrupt-budget')) v8.setFlagsFromString(`--interrupt-budget=${4 * 66 * 1024}`);
  // The young generation doubles whenever many objects outlive a collection, as the
  // config, the stat cache and the stamp index all do: each doubling touches fresh pages.
  // It keeps its first size for the first second, then grows as by default, so a long
  // run's collections are as usual.
  if (!given('semi-space-growth-factor') && !given('max-semi-space-size') && !given('min-semi-space-size')) {
    v8.setFlagsFromString('--semi-space-growth-factor=1');
    setTimeout(() => v8.setFlagsFromString('--semi-space-growth-factor=2'), 1000).unref();
  }
}

/** Resolves once what was written to the stream has been handed to the OS (or failed). */
function flushed(stream) {
  if (stream.writableLength === 0 || stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => stream.write('', () => resolve()));
}

/**
 * Whether all that is still open is stdio (and the close of a file already read: Node's
 * module loader does not wait for those, and leaving loses nothing, since the system
 * closes what a process leaves open).
 */
function onlyStdioLeft() {
  const HARMLESS = new Set(['PipeWrap', 'TTYWrap', 'SimpleWriteWrap', 'CloseReq', 'FileHandleCloseReq']);
  return typeof process.getActiveResourcesInfo === 'function' && process.getActiveResourcesInfo().every((kind) => HARMLESS.has(kind));
}
