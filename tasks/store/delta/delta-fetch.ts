// A seeded fetch: the image assembled in its temp file from the chunks local seeds hold
// (copied, each checked against the index as it is copied) and the byte ranges none holds
// (fetched with ranged reads of the stored pieces, several at once). The file is hashed
// from its first byte on as the bytes before it are in place (prefix-hash.ts), so the
// check at the end waits only for the last ones. When the file does not hash to the record's
// SHA-256, it is read again for the index's segment digests; a segment that does not match
// (a seed changed after it was read, a chance hash match, an index that lies) is fetched
// again from the store, and the SHA-256 the record names decides, as for any download. A
// run that is killed leaves the temp file and a state file naming the ranges it finished
// (flushed to the disk before they are named); the next run skips them.
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { closeSync, readSync, writeSync } from 'node:fs';
import { type FileHandle, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { Failure, isFailure, siblingTempPath, toFailure } from '../../../src/index.ts';
import type { ImagePiece } from '../store.ts';
import { type ChunkIndex, chunkMatcher, type IndexReader, loadSegmentRecords, recordSpan, segmentCount, segmentDigester } from './chunk-index.ts';
import { ChunkTable } from './chunk-table.ts';
import { ChunkHasher } from './gear-chunker.ts';
import { PrefixHash } from './prefix-hash.ts';
import { addRange, type ByteRange, type CopyRun, type DeltaPlan, type PieceRange, planDelta, splitIntoRequests } from './plan.ts';
import { extendMatches, firstScan, openForReading, type ScannedSeed, type Seed, scanSeeds } from './seed-scan.ts';

export interface DeltaImage {
  readonly name: string;
  readonly sha256: string;
  readonly size: number;
  readonly pieces: readonly ImagePiece[];
}

export interface DeltaFetchOptions {
  /** The temp file to assemble into (the caller renames it once this returns). */
  readonly tempPath: string;
  readonly seeds: readonly Seed[];
  readonly signal: AbortSignal;
  /** Whole-piece transfers the caller allows at once; ranged reads, small and bound by latency, run RANGES_PER_TRANSFER times as many. */
  readonly concurrency: number;
  readonly onProgress?: (done: number, total: number) => void;
  readonly onStatus?: (text: string) => void;
  readonly log: (line: string) => void;
  /** What a ranged read is taken to cost, in bytes of a whole download (default REQUEST_COST). */
  readonly requestCost?: number;
  /** Reads bytes of the encoded index: the records of the segments no seed holds whole (needed when some are not known). */
  readonly readIndex?: IndexReader;
}

/** What a seeded fetch moved. */
export interface DeltaOutcome {
  /** Bytes fetched from the store this run (the index not included). */
  readonly fetched: number;
  /** Bytes copied from each seed that gave any, largest first. */
  readonly reused: ReadonlyArray<{ readonly path: string; readonly role: string; readonly bytes: number }>;
  /** Bytes an interrupted earlier run had already written. */
  readonly resumed: number;
  /** Segments fetched again because they did not verify. */
  readonly refetchedSegments: number;
}

interface DeltaState {
  readonly sha256: string;
  readonly size: number;
  readonly done: ByteRange[];
}

/** How often the finished ranges are flushed to the disk and saved while bytes arrive. */
const SAVE_MS = 1000;
const VERIFY_READ_BYTES = 1024 * 1024;
/**
 * Ranged reads in flight per transfer slot: most are a few KiB, so a request's round trip,
 * not the bytes, sets their pace (chosen with bench/delta.ts; docs/benchmarks/notebook.md).
 */
const RANGES_PER_TRANSFER = 8;
/** Copying from seeds goes on for this long before the event loop takes a turn (the ranged reads' answers wait meanwhile). */
const COPY_TURN_MS = 5;
/** Longest request when fetching chunks again (a changed seed, a segment that did not verify). */
const MAX_REPAIR_REQUEST = 8 * 1024 * 1024;
/**
 * What a ranged read costs beside its bytes, in bytes of a whole download: a round trip or
 * two (an API request and its redirect) and, on GitHub, a TLS handshake each. Set from
 * bench/delta.ts's runs (docs/delta-fetches.md).
 */
const REQUEST_COST = 64 * 1024;
/** A seeded fetch whose ranges (bytes and requests) would cost this share of the whole download or more is not worth it. */
const WHOLE_SHARE = 0.9;

/** The state file beside a temp file. */
export function deltaStatePath(tempPath: string): string {
  return `${tempPath}.delta.json`;
}

async function readState(path: string, image: DeltaImage): Promise<DeltaState | undefined> {
  try {
    const state = JSON.parse(await readFile(path, 'utf8')) as DeltaState;
    if (state.sha256 !== image.sha256 || state.size !== image.size || !Array.isArray(state.done)) return undefined;
    let last = -1;
    for (const range of state.done) {
      if (!Number.isSafeInteger(range.start) || !Number.isSafeInteger(range.end) || range.start <= last || range.end <= range.start || range.end > image.size)
        return undefined;
      last = range.end;
    }
    return state;
  } catch {
    return undefined;
  }
}

/**
 * Scans the seeds against the index and assembles the image; undefined when the seeds hold
 * none of it, or too little to be worth the ranged reads (the caller then downloads it
 * whole, as it would without seeds).
 */
export async function fetchWithSeeds(image: DeltaImage, index: ChunkIndex, options: DeltaFetchOptions): Promise<DeltaOutcome | undefined> {
  const { log } = options;
  const statePath = deltaStatePath(options.tempPath);
  const previous = await readState(statePath, image);
  const resumable = previous !== undefined && (await stat(options.tempPath).catch(() => undefined))?.size === image.size;
  const done: ByteRange[] = resumable ? previous.done.map((range) => ({ ...range })) : [];

  const planned = await planFromSeeds(image, index, done, options);
  if (!planned) return undefined;
  const { seeds, plan } = planned;
  const reusable = plan.reusedBytes.reduce((sum, bytes) => sum + bytes, 0);
  if (resumable) log(`${image.name}: resuming a seeded fetch, ${plan.doneBytes} of ${image.size} bytes already in place`);

  // A state file of an earlier run that cannot resume would name ranges of the file this run truncates.
  if (!resumable) await rm(statePath, { force: true });
  const handle = await open(options.tempPath, resumable ? 'r+' : 'w+');
  const assembly = new Assembly(handle, image, statePath, done, plan.doneBytes, seeds.length, options.onProgress);
  let refetchedSegments = 0;
  try {
    if (!resumable) await handle.truncate(image.size);
    options.onStatus?.(`fetching ${plan.fetchBytes} bytes, copying ${reusable} from local copies`);
    await assemble(assembly, index, seeds, plan, options);
    options.onStatus?.('verifying');
    // The flush runs while the last bytes are hashed; a repair writes again, and flushes again.
    const flushed = handle.sync();
    flushed.catch(() => {}); // awaited below, unless the verification fails first
    refetchedSegments = await verifyOrRepair(assembly, index, options);
    await flushed;
    if (refetchedSegments > 0) await handle.sync();
  } catch (error) {
    if (!assembly.discarded) await assembly.save().catch(() => {});
    throw error;
  } finally {
    await assembly.close();
  }
  await rm(statePath, { force: true });
  return {
    fetched: assembly.fetched,
    reused: seeds
      .map((seed: ScannedSeed, number) => ({ path: seed.path, role: seed.role, bytes: assembly.reused[number]! }))
      .filter((seed) => seed.bytes > 0)
      .sort((a, b) => b.bytes - a.bytes),
    resumed: resumable ? previous.done.reduce((sum, range) => sum + range.end - range.start, 0) : 0,
    refetchedSegments,
  };
}

/**
 * The plan from the seeds: the index segments they hold found, the other segments' records
 * read, the seeds' chunks offered to a chunk table, then looked for next to their
 * neighbours' copies. Undefined when the seeds hold too little to be worth ranged reads, or
 * a record cannot be used. What only planning needs (the table, the seeds' chunks) is
 * garbage once this returns: 17 MiB for a 3 GiB image, room the assembly then has.
 */
async function planFromSeeds(
  image: DeltaImage,
  index: ChunkIndex,
  done: readonly ByteRange[],
  options: DeltaFetchOptions,
): Promise<{ seeds: ScannedSeed[]; plan: DeltaPlan } | undefined> {
  const { signal, log } = options;
  const scanOptions = { signal, log, ...(options.onProgress ? { onProgress: options.onProgress } : {}) };
  options.onStatus?.('looking for the index segments in local copies');
  const first = await firstScan(index, options.seeds, scanOptions);
  try {
    await readUnknownRecords(index, options, `the chunk index of ${image.name}`);
  } catch (error) {
    if (signal.aborted || !isFailure(error, 'integrity')) throw error;
    log(`${toFailure(error).message}; downloading ${image.name} whole`);
    return undefined;
  }
  const table = new ChunkTable(index);
  options.onStatus?.('reading local copies for chunks');
  const seeds = await scanSeeds(table, options.seeds, first, scanOptions);
  // Nothing found, nothing to look next to: the whole download starts without a walk over every chunk.
  if (!seeds.some((seed) => seed.found > 0) && done.length === 0) return undefined;
  await extendMatches(table, seeds, signal);
  const plan = planDelta(table, { pieceSizes: image.pieces.map((piece) => piece.size), seedCount: seeds.length, done });
  const reusable = plan.reusedBytes.reduce((sum, bytes) => sum + bytes, 0);
  if (reusable === 0 && plan.doneBytes === 0) return undefined;
  const ranged = plan.fetchBytes + plan.fetches.length * (options.requestCost ?? REQUEST_COST);
  if (ranged >= image.size * WHOLE_SHARE) {
    log(
      `${image.name}: local copies hold ${reusable} of its ${image.size} bytes; ${plan.fetches.length} ranged reads would cost about as much as the whole download, so downloading it whole`,
    );
    return undefined;
  }
  return { seeds, plan };
}

/**
 * The temp file being assembled: the ranges in place (flushed and saved to the state file
 * at most once a SAVE_MS, in the background, so a killed run resumes), the bytes fetched
 * and copied, the progress reported, and the SHA-256 of the bytes in place from the first
 * on, computed as they land.
 */
class Assembly {
  fetched = 0;
  readonly reused: number[];
  /** The file was removed: nothing of it is saved. */
  discarded = false;
  private progressed: number;
  private savedAt = Date.now();
  /** The background flush and save under way. */
  private saving: Promise<void> | undefined;
  private failure: { error: unknown } | undefined;
  private readonly hash: PrefixHash;

  constructor(
    readonly handle: FileHandle,
    readonly image: DeltaImage,
    private readonly statePath: string,
    private readonly done: ByteRange[],
    doneBytes: number,
    seedCount: number,
    private readonly onProgress?: (done: number, total: number) => void,
  ) {
    this.reused = new Array<number>(seedCount).fill(0);
    this.progressed = doneBytes;
    this.hash = new PrefixHash(handle.fd, image.size);
    this.hashLanded();
  }

  /** Bytes [start, end) are written; `counted` of them are new to the progress report. */
  landed(start: number, end: number, counted = end - start): void {
    addRange(this.done, start, end);
    this.progressed += counted;
    this.onProgress?.(this.progressed, this.image.size);
    this.hashLanded();
    if (!this.saving && Date.now() - this.savedAt >= SAVE_MS) {
      this.saving = this.save()
        .catch((error: unknown) => {
          this.failure ??= { error };
        })
        .finally(() => (this.saving = undefined));
    }
  }

  /**
   * Flushes the file, then names the ranges that were in place before the flush in the
   * state file: a resume never trusts bytes a crash lost. The state file needs no flush of
   * its own: lost, it only makes the next run start over.
   */
  async save(): Promise<void> {
    await this.saving;
    this.savedAt = Date.now();
    const state: DeltaState = { sha256: this.image.sha256, size: this.image.size, done: this.done.map((range) => ({ ...range })) };
    await this.handle.datasync();
    const temp = siblingTempPath(this.statePath);
    try {
      await writeFile(temp, JSON.stringify(state), { flag: 'wx' });
      await rename(temp, this.statePath);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
  }

  /** Fetches `ranges` into the file (`counted`: whether their bytes are new to the progress report). */
  async fetch(ranges: readonly PieceRange[], options: DeltaFetchOptions, counted = true): Promise<void> {
    this.fetched += await fetchInto(this.handle, this.image.pieces, ranges, options.concurrency * RANGES_PER_TRANSFER, options.signal, (range) =>
      this.landed(range.start, range.end, counted ? range.end - range.start : 0),
    );
    this.throwIfFailed();
  }

  /** The SHA-256 of the whole file: the running hash's, when it read every byte in place, or the file read again. */
  async sha256(signal: AbortSignal): Promise<string> {
    this.throwIfFailed();
    return (await this.hash.digest()) ?? sha256Of(this.handle, this.image.size, signal);
  }

  /** Waits for the background work on the file, then closes it. */
  async close(): Promise<void> {
    await this.saving;
    await this.hash.stop();
    await this.handle.close().catch(() => {});
  }

  /** Tells the hash how far the bytes are in place from the first on. */
  private hashLanded(): void {
    const first = this.done[0];
    if (first?.start === 0) this.hash.advance(first.end);
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error;
  }
}

/** The plan carried out: ranges fetched while runs are copied from the seeds, then chunks that occur twice copied within the file. */
async function assemble(assembly: Assembly, index: ChunkIndex, seeds: readonly ScannedSeed[], plan: DeltaPlan, options: DeltaFetchOptions): Promise<void> {
  const { image } = assembly;
  // Copies are local and fetches wait on the network: both at once.
  const [, stale] = await Promise.all([
    assembly.fetch(plan.fetches, options),
    copyRuns(assembly.handle, index, seeds, plan.copies, options.signal, (run, bytes) => {
      assembly.landed(run.target, run.target + run.length);
      assembly.reused[run.seed]! += bytes;
    }),
  ]);
  // Chunks a seed no longer held when copied: fetched now, with the other ranges' requests merged.
  if (stale.length > 0) {
    options.log(`${image.name}: ${stale.length} chunk(s) changed in a seed while it was read; fetched instead`);
    await assembly.fetch(splitIntoRequests(stale, pieceSizesOf(image), MAX_REPAIR_REQUEST), options);
  }
  await copyWithin(assembly.handle, plan.selfCopies, (run) => assembly.landed(run.target, run.target + run.length));
}

/**
 * The SHA-256 the record names decides. When the file does not hash to it, the segments
 * that do not match the index (a seed that changed after it was read, a chance hash
 * match, an index that lies) are fetched again from the store, once; if it still does not
 * hash to it, nothing of the file is kept. Returns the segments fetched again.
 */
async function verifyOrRepair(assembly: Assembly, index: ChunkIndex, options: DeltaFetchOptions): Promise<number> {
  const { handle, image } = assembly;
  let sha256 = await assembly.sha256(options.signal);
  let refetched = 0;
  if (sha256 !== image.sha256) {
    const badSegments = await segmentsNotMatching(handle, index, options.signal);
    if (badSegments.length > 0) {
      refetched = badSegments.length;
      options.log(`${image.name}: ${refetched} segment(s) did not match the chunk index; fetched again from the store`);
      const ranges: ByteRange[] = [];
      for (const segment of badSegments) addRange(ranges, segment.start, segment.end);
      // Those bytes were counted in the progress once already.
      await assembly.fetch(splitIntoRequests(ranges, pieceSizesOf(image), MAX_REPAIR_REQUEST), options, false);
      sha256 = await sha256Of(handle, image.size, options.signal);
    }
  }
  if (sha256 !== image.sha256) {
    // Nothing of this file can be trusted: the next run starts over.
    assembly.discarded = true;
    await assembly.close();
    await Promise.all([rm(options.tempPath, { force: true }), rm(deltaStatePath(options.tempPath), { force: true })]);
    throw new Failure('integrity', `the seeded fetch of ${image.name} hashes to ${sha256}, not ${image.sha256}`);
  }
  return refetched;
}

function pieceSizesOf(image: DeltaImage): number[] {
  return image.pieces.map((piece) => piece.size);
}

/** Longest read of segment records: decoded as each arrives, so a large image's records are never all held at once. */
const RECORD_READ_BYTES = 256 * 1024;

/**
 * Known segments' records read again rather than split a read around them, up to this
 * many bytes: a request costs more than that (a round trip, and on GitHub a redirect).
 */
const RECORD_MERGE_BYTES = 1024;

/** Reads the records of the segments the seeds did not hold whole (near ones in one read), several reads at once. */
async function readUnknownRecords(index: ChunkIndex, options: DeltaFetchOptions, source: string): Promise<void> {
  const spans: Array<{ first: number; end: number }> = [];
  const perSegment = recordSpan(index, 0, 1).to - recordSpan(index, 0, 1).from;
  const segmentsPerRead = Math.max(1, Math.floor(RECORD_READ_BYTES / perSegment));
  const mergeSegments = Math.floor(RECORD_MERGE_BYTES / perSegment);
  for (let segment = 0; segment < segmentCount(index); segment++) {
    if (index.known[segment]) continue;
    const last = spans.at(-1);
    if (last && segment - last.end <= mergeSegments && segment + 1 - last.first <= segmentsPerRead) last.end = segment + 1;
    else spans.push({ first: segment, end: segment + 1 });
  }
  if (spans.length === 0) return;
  const read = options.readIndex;
  if (!read) throw new Error(`${source}: ${spans.length} runs of segments are not known and there is no reader for them`);
  let next = 0;
  const worker = async (): Promise<void> => {
    try {
      while (next < spans.length) {
        options.signal.throwIfAborted();
        const { first, end } = spans[next++]!;
        const { from, to } = recordSpan(index, first, end);
        const bytes = await read(from, to);
        if (bytes?.length !== to - from)
          throw new Failure('integrity', `${source} is not a usable chunk index (it ends inside the records of segment ${first})`);
        loadSegmentRecords(index, first, bytes, source);
      }
    } catch (error) {
      // The others start no further read: the index is not used.
      next = spans.length;
      throw error;
    }
  };
  const workers = Math.max(1, Math.min(options.concurrency * RANGES_PER_TRANSFER, spans.length));
  // Each read in flight listens for the abort.
  setMaxListeners(workers + 16, options.signal);
  await Promise.all(Array.from({ length: workers }, worker));
}

/** Fetches `ranges` into the file, `concurrency` at a time; calls `onRange` as each lands. Returns the bytes fetched. */
async function fetchInto(
  handle: FileHandle,
  pieces: readonly ImagePiece[],
  ranges: readonly PieceRange[],
  concurrency: number,
  signal: AbortSignal,
  onRange: (range: ByteRange) => void,
): Promise<number> {
  let next = 0;
  let bytes = 0;
  const stop = new AbortController();
  const rangeSignal = AbortSignal.any([signal, stop.signal]);
  // Each request in flight listens for the abort.
  setMaxListeners(concurrency + 16, rangeSignal);
  const worker = async (): Promise<void> => {
    while (next < ranges.length && !stop.signal.aborted) {
      const range = ranges[next++]!;
      const piece = pieces[range.piece]!;
      let expected = range.from;
      await piece.read({
        from: range.from,
        to: range.to,
        signal: rangeSignal,
        onRestart: () => {
          throw new Failure('network', `${piece.label} could not be read from byte ${range.from}`);
        },
        sink: async (chunk, offset) => {
          if (offset !== expected || offset + chunk.length > range.to)
            throw new Failure('integrity', `${piece.label} sent bytes outside ${range.from}-${range.to}`);
          expected += chunk.length;
          const { bytesWritten } = await handle.write(chunk, 0, chunk.length, range.target + offset - range.from);
          if (bytesWritten !== chunk.length) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
          bytes += chunk.length;
        },
      });
      if (expected !== range.to) throw new Failure('network', `${piece.label} ended at byte ${expected} of the range ${range.from}-${range.to}`);
      onRange({ start: range.target, end: range.target + range.to - range.from });
    }
  };
  let first: { error: unknown } | undefined;
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(concurrency, ranges.length)) }, () =>
      worker().catch((error: unknown) => {
        first ??= { error };
        stop.abort();
      }),
    ),
  );
  if (first) throw first.error;
  return bytes;
}

