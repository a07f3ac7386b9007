// The GitHub release backend of the image store: everything else under tasks/store/github
// is its private detail.
import type { StoreBackend, StoreOptions } from '../backend.ts';
import { createGitHubClient, resolveApiUrl, resolveRepository, resolveToken, type ClientOptions } from './client.ts';
import { GitHubStore } from './github-store.ts';
import { ReleaseApi } from './release-api.ts';
import { githubSettingsShape, type GitHubSettings } from './settings.ts';
import { resolveTransferLimits } from './sizes.ts';

export type { GitHubStoreDecl } from './settings.ts';

function clientOptions(options: StoreOptions): ClientOptions {
  return { env: options.env ?? process.env, ...options.tuning };
}

export const githubBackend: StoreBackend<GitHubSettings> = {
  name: 'github',
  ownKeys: ['repo', 'apiUrl', 'maxAssetSize', 'partSize'],
  schema: githubSettingsShape,

  check(settings) {
    if (settings.repo !== undefined) resolveRepository(settings, {});
  },

  configured(settings, env) {
    return Boolean(settings.repo) || Boolean(env.GITHUB_REPOSITORY?.trim());
  },

  async open(settings, tag, options) {
    const env = options.env ?? process.env;
    const api = new ReleaseApi(await createGitHubClient(settings, clientOptions(options)));
    return new GitHubStore(api, tag, () => resolveTransferLimits(settings, env), options.log);
  },

  /**
   * The repository name, a token and the part sizes, checked without a request; then, with
   * `reach`, one look at the release: the API answers, the token is accepted, the
   * repository is visible (a missing release is fine: the first upload creates it).
   */
  async checkSetup(settings, tag, options, reach) {
    const env = options.env ?? process.env;
    resolveRepository(settings, env);
    await resolveToken(env);
    resolveTransferLimits(settings, env);
    if (!reach) return;
    const key = JSON.stringify([resolveApiUrl(settings, env), resolveRepository(settings, env), tag, env.GITHUB_TOKEN ?? env.GH_TOKEN ?? '']);
    let check = reachable.get(key);
    if (!check) {
      check = createGitHubClient(settings, clientOptions(options))
        .then((client) => new ReleaseApi(client).findRelease(tag))
        .then(() => undefined);
      reachable.set(key, check);
    }
    await check;
  },

  fingerprint(settings) {
    return {
      params: { repo: settings.repo ?? null, apiUrl: settings.apiUrl ?? null },
      env: ['GITHUB_REPOSITORY', 'GITHUB_API_URL', 'PIPELINE_MAX_ASSET_SIZE', 'PIPELINE_PART_SIZE'],
    };
  },

  describe(settings, tag, env) {
    return `release ${tag} of ${env.GITHUB_REPOSITORY?.trim() || settings.repo || '(no repository)'}`;
  },
};

/** One look per store and process: every upload node of a run checks the same release. */
const reachable = new Map<string, Promise<void>>();
