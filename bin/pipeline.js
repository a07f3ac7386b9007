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
  process.exitCode = await main(args);
}