/**
 * Copies runs from the seeds, checking each chunk against the index as it goes; returns the
 * ranges of chunks that no longer match (their seed changed since it was scanned). Reads
 * and writes synchronously, and lets the event loop take a turn every COPY_TURN_MS: the
 * seeds were just read whole (in the page cache), and the ranged reads under way share the
 * thread pool, where a thousand small trips made the copies the last thing to finish (as
 * did a turn after every run, a turn beside a thousand ranged reads taking longer than a
 * run's copy).
 */
async function copyRuns(
  handle: FileHandle,
  index: ChunkIndex,
  seeds: readonly ScannedSeed[],
  runs: readonly CopyRun[],
  signal: AbortSignal,
  onCopied: (run: CopyRun, bytes: number) => void,
): Promise<ByteRange[]> {
  const stale: ByteRange[] = [];
  const isChunk = chunkMatcher(index);
  const files = new Map<number, number | undefined>();
  // One buffer for every run, allocated once (a buffer grown run by run leaves the freed ones in the heap's arenas), and hashed where it lies.
  const hasher = new ChunkHasher(longest(runs));
  const buffer = hasher.bytes;
  const intact = (chunk: number, at: number, length: number): boolean => {
    hasher.hash(at, length);
    return isChunk(chunk, hasher.high, hasher.low);
  };
  const turns = new Turns();
  try {
    for (const run of runs) {
      if (turns.due()) await turns.take();
      signal.throwIfAborted();
      if (!files.has(run.seed)) files.set(run.seed, openForReading(seeds[run.seed]!.path));
      const bytesRead = readOrNothing(files.get(run.seed), buffer, run.length, run.from);
      // Chunk by chunk: what still matches is written, what does not is fetched instead.
      let at = 0;
      let good = 0;
      let goodStart = 0;
      const flush = (): void => {
        if (good === 0) return;
        const written = writeSync(handle.fd, buffer, goodStart, good, run.target + goodStart);
        // A positional write to a regular file is whole unless it fails part way: the disk is full.
        if (written !== good) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        onCopied({ ...run, target: run.target + goodStart, from: run.from + goodStart, length: good }, good);
        good = 0;
      };
      for (let chunk = run.firstChunk; chunk < run.firstChunk + run.chunks; chunk++) {
        const length = index.lengths[chunk]!;
        if (at + length <= bytesRead && intact(chunk, at, length)) {
          if (good === 0) goodStart = at;
          good += length;
        } else {
          flush();
          addRange(stale, run.target + at, run.target + at + length);
        }
        at += length;
      }
      flush();
    }
  } finally {
    for (const fd of files.values()) if (fd !== undefined) closeSync(fd);
  }
  return stale;
}

