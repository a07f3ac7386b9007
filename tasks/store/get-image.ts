// Fetches one image from any store into a file: pieces in parallel, each written at its
// offset into one temp file next to the target (no reassembly pass), resumable across
// resets, runs and kills, verified against the SHA-256 (and by the caller's `acceptBytes`)
// before it is renamed into place. One process at a time downloads into a given target
// (partial-file.ts). An image that is being replaced is waited for briefly, then reported
// as such.
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Failure, isFailure } from '../../src/index.ts';
import { deltaStatePath } from './delta/delta-fetch.ts';
import { type DeltaOutcome, type Seed, trySeededFetch } from './delta/seeded-get.ts';
import { DownloadFile } from './download-file.ts';
import { sha256OfFile } from './file-reads.ts';
import {
  lockPartial,
  type PartialPaths,
  partialPathsFor,
  readResumeState,
  removeResumeState,
  ResumeCheckpoints,
  type ResumeState,
  writeResumeState,
} from './partial-file.ts';
import type { ImageRecord } from './record.ts';
import type { ImageStore, OpenedImage } from './store.ts';

export interface GetImageOptions {
  /** Where the verified image lands (its directory is created). */
  readonly path: string;
  /** Replace a file already there that differs; without it that is a `usage` Failure. */
  readonly overwrite: boolean;
  readonly signal: AbortSignal;
  /** Pieces in flight at once (default 4). */
  readonly concurrency?: number;
  readonly onProgress?: (done: number, total: number) => void;
  readonly log?: (line: string) => void;
  /** Pauses before each new look at an image that is being replaced; default 0.5, 1, 2, 4 s. */
  readonly replacingWaitsMs?: readonly number[];
  /** Local files that may hold some of the image: with the store's chunk index, only the rest is fetched. */
  readonly seeds?: readonly Seed[];
  /**
   * Looks at the opened image before any byte moves (and before a file already in place is
   * taken); a throw refuses it (the provenance check, tasks/provenance/).
   */
  readonly accept?: (image: Extract<OpenedImage, { status: 'ready' }>, signal: AbortSignal) => Promise<void>;
  /**
   * Judges the verified bytes (at `path`: the partial file, not yet renamed, or a file
   * already in place that matches) before they are handed out; a throw refuses them
   * (nothing is renamed, the partial download is removed).
   */
  readonly acceptBytes?: (path: string, signal: AbortSignal) => Promise<void>;
  /** How often the resume state is saved while bytes arrive (default partial-file.ts's). */
  readonly checkpointMs?: number;
  /** What a seeded fetch takes a ranged read to cost, in bytes of a whole download (default delta-fetch.ts's). */
  readonly rangedReadCost?: number;
}

export interface GotImage {
  readonly name: string;
  readonly path: string;
  readonly sha256: string;
  readonly size: number;
  /** The store's record of the image (cache key, versions, inputs), when it keeps one. */
  readonly record?: ImageRecord;
  /** True when the file was already there with the right checksum. */
  readonly alreadyPresent: boolean;
  /** What moved: bytes fetched from the store, and bytes copied from local seeds (none when already present). */
  readonly transfer: Transfer;
}

export interface Transfer {
  readonly fetched: number;
  readonly reused: DeltaOutcome['reused'];
}

const REPLACING_WAITS_MS = [500, 1000, 2000, 4000];
const PROGRESS_MS = 100;

export async function getImage(store: ImageStore, name: string, options: GetImageOptions): Promise<GotImage> {
  const waits = options.replacingWaitsMs ?? REPLACING_WAITS_MS;
  for (let attempt = 0; ; attempt++) {
    const opened = await store.open(name, options.signal);
    if (opened.status === 'missing') throw new Failure('not-found', opened.detail);
    let busy: string;
    if (opened.status === 'ready') {
      try {
        await options.accept?.(opened, options.signal);
        return await fetchInto(store, opened, options);
      } catch (error) {
        // A piece that vanished mid-way was replaced by a newer upload: look again.
        if (!isFailure(error, 'not-found')) throw error;
        busy = error.message;
      }
    } else {
      busy = opened.detail;
    }
    const wait = waits[attempt];
    if (wait === undefined) throw new Failure('network', `${name} is being replaced on ${store.location}; try again in a minute`);
    options.log?.(`${name}: being replaced on ${store.location} (${busy}); looking again in ${wait} ms`);
    await sleep(wait, undefined, { signal: options.signal });
  }
}

