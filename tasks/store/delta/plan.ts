// What a seeded fetch does, decided before any byte moves: runs of chunks to copy from a
// seed (contiguous in both files, checked chunk by chunk when copied), byte ranges to
// fetch from the store (adjacent missing chunks coalesced, split where the stored pieces
// split the image), and chunks that occur twice in the image and are in no seed, fetched
// once and copied within the file afterwards. Bytes an interrupted run already wrote
// (`done`) are neither fetched nor copied again.
import { chunkOffset } from './chunk-index.ts';
import type { ChunkTable } from './chunk-table.ts';

/** Bytes [start, end) of the image. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/** Chunks [firstChunk, firstChunk + chunks) of the image, copied from `source` bytes [from, from + length). */
export interface CopyRun {
  /** A seed's number, or -1: the image's own earlier bytes (a chunk that occurs twice). */
  readonly seed: number;
  readonly from: number;
  readonly target: number;
  readonly length: number;
  readonly firstChunk: number;
  readonly chunks: number;
}

/** One request: bytes [from, to) of stored piece `piece`, which land at `target` of the image. */
export interface PieceRange {
  readonly piece: number;
  readonly from: number;
  readonly to: number;
  readonly target: number;
}

/** A copy run while the plan is made. */
type GrowingRun = { -readonly [Field in keyof CopyRun]: CopyRun[Field] };

export interface DeltaPlan {
  readonly copies: readonly CopyRun[];
  readonly selfCopies: readonly CopyRun[];
  readonly fetches: readonly PieceRange[];
  readonly fetchBytes: number;
  /** Bytes copied from each seed (by seed number), this run. */
  readonly reusedBytes: readonly number[];
  /** Bytes an earlier run left done. */
  readonly doneBytes: number;
}

export interface PlanOptions {
  /** Sizes of the stored pieces, in order (a request never crosses one's end). */
  readonly pieceSizes: readonly number[];
  /** Ranges an interrupted run already wrote, sorted and disjoint. */
  readonly done?: readonly ByteRange[];
  /** Longest request (longer missing ranges are split, so that parallel requests share the work). */
  readonly maxRequest?: number;
  /** Longest copy run (its bytes pass through one buffer). */
  readonly maxCopy?: number;
  /**
   * Missing ranges this close are fetched as one request, the bytes between them included
   * (fewer requests for a little more data; 0: only adjacent ranges are merged).
   */
  readonly mergeGap?: number;
  /** How many seeds there are (reusedBytes has an entry for each). */
  readonly seedCount: number;
}

const MAX_REQUEST = 8 * 1024 * 1024;
const MAX_COPY = 1024 * 1024;

export function planDelta(table: ChunkTable, options: PlanOptions): DeltaPlan {
  const { index } = table;
  const done = options.done ?? [];
  const maxCopy = options.maxCopy ?? MAX_COPY;
  const copies: GrowingRun[] = [];
  const selfCopies: GrowingRun[] = [];
  const missing: ByteRange[] = [];
  const reusedBytes = new Array<number>(options.seedCount).fill(0);
  let doneCursor = 0;
  /** Whether all of [start, end) is done (chunks come in order, so the cursor only moves on). */
  const isDone = (start: number, end: number): boolean => {
    while (doneCursor < done.length && done[doneCursor]!.end <= start) doneCursor++;
    const range = done[doneCursor];
    return range !== undefined && range.start <= start && range.end >= end;
  };
  // Grown in place: a run is extended once per chunk, a million times for a large image.
  const extend = (runs: GrowingRun[], seed: number, from: number, target: number, length: number, chunk: number): void => {
    const last = runs.at(-1);
    if (last && last.seed === seed && last.from + last.length === from && last.target + last.length === target && last.length + length <= maxCopy) {
      last.length += length;
      last.chunks++;
    } else {
      runs.push({ seed, from, target, length, firstChunk: chunk, chunks: 1 });
    }
  };
  for (let chunk = 0, start = 0; chunk < index.count; chunk++, start += index.lengths[chunk - 1]!) {
    const length = index.lengths[chunk]!;
    const end = start + length;
    if (isDone(start, end)) continue;
    const location = table.locate(chunk);
    if (location) {
      extend(copies, location.seed, location.offset, start, length, chunk);
      reusedBytes[location.seed]! += length;
      continue;
    }
    const first = table.firstOf(chunk);
    if (first !== chunk) {
      extend(selfCopies, -1, chunkOffset(index, first), start, length, chunk);
      continue;
    }
    const last = missing.at(-1);
    if (last && last.end === start) missing[missing.length - 1] = { start: last.start, end };
    else missing.push({ start, end });
  }
  const merged = mergeClose(missing, options.mergeGap ?? 0);
  // Copies inside a merged gap are fetched with it instead.
  const kept = merged.length === missing.length ? copies : copies.filter((run) => !covers(merged, run.target, run.target + run.length));
  if (kept !== copies) {
    reusedBytes.fill(0);
    for (const run of kept) reusedBytes[run.seed]! += run.length;
  }
  const fetches = splitIntoRequests(subtract(merged, done), options.pieceSizes, options.maxRequest ?? MAX_REQUEST);
  const fetchBytes = fetches.reduce((sum, range) => sum + range.to - range.from, 0);
  const doneBytes = done.reduce((sum, range) => sum + range.end - range.start, 0);
  return { copies: kept, selfCopies, fetches, fetchBytes, reusedBytes, doneBytes };
}

