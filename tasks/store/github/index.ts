// The GitHub release backend of the image store: everything else under tasks/store/github
// is its private detail.
import type { ReleaseSettings } from '../catalog.ts';
import type { ImageStore } from '../store.ts';
import { createGitHubClient, resolveApiUrl, resolveRepository, resolveToken, type ClientOptions } from './client.ts';
import { GitHubStore } from './github-store.ts';
import { ReleaseApi } from './release-api.ts';
import { resolveTransferLimits } from './sizes.ts';

export type { ClientOptions as GitHubOptions } from './client.ts';

export async function openGitHubStore(
  settings: ReleaseSettings,
  tag: string,
  options: ClientOptions & { readonly log?: (line: string) => void },
): Promise<ImageStore> {
  const env = options.env ?? process.env;
  const api = new ReleaseApi(await createGitHubClient(settings, options));
  return new GitHubStore(api, tag, () => resolveTransferLimits(settings, env), options.log);
}

/**
 * The repository name, a token and the part sizes, checked without a request; then, with
 * `reach`, one look at the release: the API answers, the token is accepted, the
 * repository is visible (a missing release is fine: the first upload creates it).
 */
export async function checkGitHubSetup(settings: ReleaseSettings, tag: string, options: ClientOptions, reach: boolean): Promise<void> {
  const env = options.env ?? process.env;
  resolveRepository(settings, env);
  await resolveToken(env, options.readGhToken);
  resolveTransferLimits(settings, env);
  if (!reach) return;
  const key = JSON.stringify([resolveApiUrl(settings, env), resolveRepository(settings, env), tag, env.GITHUB_TOKEN ?? env.GH_TOKEN ?? '']);
  let check = reachable.get(key);
  if (!check) {
    check = createGitHubClient(settings, options)
      .then((client) => new ReleaseApi(client).findRelease(tag))
      .then(() => undefined);
    reachable.set(key, check);
  }
  await check;
}

/** One look per store and process: every upload node of a run checks the same release. */
const reachable = new Map<string, Promise<void>>();

/** Where uploads go, for `--dry-run`: `acme/images`. */
export function describeGitHubLocation(settings: ReleaseSettings, env: NodeJS.ProcessEnv): string {
  return env.GITHUB_REPOSITORY?.trim() || settings.repo || '(no repository)';
}
