// Content digests through a persistent stat cache: a file whose (size, mtime, ctime,
// inode) match the cached record is not read again, so a no-op run over multi-GB images
// hashes zero bytes. Both digests a caller may need are computed in a single read, with
// the reads ahead of the hashing and SHA-256 on its own thread (sha256-thread.ts).
import { readFileSync, statSync } from 'node:fs';
import { mkdir, open, stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import xxhash from 'xxhash-wasm';
import { writeFileAtomic } from './atomic.ts';
import { RingMemory } from './ring-memory.ts';
import type { Sha256Job } from './sha256-thread.ts';
import type { FileDigest, FileHasher, HashOptions } from './types.ts';

interface StatRecord {
  size: number;
  mtimeNs: string;
  ctimeNs: string;
  ino: string;
  xxh: string;
  sha256?: string;
  /**
   * The UTC day (days since 1970) of the last run that found the file as recorded. Records
   * of files no run has looked at for KEEP_UNSEEN_DAYS are dropped: those of a tree moved,
   * copied or removed, which otherwise stay for good and slow every start that parses them.
   */
  seen?: number;
}

const BIGINT_STAT = { bigint: true } as const;

/** The stat a record was taken at, as numbers to compare: parsed once per record. */
const parsedStats = new WeakMap<StatRecord, BigStats>();

const CACHE_VERSION = 1;
/** A read's size; files up to this size are read and hashed in one go on this thread. */
const SLOT_BYTES = 4 * 1024 * 1024;
/** Slots of the read ring: reads in flight while earlier slots are hashed. */
const SLOTS = 4;
/**
 * A record no run found its file unchanged in for this many days is dropped when the cache
 * is next saved; its file, if it still exists, is hashed again when next asked for.
 */
export const KEEP_UNSEEN_DAYS = 30;
const DAY_MS = 86_400_000;

/** Coarse filesystem timestamps tick every few ms (jiffies); 2-second ones are not supported. */
export const RACY_WINDOW_NS = 50_000_000n;

let xxhashApi: Awaited<ReturnType<typeof xxhash>> | undefined;
async function xxhashFactory() {
  xxhashApi ??= await xxhash();
  return xxhashApi;
}

export class StatCache implements FileHasher {
  /** Bytes read to hash files in this process: 0 on a no-op run. */
  bytesHashed = 0;
  private dirty = false;
  private readonly inflight = new Map<string, Promise<FileDigest>>();
  /** Records made by this process; they replace stored ones of the same path. */
  private readonly records = new Map<string, StatRecord>();
  /**
   * Stored records found current on a day after the one they were last seen on. Marking
   * them makes the cache dirty, so a no-op run writes it at most once a day, and pruning
   * (in `save`) happens then.
   */
  private readonly seenAgain = new Set<string>();
  private readonly today = dayOf(Date.now());

  private constructor(
    private readonly file: string | undefined,
    /** The records as parsed from the file, looked up in place rather than copied into a Map at every start. */
    private readonly stored: Readonly<Record<string, StatRecord>>,
  ) {}

  /** Opens the cache stored at `file` (created on save), or a memory-only cache. */
  static async open(file?: string): Promise<StatCache> {
    return new StatCache(file, file ? storedRecords(file) : {});
  }

  private record(path: string): StatRecord | undefined {
    return this.records.get(path) ?? (Object.hasOwn(this.stored, path) ? this.stored[path] : undefined);
  }

  known(path: string, options: Pick<HashOptions, 'sha256'> = {}): FileDigest | undefined {
    const found = this.lookup(path, options.sha256 === true);
    return 'xxh' in found ? found : undefined;
  }

  async hash(path: string, options: HashOptions = {}): Promise<FileDigest> {
    const wantSha = options.sha256 === true;
    if (options.observe) {
      // The caller wants the bytes themselves: no cache answer, and no sharing a read that started without them.
      const stats = statSync(path, BIGINT_STAT);
      if (!stats.isFile()) throw new Error(`${path} is not a regular file`);
      return this.read(path, stats, wantSha, options);
    }
    const before = this.lookup(path, wantSha);
    if ('xxh' in before) return before;
    const key = `${path}\0${wantSha}`;
    const running = this.inflight.get(key);
    if (running) return running;
    const work = this.read(path, before, wantSha, options).finally(() => this.inflight.delete(key));
    this.inflight.set(key, work);
    return work;
  }

  /**
   * The cached digests when the file's stat still matches the record, else the stat to
   * read it at. Synchronous: on a no-op run this stat and the lookup are all the hasher
   * does, for every input and output of every node, and a thread-pool round trip costs
   * more than the stat itself.
   */
  private lookup(path: string, wantSha: boolean): FileDigest | BigStats {
    const stats = statSync(path, BIGINT_STAT);
    if (!stats.isFile()) throw new Error(`${path} is not a regular file`);
    const cached = this.record(path);
    if (cached && matches(cached, stats) && (!wantSha || cached.sha256)) {
      if (cached.seen !== this.today) {
        this.seenAgain.add(path);
        this.dirty = true;
      }
      return cached.sha256 ? { size: cached.size, xxh: cached.xxh, sha256: cached.sha256 } : { size: cached.size, xxh: cached.xxh };
    }
    return stats;
  }

  /** Reads the file for its digests and remembers them when it stayed unchanged meanwhile. */
  private async read(path: string, before: BigStats, wantSha: boolean, options: HashOptions): Promise<FileDigest> {
    // A file written within the last clock ticks could be written again without its
    // stat changing (git's "racy clean" case); wait those ticks out so the digest we keep
    // is one no later same-stat write can contradict.
    while (nowNs() < before.mtimeNs + RACY_WINDOW_NS) await sleep(1);
    const startedNs = nowNs();
    const digest = await this.digest(path, Number(before.size), wantSha, options);
    const after = await stat(path, BIGINT_STAT);
    // Only remember a digest when the file did not change while being read.
    if (matchesStats(before, after) && after.mtimeNs + RACY_WINDOW_NS <= startedNs) {
      this.records.set(path, {
        size: Number(after.size),
        mtimeNs: after.mtimeNs.toString(),
        ctimeNs: after.ctimeNs.toString(),
        ino: after.ino.toString(),
        xxh: digest.xxh,
        ...(digest.sha256 ? { sha256: digest.sha256 } : {}),
        seen: this.today,
      });
      this.dirty = true;
    }
    return digest;
  }

  private async digest(path: string, size: number, wantSha: boolean, options: HashOptions): Promise<FileDigest> {
    const handle = await open(path, 'r');
    try {
      if (size <= SLOT_BYTES) {
        // Small files (most inputs): one read, both digests here.
        const xxh = (await xxhashFactory()).create64();
        const bytes = Buffer.allocUnsafe(size);
        const { bytesRead } = await handle.read(bytes, 0, size, 0);
        const content = bytes.subarray(0, bytesRead);
        xxh.update(content);
        options.observe?.update(content);
        this.count(bytesRead, bytesRead, size, options);
        return {
          size: bytesRead,
          xxh: hexOf(xxh.digest()),
          // node:crypto loads only when asked for a SHA-256: a no-op run never is.
          ...(wantSha ? { sha256: process.getBuiltinModule('node:crypto').createHash('sha256').update(content).digest('hex') } : {}),
        };
      }
      return await this.readRing(handle, size, wantSha, options);
    } finally {
      await handle.close();
    }
  }

  /**
   * A large file through a ring of shared slots: up to SLOTS reads in flight, xxh64 of
   * each slot here, where it lies, as it arrives while the SHA-256 thread hashes the same
   * slot; a slot is read into again once both are done with it. An observer that reads
   * the ring in place scans each slot there too; any other gets a view of it.
   */
  private async readRing(handle: FileHandle, size: number, wantSha: boolean, options: HashOptions): Promise<FileDigest> {
    const inPlace = options.observe?.inPlace;
    const ring = new RingMemory(SLOTS, SLOT_BYTES, inPlace);
    inPlace?.attach(ring.memory);
    const reads = new RingReads(handle, size, ring);
    let wake: (() => void) | undefined;
    let failure: Error | undefined;
    const sha = wantSha
      ? await startShaThread(
          ring.memory.buffer,
          (slot) => {
            reads.release(slot);
            wake?.();
          },
          (error) => {
            failure = error;
            wake?.();
          },
        )
      : undefined;
    let done = 0;
    try {
      reads.issue();
      while (reads.pending.length > 0) {
        const { slot, bytesRead } = reads.pending.shift()!;
        const length = await bytesRead;
        if (failure) throw failure;
        if (length === 0) break; // the file shrank while being read: the caller's stat check sees it
        const offset = ring.offsets[slot]!;
        sha?.update(slot, offset, length);
        ring.xxh64Update(offset, length);
        if (inPlace) inPlace.updateAt(offset, length);
        else options.observe?.update(ring.slots[slot]!.subarray(0, length));
        done += length;
        this.count(length, done, size, options);
        if (sha) reads.issue();
        else reads.release(slot);
        // Every slot is with the SHA-256 thread: wait for one to come back.
        while (reads.pending.length === 0 && !reads.exhausted) {
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
          if (failure) throw failure;
        }
      }
      const sha256 = sha ? await sha.digest() : undefined;
      return { size: done, xxh: hexOf(ring.xxh64()), ...(sha256 !== undefined ? { sha256 } : {}) };
    } catch (error) {
      sha?.drop();
      throw error;
    } finally {
      // Reads still in flight write into the ring: let them land before the file closes.
      await reads.settled();
    }
  }

  private count(bytes: number, done: number, total: number, options: HashOptions): void {
    this.bytesHashed += bytes;
    if (options.account) options.account.bytes += bytes;
    options.onProgress?.(done, total);
  }

  async save(): Promise<void> {
    if (!this.file || !this.dirty) return;
    // Other processes may have saved since this one read the cache (a run that waited for
    // the tree lock, an `images` command beside a run): start from what the file holds
    // now, so their records are kept rather than overwritten by this process's old view.
    const files: Record<string, StatRecord> = {};
    for (const [path, record] of Object.entries(storedRecords(this.file))) {
      // A record from before records had a day starts its count today.
      const seen = this.seenAgain.has(path) || !Number.isSafeInteger(record.seen) ? this.today : record.seen!;
      if (this.today - seen > KEEP_UNSEEN_DAYS) continue;
      files[path] = seen === record.seen ? record : { ...record, seen };
    }
    for (const [path, record] of this.records) files[path] = record;
    await mkdir(dirname(this.file), { recursive: true });
    await writeFileAtomic(this.file, JSON.stringify({ version: CACHE_VERSION, files }));
    this.dirty = false;
  }
}

/** The records of the cache file; none when it is missing, unreadable or of another version. */
function storedRecords(file: string): Record<string, StatRecord> {
  try {
    // Synchronous, as every read a no-op run makes: a thread-pool round trip waits for a
    // core, which on a busy machine costs more than the read.
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as { version?: number; files?: Record<string, StatRecord> };
    if (parsed.version === CACHE_VERSION && parsed.files !== null && typeof parsed.files === 'object') return parsed.files;
  } catch {
    // Missing or unreadable cache: every file is hashed once and the cache rebuilt.
  }
  return {};
}

function dayOf(ms: number): number {
  return Math.floor(ms / DAY_MS);
}

function hexOf(digest: bigint): string {
  return digest.toString(16).padStart(16, '0');
}

interface BigStats {
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: bigint;
}

/** Wall-clock time in ns, comparable with file mtimes. */
export function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

function matches(record: StatRecord, stats: BigStats): boolean {
  let recorded = parsedStats.get(record);
  if (!recorded) {
    recorded = { size: BigInt(record.size), mtimeNs: BigInt(record.mtimeNs), ctimeNs: BigInt(record.ctimeNs), ino: BigInt(record.ino) };
    parsedStats.set(record, recorded);
  }
  return matchesStats(recorded, stats);
}

function matchesStats(a: BigStats, b: BigStats): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.ino === b.ino;
}

