// Opens the image store the config names: a shared directory when `release.dir` is set,
// else GitHub releases. The one place outside the backends that knows they exist.
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Failure } from '../../src/index.ts';
import type { ReleaseSettings } from './catalog.ts';
import { DirectoryStore } from './directory/directory-store.ts';
import { checkGitHubSetup, describeGitHubLocation, openGitHubStore, type GitHubOptions } from './github/index.ts';
import { checkTag } from './names.ts';
import type { ImageStore } from './store.ts';

export interface StoreOptions {
  /** Environment to read credentials and overrides from (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
  /** Backend tuning (retry pacing, a token reader); tests shrink the waits. */
  readonly github?: Omit<GitHubOptions, 'env'>;
  /** Notes a backend wants the user to see (a damaged index rebuilt, …). */
  readonly log?: (line: string) => void;
}

/** The store location `tag` (a release). The tag is checked before any request. */
export async function openImageStore(settings: ReleaseSettings, tag: string, options: StoreOptions = {}): Promise<ImageStore> {
  checkTag(tag, 'release tag');
  if (settings.dir !== undefined) return new DirectoryStore(resolve(settings.dir), tag);
  return openGitHubStore(settings, tag, { ...options.github, env: options.env ?? process.env, ...(options.log ? { log: options.log } : {}) });
}

/**
 * The store's settings (names, credentials, sizes), checked before any request; with
 * `reach`, then whether the store answers and can be seen, so that a run that would end
 * in an upload fails in one line before it builds for minutes.
 */
export async function checkStoreSetup(settings: ReleaseSettings, tag: string, options: StoreOptions = {}, reach = false): Promise<void> {
  checkTag(tag, 'release tag');
  if (settings.dir !== undefined) {
    if (!(await stat(settings.dir).catch(() => undefined))?.isDirectory()) {
      throw new Failure('setup', `release.dir ${settings.dir} is not a directory: create it (or mount the shared storage there)`);
    }
    return;
  }
  await checkGitHubSetup(settings, tag, { ...options.github, env: options.env ?? process.env }, reach);
}

/** Where puts to `tag` go, in words, for dry runs. */
export function describeStore(settings: ReleaseSettings, tag: string, env: NodeJS.ProcessEnv = process.env): string {
  if (settings.dir !== undefined) return `store ${resolve(settings.dir, tag)}`;
  return `release ${tag} of ${describeGitHubLocation(settings, env)}`;
}
