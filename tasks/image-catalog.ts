// The image catalog of a config (the ImageCatalog interface of tasks/store/catalog.ts),
// which the store, the upload node and the release, images and verify commands read:
// where each image's files are, and the cache key it would have if built now (with the
// inputs behind it, so `release check` can say which one changed).
import { existsSync } from 'node:fs';
import { join, posix } from 'node:path';
import type { ConfigContext } from '../src/index.ts';
import { composeCacheKey, sourceHash, templateHashes, templateKeyFiles } from './cache-key.ts';
import { fetchChecksumList, sha512InList, verifiedSha512 } from './download.ts';
import type { StoreSettings } from './store/backends.ts';
import type { CurrentImageKey, ImageCatalog } from './store/catalog.ts';

export interface CatalogOptions {
  /** The project (its root, its stat cache, what its nodes' last runs recorded). */
  readonly project: ConfigContext;
  readonly names: readonly string[];
  readonly publishDir: string;
  readonly templatesDir: string;
  readonly sharedDir: string;
  /** The base image an image is built from: its download node, cached file and upstream. */
  base(name: string): { readonly node: string; readonly file: string; readonly url: string; readonly checksumsUrl: string };
  extraFiles(name: string): readonly string[];
  /** The QEMU accelerator the image is built with. */
  accelerator(name: string): string;
  readonly release: StoreSettings;
}

type BaseSpec = ReturnType<CatalogOptions['base']>;
type UpstreamSha512 = (base: BaseSpec, signal: AbortSignal) => Promise<string>;

/**
 * Upstream's SHA-512 of the base: the one the cached file was verified against (what the
 * download node's last run recorded), else what SHA512SUMS says now, else unknown.
 */
async function baseSha512(project: ConfigContext, base: BaseSpec, cached: boolean, upstreamSha512: UpstreamSha512): Promise<string | undefined> {
  if (cached) {
    const recorded = verifiedSha512(project.recordOf(base.node));
    if (recorded !== undefined) return recorded;
  }
  try {
    return await upstreamSha512(base, AbortSignal.timeout(30_000));
  } catch {
    return undefined;
  }
}

/**
 * What SHA512SUMS says of a base, each list fetched once per catalog: `release check` asks
 * of every image, twice for a cached base, and images share bases. A failed fetch is
 * forgotten, so the next asker tries again; each asker stops waiting when its own signal
 * aborts (Ctrl-C), whoever started the fetch.
 */
function memoisedUpstreamSha512(): UpstreamSha512 {
  const lists = new Map<string, Promise<string>>();
  return async (base, signal) => {
    let list = lists.get(base.checksumsUrl);
    if (list === undefined) {
      list = fetchChecksumList(base.checksumsUrl, signal);
      lists.set(base.checksumsUrl, list);
      list.catch(() => lists.delete(base.checksumsUrl));
    }
    return sha512InList(await untilAborted(list, signal), base);
  };
}

function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

export function createImageCatalog(options: CatalogOptions): ImageCatalog {
  const { project } = options;
  const { root } = project;
  const imageDir = (name: string): string => join(root, 'images', name);
  const upstreamSha512 = memoisedUpstreamSha512();

  const currentKey = async (name: string): Promise<CurrentImageKey> => {
    const files = templateKeyFiles({ name, templatesDir: options.templatesDir, sharedDir: options.sharedDir, extraFiles: options.extraFiles(name) });
    const { combined: template, perFile } = await templateHashes(root, files);
    const base = options.base(name);
    const cached = existsSync(join(root, base.file));
    // Through the project's stat cache: an unchanged multi-GB base image is not read again.
    const sha256 = cached ? await sourceHash(project.hasher, root, base.file) : undefined;
    const sha512 = await baseSha512(project, base, cached, upstreamSha512);
    return {
      ...(sha256 ? { cacheKey: composeCacheKey(sha256, template) } : {}),
      sources: { base: { path: base.file, ...(sha256 ? { sha256 } : {}), ...(sha512 ? { sha512 } : {}) }, files: perFile },
    };
  };

  return {
    names: options.names,
    root,
    publishDir: options.publishDir,
    release: options.release,
    imagePath: (name) => join(imageDir(name), `${name}.qcow2`),
    checksumPath: (name) => join(imageDir(name), `${name}.qcow2.sha256`),
    versionsPath: (name) => join(imageDir(name), 'image-version.txt'),
    cacheKeyPath: (name) => join(imageDir(name), '.cache-key'),
    sourcesPath: (name) => join(imageDir(name), '.sources.json'),
    currentKey,
    buildSettings: (name) => ({
      baseUrl: options.base(name).url,
      template: posix.join(options.templatesDir, name, 'template.pkr.hcl'),
      accelerator: options.accelerator(name),
    }),
    async inputsToBuild(name, signal) {
      const current = await currentKey(name);
      // Not cached: currentKey already compared by what SHA512SUMS says now.
      if (current.sources.base.sha256 === undefined) return current;
      const upstream = await upstreamSha512(options.base(name), AbortSignal.any([signal, AbortSignal.timeout(20_000)])).catch(() => undefined);
      if (upstream === undefined || upstream === current.sources.base.sha512) return current;
      return { sources: { ...current.sources, base: { path: current.sources.base.path, sha512: upstream } } };
    },
  };
}