/** xxh64 of a string: for fingerprints of small values (params, env, manifests). */
export async function xxhString(text: string): Promise<string> {
  const { h64ToString } = await xxhashFactory();
  return h64ToString(text);
}

/** xxh64 of bytes as 16 hex digits, as `hash` gives it for a file of these bytes, synchronous once loaded. */
export async function bytesHasher(): Promise<(bytes: Uint8Array) => string> {
  const { h64Raw } = await xxhashFactory();
  return (bytes) => hexOf(h64Raw(bytes));
}

/**
 * `xxhString` as a synchronous function, once the WebAssembly module is loaded: a caller
 * hashing several small strings awaits once instead of once per string.
 */
export async function stringHasher(): Promise<(text: string) => string> {
  return (await xxhashFactory()).h64ToString;
}

/** Reads of a file, in order, into a ring of shared slots: one read in flight for each slot free to read into. */
class RingReads {
  /** The reads issued and not yet taken, oldest first. */
  readonly pending: Array<{ slot: number; bytesRead: Promise<number> }> = [];
  private readonly slots: readonly Uint8Array[];
  private readonly free: number[];
  private position = 0;

  constructor(
    private readonly handle: FileHandle,
    private readonly size: number,
    ring: RingMemory,
  ) {
    this.slots = ring.slots;
    this.free = this.slots.map((_, slot) => slot);
  }

  /** Every byte of the file has a read issued. */
  get exhausted(): boolean {
    return this.position >= this.size;
  }

  /** Issues a read into each free slot while the file has bytes left. */
  issue(): void {
    while (this.free.length > 0 && this.position < this.size) {
      const slot = this.free.shift()!;
      const length = Math.min(SLOT_BYTES, this.size - this.position);
      this.pending.push({ slot, bytesRead: this.handle.read(this.slots[slot]!, 0, length, this.position).then((result) => result.bytesRead) });
      this.position += length;
    }
  }

  /** Gives back a slot whose bytes are hashed, and reads into it again. */
  release(slot: number): void {
    this.free.push(slot);
    this.issue();
  }

  /** Once every read issued has landed. */
  async settled(): Promise<void> {
    await Promise.allSettled(this.pending.map((read) => read.bytesRead));
  }
}

/** The SHA-256 thread, loaded on first use: a no-op run hashes nothing, and worker_threads costs start-up time. */
async function startShaThread(ring: SharedArrayBuffer, onSlot: (slot: number) => void, onError: (error: Error) => void): Promise<Sha256Job> {
  const { Sha256Thread } = await import('./sha256-thread.ts');
  return Sha256Thread.shared().start(ring, onSlot, onError);
}
