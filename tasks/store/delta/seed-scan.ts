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
import { isFailure } from '../../../src/index.ts';
import { readInOrder } from '../file-reads.ts';
import { type ChunkIndex, segmentByteRange, segmentChunkRange, segmentCount, segmentDigester, takeSegment } from './chunk-index.ts';
import type { ChunkTable } from './chunk-table.ts';
import { ChunkHasher, GearChunker } from './gear-chunker.ts';
import { addRange, type ByteRange, subtract } from './plan.ts';

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
  /** Seed chunks the first scan may keep outside the segments it finds, in all (default MAX_LEFTOVER_CHUNKS). */
  readonly leftoverChunks?: number;
  readonly onProgress?: (done: number, total: number) => void;
  readonly log?: (line: string) => void;
}

/**
 * What the first read of the seeds found: the whole segments, and per seed the chunks
 * outside them (undefined: the seed is to be read again, as it was not read whole or its
 * chunks outside segments were too many to keep). Per segment in typed arrays, not an
 * object per segment found: a 3 GiB image has 40,000 segments, and objects that many,
 * kept until the plan is made, made V8's young generation grow (the fetch's memory bound).
 */
export interface FirstScan {
  /** Per segment of the index: 0 when no seed holds it whole, else 1 + the number of the seed it was found in. */
  readonly segmentSeed: Uint8Array;
  /** Per segment a seed holds whole: where that seed's bytes of it start. */
  readonly segmentOffset: Float64Array;
  readonly leftovers: ReadonlyArray<SeedChunks | undefined>;
  /** Each seed's size when it was read (0: it could not be). */
  readonly sizes: readonly number[];
}

/**
 * A seed's chunks in order: where each starts, its length and XXH64 (20 bytes a chunk).
 * All seeds' kept chunks share one budget of MAX_LEFTOVER_CHUNKS: a seed whose chunks do
 * not fit is read again instead, so a fetch's memory stays bounded whatever its seeds.
 */
export class SeedChunks {
  count = 0;
  offsets = new Float64Array(1024);
  lengths = new Uint32Array(1024);
  hashes = new Uint32Array(2048);

  constructor(private readonly budget: { left: number }) {}

  add(offset: number, length: number, hashHigh: number, hashLow: number): boolean {
    if (this.budget.left === 0) return false;
    if (this.count === this.lengths.length) {
      const capacity = Math.min(this.count * 2, this.count + this.budget.left);
      const offsets = new Float64Array(capacity);
      offsets.set(this.offsets);
      this.offsets = offsets;
      const lengths = new Uint32Array(capacity);
      lengths.set(this.lengths);
      this.lengths = lengths;
      const hashes = new Uint32Array(capacity * 2);
      hashes.set(this.hashes);
      this.hashes = hashes;
    }
    this.offsets[this.count] = offset;
    this.lengths[this.count] = length;
    this.hashes[2 * this.count] = hashHigh;
    this.hashes[2 * this.count + 1] = hashLow;
    this.count++;
    this.budget.left--;
    return true;
  }

  /** Gives its chunks' share of the budget back (the seed will be read again). */
  release(): void {
    this.budget.left += this.count;
    this.count = 0;
  }
}

/**
 * Chunks kept in all outside the segments found: about 150 MB of seeds' bytes, in 1.25 MiB
 * (2.5 MiB while an array grows), which the 128 MiB bound of a 3 GiB fetch has room for.
 */
const MAX_LEFTOVER_CHUNKS = 1 << 16;

/**
 * Reads each seed once, cutting it as the index says, and looks for the index's segments
 * by their size and digest (a run of a seed's chunks with the segment's byte size whose
 * whole XXH64s digest to it is the segment): a found segment becomes known, its chunks
 * the seed's. The seed's other chunks are kept for `scanSeeds`. A seed with no
 * segment in its first GIVE_UP_BYTES is not read further here (a copy of another image may
 * share chunks but no whole segment): `scanSeeds` reads it. So does one that cannot be read,
 * and says so.
 */
