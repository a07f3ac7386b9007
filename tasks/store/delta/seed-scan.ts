// Reads local copies that may share chunks with the image being fetched (seeds), cuts
// them the way the image's index says it was cut, and notes in the chunk table where each
// of the image's chunks can be copied from. A seed that cannot be read is skipped: a seed
// only ever saves bytes, and every copied chunk is checked again when it is copied.
import { stat } from 'node:fs/promises';
import { readInOrder } from '../file-reads.ts';
import type { ChunkTable } from './chunk-table.ts';
import { GearChunker } from './gear-chunker.ts';

export interface Seed {
  readonly path: string;
  /** Why it is a seed, for messages ("the file being replaced", "published image"). */
  readonly role: string;
}

export interface ScannedSeed extends Seed {
  readonly size: number;
  /** Bytes of the image this seed holds that no earlier seed did. */
  readonly found: number;
}

export interface ScanOptions {
  readonly signal: AbortSignal;
  readonly onProgress?: (done: number, total: number) => void;
  readonly log?: (line: string) => void;
}

/** Scans `seeds` in order (earlier seeds win a chunk both hold); returns what each one holds, indexed as given. */
export async function scanSeeds(table: ChunkTable, seeds: readonly Seed[], options: ScanOptions): Promise<ScannedSeed[]> {
  const sizes = await Promise.all(seeds.map(async (seed) => (await stat(seed.path).catch(() => undefined))?.size ?? 0));
  const total = sizes.reduce((sum, size) => sum + size, 0);
  let before = 0;
  const scanned: ScannedSeed[] = [];
  for (const [number, seed] of seeds.entries()) {
    let found = 0;
    const chunker = new GearChunker(table.index.params);
    const offer = (offset: number, length: number, hashHigh: number, hashLow: number): void => {
      if (table.offer(number, offset, length, hashHigh, hashLow)) found += length;
    };
    try {
      await readInOrder(seed.path, {
        signal: options.signal,
        each: (bytes, offset) => {
          chunker.push(bytes, offer);
          options.onProgress?.(before + offset + bytes.length, total);
        },
      });
      chunker.end(offer);
    } catch (error) {
      if (options.signal.aborted) throw error;
      options.log?.(`seed ${seed.path} could not be read (${(error as Error).message}); not used`);
    }
    before += sizes[number]!;
    scanned.push({ ...seed, size: sizes[number]!, found });
  }
  return scanned;
}
