// The image catalog the GitHub tasks and the verify command read: where each image's files
// are, and the cache key it would have if built now (with the inputs behind it, so
// `release check` can say which one changed).
import { join } from 'node:path';
import { StatCache } from '../src/hasher.ts';
import type { FileHasher } from '../src/types.ts';
import { composeCacheKey, sourceHash, templateHash, templateKeyFiles } from './cache-key.ts';
import type { CurrentImageKey, ImageCatalog, ReleaseSettings } from './github/catalog.ts';

export interface CatalogOptions {
  readonly root: string;
  readonly names: readonly string[];
  readonly publishDir: string;
  readonly templatesDir: string;
  readonly sharedDir: string;
  /** The base image an image is built from, relative to the root. */
  baseFile(name: string): string;
  extraFiles(name: string): readonly string[];
  readonly release: ReleaseSettings;
}

export function createCatalog(options: CatalogOptions): ImageCatalog {
  const { root } = options;
  const imageDir = (name: string): string => join(root, 'images', name);
  let hasher: Promise<FileHasher> | undefined;
  // The project's stat cache, read-only here: unchanged multi-GB base images are not re-read.
  const statCache = (): Promise<FileHasher> => (hasher ??= StatCache.open(join(root, '.pipeline', 'stat-cache.json')));

  return {
    names: options.names,
    root,
    publishDir: options.publishDir,
    release: options.release,
    imagePath: (name) => join(imageDir(name), `${name}.qcow2`),
    checksumPath: (name) => join(imageDir(name), `${name}.qcow2.sha256`),
    versionsPath: (name) => join(imageDir(name), 'image-version.txt'),
    cacheKeyPath: (name) => join(imageDir(name), '.cache-key'),
    async currentKey(name): Promise<CurrentImageKey> {
      const files = templateKeyFiles({ name, templatesDir: options.templatesDir, sharedDir: options.sharedDir, extraFiles: options.extraFiles(name) });
      const basePath = options.baseFile(name);
      const baseSha = await sourceHash(await statCache(), root, basePath);
      const perFile: Record<string, string> = {};
      for (const file of files) perFile[file] = await templateHash(root, [file]);
      const template = await templateHash(root, files);
      return { cacheKey: composeCacheKey(baseSha, template), sources: { base: { path: basePath, sha256: baseSha }, files: perFile } };
    },
  };
}
