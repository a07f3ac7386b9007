// The chunk index of a local image, kept beside it as `{image}.chunks`: made from the
// bytes of the read that hashes the image after its build (or fetch), so the upload
// attaches it without reading the image again. An image made before this existed gets
// its index from one read when it is uploaded.
import { readFile } from 'node:fs/promises';
import { type OutputObserver, writeFileAtomic } from '../../../src/index.ts';
import { readInOrder } from '../file-reads.ts';
import { ChunkIndexBuilder, readChunkIndexHeader } from './chunk-index.ts';

export function chunkIndexPath(imagePath: string): string {
  return `${imagePath}.chunks`;
}

/** Builds the image's index from the bytes the hasher reads, and writes it beside the image. */
export function chunkIndexObserver(imagePath: string): OutputObserver {
  const builder = new ChunkIndexBuilder();
  return {
    update: (bytes) => builder.update(bytes),
    inPlace: builder.inPlace,
    async finish(digest) {
      if (!digest.sha256) return;
      await writeFileAtomic(chunkIndexPath(imagePath), await builder.finish(digest.sha256));
    },
  };
}

/**
 * The image's index: the file beside it when it was made for these bytes (size and
 * SHA-256), else made now from one read of the image (and kept beside it).
 */
export async function chunkIndexOf(imagePath: string, size: number, sha256: string, signal?: AbortSignal): Promise<Uint8Array> {
  const kept = await readFile(chunkIndexPath(imagePath)).catch(() => undefined);
  const header = kept && readChunkIndexHeader(kept);
  if (kept && header?.sha256 === sha256 && header.size === size) return kept;
  const builder = new ChunkIndexBuilder();
  await readInOrder(imagePath, { ...(signal ? { signal } : {}), each: (bytes) => builder.update(bytes) });
  const index = await builder.finish(sha256);
  await writeFileAtomic(chunkIndexPath(imagePath), index);
  return index;
}
