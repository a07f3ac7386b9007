// Shared plumbing of the `release` and `images` commands: opening the store and reading
// flag values. Their failures are thrown as Failures with a kind, which the CLI turns into
// one line (and the contract's error object with --json) and the kind's exit code: 2 for
// anything to fix, so never 1 for an error of `release check`, where 1 means "stale".
import { homedir } from 'node:os';
import { resolve } from 'node:path';
import { Failure, type CommandIO } from '../../src/index.ts';
import type { ImageCatalog } from './catalog.ts';
import { checkTag } from './names.ts';
import { openImageStore, type StoreOptions } from './open.ts';
import type { ImageStore } from './store.ts';

export interface CommandDeps {
  /** Store tuning and environment; tests pass a loopback-only env. */
  readonly store?: StoreOptions;
}

export type CommandArgs = { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] };

export async function openStore(catalog: ImageCatalog, tag: string, deps: CommandDeps, io: Pick<CommandIO, 'err'>): Promise<ImageStore> {
  return openImageStore(catalog.release, tag, { ...deps.store, log: (line) => io.err(line) });
}

/** The tag a command works on: `--{flag}` (checked, before any request), else the config's. */
export function tagOf(catalog: ImageCatalog, args: CommandArgs, flagName: 'tag' | 'version'): string {
  const given = stringValue(args, flagName);
  return given === undefined ? catalog.release.tag : checkTag(given, `--${flagName}`);
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
