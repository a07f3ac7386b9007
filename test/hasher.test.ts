// The stat cache's digests against independent ones (sha256sum, xxh64 of the whole file
// in one call) for sizes around its read slots, for files hashed at the same time, and
// with progress that ends at the file's size.
import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { execFile as execFileCallback } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import xxhash from 'xxhash-wasm';
import { bytesHasher, KEEP_UNSEEN_DAYS, StatCache } from '../src/hasher.ts';

const execFile = promisify(execFileCallback);
const MiB = 1024 * 1024;
const SLOT = 4 * MiB;

/** Digests of the whole file in one call each: SHA-256 by sha256sum (or Node's crypto), xxh64 by xxhash-wasm. */
async function expected(path: string, sha256sum = true): Promise<{ xxh: string; sha256: string }> {
  const { h64Raw } = await xxhash();
  const bytes = await readFile(path);
  const sha256 = sha256sum ? (await execFile('sha256sum', [path])).stdout.split(' ')[0]! : createHash('sha256').update(bytes).digest('hex');
  return { xxh: h64Raw(bytes).toString(16).padStart(16, '0'), sha256 };
}

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-hasher-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('digests match sha256sum and one-shot xxh64 at sizes around the read slots', async (t) => {
  const dir = await tempDir(t);
  const sizes = [0, 1, SLOT - 1, SLOT, SLOT + 1, 3 * SLOT, 4 * SLOT + 7, 9 * SLOT + 12345];
  for (const size of sizes) {
    const path = join(dir, `f${size}`);
    await writeFile(path, randomBytes(size));
    const hasher = await StatCache.open();
    const progress: Array<[number, number]> = [];
    const digest = await hasher.hash(path, { sha256: true, onProgress: (done, total) => progress.push([done, total]) });
    const want = await expected(path);
    t.is(digest.size, size);
    t.is(digest.sha256, want.sha256, `sha256 of ${size} bytes`);
    t.is(digest.xxh, want.xxh, `xxh64 of ${size} bytes`);
    t.is(hasher.bytesHashed, size);
    if (size > 0) t.deepEqual(progress.at(-1), [size, size]);
    t.true(
      progress.every(([done], i) => i === 0 || done >= progress[i - 1]![0]),
      'progress never goes backwards',
    );
    // xxh64 alone (no SHA-256 thread) gives the same xxh64, and so does the bytes hasher
    // (config-cache.ts keys a compilation by either, as the file was found).
    t.is((await (await StatCache.open()).hash(path)).xxh, want.xxh);
    t.is((await bytesHasher())(await readFile(path)), want.xxh);
  }
});

test('an observer sees every byte in order, in place in the ring or as views, and what it writes in its own bytes and gaps changes no digest', async (t) => {
  const dir = await tempDir(t);
  for (const size of [SLOT - 1, SLOT + 1, 3 * SLOT + 4097]) {
    const path = join(dir, `o${size}`);
    const bytes = randomBytes(size);
    await writeFile(path, bytes);
    const want = await expected(path, false);
    // Views: an observer without `inPlace`, or any observer of a file read in one go.
    const viewed: Buffer[] = [];
    const viewDigest = await (await StatCache.open()).hash(path, { sha256: true, observe: { update: (view) => viewed.push(Buffer.from(view)) } });
    t.true(Buffer.concat(viewed).equals(bytes), `viewed bytes of ${size}`);
    t.deepEqual(viewDigest, { size, ...want });
    // In place: it may scribble on its own bytes and on the gap before each piece.
    const GAP = 1000;
    const OWN = 333;
    let memory: Uint8Array | undefined;
    const seen: Buffer[] = [];
    const pushed: Buffer[] = [];
    const observer = {
      update: (view: Uint8Array) => pushed.push(Buffer.from(view)),
      inPlace: {
        ownBytes: OWN,
        gapBytes: GAP,
        attach: (shared: { buffer: ArrayBuffer | SharedArrayBuffer }) => {
          t.true(shared.buffer instanceof SharedArrayBuffer);
          memory = new Uint8Array(shared.buffer);
        },
        updateAt: (offset: number, length: number) => {
          seen.push(Buffer.from(memory!.subarray(offset, offset + length)));
          memory!.fill(0xa5, 0, OWN);
          memory!.fill(0x5a, offset - GAP, offset);
        },
      },
    };
    const digest = await (await StatCache.open()).hash(path, { sha256: true, observe: observer });
    t.deepEqual(digest, { size, ...want }, `digests of ${size} bytes`);
    const whole = Buffer.concat([...pushed, ...seen]);
    t.true(whole.equals(bytes), `observed bytes of ${size}`);
    // A file of one slot is read in one go and handed over as a view; a larger one in place.
    t.is(seen.length > 0, size > SLOT);
    t.is(pushed.length > 0, size <= SLOT);
  }
});

