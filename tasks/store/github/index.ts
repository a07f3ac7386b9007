// The GitHub release backend of the image store: everything else under tasks/store/github
// is its private detail.
import type { ReleaseSettings } from '../catalog.ts';
import type { ImageStore } from '../store.ts';
import { createGitHubClient, resolveRepository, resolveToken, type ClientOptions } from './client.ts';
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

/** What can be checked without a request: the repository name, a token, the part sizes. */
export async function checkGitHubSetup(settings: ReleaseSettings, options: ClientOptions): Promise<void> {
  const env = options.env ?? process.env;
  resolveRepository(settings, env);
  await resolveToken(env, options.readGhToken);
  resolveTransferLimits(settings, env);
}

/** Where uploads go, for `--dry-run`: `acme/images`. */
export function describeGitHubLocation(settings: ReleaseSettings, env: NodeJS.ProcessEnv): string {
  return env.GITHUB_REPOSITORY?.trim() || settings.repo || '(no repository)';
}
