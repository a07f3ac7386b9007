// Shared plumbing of the `release` and `images` commands: opening the release store,
// reading flag values, and turning expected failures into one line (or one JSON object).
import { homedir } from 'node:os';
import { resolve } from 'node:path';
import { Failure, isFailure, type CommandIO } from '../../src/types.ts';
import type { ImageCatalog } from './catalog.ts';
import { createGitHubClient, type ClientOptions } from './client.ts';
import { ReleaseStore } from './releases.ts';

export interface CommandDeps {
  /** Client tuning and environment; tests pass a loopback-only env. */
  readonly client?: ClientOptions;
}

export type CommandArgs = { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] };

export async function openStore(catalog: ImageCatalog, deps: CommandDeps): Promise<ReleaseStore> {
  return new ReleaseStore(await createGitHubClient(catalog.release, deps.client));
}

export function stringValue(args: CommandArgs, name: string): string | undefined {
  const value = args.values[name];
  if (value === undefined || value === false) return undefined;
  if (typeof value !== 'string' || value === '') throw new Failure('usage', `--${name} needs a value`);
  return value;
}

export function flag(args: CommandArgs, ...names: string[]): boolean {
  return names.some((name) => args.values[name] === true);
}

export function isDryRun(args: CommandArgs): boolean {
  return flag(args, 'dry-run', 'dryRun');
}

export function expandHome(path: string): string {
  return path === '~' || path.startsWith('~/') ? resolve(homedir(), path.slice(2)) : resolve(path);
}

/** Runs a command body; expected failures become a message on stderr (or `{ error }` with --json) and exit 1. */
export async function reportFailures(io: CommandIO, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (error) {
    if (isFailure(error, 'usage')) throw error;
    if (isFailure(error)) {
      if (io.json) io.out(JSON.stringify({ error: error.message, kind: error.kind }));
      else io.err(error.message);
      return 1;
    }
    throw error;
  }
}
