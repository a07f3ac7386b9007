// The `{name}:upload` task kind: puts a checksummed image on a GitHub release. The probe
// reads the release's `.sha256`, so the engine re-runs the node when the remote changed
// (someone removed or replaced the image) even though no local input did.
import { Failure, isFailure, type NodeDef } from '../src/types.ts';
import { checksumAssetName } from './github/asset-names.ts';
import type { ImageCatalog } from './github/catalog.ts';
import { createGitHubClient, resolveRepository, resolveToken, type ClientOptions } from './github/client.ts';
import { ReleaseStore } from './github/releases.ts';
import { resolveTransferLimits } from './github/sizes.ts';
import { uploadImage } from './github/upload-image.ts';
import { relative } from 'node:path';

export interface UploadNodeOptions {
  /** Client tuning and environment (tests pass their own env). */
  readonly client?: ClientOptions;
}

export function uploadNodeId(name: string): string {
  return `${name}:upload`;
}

export function createUploadNode(catalog: ImageCatalog, name: string, tag: string, options: UploadNodeOptions = {}): NodeDef {
  const env = options.client?.env ?? process.env;
  const relativeToRoot = (path: string) => relative(catalog.root, path);
  return {
    id: uploadNodeId(name),
    kind: 'upload',
    description: `upload ${name} to release ${tag}`,
    deps: [`${name}:checksum`],
    pool: 'network',
    params: { tag, repo: catalog.release.repo ?? null, apiUrl: catalog.release.apiUrl ?? null },
    files: [relativeToRoot(catalog.checksumPath(name))],
    env: ['GITHUB_REPOSITORY', 'GITHUB_API_URL', 'PIPELINE_MAX_ASSET_SIZE', 'PIPELINE_PART_SIZE'],
    caveat: 'the release is read at plan time through its .sha256 asset; other edits to the release are not seen',
    // The release is outside the graph: read it while the image is still being made.
    probeIndependent: true,
    probe: async ({ signal }) => {
      try {
        const store = new ReleaseStore(await createGitHubClient(catalog.release, options.client));
        const release = await store.findRelease(tag);
        if (!release) return { value: 'release missing' };
        const assets = await store.listAssets(release.id);
        const asset = assets.find((candidate) => candidate.name === checksumAssetName(name) && candidate.state === 'uploaded');
        if (!asset) return { value: 'image missing' };
        return { value: (await store.downloadText(asset, signal, 4096)).trim() };
      } catch (error) {
        if (isFailure(error, 'setup')) throw error;
        // Unreachable or unauthorized: a value that never matches, so the node runs and reports the real error.
        return { value: `unknown ${Date.now()}`, note: `cannot read release ${tag}: ${error instanceof Error ? error.message : error}` };
      }
    },
    async preflight() {
      resolveRepository(catalog.release, env);
      await resolveToken(env, options.client?.readGhToken);
      try {
        resolveTransferLimits(catalog.release, env);
      } catch (error) {
        throw new Failure('setup', error instanceof Error ? error.message : String(error));
      }
    },
    async describeRun() {
      return `would upload ${name} to release ${tag} of ${env.GITHUB_REPOSITORY || catalog.release.repo || '(no repository)'}`;
    },
    async run(context) {
      const limits = (() => {
        try {
          return resolveTransferLimits(catalog.release, env);
        } catch (error) {
          throw new Failure('task', error instanceof Error ? error.message : String(error));
        }
      })();
      const store = new ReleaseStore(await createGitHubClient(catalog.release, options.client));
      const result = await uploadImage({
        store,
        catalog,
        name,
        tag,
        limits,
        force: context.force,
        signal: context.signal,
        log: (line) => context.log(line),
        onProgress: (done, total) => context.progress(done, total),
      });
      context.status(result.uploaded ? `uploaded to ${tag}` : `unchanged on ${tag}`);
    },
  };
}
