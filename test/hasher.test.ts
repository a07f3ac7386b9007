// The stat cache's digests against independent ones (sha256sum, xxh64 of the whole file
// in one call) for sizes around its read slots, for files hashed at the same time, and
// with progress that ends at the file's size.
import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { execFile as execFileCallback } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import xxhash from 'xxhash-wasm';
import { bytesHasher, StatCache } from '../src/hasher.ts';

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
    t.true(progress.every(([done], i) => i === 0 || done >= progress[i - 1]![0]), 'progress never goes backwards');
    // xxh64 alone (no SHA-256 thread) gives the same xxh64, and so does the bytes hasher
    // (config-cache.ts keys a compilation by either, as the file was found).
    t.is((await (await StatCache.open()).hash(path)).xxh, want.xxh);
    t.is((await bytesHasher())(await readFile(path)), want.xxh);
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
