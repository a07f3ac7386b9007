// The seeded fetch's running SHA-256: however the file's first bytes come into place (in
// steps of any size, waiting or not between them), its digest is the whole file's, and it
// gives none while a byte is missing. Seeded: a failure prints the seed (PREFIX_HASH_SEED
// replays it).
import test from 'ava';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as turn } from 'node:timers/promises';
import { PrefixHash } from '../tasks/store/delta/prefix-hash.ts';
import { seededBytes, seededRandom } from './support/seeded-bytes.ts';

const seed = Number(process.env.PREFIX_HASH_SEED ?? Date.now() % 2 ** 31);
const runs = Number(process.env.PREFIX_HASH_RUNS ?? 25);

test("the digest is the whole file's whatever steps its bytes come into place in; none while a byte is missing", async (t) => {
  t.log(`seed ${seed} (replay: PREFIX_HASH_SEED=${seed})`);
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-prefix-hash-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  let file = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      // Up to 13 MiB: several of the hash's 4 MiB batches, and files shorter than one.
      fc.integer({ min: 1, max: 13 * 1024 * 1024 }),
      fc.array(fc.record({ share: fc.double({ min: 0, max: 0.6, noNaN: true }), wait: fc.boolean() }), { minLength: 1, maxLength: 12 }),
      fc.boolean(),
      async (salt, size, steps, leaveGap) => {
        const bytes = seededBytes(size, seededRandom(salt));
        const path = join(dir, `file-${file++}`);
        const fd = openSync(path, 'w+');
        try {
          const hash = new PrefixHash(fd, size);
          // Written in order, each step told to the hash once written, as the assembly does.
          const end = leaveGap ? size - 1 : size;
          let at = 0;
          for (const step of steps) {
            const next = Math.min(end, at + Math.ceil(step.share * size));
            writeSync(fd, bytes, at, next - at, at);
            at = next;
            hash.advance(at);
            if (step.wait) await turn();
          }
          writeSync(fd, bytes, at, end - at, at);
          hash.advance(end);
          const digest = await hash.digest();
          if (leaveGap) return digest === undefined;
          return digest === createHash('sha256').update(bytes).digest('hex');
        } finally {
          closeSync(fd);
        }
      },
    ),
    { seed, numRuns: runs },
  );
  t.pass();
});