/** Sorted disjoint ranges with the gaps of at most `gap` bytes closed. */
function mergeClose(ranges: readonly ByteRange[], gap: number): ByteRange[] {
  const out: ByteRange[] = [];
  for (const range of ranges) {
    const last = out.at(-1);
    if (last && range.start - last.end <= gap) out[out.length - 1] = { start: last.start, end: range.end };
    else out.push(range);
  }
  return out;
}

/** Whether [start, end) lies within one of the sorted disjoint ranges (binary search). */
function covers(ranges: readonly ByteRange[], start: number, end: number): boolean {
  let low = 0;
  let high = ranges.length - 1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    const range = ranges[middle]!;
    if (range.end <= start) low = middle + 1;
    else if (range.start > start) high = middle - 1;
    else return range.end >= end;
  }
  return false;
}

/** `ranges` less the parts inside `holes` (both sorted and disjoint). */
export function subtract(ranges: readonly ByteRange[], holes: readonly ByteRange[]): ByteRange[] {
  const out: ByteRange[] = [];
  let hole = 0;
  for (const range of ranges) {
    let start = range.start;
    while (hole < holes.length && holes[hole]!.end <= start) hole++;
    for (let h = hole; h < holes.length && holes[h]!.start < range.end; h++) {
      if (holes[h]!.start > start) out.push({ start, end: holes[h]!.start });
      start = Math.max(start, holes[h]!.end);
    }
    if (start < range.end) out.push({ start, end: range.end });
  }
  return out;
}

/** Image ranges as requests: cut at piece boundaries and at `maxRequest` bytes. */
export function splitIntoRequests(ranges: readonly ByteRange[], pieceSizes: readonly number[], maxRequest: number): PieceRange[] {
  const pieceStarts: number[] = [];
  let total = 0;
  for (const size of pieceSizes) {
    pieceStarts.push(total);
    total += size;
  }
  const out: PieceRange[] = [];
  let piece = 0;
  for (const range of ranges) {
    if (range.end > total) throw new Error(`range ${range.start}-${range.end} runs past the image's ${total} bytes`);
    for (let at = range.start; at < range.end; ) {
      while (pieceStarts[piece]! + pieceSizes[piece]! <= at) piece++;
      const pieceStart = pieceStarts[piece]!;
      const to = Math.min(range.end, pieceStart + pieceSizes[piece]!, at + maxRequest);
      out.push({ piece, from: at - pieceStart, to: to - pieceStart, target: at });
      at = to;
    }
  }
  return out;
}

/** Adds [start, end) to sorted disjoint `ranges`, merging what touches it. */
export function addRange(ranges: ByteRange[], start: number, end: number): void {
  if (end <= start) return;
  let index = 0;
  while (index < ranges.length && ranges[index]!.end < start) index++;
  let merged = { start, end };
  let remove = 0;
  while (index + remove < ranges.length && ranges[index + remove]!.start <= end) {
    const range = ranges[index + remove]!;
    merged = { start: Math.min(merged.start, range.start), end: Math.max(merged.end, range.end) };
    remove++;
  }
  ranges.splice(index, remove, merged);
}
