// Content digests through a persistent stat cache: a file whose (size, mtime, ctime,
// inode) match the cached record is not read again, so a no-op run over multi-GB images
// hashes zero bytes. Both digests a caller may need are computed in a single read.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import xxhash from 'xxhash-wasm';
import { writeFileAtomic } from './atomic.ts';
import type { FileDigest, FileHasher, HashOptions } from './types.ts';

interface StatRecord {
  size: number;
  mtimeNs: string;
  ctimeNs: string;
  ino: string;
  xxh: string;
  sha256?: string;
}

const CACHE_VERSION = 1;
const READ_CHUNK = 4 * 1024 * 1024;
/** Coarse filesystem timestamps tick every few ms (jiffies); 2-second ones are not supported. */
const RACY_WINDOW_NS = 50_000_000n;

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

  private constructor(
    private readonly file: string | undefined,
    private readonly records: Map<string, StatRecord>,
  ) {}

  /** Opens the cache stored at `file` (created on save), or a memory-only cache. */
  static async open(file?: string): Promise<StatCache> {
    const records = new Map<string, StatRecord>();
    if (file) {
      try {
        const parsed = JSON.parse(await readFile(file, 'utf8')) as { version?: number; files?: Record<string, StatRecord> };
        if (parsed.version === CACHE_VERSION && parsed.files) {
          for (const [path, record] of Object.entries(parsed.files)) records.set(path, record);
        }
      } catch {
        // Missing or unreadable cache: every file is hashed once and the cache rebuilt.
      }
    }
    return new StatCache(file, records);
  }

  async hash(path: string, options: HashOptions = {}): Promise<FileDigest> {
    const wantSha = options.sha256 === true;
    const key = `${path}\0${wantSha}`;
    const running = this.inflight.get(key);
    if (running) return running;
    const work = this.hashUncoalesced(path, wantSha, options).finally(() => this.inflight.delete(key));
    this.inflight.set(key, work);
    return work;
  }

  private async hashUncoalesced(
    path: string,
    wantSha: boolean,
    options: HashOptions,
  ): Promise<FileDigest> {
    const before = await stat(path, { bigint: true });
    if (!before.isFile()) throw new Error(`${path} is not a regular file`);
    const cached = this.records.get(path);
    if (cached && matches(cached, before) && (!wantSha || cached.sha256)) {
      return { size: cached.size, xxh: cached.xxh, ...(cached.sha256 ? { sha256: cached.sha256 } : {}) };
    }
    // A file written within the last clock ticks could be written again without its
    // stat changing (git's "racy clean" case); wait those ticks out so the digest we keep
    // is one no later same-stat write can contradict.
    while (nowNs() < before.mtimeNs + RACY_WINDOW_NS) await sleep(1);
    const startedNs = nowNs();
    const digest = await this.read(path, Number(before.size), wantSha, options);
    const after = await stat(path, { bigint: true });
    // Only remember a digest when the file did not change while being read.
    if (matchesStats(before, after) && after.mtimeNs + RACY_WINDOW_NS <= startedNs) {
      this.records.set(path, {
        size: Number(after.size),
        mtimeNs: after.mtimeNs.toString(),
        ctimeNs: after.ctimeNs.toString(),
        ino: after.ino.toString(),
        xxh: digest.xxh,
        ...(digest.sha256 ? { sha256: digest.sha256 } : {}),
      });
      this.dirty = true;
    }
    return digest;
  }

  private async read(
    path: string,
    size: number,
    wantSha: boolean,
    options: HashOptions,
  ): Promise<FileDigest> {
    const { create64 } = await xxhashFactory();
    const xxh = create64();
    const sha = wantSha ? createHash('sha256') : undefined;
    let done = 0;
    for await (const chunk of createReadStream(path, { highWaterMark: READ_CHUNK })) {
      const bytes = chunk as Buffer;
      xxh.update(bytes);
      sha?.update(bytes);
      done += bytes.length;
      this.bytesHashed += bytes.length;
      if (options.account) options.account.bytes += bytes.length;
      options.onProgress?.(done, size);
    }
    return {
      size: done,
      xxh: xxh.digest().toString(16).padStart(16, '0'),
      ...(sha ? { sha256: sha.digest('hex') } : {}),
    };
  }

  /** Drops what is known of a path (after the engine replaced or removed it). */
  forget(path: string): void {
    if (this.records.delete(path)) this.dirty = true;
  }

  async save(): Promise<void> {
    if (!this.file || !this.dirty) return;
    const files: Record<string, StatRecord> = {};
    for (const [path, record] of this.records) files[path] = record;
    await mkdir(dirname(this.file), { recursive: true });
    await writeFileAtomic(this.file, JSON.stringify({ version: CACHE_VERSION, files }));
    this.dirty = false;
  }
}

interface BigStats {
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: bigint;
}

/** Wall-clock time in ns, comparable with file mtimes. */
function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

function matches(record: StatRecord, stats: BigStats): boolean {
  return (
    BigInt(record.size) === stats.size &&
    record.mtimeNs === stats.mtimeNs.toString() &&
    record.ctimeNs === stats.ctimeNs.toString() &&
    record.ino === stats.ino.toString()
  );
}

function matchesStats(a: BigStats, b: BigStats): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.ino === b.ino;
}

/** xxh64 of a string: for fingerprints of small values (params, env, manifests). */
export async function xxhString(text: string): Promise<string> {
  const { h64ToString } = await xxhashFactory();
  return h64ToString(text);
}
