// Reads local copies that may share chunks with the image being fetched (seeds), cuts
// them the way the image's index says it was cut, and notes in the chunk table where each
// of the image's chunks can be copied from. A seed that cannot be read is skipped: a seed
// only ever saves bytes, and every copied chunk is checked again when it is copied.
//
// Then the chunks no seed chunk matched are looked for right after a seed's copy of the
// chunk before them, and right before its copy of the chunk after them: where old and new
// hold the same bytes but the cut points differ (a run with no cut point is cut at the
// maximum size, counted from a cut the edit moved), the chunk is there, just not cut out.
import { closeSync, openSync, readSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { readInOrder } from '../file-reads.ts';
import type { ChunkTable } from './chunk-table.ts';
import { chunkHasher, GearChunker } from './gear-chunker.ts';

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

/**
 * A seed that holds none of the image's chunks in this many bytes is not read further: an
 * unrelated file would otherwise cost its whole read before a download that gains nothing.
 * An earlier build of an image shares chunks with it within its first KiBs (a qcow2's
 * header and the guest's first blocks), so a few MiB tell the two apart.
 */
const GIVE_UP_BYTES = 4 * 1024 * 1024;

export interface ScanOptions {
  readonly signal: AbortSignal;
  readonly onProgress?: (done: number, total: number) => void;
  readonly log?: (line: string) => void;
}

class UnrelatedSeed extends Error {}

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
          if (found === 0 && offset >= GIVE_UP_BYTES) throw new UnrelatedSeed();
          chunker.push(bytes, offer);
          options.onProgress?.(before + offset + bytes.length, total);
        },
      });
      chunker.end(offer);
    } catch (error) {
      if (options.signal.aborted) throw error;
      if (error instanceof UnrelatedSeed)
        options.log?.(`seed ${seed.path} holds none of the image in its first ${GIVE_UP_BYTES / 1024 / 1024} MiB; not read further`);
      else options.log?.(`seed ${seed.path} could not be read (${(error as Error).message}); not used`);
    }
    before += sizes[number]!;
    scanned.push({ ...seed, size: sizes[number]!, found });
  }
  return scanned;
}

/**
 * Looks for the chunks no seed holds next to their neighbours' copies (forward, then
 * backward, so runs extend chunk by chunk); returns the bytes found. Reads only those
 * chunks, synchronously: a few KiB each, thousands of them, from files just read whole (in
 * the page cache), where a trip through the thread pool would cost more than the read.
 */
export async function extendMatches(table: ChunkTable, seeds: readonly ScannedSeed[], signal: AbortSignal): Promise<number> {
  const { index } = table;
  const hash = await chunkHasher(index.params.maxSize);
  const files = new Map<number, number | undefined>();
  const buffer = Buffer.allocUnsafe(index.params.maxSize);
  let found = 0;
  const probe = (chunk: number, seed: number, offset: number): void => {
    const length = index.lengths[chunk]!;
    if (offset < 0 || offset + length > seeds[seed]!.size) return;
    if (!files.has(seed)) files.set(seed, openForReading(seeds[seed]!.path));
    const fd = files.get(seed);
    if (fd === undefined) return;
    let bytesRead: number;
    try {
      bytesRead = readSync(fd, buffer, 0, length, offset);
    } catch {
      return; // a seed that cannot be read here only holds less
    }
    if (bytesRead !== length) return;
    const [high, low] = hash(buffer.subarray(0, length));
    if (!table.matches(chunk, high, low)) return;
    table.place(chunk, seed, offset);
    found += length;
  };
  try {
    for (let chunk = 1; chunk < index.count; chunk++) {
      if (table.locate(chunk)) continue;
      const before = table.locate(chunk - 1);
      if (before) probe(chunk, before.seed, before.offset + index.lengths[chunk - 1]!);
    }
    signal.throwIfAborted();
    for (let chunk = index.count - 2; chunk >= 0; chunk--) {
      if (table.locate(chunk)) continue;
      const after = table.locate(chunk + 1);
      if (after) probe(chunk, after.seed, after.offset - index.lengths[chunk]!);
    }
    signal.throwIfAborted();
  } finally {
    for (const fd of files.values()) if (fd !== undefined) closeSync(fd);
  }
  return found;
}

/** A seed's descriptor, or undefined when it cannot be opened (it is then not used). */
export function openForReading(path: string): number | undefined {
  try {
    return openSync(path, 'r');
  } catch {
    return undefined;
  }
}
