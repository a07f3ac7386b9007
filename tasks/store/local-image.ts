// A built image as a store receives it: its bytes' path and size, the SHA-256 from its
// `.sha256`, the key it was built with, its versions and the inputs behind the key.
import { readFile, stat } from 'node:fs/promises';
import { Failure } from '../../src/index.ts';
import { imageCompression } from '../qemu-img.ts';
import type { ImageCatalog } from './catalog.ts';
import { chunkIndexOf } from './delta/index-file.ts';
import { readFetchedSources } from './fetched-sources.ts';
import { checksumOf, parseVersions } from './record.ts';
import type { ImageToPut } from './store.ts';

export async function readLocalImage(catalog: ImageCatalog, name: string): Promise<ImageToPut> {
  const path = catalog.imagePath(name);
  const checksumPath = catalog.checksumPath(name);
  const checksumText = await readFile(checksumPath, 'utf8').catch(() => {
    throw new Failure('task', `${checksumPath} is missing: run ${name}:checksum first`);
  });
  const sha256 = checksumOf(checksumText, name, checksumPath);
  const size = (
    await stat(path).catch(() => {
      throw new Failure('task', `${path} is missing: build ${name} first`);
    })
  ).size;
  const versions = parseVersions(await readFile(catalog.versionsPath(name), 'utf8').catch(() => ''));
  const current = await catalog.currentKey(name);
  // The key the image was built with; the current one if the key file is missing.
  const cacheKey = (await readFile(catalog.cacheKeyPath(name), 'utf8').catch(() => current.cacheKey ?? '')).trim();
  if (!cacheKey) throw new Failure('task', `${name} has no cache key (${catalog.cacheKeyPath(name)} missing and its base is not cached): build it first`);
  // A host that only uploads may lack qemu-img: the record then says nothing rather than something wrong.
  const compression = await imageCompression(path).catch(() => undefined);
  // Fetched rather than built here: the inputs its record named, not this host's partial view.
  const sources = (await readFetchedSources(catalog.sourcesPath(name), cacheKey)) ?? current.sources;
  // Made when the image was hashed after its build; made now for an image from before that.
  const chunkIndex = await chunkIndexOf(path, size, sha256);
  return { name, path, size, sha256, cacheKey, ...(compression ? { compression } : {}), versions, sources, attachments: { 'chunk-index': chunkIndex } };
}