export async function firstScan(index: ChunkIndex, seeds: readonly Seed[], options: ScanOptions): Promise<FirstScan> {
  const chunksPer = index.segmentChunks;
  const bySize = segmentsBySize(index);
  const segmentSeed = new Uint8Array(segmentCount(index));
  const segmentOffset = new Float64Array(segmentCount(index));
  const digest = await segmentDigester();
  const leftovers: Array<SeedChunks | undefined> = [];
  const sizes = await Promise.all(seeds.map(async (seed) => (await stat(seed.path).catch(() => undefined))?.size ?? 0));
  const total = sizes.reduce((sum, size) => sum + size, 0);
  let before = 0;
  // The seed's last chunksPer chunks, in a ring; copied out in order when their size is a segment's.
  const ringOffsets = new Float64Array(chunksPer);
  const ringLengths = new Uint32Array(chunksPer);
  const ringHashes = new Uint32Array(2 * chunksPer);
  /** Whether a segment found covers the chunk in the slot. */
  const ringCovered = new Uint8Array(chunksPer);
  const windowLengths = new Uint32Array(chunksPer);
  const windowHashes = new Uint32Array(2 * chunksPer);
  const budget = { left: options.leftoverChunks ?? MAX_LEFTOVER_CHUNKS };
  for (const [number, seed] of seeds.entries()) {
    let filled = 0;
    let next = 0;
    let sum = 0;
    let foundHere = 0;
    let kept: SeedChunks | undefined = new SeedChunks(budget);
    /** A chunk leaving the ring, or left in it at the end: kept unless a segment found covers it. */
    const release = (slot: number): void => {
      if (kept && !ringCovered[slot] && !kept.add(ringOffsets[slot]!, ringLengths[slot]!, ringHashes[2 * slot]!, ringHashes[2 * slot + 1]!)) {
        kept.release();
        kept = undefined;
      }
    };
    const take = (offset: number, length: number, hashHigh: number, hashLow: number): void => {
      if (filled === chunksPer) {
        release(next);
        sum -= ringLengths[next]!;
      } else filled++;
      ringOffsets[next] = offset;
      ringLengths[next] = length;
      ringHashes[2 * next] = hashHigh;
      ringHashes[2 * next + 1] = hashLow;
      ringCovered[next] = 0;
      next = next + 1 === chunksPer ? 0 : next + 1;
      sum += length;
      if (filled < chunksPer) return;
      let candidate = lowerBound(bySize.sizes, sum);
      if (bySize.sizes[candidate] !== sum) return;
      for (let at = 0; at < chunksPer; at++) {
        const slot = (next + at) % chunksPer;
        windowLengths[at] = ringLengths[slot]!;
        windowHashes[2 * at] = ringHashes[2 * slot]!;
        windowHashes[2 * at + 1] = ringHashes[2 * slot + 1]!;
      }
      const [high, low] = digest(windowHashes);
      for (; bySize.sizes[candidate] === sum; candidate++) {
        const segment = bySize.segments[candidate]!;
        if (segmentSeed[segment] || index.segmentHigh[segment] !== high || index.segmentLow[segment] !== low) continue;
        segmentSeed[segment] = number + 1;
        segmentOffset[segment] = offset + length - sum;
        if (!index.known[segment]) takeSegment(index, segment, windowLengths, windowHashes);
        ringCovered.fill(1);
        foundHere++;
      }
    };
    const chunker = new GearChunker(index.params);
    try {
      await readInOrder(seed.path, {
        signal: options.signal,
        each: (bytes, offset) => {
          if (foundHere === 0 && offset >= GIVE_UP_BYTES) throw new StopScan();
          chunker.push(bytes, take);
          options.onProgress?.(before + offset + bytes.length, total);
        },
      });
      chunker.end(take);
      for (let at = 0; at < filled; at++) release((next - filled + at + chunksPer) % chunksPer);
    } catch (error) {
      if (options.signal.aborted) throw error;
      // Not read whole: scanSeeds reads it again (and says why when it cannot).
      if (!(error instanceof StopScan || isFailure(error) || (error instanceof Error && 'code' in error))) throw error;
      kept?.release();
      kept = undefined;
    }
    leftovers.push(kept);
    before += sizes[number]!;
  }
  return { segmentSeed, segmentOffset, leftovers, sizes };
}

/**
 * The index's segments sorted by byte size, each size beside its segment. A last segment
 * with fewer chunks is left out (a run of a seed's chunks is a segment's only when as
 * long). Those known already (their records came with the index's head) are in: where a
 * seed holds them is as useful, and a seed's first MiBs are often only those.
 */
function segmentsBySize(index: ChunkIndex): { segments: Uint32Array; sizes: Float64Array } {
  const sizeOf = new Float64Array(segmentCount(index));
  const whole: number[] = [];
  for (let segment = 0; segment < segmentCount(index); segment++) {
    const { first, end } = segmentChunkRange(index, segment);
    if (end - first < index.segmentChunks) continue;
    const { start, end: segmentEnd } = segmentByteRange(index, segment);
    sizeOf[segment] = segmentEnd - start;
    whole.push(segment);
  }
  const segments = Uint32Array.from(whole).sort((a, b) => sizeOf[a]! - sizeOf[b]!);
  return { segments, sizes: Float64Array.from(segments, (segment) => sizeOf[segment]!) };
}

/** The first place in ascending `values` whose value is at least `value` (their length when none is). */
function lowerBound(values: Float64Array, value: number): number {
  let low = 0;
  let high = values.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (values[middle]! < value) low = middle + 1;
    else high = middle;
  }
  return low;
}

class StopScan extends Error {}

/**
 * Notes in the table what each seed holds (earlier seeds win a chunk both hold); returns
 * that, per seed, indexed as given. The segments the first scan found are placed first,
 * then the seed's other chunks it kept are offered. A seed it did not keep chunks of is
 * read again, and only the bytes between its segments are chunked: their ends are cut
 * points, so the chunks between come out as a scan of the whole seed would cut them.
 */
