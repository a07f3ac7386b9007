// Every stamp in one file, read once per plan, as ninja keeps its build log: a no-op run
// of a 1,000-node graph otherwise opens, reads and closes a stamp file per node. The index
// keeps of each stamp only what the quick check compares (fingerprint, output digest, and
// the manifest and outputs as one text): parsing whole stamps, each with objects keyed by
// its own paths, cost a no-op more than the files it saved reading.
//
// The index is a cache of the stamps directory, never the truth. It holds while that
// directory is the one it was made from: same inode, same modification time. Stamps are
// only ever created, replaced (temp file, then rename) or removed, and each of those
// changes the directory's modification time. The index is made only once that time is
// older than the filesystem clock's granularity (git's "racy clean" rule), so a later
// change cannot leave the directory with the time the index recorded.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from './atomic.ts';
import { nowNs, RACY_WINDOW_NS } from './hasher.ts';
import { type RecordedLookup, type RecordedStamp, recordOfStamp } from './quick-check.ts';
import { readAllStamps, stampsDir } from './stamp.ts';
import type { NodeId } from './types.ts';

const INDEX_VERSION = 2;

interface DirIdentity {
  readonly ino: string;
  readonly mtimeNs: string;
}

interface IndexFile {
  readonly version: number;
  readonly dir: DirIdentity;
  /** When the index was made: at least the racy window after `dir.mtimeNs`. */
  readonly madeNs: string;
  /** The directory held stamps only: no temp files (which are dot-named). */
  readonly clean: boolean;
  /** Each stamp's fingerprint, output digest and record (`RecordedStamp`), as an array of three. */
  readonly records: Record<NodeId, unknown>;
}

export function stampIndexPath(stateDir: string): string {
  return join(stateDir, 'stamp-index.json');
}

/** The stamps directory's identity now, or undefined when it does not exist. */
function dirIdentity(stateDir: string): DirIdentity | undefined {
  const stats = statSync(stampsDir(stateDir), { bigint: true, throwIfNoEntry: false });
  return stats?.isDirectory() ? { ino: stats.ino.toString(), mtimeNs: stats.mtimeNs.toString() } : undefined;
}

function sameDir(a: DirIdentity, b: DirIdentity): boolean {
  return a.ino === b.ino && a.mtimeNs === b.mtimeNs;
}

function readIndex(stateDir: string): IndexFile | undefined {
  try {
    const parsed = JSON.parse(readFileSync(stampIndexPath(stateDir), 'utf8')) as Partial<IndexFile>;
    const { dir, madeNs, records } = parsed;
    if (parsed.version !== INDEX_VERSION || !dir || typeof madeNs !== 'string' || !records || typeof records !== 'object') return undefined;
    if (typeof dir.ino !== 'string' || typeof dir.mtimeNs !== 'string') return undefined;
    if (BigInt(dir.mtimeNs) + RACY_WINDOW_NS > BigInt(madeNs)) return undefined; // racy: it cannot vouch for the directory
    return parsed as IndexFile;
  } catch {
    return undefined; // missing, half-written by a crashed older version, or not ours: read the files
  }
}

/** The stamps as the index holds them, and the stamps directory it was found to describe. */
export interface StampSnapshot {
  readonly recorded: RecordedLookup;
  readonly dir: DirIdentity;
  /** The directory holds no temp files, abandoned or not: a debris sweep has nothing to find there. */
  readonly clean: boolean;
}

/**
 * The stamps as they are now, when the index still describes the stamps directory;
 * otherwise undefined, and each stamp is read from its file.
 */
export function readStampIndex(stateDir: string): StampSnapshot | undefined {
  const index = readIndex(stateDir);
  if (!index) return undefined;
  const now = dirIdentity(stateDir);
  if (!now || !sameDir(now, index.dir)) return undefined;
  // Looked up in the parsed file as nodes ask, each checked then: copying a thousand
  // records into a Map first would cost a no-op more than the lookups.
  const raw = index.records;
  const recorded: RecordedLookup = { get: (id) => (Object.hasOwn(raw, id) ? asRecorded(raw[id]) : undefined) };
  return { recorded, dir: now, clean: index.clean === true };
}

function asRecorded(value: unknown): RecordedStamp | undefined {
  if (!Array.isArray(value) || value.length !== 3) return undefined;
  const [fingerprint, outputDigest, record] = value as unknown[];
  if (typeof fingerprint !== 'string' || typeof outputDigest !== 'string' || typeof record !== 'string') return undefined;
  return { fingerprint, outputDigest, record };
}

/**
 * Makes the index again when it no longer describes the stamps directory (`read`: the
 * snapshot this run planned with, if any; one stat then tells that nothing changed).
 * Called at the end of a run, under the tree lock, so no other run is writing stamps;
 * were one to, the directory's time would change and the index would simply not be
 * used. A run that wrote stamps in the last few milliseconds waits them out (the racy
 * window) first.
 */
export async function refreshStampIndex(stateDir: string, read: StampSnapshot | undefined, signal?: AbortSignal): Promise<void> {
  const before = dirIdentity(stateDir);
  if (!before || (read && sameDir(read.dir, before))) return;
  const settledAt = BigInt(before.mtimeNs) + RACY_WINDOW_NS;
  while (nowNs() < settledAt) {
    if (signal?.aborted) return;
    await new Promise((resolve) => setTimeout(resolve, 1 + Number((settledAt - nowNs()) / 1_000_000n)));
  }
  const { stamps, clean } = readAllStamps(stateDir);
  const records: Record<NodeId, readonly [string, string, string]> = {};
  for (const [id, stamp] of stamps) {
    // A stamp without a record (one this version would not write) is left out: its node
    // is assessed in full, from its file.
    const record = recordOfStamp(stamp);
    if (record !== undefined) records[id] = [stamp.fingerprint, stamp.outputDigest, record];
  }
  const madeNs = nowNs();
  const after = dirIdentity(stateDir);
  // Changed while being read (a writer without the lock): the next run makes it instead.
  if (!after || !sameDir(before, after)) return;
  const file: IndexFile = { version: INDEX_VERSION, dir: before, madeNs: madeNs.toString(), clean, records };
  await writeFileAtomic(stampIndexPath(stateDir), JSON.stringify(file));
}