/** Bytes read into `buffer` from the seed open as `fd`; none when it is not open or cannot be read (a seed only ever saves bytes). */
function readOrNothing(fd: number | undefined, buffer: Buffer, length: number, position: number): number {
  if (fd === undefined) return 0;
  try {
    return readSync(fd, buffer, 0, length, position);
  } catch {
    return 0;
  }
}

/**
 * Chunks that occur twice in the image: copied from their first occurrence, which is in
 * place by now. Synchronously, as copyRuns copies: two promises a run were most of what the
 * fetch allocated here, and a large image has tens of thousands of these runs.
 */
async function copyWithin(handle: FileHandle, runs: readonly CopyRun[], onCopied: (run: CopyRun) => void): Promise<void> {
  const buffer = Buffer.allocUnsafe(longest(runs));
  const turns = new Turns();
  for (const run of runs) {
    if (turns.due()) await turns.take();
    const bytesRead = readSync(handle.fd, buffer, 0, run.length, run.from);
    if (bytesRead !== run.length) throw new Failure('integrity', `the temp file ended inside bytes ${run.from}-${run.from + run.length}`);
    if (writeSync(handle.fd, buffer, 0, run.length, run.target) !== run.length)
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    onCopied(run);
  }
}

/** A synchronous loop's turns: it lets the event loop run once every COPY_TURN_MS. */
class Turns {
  private started = performance.now();