export async function scanSeeds(table: ChunkTable, seeds: readonly Seed[], first: FirstScan, options: ScanOptions): Promise<ScannedSeed[]> {
  const { index } = table;
  const { sizes } = first;
  const total = sizes.reduce((sum, size) => sum + size, 0);
  let before = 0;
  const scanned: ScannedSeed[] = [];
  for (const [number, seed] of seeds.entries()) {
    let found = 0;
    const kept = first.leftovers[number];
    // The bytes its segments cover: only a seed read again needs them, to chunk between them.
    const covered: ByteRange[] = [];
    for (let segment = 0; segment < first.segmentSeed.length; segment++) {
      if (first.segmentSeed[segment] !== number + 1) continue;
      const { first: firstChunk, end } = segmentChunkRange(index, segment);
      let offset = first.segmentOffset[segment]!;
      for (let chunk = firstChunk; chunk < end; chunk++) {
        if (!table.locate(chunk)) {
          table.place(chunk, number, offset);
          found += index.lengths[chunk]!;
        }
        offset += index.lengths[chunk]!;
      }
      if (!kept) addRange(covered, first.segmentOffset[segment]!, offset);
    }
    const offer = (offset: number, length: number, hashHigh: number, hashLow: number): void => {
      if (table.offer(number, offset, length, hashHigh, hashLow)) found += length;
    };
    if (kept) {
      for (let chunk = 0; chunk < kept.count; chunk++) offer(kept.offsets[chunk]!, kept.lengths[chunk]!, kept.hashes[2 * chunk]!, kept.hashes[2 * chunk + 1]!);
    } else {
      found += await scanGaps(table, seed, number, covered, sizes[number]!, found, (done) => options.onProgress?.(before + done, total), options);
    }
    before += sizes[number]!;
    scanned.push({ ...seed, size: sizes[number]!, found });
  }
  return scanned;
}

/** Reads a seed again and offers its chunks outside `covered`; returns the bytes found. */
async function scanGaps(
  table: ChunkTable,
  seed: Seed,
  number: number,
  covered: readonly ByteRange[],
  size: number,
  foundBefore: number,
  onProgress: (done: number) => void,
  options: ScanOptions,
): Promise<number> {
  let found = 0;
  const offer = (offset: number, length: number, hashHigh: number, hashLow: number): void => {
    if (table.offer(number, offset, length, hashHigh, hashLow)) found += length;
  };
  const gaps = subtract([{ start: 0, end: size }], covered);
  const coveredBytes = size - gaps.reduce((sum, gap) => sum + gap.end - gap.start, 0);
  // One read of the whole seed (one buffer), one chunker restarted at each gap.
  const chunker = new GearChunker(table.index.params);
  let gap = 0;
  let inGap = false;
  let read = 0;
  try {
    await readInOrder(seed.path, {
      signal: options.signal,
      each: (bytes, offset) => {
        if (found + foundBefore === 0 && read >= GIVE_UP_BYTES) throw new StopScan();
        const end = offset + bytes.length;
        for (let at = offset; gap < gaps.length && gaps[gap]!.start < end; ) {
          const { start: gapStart, end: gapEnd } = gaps[gap]!;
          const from = Math.max(at, gapStart);
          const to = Math.min(end, gapEnd);
          if (!inGap) {
            chunker.restartAt(gapStart);
            inGap = true;
          }
          chunker.push(bytes.subarray(from - offset, to - offset), offer);
          read += to - from;
          at = to;
          if (to < gapEnd) break;
          chunker.end(offer);
          inGap = false;
          gap++;
        }
        onProgress(Math.min(size, coveredBytes + read));
      },
    });
    // A seed that grew or shrank since its size was taken: its last chunk ends where it does.
    if (inGap) chunker.end(offer);
  } catch (error) {
    if (options.signal.aborted) throw error;
    if (error instanceof StopScan) options.log?.(`seed ${seed.path} holds none of the image in its first ${GIVE_UP_BYTES / 1024 / 1024} MiB; not read further`);
    else options.log?.(`seed ${seed.path} could not be read (${(error as Error).message}); not used`);
  }
  return found;
}

/**
 * Looks for the chunks no seed holds next to their neighbours' copies (forward, then
 * backward, so runs extend chunk by chunk); returns the bytes found. Reads only those
 * chunks, synchronously: a few KiB each, thousands of them, from files just read whole (in
 * the page cache), where a trip through the thread pool would cost more than the read.
 */
export async function extendMatches(table: ChunkTable, seeds: readonly ScannedSeed[], signal: AbortSignal): Promise<number> {
  const { index } = table;
  const hasher = new ChunkHasher(index.params.maxSize);
  const files = new Map<number, number | undefined>();
  let found = 0;
  const probe = (chunk: number, seed: number, offset: number): void => {
    const length = index.lengths[chunk]!;
    if (offset < 0 || offset + length > seeds[seed]!.size) return;
    if (!files.has(seed)) files.set(seed, openForReading(seeds[seed]!.path));
    const fd = files.get(seed);
    if (fd === undefined) return;
    let bytesRead: number;
    try {
      bytesRead = readSync(fd, hasher.bytes, 0, length, offset);
    } catch {
      return; // a seed that cannot be read here only holds less
    }
    if (bytesRead !== length) return;
    hasher.hash(0, length);
    if (!table.matches(chunk, hasher.high, hasher.low)) return;
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
