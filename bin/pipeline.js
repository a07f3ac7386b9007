#!/usr/bin/env node
// The CLI runs JavaScript compiled ahead of time into dist/ (`npm run build`, which
// `npm install` runs as `prepare`), so no TypeScript tooling loads at start-up.
const { existsSync, readFileSync } = process.getBuiltinModule('node:fs');
const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  // Answered before importing anything: the cheapest question costs only Node's start-up.
  process.stdout.write(`${JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version}\n`);
} else {
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
