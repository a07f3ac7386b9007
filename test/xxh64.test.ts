// The hasher's streaming xxh64 (src/xxh64.wat), which hashes large files where their bytes
// land in its ring, against xxhash-wasm's one-shot h64: the same digest for any bytes, however
// they are split into pieces. Seeded: a failure prints the seed (XXH64_SEED replays it).
import test from 'ava';
import fc from 'fast-check';
import xxhash from 'xxhash-wasm';
import { RingMemory } from '../src/ring-memory.ts';
import { seededBytes, seededRandom } from './support/seeded-bytes.ts';

const seed = Number(process.env.XXH64_SEED ?? Date.now() % 2 ** 31);
const MAX_BYTES = 70_000;

test('the streaming xxh64 equals xxhash-wasm for every input and every split into pieces', async (t) => {
  t.log(`seed ${seed} (replay: XXH64_SEED=${seed})`);
  const { h64Raw } = await xxhash();
  fc.assert(
    fc.property(
      // A salt and a length rather than fc.uint8Array, whose arrays stay a few bytes long;
      // lengths near the 32-byte stripes and pieces shorter than one, as well as long ones.
      fc.integer(),
      fc.oneof(fc.nat({ max: 100 }), fc.nat({ max: MAX_BYTES })),
      fc.array(fc.oneof(fc.nat({ max: 40 }), fc.nat({ max: MAX_BYTES })), { maxLength: 20 }),
      (salt, size, splits) => {
        const bytes = seededBytes(size, seededRandom(salt));
        const stream = new RingMemory(1, MAX_BYTES);
        stream.slots[0]!.set(bytes);
        let at = 0;
        for (const split of [...splits.map((cut) => Math.min(cut, size)), size].sort((a, b) => a - b)) {
          stream.xxh64Update(stream.offsets[0]! + at, split - at);
          at = split;
        }
        return stream.xxh64() === h64Raw(bytes);
      },
    ),
    { seed, numRuns: Number(process.env.XXH64_RUNS ?? 300) },
  );
  t.pass();
});

test('the digest leaves the stream as it was: more bytes continue it', async (t) => {
  const { h64Raw } = await xxhash();
  const bytes = seededBytes(1000, seededRandom(1));
  const stream = new RingMemory(1, bytes.length);
  stream.slots[0]!.set(bytes);
  stream.xxh64Update(stream.offsets[0]!, 37);
  t.is(stream.xxh64(), h64Raw(bytes.subarray(0, 37)));
  stream.xxh64Update(stream.offsets[0]! + 37, bytes.length - 37);
  t.is(stream.xxh64(), h64Raw(bytes));
  t.is(new RingMemory(1, 1).xxh64(), h64Raw(new Uint8Array(0)));
});