  due(): boolean {
    return performance.now() - this.started >= COPY_TURN_MS;
  }

  async take(): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
    this.started = performance.now();
  }
}

function longest(runs: readonly CopyRun[]): number {
  return runs.reduce((most, run) => Math.max(most, run.length), 0);
}

/** The SHA-256 of the file's first `size` bytes. */
async function sha256Of(handle: FileHandle, size: number, signal: AbortSignal): Promise<string> {
  const sha = createHash('sha256');
  const buffer = Buffer.allocUnsafe(VERIFY_READ_BYTES);
  for (let position = 0; position < size; ) {
    signal.throwIfAborted();
    const { bytesRead } = await handle.read(buffer, 0, Math.min(VERIFY_READ_BYTES, size - position), position);
    if (bytesRead === 0) throw new Failure('integrity', `the temp file ended at byte ${position} of ${size}`);
    sha.update(buffer.subarray(0, bytesRead));
    position += bytesRead;
  }
  return sha.digest('hex');
}

/** The segments of the file whose chunks' hashes, or whose digest, are not the index's. */
async function segmentsNotMatching(handle: FileHandle, index: ChunkIndex, signal: AbortSignal): Promise<ByteRange[]> {
  const digest = await segmentDigester();
  const isChunk = chunkMatcher(index);
  const hasher = new ChunkHasher(VERIFY_READ_BYTES + index.params.maxSize);
  const buffer = hasher.bytes;
  const segmentHashes = new Uint32Array(2 * index.segmentChunks);
  const badSegments: ByteRange[] = [];
  let chunk = 0;
  // Bytes [head, tail) of `buffer` are read but not yet checked as chunks.
  let head = 0;
  let tail = 0;
  let position = 0;
  for (let segment = 0; chunk < index.count; segment++) {
    const first = chunk;
    const last = Math.min(index.count, first + index.segmentChunks);
    let segmentOk = true;
    for (; chunk < last; chunk++) {
      const length = index.lengths[chunk]!;
      if (tail - head < length) {
        buffer.copyWithin(0, head, tail);
        tail -= head;
        head = 0;
        while (tail < length) {
          signal.throwIfAborted();
          const { bytesRead } = await handle.read(buffer, tail, Math.min(VERIFY_READ_BYTES, index.size - position), position);
          if (bytesRead === 0) throw new Failure('integrity', `the temp file ended at byte ${position} of ${index.size}`);
          position += bytesRead;
          tail += bytesRead;
        }
      }
      hasher.hash(head, length);
      if (!isChunk(chunk, hasher.high, hasher.low)) segmentOk = false;
      segmentHashes[2 * (chunk - first)] = hasher.high;
      segmentHashes[2 * (chunk - first) + 1] = hasher.low;
      head += length;
    }
    const [high, low] = digest(segmentHashes.subarray(0, 2 * (last - first)));
    if (!segmentOk || high !== index.segmentHigh[segment] || low !== index.segmentLow[segment]) {
      badSegments.push({
        start: index.segmentOffsets[segment]!,
        end: segment + 1 < index.segmentOffsets.length ? index.segmentOffsets[segment + 1]! : index.size,
      });
    }
  }
  return badSegments;
}