test('files hashed at the same time each get their own digests', async (t) => {
  const dir = await tempDir(t);
  const seed = Date.now();
  t.log(`fast-check seed ${seed}`);
  await fc.assert(
    fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 3 * SLOT }), { minLength: 2, maxLength: 4 }), async (sizes) => {
      const paths = await Promise.all(
        sizes.map(async (size, index) => {
          const path = join(dir, `c${index}`);
          await writeFile(path, randomBytes(size));
          return path;
        }),
      );
      const hasher = await StatCache.open();
      const digests = await Promise.all(paths.map((path, index) => hasher.hash(path, { sha256: index % 2 === 0 })));
      for (const [index, path] of paths.entries()) {
        const want = await expected(path, false);
        if (digests[index]!.xxh !== want.xxh) return false;
        if (index % 2 === 0 && digests[index]!.sha256 !== want.sha256) return false;
        if (index % 2 === 1 && digests[index]!.sha256 !== undefined) return false;
      }
      return true;
    }),
    { seed, numRuns: 6 },
  );
  t.pass();
});

/** A temp dir with a stat-cache path (no file yet) and a 1,000-byte file of random bytes per name. */
async function cacheDirWith<Names extends string[]>(
  t: ExecutionContext,
  ...names: Names
): Promise<{ dir: string; cacheFile: string; files: { [K in keyof Names]: string } }> {
  const dir = await tempDir(t);
  const files = names.map((name) => join(dir, name)) as { [K in keyof Names]: string };
  for (const file of files) await writeFile(file, randomBytes(1000));
  return { dir, cacheFile: join(dir, 'stat-cache.json'), files };
}

test('records no run found current for KEEP_UNSEEN_DAYS are dropped at the next save; those found are dated today', async (t) => {
  const {
    dir,
    cacheFile,
    files: [used, unused],
  } = await cacheDirWith(t, 'used', 'unused');
  const dayBefore = Math.floor(Date.now() / 86_400_000);
  const first = await StatCache.open(cacheFile);
  await first.hash(used);
  await first.hash(unused);
  await first.save();
  type Records = Record<string, { xxh: string; seen?: number }>;
  const readRecords = async (): Promise<Records> => (JSON.parse(await readFile(cacheFile, 'utf8')) as { files: Records }).files;
  const made = await readRecords();
  // The day the cache took as today (a test that runs across midnight counts from it).
  const today = made[used]!.seen!;
  t.true(today === dayBefore || today === dayBefore + 1, `${today} is the UTC day the records were made`);
  t.is(made[unused]!.seen, today, 'a record made today is dated today');

  // As the cache of a tree copied elsewhere long ago, and of a cache from before records had a day.
  const aged: Records = {
    [used]: { ...made[used]!, seen: today - KEEP_UNSEEN_DAYS - 10 },
    [unused]: { ...made[unused]!, seen: today - KEEP_UNSEEN_DAYS - 1 },
    [join(dir, 'moved-away')]: { ...made[used]!, seen: today - KEEP_UNSEEN_DAYS - 1 },
    [join(dir, 'recent')]: { ...made[used]!, seen: today - KEEP_UNSEEN_DAYS },
    [join(dir, 'undated')]: { xxh: made[used]!.xxh, size: 1000, mtimeNs: '1', ctimeNs: '1', ino: '1' } as Records[string],
  };
  await writeFile(cacheFile, JSON.stringify({ version: 1, files: aged }));
  const second = await StatCache.open(cacheFile);
  t.is((await second.hash(used)).xxh, made[used]!.xxh);
  t.is(second.bytesHashed, 0, 'an aged record still answers while it is kept');
  await second.save();
  const pruned = await readRecords();
  t.deepEqual(Object.keys(pruned).sort(), [join(dir, 'recent'), join(dir, 'undated'), used].sort());
  t.is(pruned[used]!.seen, today, 'the record a run found current is dated today');
  t.is(pruned[join(dir, 'recent')]!.seen, today - KEEP_UNSEEN_DAYS, 'a record not looked at keeps its day');
  t.is(pruned[join(dir, 'undated')]!.seen, today, 'an undated record starts its count today');

  // A no-op run on the same day finds every record dated today and does not write the cache.
  const before = await stat(cacheFile);
  const third = await StatCache.open(cacheFile);
  await third.hash(used);
  await third.save();
  const after = await stat(cacheFile);
  t.is(third.bytesHashed, 0);
  t.is(after.ino, before.ino, 'the cache file was not replaced');
  t.is(after.mtimeMs, before.mtimeMs);
});

test('a save keeps the records another process saved since this one opened the cache', async (t) => {
  const {
    cacheFile,
    files: [mine, theirs],
  } = await cacheDirWith(t, 'mine', 'theirs');
  // Both open the cache before either saves, as a run that waited for the tree lock did.
  const waited = await StatCache.open(cacheFile);
  const other = await StatCache.open(cacheFile);
  await other.hash(theirs);
  await other.save();
  await waited.hash(mine);
  await waited.save();
  const later = await StatCache.open(cacheFile);
  await later.hash(mine);
  await later.hash(theirs);
  t.is(later.bytesHashed, 0, 'both files are answered from the cache');
});
