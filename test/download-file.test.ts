// DownloadFile against a model: whatever the piece sizes, the chunking, the order in which
// pieces' chunks interleave, the write-buffer size, the prefix an earlier run left on disk
// and the pieces that start over, the file ends as the image, the one-pass digest is
// the image's SHA-256, and no more than two write buffers a piece were ever allocated. Seeded: a failure prints the seed (DOWNLOAD_FILE_SEED replays it).
import test from 'ava';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as yieldToIo } from 'node:timers/promises';
import { DownloadFile } from '../tasks/store/download-file.ts';

const seed = Number(process.env.DOWNLOAD_FILE_SEED ?? Date.now() % 2 ** 31);
const runs = Number(process.env.DOWNLOAD_FILE_RUNS ?? 60);

interface Plan {
  readonly sizes: number[];
  readonly bufferBytes: number;
  /** Per piece: fraction of it already on disk from an earlier run (undefined: a fresh download). */
  readonly resumed: number[] | undefined;
  /** Per piece: chunk lengths to cycle through. */
  readonly chunks: number[][];
  /** Per piece: yields to the event loop between chunks (cycled), so pieces interleave differently. */
  readonly yields: number[][];
  /** Per piece: after how many chunks it starts over from byte 0 (once), if at all. */
  readonly restartAfter: Array<number | undefined>;
}

const plans: fc.Arbitrary<Plan> = fc.integer({ min: 1, max: 4 }).chain((count) =>
  fc.record({
    sizes: fc.array(fc.integer({ min: 0, max: 6000 }), { minLength: count, maxLength: count }),
    bufferBytes: fc.integer({ min: 1, max: 2048 }),
    resumed: fc.option(fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: count, maxLength: count }), { nil: undefined }),
    chunks: fc.array(fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 5 }), { minLength: count, maxLength: count }),
    yields: fc.array(fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 5 }), { minLength: count, maxLength: count }),
    restartAfter: fc.array(fc.option(fc.integer({ min: 0, max: 6 }), { nil: undefined }), { minLength: count, maxLength: count }),
  }),
);

async function check(plan: Plan, dir: string): Promise<void> {
  const total = plan.sizes.reduce((sum, size) => sum + size, 0);
  const image = Buffer.alloc(total);
  for (let index = 0; index < total; index++) image[index] = (index * 131 + (index >> 8) * 7) & 0xff;
  const starts = plan.sizes.map((_, index) => plan.sizes.slice(0, index).reduce((sum, size) => sum + size, 0));
  const path = join(dir, `image-${Math.random().toString(36).slice(2)}`);
  const written = plan.resumed?.map((fraction, index) => Math.floor(fraction * plan.sizes[index]!));
  if (written) {
    // What an earlier run left: each piece's prefix, and garbage after it.
    const handle = await open(path, 'w');
    await handle.write(Buffer.alloc(total, 0xee), 0, total, 0);
    for (const [index, bytes] of written.entries()) await handle.write(image, starts[index]!, bytes, starts[index]!);
    await handle.close();
  }
  const file = await DownloadFile.open(path, plan.sizes, written, plan.bufferBytes);
  try {
    await Promise.all(
      plan.sizes.map(async (size, index) => {
        let offset = file.written[index]!;
        let restartAfter = plan.restartAfter[index];
        for (let step = 0; offset < size; step++) {
          for (let pause = plan.yields[index]![step % plan.yields[index]!.length]!; pause > 0; pause--) await yieldToIo();
          if (restartAfter !== undefined && step === restartAfter) {
            restartAfter = undefined;
            file.restart(index);
            offset = 0;
            continue;
          }
          const length = Math.min(plan.chunks[index]![step % plan.chunks[index]!.length]!, size - offset);
          const start = starts[index]! + offset;
          // A copy the test then scribbles over once accepted: the file must have taken its own copy.
          const chunk = Buffer.from(image.subarray(start, start + length));
          await file.accept(index, chunk, offset);
          chunk.fill(0x55);
          offset += length;
        }
        await file.finish(index);
      }),
    );
    const digest = await file.digest();
    await file.close();
    const expected = createHash('sha256').update(image).digest('hex');
    if (digest !== expected) throw new Error(`digest ${digest}, expected ${expected}`);
    if (!(await readFile(path)).equals(image)) throw new Error('the file differs from the image');
    // Buffers go back for reuse when their write lands: dropping one is garbage the size of a write.
    if (file.writeBuffers > 2 * plan.sizes.length) throw new Error(`${file.writeBuffers} write buffers for ${plan.sizes.length} piece(s); at most two a piece`);
  } finally {
    await file.close().catch(() => {});
    await rm(path, { force: true });
  }
}

test('the file ends as the image and the one-pass digest is its SHA-256, however the pieces arrive', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-download-file-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  t.log(`seed ${seed} (replay: DOWNLOAD_FILE_SEED=${seed}), ${runs} runs`);
  await fc.assert(
    fc.asyncProperty(plans, (plan) => check(plan, dir)),
    { seed, numRuns: runs },
  );
  t.pass();
});

test('a write that fails is reported by the next call, and a flush keeps what was written', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-download-file-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'image');
  const file = await DownloadFile.open(path, [10, 10], undefined, 4);
  await file.accept(0, Buffer.from('abcdef'), 0);
  await file.flush();
  t.deepEqual(file.written, [6, 0], 'a flush writes what was taken, so a resume starts after it');
  await file.close();
  t.is((await readFile(path)).subarray(0, 6).toString(), 'abcdef');
  // Closed underneath: the next write fails, and every later call says so.
  await t.throwsAsync(async () => {
    await file.accept(1, Buffer.from('0123456789'), 0);
    await file.finish(1);
  });
  await t.throwsAsync(file.digest());
});