/** Errors that mean the disk (or the user's quota) is full: retrying will not help, and what arrived only takes space. */
function isNoSpace(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

async function fetchInto(store: ImageStore, image: ReadyImage, options: GetImageOptions): Promise<GotImage> {
  await mkdir(dirname(options.path), { recursive: true });
  const partial = partialPathsFor(options.path);
  const lock = await lockPartial(partial, options.path, { signal: options.signal, log: options.log ?? (() => {}) });
  try {
    return await fetchLocked(store, image, options, partial);
  } finally {
    await lock.release();
  }
}

/** fetchInto, once this process holds the target's partial files. */
async function fetchLocked(store: ImageStore, image: ReadyImage, options: GetImageOptions, partial: PartialPaths): Promise<GotImage> {
  const { signal } = options;
  const finalPath = options.path;
  const total = image.pieces.reduce((sum, piece) => sum + piece.size, 0);
  const got = (alreadyPresent: boolean, transfer: Transfer = { fetched: alreadyPresent ? 0 : total, reused: [] }): GotImage => ({
    name: image.name,
    path: finalPath,
    sha256: image.sha256,
    size: total,
    ...(image.record ? { record: image.record } : {}),
    alreadyPresent,
    transfer,
  });
  // Looked at under the lock: a download that held it before may have just put the image there.
  const existing = await stat(finalPath).catch(() => undefined);
  if (existing && !options.overwrite) {
    if (existing.size === total && (await sha256OfFile(finalPath, signal)) === image.sha256) {
      await options.acceptBytes?.(finalPath, signal);
      return got(true);
    }
    throw new Failure('usage', `${finalPath} exists and differs from ${store.location}; pass --overwrite to replace it`);
  }
  if (options.seeds?.length) {
    const seeded = await seededFetch(image, partial.data, partial.state, options);
    if (seeded) {
      await acceptOrForget(partial, options);
      await rename(partial.data, finalPath);
      return got(false, { fetched: seeded.fetched, reused: seeded.reused });
    }
  }
  // A seeded fetch's record of finished ranges does not survive a whole download's writes.
  await rm(deltaStatePath(partial.data), { force: true });
  const actual = await downloadPieces(image, total, partial, options);
  if (actual !== image.sha256) {
    await removeResumeState(partial);
    throw new Failure(
      'integrity',
      `checksum mismatch for ${image.name}: ${store.location} says ${image.sha256}, downloaded bytes hash to ${actual}; nothing was installed`,
    );
  }
  await acceptOrForget(partial, options);
  await rename(partial.data, finalPath);
  await rm(partial.state, { force: true });
  return got(false);
}

/** The caller's judgement of verified bytes, before they are renamed into place. */
async function acceptOrForget(partial: PartialPaths, options: GetImageOptions): Promise<void> {
  if (!options.acceptBytes) return;
  try {
    await options.acceptBytes(partial.data, options.signal);
  } catch (error) {
    // Refused bytes are not worth resuming; interrupted, the check runs again next time.
    if (!options.signal.aborted) await removeResumeState(partial);
    throw error;
  }
}

type ReadyImage = Extract<OpenedImage, { status: 'ready' }>;

/**
 * Every piece into the partial file, resuming what an earlier run of the same image left;
 * the SHA-256 of what arrived. A failure keeps what arrived for the next run, unless it is
 * not worth resuming (a full disk, bytes of a replaced image).
 */
async function downloadPieces(image: ReadyImage, total: number, partial: PartialPaths, options: GetImageOptions): Promise<string> {
  const layout = image.pieces.map((piece) => ({ id: piece.id, size: piece.size }));
  const previous = await readResumeState(partial.state);
  const resumable =
    previous !== undefined &&
    previous.sha256 === image.sha256 &&
    JSON.stringify(previous.pieces) === JSON.stringify(layout) &&
    (await stat(partial.data).catch(() => undefined))?.size === total;
  const state: ResumeState = resumable ? previous : { sha256: image.sha256, pieces: layout, done: layout.map(() => 0) };
  if (resumable) options.log?.(`${image.name}: resuming at ${state.done.reduce((a, b) => a + b, 0)} of ${total} bytes`);
  // A state left by another download of these partial files no longer describes them once they start over.
  if (!resumable) await rm(partial.state, { force: true });
  const file = await DownloadFile.open(
    partial.data,
    layout.map((piece) => piece.size),
    resumable ? state.done : undefined,
  );
  let actual: string | undefined;
  let keep = true;
  // Saved while bytes arrive, so that even a kill -9 leaves a download to resume.
  const checkpoints = new ResumeCheckpoints(partial.state, { sha256: state.sha256, pieces: state.pieces }, () => file.checkpoint(), options.checkpointMs);
  try {
    checkpoints.start();
    await readPieces(image, file, [...state.done], total, options);
    actual = await file.digest();
    // Bytes that do not hash right are not worth keeping, nor flushing to the disk.
    if (actual === image.sha256) await file.sync();
    return actual;
  } catch (error) {
    // A full disk or bytes from a replaced image are not worth resuming: free the space.
    if (isFailure(error, 'not-found', 'integrity')) keep = false;
    if (isNoSpace(error)) {
      keep = false;
      const code = (error as NodeJS.ErrnoException).code!;
      throw new Failure(
        'setup',
        `no space left for ${options.path} (${image.name} needs ${total} bytes): free some space and download again; the partial download was removed`,
        { code, cause: error },
      );
    }
    throw error;
  } finally {
    await checkpoints.stop();
    if (actual === undefined && keep) await file.flush().catch(() => {});
    await file.close();
    if (actual === undefined) {
      // Keep what arrived for the next run; positional writes make any finished prefix reusable.
      if (keep) await writeResumeState(partial.state, { ...state, done: file.written }).catch(() => {});
      else await removeResumeState(partial);
    }
  }
}

/**
 * Reads the pieces not yet written, `concurrency` at a time, each into its place in the
 * file. The first piece to fail stops the others (nothing may still be writing when the
 * file closes), and its failure is the one thrown, not the aborts it caused.
 */
async function readPieces(image: ReadyImage, file: DownloadFile, received: number[], total: number, options: GetImageOptions): Promise<void> {
  const report = progressReporter(received, total, options.onProgress);
  report(true);
  let next = 0;
  const stop = new AbortController();
  const pieceSignal = AbortSignal.any([options.signal, stop.signal]);
  const worker = async (): Promise<void> => {
    while (next < image.pieces.length && !stop.signal.aborted) {
      const index = next++;
      const piece = image.pieces[index]!;
      const from = file.written[index]!;
      if (from >= piece.size) continue;
      await piece.read({
        from,
        signal: pieceSignal,
        onRestart: () => {
          received[index] = 0;
          file.restart(index);
        },
        sink: (chunk, offset) => {
          if (offset + chunk.length > piece.size) throw new Failure('integrity', `${piece.label} is longer than the store lists`);
          received[index] = offset + chunk.length;
          report(received[index] === piece.size);
          return file.accept(index, chunk, offset);
        },
      });
      await file.finish(index);
    }
  };
  let first: { error: unknown } | undefined;
  const workers = Array.from({ length: Math.min(options.concurrency ?? 4, image.pieces.length) }, () =>
    worker().catch((error: unknown) => {
      first ??= { error };
      stop.abort();
    }),
  );
  await Promise.all(workers);
  if (first) throw first.error;
}

/**
 * Progress of the pieces' bytes together, at most every PROGRESS_MS and when a piece ends
 * (`force`): a report per chunk would keep a sample per TLS record alive for nothing.
 */
function progressReporter(received: readonly number[], total: number, onProgress: GetImageOptions['onProgress']): (force?: boolean) => void {
  let reportedAt = 0;
  return (force = false) => {
    const now = Date.now();
    if (!force && now - reportedAt < PROGRESS_MS) return;
    reportedAt = now;
    onProgress?.(
      received.reduce((a, b) => a + b, 0),
      total,
    );
  };
}

/** The seeded fetch, when it applies; a result that did not verify is dropped for a whole download. */
async function seededFetch(
  image: Extract<OpenedImage, { status: 'ready' }>,
  tempPath: string,
  statePath: string,
  options: GetImageOptions,
): Promise<DeltaOutcome | undefined> {
  const log = options.log ?? (() => {});
  try {
    const outcome = await trySeededFetch(image, {
      tempPath,
      seeds: options.seeds ?? [],
      signal: options.signal,
      concurrency: options.concurrency ?? 4,
      log,
      ...(options.rangedReadCost !== undefined ? { requestCost: options.rangedReadCost } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    // The whole download's resume record describes a file the seeded fetch rewrote.
    if (outcome) await rm(statePath, { force: true });
    return outcome;
  } catch (error) {
    if (!isFailure(error, 'integrity')) throw error;
    log(`${image.name}: ${error.message}; downloading it whole`);
    return undefined;
  }
}
