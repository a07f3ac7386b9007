#!/usr/bin/env node
// The CLI runs JavaScript compiled ahead of time into dist/ (`npm run build`, which
// `npm install` runs as `prepare`), so no TypeScript tooling loads at start-up.
const { existsSync, readFileSync } = process.getBuiltinModule('node:fs');
const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  // Answered before importing anything: the cheapest question costs only Node's start-up.
  process.stdout.write(`${JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version}\n`);
} else {
  lessEagerOptimiser();
  const cli = new URL('../dist/src/cli.js', import.meta.url);
  if (!existsSync(cli)) {
    process.stderr.write('pipeline: the compiled CLI (dist/) is missing: run npm run build (npm install runs it)\n');
    process.exit(2);
  }
  const { main } = await import(cli.href);
  const code = await main(args);
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  // With its output written and nothing else in flight, the process leaves at once rather
  // than tearing down a heap no one will use again: about 10 ms of a 1,000-node no-op.
  // Anything else still open (a socket, a timer, a file write, a child) gets the ordinary
  // exit, which waits for it.
  if (onlyStdioLeft()) process.exit(code);
  process.exitCode = code;
}

/**
 * Most runs are short, and at V8's default eagerness its optimising compiler (TurboFan)
 * compiled, on the second core, functions that had only warmed up: in a 1,000-node no-op,
 * 70-80 ms of CPU time and 1,300 page faults of compiler memory (page faults are dear in
 * a VM), 20 ms of wall time. With four times the budget a function must spend in the
 * interpreter and baseline code first, the no-op compiles almost nothing, and the hot code
 * of a long run (a download, a hash) is still optimised, a few milliseconds later. A
 * budget given on the command line (`node --interrupt-budget=N bin/pipeline.js`; Node
 * refuses it in NODE_OPTIONS) is left alone. Measured in BENCHMARKS.md ("The optimising
 * compiler in a short run").
 */
function lessEagerOptimiser() {
  if (process.execArgv.some((arg) => /^--interrupt[-_]budget\b/.test(arg))) return;
  // Node 20's V8 default is 66 KiB of bytecode executed (`node --v8-options`).
  process.getBuiltinModule('node:v8').setFlagsFromString(`--interrupt-budget=${4 * 66 * 1024}`);
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
