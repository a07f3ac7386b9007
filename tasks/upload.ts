// The `{name}:upload` task kind: puts a checksummed image into the image store the config
// names. The probe reads what the store holds for the image, so the engine re-runs the
// node when the remote changed (someone removed or replaced the image) even though no
// local input did. The record names the commit the tree is at, and the store replaces an
// image only when its recorded commit is an ancestor of that one (or with --force).
import { relative } from 'node:path';
import { Failure, isFailure, type NodeDef, type TaskContext } from '../src/index.ts';
import { assertSelfContainedImage } from './image-check.ts';
import type { ImageCatalog } from './store/catalog.ts';
import { provenanceForUpload } from './provenance/for-upload.ts';
import { checkSigningSetup } from './provenance/sign.ts';
import { readLocalImage } from './store/local-image.ts';
import { checkStoreSetup, describeStore, openImageStore, storeFingerprint, type StoreOptions } from './store/open.ts';
import { ancestryGuard, readSourceCommit } from './source-commit.ts';

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
  const store = storeFingerprint(catalog.release);
  const relativeToRoot = (path: string) => relative(catalog.root, path);
  return {
    id: uploadNodeId(name),
    kind: 'upload',
    description: `upload ${name} to release ${tag}`,
    deps: [`${name}:checksum`],
    pool: 'network',
    params: { tag, ...store.params },
    files: [relativeToRoot(catalog.checksumPath(name))],
    env: [...store.env, 'PIPELINE_SIGNING_KEY'],
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
      // A signing key that cannot sign fails the run before it builds, like an unusable store.
      await checkSigningSetup(env);
      try {
        await checkStoreSetup(catalog.release, tag, options.store, true);
      } catch (error) {
        throw unusableStore(error);
      }
    },
    async describeRun() {
      return `would upload ${name} to ${describeStore(catalog.release, tag, env)}`;
    },
    run: (context) => uploadImage(catalog, name, tag, options, context),
  };
}

/** Puts the image (signed, when a key or keyless signing is set up) into the store, replacing only what its commit descends from. */
async function uploadImage(catalog: ImageCatalog, name: string, tag: string, options: UploadNodeOptions, context: TaskContext): Promise<{ note?: string }> {
  const env = options.store?.env ?? process.env;
  const commit = await readSourceCommit(catalog.root, context.signal);
  const image = { ...(await readLocalImage(catalog, name)), ...(commit ? { commit } : {}) };
  await assertSelfContainedImage(image.path, context.signal, { refused: 'not uploaded', exec: context.exec });
  const log = (line: string): void => context.log(line);
  const provenance = await provenanceForUpload(catalog, image, { env, force: context.force, log });
  const store = await openImageStore(catalog.release, tag, { ...options.store, log });
  const signed = provenance.bundle ? { attachments: { ...image.attachments, provenance: provenance.bundle } } : {};
  const result = await store.put(
    { ...image, ...signed },
    {
      force: context.force,
      signal: context.signal,
      log,
      onProgress: (done, total) => context.progress(done, total),
      mayReplace: ancestryGuard({ root: catalog.root, name, location: store.location, own: commit, force: context.force, signal: context.signal, log }),
    },
  );
  await provenance.stored();
  context.status(result.uploaded ? `uploaded to ${tag}` : `unchanged on ${tag}`);
  return { note: provenance.note };
}
