#!/usr/bin/env node
// The CLI is TypeScript run through tsx's loader, so `npx pipeline` works right after
// `npm install` with no build step, and user configs in TypeScript load the same way.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli.ts');
process.exitCode = await main(process.argv.slice(2));
