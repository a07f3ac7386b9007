// The `{name}:upload` task kind: puts a checksummed image into the image store (a GitHub
// release). The probe reads what the store holds for the image, so the engine re-runs the
// node when the remote changed (someone removed or replaced the image) even though no
// local input did.
import { relative } from 'node:path';
import { Failure, isFailure, type NodeDef } from '../src/index.ts';
import { assertSelfContainedImage } from './image-check.ts';
import type { ImageCatalog } from './store/catalog.ts';
import { readLocalImage } from './store/local-image.ts';
import { checkStoreSetup, describeStore, openImageStore, type StoreOptions } from './store/open.ts';

export interface UploadNodeOptions {
  /** Store tuning and environment (tests pass their own env). */
  readonly store?: StoreOptions;
}

export function uploadNodeId(name: string): string {
  return `${name}:upload`;
}

/** A store that cannot be reached or read leaves nothing to upload to: a setup failure, said in one line. */
function unusableStore(error: unknown): unknown {
  if (isFailure(error, 'network', 'not-found')) return new Failure('setup', error.message, { cause: error });
  return error;
}

export function createUploadNode(catalog: ImageCatalog, name: string, tag: string, options: UploadNodeOptions = {}): NodeDef {
  const env = options.store?.env ?? process.env;
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
    caveat: "the store is read at plan time through the image's record (or .sha256); other edits to the release are not seen",
    // The release is outside the graph: read it while the image is still being made.
    probeIndependent: true,
    probe: async ({ signal }) => {
      try {
        const store = await openImageStore(catalog.release, tag, options.store);
        return { value: await store.probe(name, signal) };
      } catch (error) {
        throw unusableStore(error);
      }
    },
    async preflight() {
      try {
        await checkStoreSetup(catalog.release, tag, options.store, true);
      } catch (error) {
        throw unusableStore(error);
      }
    },
    async describeRun() {
      return `would upload ${name} to ${describeStore(catalog.release, tag, env)}`;
    },
    async run(context) {
      const image = await readLocalImage(catalog, name);
      await assertSelfContainedImage(image.path, context.signal, { refused: 'not uploaded' });
      const store = await openImageStore(catalog.release, tag, { ...options.store, log: (line) => context.log(line) });
      const result = await store.put(image, {
        force: context.force,
        signal: context.signal,
        log: (line) => context.log(line),
        onProgress: (done, total) => context.progress(done, total),
      });
      context.status(result.uploaded ? `uploaded to ${tag}` : `unchanged on ${tag}`);
    },
  };
}
