// Opens the image store the config names. GitHub releases are the only backend so far;
// this is the one place outside tasks/store/github that knows it exists.
import type { ReleaseSettings } from './catalog.ts';
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
  return openGitHubStore(settings, tag, { ...options.github, env: options.env ?? process.env, ...(options.log ? { log: options.log } : {}) });
}

/** Everything about the store's settings that can be checked before a request: names, credentials, sizes. */
export async function checkStoreSetup(settings: ReleaseSettings, tag: string, options: StoreOptions = {}): Promise<void> {
  checkTag(tag, 'release tag');
  await checkGitHubSetup(settings, { ...options.github, env: options.env ?? process.env });
}

/** Where puts to `tag` go, in words, for dry runs. */
export function describeStore(settings: ReleaseSettings, tag: string, env: NodeJS.ProcessEnv = process.env): string {
  return `release ${tag} of ${describeGitHubLocation(settings, env)}`;
}
