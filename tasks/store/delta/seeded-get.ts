// The seeded path of getImage: when the store keeps a chunk index with the image and a
// local copy holds some of it, assemble the temp file from the seeds and ranged reads;
// otherwise say so and let the whole download run. An index that cannot be read or that
// describes other bytes is ignored (logged), never trusted.
import { stat } from 'node:fs/promises';
import { isFailure, toFailure } from '../../../src/index.ts';
import type { OpenedImage } from '../store.ts';
import { type ChunkIndex, expectedHeadBytes, type IndexReader, readChunkIndexHead } from './chunk-index.ts';
import { type DeltaFetchOptions, type DeltaOutcome, fetchWithSeeds } from './delta-fetch.ts';
import type { Seed } from './seed-scan.ts';

export type { DeltaOutcome } from './delta-fetch.ts';
export type { Seed } from './seed-scan.ts';

/** Seeds kept: each is read whole, so a long list would cost more than it saves. */
const MAX_SEEDS = 4;

/** A seeded fetch's options: those of the fetch itself, the seeds not yet checked for use. */
export type SeededFetchOptions = Omit<DeltaFetchOptions, 'onStatus'>;

/**
 * Fetches `image` into `tempPath` from seeds and ranges, verified against its SHA-256;
 * undefined when there is no index, no seed, or no seed holds any of it (nothing was
 * written then). Throws what the transfer throws (the state is kept for the next run).
 */
export async function trySeededFetch(image: Extract<OpenedImage, { status: 'ready' }>, options: SeededFetchOptions): Promise<DeltaOutcome | undefined> {
  const seeds = await usableSeeds(options.seeds, options.tempPath);
  if (seeds.length === 0) return undefined;
  const readIndex: IndexReader = (from, to) => image.readAttachmentRange('chunk-index', from, to, options.signal);
  let index: ChunkIndex | undefined;
  try {
    // Only the head: the segments' records are read once the seeds show which are needed.
    index = await readChunkIndexHead(readIndex, `the chunk index of ${image.name}`, expectedHeadBytes(image.size));
  } catch (error) {
    if (options.signal.aborted || !isFailure(error, 'integrity', 'not-found')) throw error;
    options.log(`${toFailure(error).message}; downloading ${image.name} whole`);
    return undefined;
  }
  if (!index) return undefined;
  const size = image.pieces.reduce((sum, piece) => sum + piece.size, 0);
  if (index.sha256 !== image.sha256 || index.size !== size) {
    options.log(`${image.name}: its chunk index describes other bytes (sha256 ${index.sha256.slice(0, 12)}…, ${index.size} bytes); downloading it whole`);
    return undefined;
  }
  return fetchWithSeeds({ name: image.name, sha256: image.sha256, size, pieces: image.pieces }, index, { ...options, seeds, readIndex });
}

/** Regular, non-empty files, each once (by inode), not the temp file itself, at most MAX_SEEDS. */
async function usableSeeds(seeds: readonly Seed[], tempPath: string): Promise<Seed[]> {
  const seen = new Set<string>();
  const temp = await stat(tempPath).catch(() => undefined);
  if (temp) seen.add(`${temp.dev}:${temp.ino}`);
  const usable: Seed[] = [];
  for (const seed of seeds) {
    const info = await stat(seed.path).catch(() => undefined);
    if (!info?.isFile() || info.size === 0) continue;
    const key = `${info.dev}:${info.ino}`;
    if (seen.has(key)) continue;
    seen.add(key);
    usable.push(seed);
    if (usable.length === MAX_SEEDS) break;
  }
  return usable;
}
