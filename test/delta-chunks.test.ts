// The chunk index's parts: the gear chunker cuts a stream the same way whatever pieces
// its bytes arrive in, within its size bounds, and hashes each chunk as xxhash-wasm does;
// an index reads back as written and one that lies about its shape is refused in one
// line; the planner's range arithmetic. Seeded: a failure prints the seed (DELTA_CHUNKS_SEED replays it).
import test from 'ava';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import xxhash from 'xxhash-wasm';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StatCache } from '../src/index.ts';
import { RingMemory } from '../src/ring-memory.ts';
import {
  ChunkIndexBuilder,
  chunkOffset,
  DEFAULT_CHUNKING,
  decodeChunkIndex,
  loadSegmentRecords,
  readChunkIndexHead,
  recordSpan,
  segmentByteRange,
  segmentChunkRange,
  segmentCount,
  segmentDigester,
} from '../tasks/store/delta/chunk-index.ts';
import { ChunkTable } from '../tasks/store/delta/chunk-table.ts';
import { type FirstScan, firstScan, scanSeeds } from '../tasks/store/delta/seed-scan.ts';
import { neverAborted } from './support/signals.ts';
import { ChunkHasher, GearChunker, gearTable, type ChunkingParams } from '../tasks/store/delta/gear-chunker.ts';
import { addRange, splitIntoRequests, subtract, type ByteRange } from '../tasks/store/delta/plan.ts';
import { seededBytes, seededRandom } from './support/seeded-bytes.ts';

const seed = Number(process.env.DELTA_CHUNKS_SEED ?? Date.now() % 2 ** 31);
const SMALL: ChunkingParams = { minSize: 64, avgSize: 256, maxSize: 1024, normalization: 2, gearSeed: 7 };

interface Chunk {
  offset: number;
  length: number;
  hash: bigint;
}

function chunksOf(bytes: Uint8Array, splits: readonly number[], params = SMALL): Chunk[] {
  const chunker = new GearChunker(params);
  const chunks: Chunk[] = [];
  const each = (offset: number, length: number, high: number, low: number) => {
    chunks.push({ offset, length, hash: (BigInt(high) << 32n) | BigInt(low) });
  };
  let at = 0;
  for (const split of [...splits].sort((a, b) => a - b)) {
    const to = Math.min(bytes.length, split);
    if (to > at) chunker.push(bytes.subarray(at, to), each);
    at = Math.max(at, to);
  }
  chunker.push(bytes.subarray(at), each);
  chunker.end(each);
  return chunks;
}

test('chunks are the same however the bytes arrive, within the size bounds, each hashed with XXH64', async (t) => {
  t.log(`seed ${seed} (replay: DELTA_CHUNKS_SEED=${seed})`);
  const { h64Raw } = await xxhash();
  fc.assert(
    fc.property(
      // A salt and a length rather than fc.uint8Array, whose arrays stay a few bytes long.
      fc.integer(),
      fc.nat({ max: 20_000 }),
      fc.array(fc.nat({ max: 20_000 }), { maxLength: 12 }),
      fc.boolean(),
      (salt, size, splits, repetitive) => {
        const random = seededBytes(size, seededRandom(salt));
        // Repetitive content (no cut point for long stretches) exercises the maximum size.
        const bytes = repetitive ? random.map((byte, index) => (index % 3 === 0 ? byte : 0)) : random;
        const whole = chunksOf(bytes, []);
        const split = chunksOf(bytes, splits);
        if (
          JSON.stringify(whole, (_, value) => (typeof value === 'bigint' ? value.toString() : value)) !==
          JSON.stringify(split, (_, value) => (typeof value === 'bigint' ? value.toString() : value))
        )
          return false;
        let at = 0;
        for (const [index, chunk] of whole.entries()) {
          if (chunk.offset !== at) return false;
          if (chunk.length > SMALL.maxSize) return false;
          if (chunk.length < SMALL.minSize && index !== whole.length - 1) return false;
          if (chunk.hash !== h64Raw(bytes.subarray(chunk.offset, chunk.offset + chunk.length))) return false;
          at += chunk.length;
        }
        return at === bytes.length;
      },
    ),
    { seed, numRuns: Number(process.env.DELTA_CHUNKS_RUNS ?? 150) },
  );
  t.pass();
});

/**
 * The chunks of `bytes` scanned in place, as the hasher's ring hands them over: each piece
 * read into the next of two slots of a shared memory, with the chunker's own bytes before
 * them and its gap before each slot. After each piece its slot and gap are overwritten, as
 * the next read into the slot would.
 */
function chunksInPlace(bytes: Uint8Array, splits: readonly number[], params = SMALL, scribble = 0x5a): Chunk[] {
  const cuts = [...new Set([...splits.map((split) => Math.min(split, bytes.length)), bytes.length])].sort((a, b) => a - b);
  const largest = Math.max(1, ...cuts.map((cut, index) => cut - (cuts[index - 1] ?? 0)));
  const ownBytes = GearChunker.ownBytes(params);
  const ring = new RingMemory(2, largest, { ownBytes, gapBytes: params.maxSize, attach: () => {}, updateAt: () => {} });
  const chunker = new GearChunker(params, ring.memory);
  const memory = new Uint8Array(ring.memory.buffer);
  const chunks: Chunk[] = [];
  const each = (offset: number, length: number, high: number, low: number) => {
    chunks.push({ offset, length, hash: (BigInt(high) << 32n) | BigInt(low) });
  };
  let at = 0;
  for (const [index, cut] of cuts.entries()) {
    const offset = ring.offsets[index % 2]!;
    memory.set(bytes.subarray(at, cut), offset);
    chunker.pushAt(offset, cut - at, each);
    memory.fill(scribble, offset - params.maxSize, offset + largest);
    at = cut;
  }
  chunker.end(each);
  return chunks;
}

test('a chunk hasher hashes bytes where they lie as xxhash-wasm does, at any place and length, and refuses bytes outside it', async (t) => {
  t.log(`seed ${seed} (replay: DELTA_CHUNKS_SEED=${seed})`);
  const { h64Raw } = await xxhash();
  const hasher = new ChunkHasher(5000);
  fc.assert(
    fc.property(fc.integer(), fc.nat({ max: 5000 }), fc.nat({ max: 5000 }), (salt, start, length) => {
      fc.pre(start + length <= 5000);
      seededBytes(5000, seededRandom(salt)).copy(hasher.bytes);
      hasher.hash(start, length);
      return ((BigInt(hasher.high) << 32n) | BigInt(hasher.low)) === h64Raw(hasher.bytes.subarray(start, start + length));
    }),
    { seed, numRuns: Number(process.env.DELTA_CHUNKS_RUNS ?? 150) },
  );
  t.throws(() => hasher.hash(4990, 11), { instanceOf: RangeError });
  t.throws(() => hasher.hash(-1, 2), { instanceOf: RangeError });
});

test('chunks scanned in place in a shared memory are the ones pushed bytes give', (t) => {
  t.log(`seed ${seed} (replay: DELTA_CHUNKS_SEED=${seed})`);
  const paramSets: ChunkingParams[] = [SMALL, { minSize: 1, avgSize: 64, maxSize: 100, normalization: 0, gearSeed: 3 }];
  const text = (chunks: Chunk[]) => JSON.stringify(chunks, (_, value) => (typeof value === 'bigint' ? value.toString() : value));
  fc.assert(
    fc.property(
      fc.integer(),
      fc.nat({ max: 20_000 }),
      fc.array(fc.oneof(fc.nat({ max: 20_000 }), fc.nat({ max: 300 })), { maxLength: 12 }),
      fc.array(fc.nat({ max: 20_000 }), { maxLength: 12 }),
      fc.constantFrom(...paramSets),
      fc.boolean(),
      (salt, size, pieces, otherPieces, params, repetitive) => {
        const random = seededBytes(size, seededRandom(salt));
        const bytes = repetitive ? random.map((byte, index) => (index % 3 === 0 ? byte : 0)) : random;
        const pushed = text(chunksOf(bytes, otherPieces, params));
        return text(chunksInPlace(bytes, pieces, params)) === pushed && text(chunksInPlace(bytes, pieces, params, 0)) === pushed;
      },
    ),
    { seed, numRuns: Number(process.env.DELTA_CHUNKS_RUNS ?? 150) },
  );
  t.pass();
});

test("an index made in the hasher's read of a large file, in place, is the one its bytes pushed make", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-delta-chunks-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const size of [4 * 1024 * 1024 + 1, 9 * 1024 * 1024 + 12_345]) {
    const bytes = seededBytes(size, seededRandom(seed + size));
    const path = join(dir, `image-${size}`);
    await writeFile(path, bytes);
    const inRead = new ChunkIndexBuilder();
    const digest = await (await StatCache.open()).hash(path, { sha256: true, observe: inRead });
    const pushed = new ChunkIndexBuilder();
    pushed.update(bytes);
    const index = Buffer.from(await inRead.finish(digest.sha256!));
    t.true(index.equals(await pushed.finish(digest.sha256!)), `index of ${size} bytes`);
    t.deepEqual(decodeChunkIndex(index, path).params, DEFAULT_CHUNKING);
  }
});

/**
 * The cut points as FastCDC states them, one byte at a time in plain JavaScript (the
 * 64-bit gear hash as two 32-bit halves): what the WebAssembly scan, which takes two bytes
 * a step, must agree with. The whole stream at once; the property above covers pieces.
 */
function referenceCuts(bytes: Uint8Array, params: ChunkingParams): number[] {
  const table = gearTable(params.gearSeed);
  const high = Uint32Array.from(table, (value) => Number(value >> 32n));
  const low = Uint32Array.from(table, (value) => Number(value & 0xffffffffn));
  const spread = (bits: number): [number, number] => {
    let mask = 0n;
    for (let index = 0; index < bits; index++) mask |= 1n << BigInt(63 - Math.floor((index * 48) / bits));
    return [Number(mask >> 32n), Number(mask & 0xffffffffn)];
  };
  const bits = Math.log2(params.avgSize);
  const strict = spread(bits + params.normalization);
  const loose = spread(Math.max(1, bits - params.normalization));
  const lengths: number[] = [];
  for (let start = 0; start < bytes.length; ) {
    const remaining = bytes.length - start;
    let length = remaining;
    if (remaining > params.minSize) {
      const end = Math.min(params.maxSize, remaining);
      const norm = Math.min(params.avgSize, end);
      length = end;
      let hashHigh = 0;
      let hashLow = 0;
      for (let at = params.minSize; at < end; at++) {
        const byte = bytes[start + at]!;
        hashHigh = ((hashHigh << 1) | (hashLow >>> 31)) >>> 0;
        hashLow = ((hashLow << 1) >>> 0) + low[byte]!;
        if (hashLow > 0xffffffff) {
          hashLow -= 2 ** 32;
          hashHigh = (hashHigh + 1) >>> 0;
        }
        hashHigh = (hashHigh + high[byte]!) >>> 0;
        const [maskHigh, maskLow] = at < norm ? strict : loose;
        if ((hashHigh & maskHigh) === 0 && (hashLow & maskLow) === 0) {
          length = at + 1;
          break;
        }
      }
    }
    lengths.push(length);
    start += length;
  }
  return lengths;
}

test('the scan cuts where one byte at a time by the definition would', (t) => {
  t.log(`seed ${seed} (replay: DELTA_CHUNKS_SEED=${seed})`);
  const paramSets: ChunkingParams[] = [
    SMALL,
    { minSize: 1, avgSize: 64, maxSize: 100, normalization: 0, gearSeed: 3 },
    { minSize: 63, avgSize: 128, maxSize: 129, normalization: 1, gearSeed: 11 },
    { minSize: 1024, avgSize: 2048, maxSize: 4096, normalization: 2, gearSeed: 0x5eed },
  ];
  fc.assert(
    // A salt and a length rather than fc.uint8Array, whose arrays stay a few bytes long.
    fc.property(fc.integer(), fc.nat({ max: 30_000 }), fc.constantFrom(...paramSets), fc.nat({ max: 4 }), (salt, size, params, zeroEvery) => {
      const random = seededBytes(size, seededRandom(salt));
      // Runs of zeros (few cut points) as well as random bytes.
      const bytes = zeroEvery > 1 ? random.map((byte, index) => (index % zeroEvery === 0 ? byte : 0)) : random;
      const lengths = chunksOf(bytes, [], params).map((chunk) => chunk.length);
      return JSON.stringify(lengths) === JSON.stringify(referenceCuts(bytes, params));
    }),
    { seed, numRuns: Number(process.env.DELTA_CHUNKS_RUNS ?? 150) },
  );
  t.pass();
});

test('an edit moves only the chunks around it', (t) => {
  t.log(`seed ${seed} (replay: DELTA_CHUNKS_SEED=${seed})`);
  const params: ChunkingParams = { minSize: 256, avgSize: 1024, maxSize: 8192, normalization: 2, gearSeed: 1 };
  const key = (bytes: Uint8Array, chunk: Chunk) => `${chunk.hash}:${chunk.length}:${bytes[chunk.offset]}`;
  fc.assert(
    fc.property(fc.integer(), fc.nat({ max: 256 * 1024 }), fc.integer({ min: 1, max: 2000 }), (salt, at, size) => {
      const random = seededRandom(salt);
      const before = seededBytes(256 * 1024, random);
      const after = Buffer.concat([before.subarray(0, at), seededBytes(size, random), before.subarray(at)]);
      const oldChunks = chunksOf(before, [], params);
      const newChunks = chunksOf(after, [], params);
      // Cuts depend only on the bytes before them: every chunk that ends by the insert is the same
      // (but the old last one, which the end of the file cut).
      const prefix = oldChunks.slice(0, -1).filter((chunk) => chunk.offset + chunk.length <= at);
      const text = (chunks: Chunk[]) => JSON.stringify(chunks, (_, value) => (typeof value === 'bigint' ? value.toString() : value));
      if (text(newChunks.slice(0, prefix.length)) !== text(prefix)) return false;
      // After it the cuts fall back into step within a few chunks (how many varies: a chunk's minimum
      // size can skip over the old cut; up to 18 chunks, 21 KB, in 3,000 random inserts of 333 bytes).
      const old = new Set(oldChunks.map((chunk) => key(before, chunk)));
      const fresh = newChunks.filter((chunk) => !old.has(key(after, chunk)));
      return fresh.reduce((sum, chunk) => sum + chunk.length, 0) < size + 5 * params.maxSize;
    }),
    { seed, numRuns: Number(process.env.DELTA_CHUNKS_RUNS ?? 150) / 5 },
  );
  t.pass();
});

test('an index reads back as it was written', async (t) => {
  const bytes = randomBytes(300_000);
  const builder = new ChunkIndexBuilder(SMALL);
  builder.update(bytes.subarray(0, 12_345));
  builder.update(bytes.subarray(12_345));
  const encoded = await builder.finish('ab'.repeat(32));
  const index = decodeChunkIndex(encoded, 'test.chunks');
  const expected = chunksOf(bytes, []);
  t.is(index.count, expected.length);
  t.is(index.size, bytes.length);
  t.is(index.sha256, 'ab'.repeat(32));
  t.deepEqual(index.params, SMALL);
  for (const [chunk, { offset, length, hash }] of expected.entries()) {
    t.is(chunkOffset(index, chunk), offset);
    t.is(index.lengths[chunk], length);
    // The index keeps the hash's first five bytes.
    t.is(index.hashHigh[chunk], Number(hash >> 32n));
    t.is(index.hashLow[chunk], Number((hash >> 24n) & 0xffn));
  }
  // The segment digests cover the whole hashes.
  const digest = await segmentDigester();
  for (let segment = 0; segment * index.segmentChunks < index.count; segment++) {
    const hashes = expected
      .slice(segment * index.segmentChunks, (segment + 1) * index.segmentChunks)
      .flatMap(({ hash }) => [Number(hash >> 32n), Number(hash & 0xffffffffn)]);
    t.deepEqual(digest(Uint32Array.from(hashes)), [index.segmentHigh[segment], index.segmentLow[segment]]);
  }
  // About seven bytes a chunk, and a digest and size per segment.
  t.true(encoded.length < 300 + index.count * 7.4, `${encoded.length} bytes for ${index.count} chunks`);
});

test("an index's head is read first, and any segment's records load into it as the whole index has them", async (t) => {
  const bytes = randomBytes(4_000_000);
  const builder = new ChunkIndexBuilder(SMALL);
  builder.update(bytes);
  const encoded = Buffer.from(await builder.finish('ef'.repeat(32)));
  const whole = decodeChunkIndex(encoded, 'test.chunks');
  const reads: Array<[number, number]> = [];
  const read = async (from: number, to: number) => {
    reads.push([from, to]);
    return encoded.subarray(from, Math.min(to, encoded.length));
  };
  const head = (await readChunkIndexHead(read, 'test.chunks'))!;
  // The header first, then exactly the rest of the segment table.
  t.deepEqual(reads, [
    [0, 4096],
    [4096, head.recordsAt],
  ]);
  t.is(head.count, whole.count);
  t.deepEqual(head.segmentOffsets, whole.segmentOffsets);
  t.deepEqual([head.segmentHigh, head.segmentLow], [whole.segmentHigh, whole.segmentLow]);
  t.true(
    head.known.every((known) => known === 0),
    'no record came with the head',
  );
  // Records in any order, one segment or several at a time.
  const segments = segmentCount(head);
  for (const [first, end] of [
    [3, 5],
    [0, 3],
    [5, segments],
  ] as const) {
    const { from, to } = recordSpan(head, first, end);
    loadSegmentRecords(head, first, encoded.subarray(from, to), 'test.chunks');
  }
  t.true(head.known.every((known) => known === 1));
  t.deepEqual([head.lengths, head.hashHigh, head.hashLow], [whole.lengths, whole.hashHigh, whole.hashLow]);
  // A small index comes in one read, with the records it holds.
  const small = new ChunkIndexBuilder(SMALL);
  small.update(bytes.subarray(0, 5_000));
  const smallEncoded = Buffer.from(await small.finish('ef'.repeat(32)));
  const smallHead = (await readChunkIndexHead(async (from, to) => smallEncoded.subarray(from, to), 'small.chunks'))!;
  t.true(smallHead.known.every((known) => known === 1));
  t.deepEqual(smallHead.lengths, decodeChunkIndex(smallEncoded, 'small.chunks').lengths);
  t.is(await readChunkIndexHead(async () => undefined, 'none'), undefined, 'no index');
});

test("a segment's record that does not add up to its size is refused, naming the index", async (t) => {
  const builder = new ChunkIndexBuilder(SMALL);
  builder.update(randomBytes(100_000));
  const encoded = Buffer.from(await builder.finish('ef'.repeat(32)));
  const head = decodeChunkIndex(encoded, 'test.chunks');
  const { from, to } = recordSpan(head, 1, 2);
  const record = Buffer.from(encoded.subarray(from, to));
  record.writeUInt16LE(record.readUInt16LE(0) + 1, 0);
  t.throws(() => loadSegmentRecords(head, 1, record, 'e2e.qcow2.chunks'), {
    message: /^e2e\.qcow2\.chunks is not a usable chunk index \(the chunks of segment 1 add up to \d+ bytes, not \d+\)$/,
  });
  record.writeUInt16LE(SMALL.maxSize + 1, 0);
  t.throws(() => loadSegmentRecords(head, 1, record, 'e2e.qcow2.chunks'), { message: /chunk 32 is 1025 bytes, outside 1\.\.1024/ });
  t.throws(() => loadSegmentRecords(head, 1, record.subarray(0, 10), 'e2e.qcow2.chunks'), { message: /records of segment 1 are cut short/ });
});

test('the segments a seed holds whole are found by size and digest, at their place in the seed, and become known as the index has them', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-delta-chunks-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const random = seededRandom(seed);
  const image = seededBytes(3_000_000, random);
  const builder = new ChunkIndexBuilder();
  builder.update(image);
  const encoded = Buffer.from(await builder.finish('ab'.repeat(32)));
  const whole = decodeChunkIndex(encoded, 'img.chunks');
  // The seed: 5,000 other bytes, then the image with 100 bytes overwritten in its middle.
  const middle = 1_500_000;
  const seedBytes = Buffer.concat([seededBytes(5_000, random), image.subarray(0, middle), seededBytes(100, random), image.subarray(middle + 100)]);
  const seedPath = join(dir, 'seed');
  await writeFile(seedPath, seedBytes);
  const head = (await readChunkIndexHead(async (from, to) => encoded.subarray(from, Math.min(to, encoded.length)), 'img.chunks'))!;
  // The head's first read brought the first segments' records: those are known already, and looked for all the same.
  const known = head.known.reduce((sum, value) => sum + value, 0);
  t.true(known > 0 && known < 20, `${known} segments known from the head`);
  const { leftovers, ...first } = await firstScan(
    head,
    [
      { path: join(dir, 'missing'), role: 'gone' },
      { path: seedPath, role: 'old' },
    ],
    { signal: neverAborted() },
  );
  const matches = foundSegments(first);
  const segments = segmentCount(head);
  // All but the first (the seed's cuts fall into step only a few chunks into it, after the
  // seed's other bytes), the one with the changed bytes, and the last, shorter one.
  t.false(matches.some(({ segment }) => segment === 0));
  t.is(matches.length, segments - 3, `${matches.length} of ${segments} segments found, ${known} known before`);
  for (const { segment, seed: number, offset } of matches) {
    t.is(number, 1);
    const { start, end } = segmentByteRange(whole, segment);
    t.is(offset, start + 5_000, `segment ${segment} is where the seed holds it`);
    t.true(seedBytes.subarray(offset, offset + end - start).equals(image.subarray(start, end)));
    const chunks = segmentChunkRange(whole, segment);
    t.deepEqual(head.lengths.subarray(chunks.first, chunks.end), whole.lengths.subarray(chunks.first, chunks.end));
    t.deepEqual(head.hashHigh.subarray(chunks.first, chunks.end), whole.hashHigh.subarray(chunks.first, chunks.end));
    t.deepEqual(head.hashLow.subarray(chunks.first, chunks.end), whole.hashLow.subarray(chunks.first, chunks.end));
  }
  // The seed's chunks outside them are kept for the chunk table, in order: the 5,000 bytes, the changed segment, the first and last ones.
  t.is(leftovers[0], undefined, 'a seed that cannot be read is left to be read again');
  const kept = leftovers[1]!;
  const windows = matches.map(({ segment, offset }) => [offset, offset + segmentByteRange(whole, segment).end - segmentByteRange(whole, segment).start]);
  let keptBytes = 0;
  for (let chunk = 0; chunk < kept.count; chunk++) {
    const start = kept.offsets[chunk]!;
    t.false(
      windows.some(([from, to]) => start >= from! && start < to!),
      `kept chunk at ${start} is outside the segments found`,
    );
    if (chunk > 0) t.true(start > kept.offsets[chunk - 1]!);
    keptBytes += kept.lengths[chunk]!;
  }
  t.is(keptBytes + windows.reduce((sum, [from, to]) => sum + to! - from!, 0), seedBytes.length, 'every byte of the seed is in a segment found or a kept chunk');
  // The segment holding the changed bytes is not among them.
  t.false(matches.some(({ segment }) => segmentByteRange(whole, segment).start <= middle && segmentByteRange(whole, segment).end > middle));
});

test('a seed read again, chunked only between the segments found, gives the chunk table what the chunks kept from its first read give', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-delta-chunks-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const random = seededRandom(seed + 1);
  const image = seededBytes(2_000_000, random);
  const builder = new ChunkIndexBuilder();
  builder.update(image);
  const encoded = Buffer.from(await builder.finish('ab'.repeat(32)));
  // Two seeds: the image with bytes inserted and overwritten here and there, and a copy of its second half.
  const edited = Buffer.concat([
    image.subarray(0, 300_000),
    seededBytes(5_000, random),
    image.subarray(300_000, 900_000),
    seededBytes(70_000, random),
    image.subarray(970_000, 1_600_000),
    seededBytes(10, random),
    image.subarray(1_600_010),
  ]);
  const seeds = [
    { path: join(dir, 'edited'), role: 'old' },
    { path: join(dir, 'half'), role: 'another image' },
  ];
  await writeFile(seeds[0]!.path, edited);
  await writeFile(seeds[1]!.path, Buffer.concat([seededBytes(3_000, random), image.subarray(1_000_000)]));
  const locations = async (leftoverChunks?: number) => {
    const head = (await readChunkIndexHead(async (from, to) => encoded.subarray(from, Math.min(to, encoded.length)), 'img.chunks'))!;
    const first = await firstScan(head, seeds, { signal: neverAborted(), ...(leftoverChunks === undefined ? {} : { leftoverChunks }) });
    for (let segment = 0; segment < segmentCount(head); segment++) {
      if (head.known[segment]) continue;
      const { from, to } = recordSpan(head, segment, segment + 1);
      loadSegmentRecords(head, segment, encoded.subarray(from, to), 'img.chunks');
    }
    const table = new ChunkTable(head);
    const scanned = await scanSeeds(table, seeds, first, { signal: neverAborted() });
    return { first, found: scanned.map((one) => one.found), held: Array.from({ length: head.count }, (_, chunk) => table.locate(chunk)) };
  };
  const kept = await locations();
  t.true(foundSegments(kept.first).length >= 5 && kept.first.leftovers.every((chunks) => chunks !== undefined && chunks.count > 0));
  const again = await locations(0);
  t.true(
    again.first.leftovers.every((chunks) => chunks === undefined),
    'no budget: every seed is read again',
  );
  t.deepEqual(foundSegments(again.first), foundSegments(kept.first));
  t.deepEqual(again.found, kept.found);
  t.deepEqual(again.held, kept.held);
  // A budget that runs out within the second seed: the first keeps its chunks, the second is read again.
  const partial = await locations(kept.first.leftovers[0]!.count + 5);
  t.not(partial.first.leftovers[0], undefined);
  t.is(partial.first.leftovers[1], undefined);
  t.deepEqual(partial.held, kept.held);
});

test('an index that lies about its shape is refused, naming its source', async (t) => {
  const builder = new ChunkIndexBuilder(SMALL);
  builder.update(randomBytes(20_000));
  const good = Buffer.from(await builder.finish('cd'.repeat(32)));
  const headerLength = good.readUInt32LE(8);
  const header = JSON.parse(good.subarray(12, 12 + headerLength).toString());
  const withHeader = (change: (header: Record<string, unknown>) => void): Buffer => {
    const copy = structuredClone(header);
    change(copy);
    const text = Buffer.from(JSON.stringify(copy));
    const length = Buffer.alloc(4);
    length.writeUInt32LE(text.length);
    return Buffer.concat([good.subarray(0, 8), length, text, good.subarray(12 + headerLength)]);
  };
  const cases: Array<[string, Buffer, RegExp]> = [
    ['not an index', Buffer.from('hello world, not an index'), /no PLCHUNKS header/],
    ['cut short', good.subarray(0, good.length - 3), /bytes where its \d+ chunks take/],
    ['wrong size', withHeader((h) => (h.size = 20_001)), /segments add up to 20000 bytes, not 20001/],
    ['more chunks than bytes', withHeader((h) => (h.chunks = 1e9)), /1000000000 chunks cannot cut 20000 bytes/],
    ['an older format', withHeader((h) => (h.format = 1)), /format 1; this version reads format 2/],
    ['lengths of the wrong width', withHeader((h) => (h.lengthBytes = 4)), /4-byte lengths for chunks of up to 1024 bytes/],
    ['bad parameters', withHeader((h) => ((h.params as Record<string, number>).avgSize = 1000)), /power of two/],
    ['unknown method', withHeader((h) => (h.method = 'rabin')), /method/],
    ['header not JSON', Buffer.concat([good.subarray(0, 12), Buffer.from('{'.repeat(headerLength)), good.subarray(12 + headerLength)]), /not JSON/],
  ];
  for (const [what, bytes, message] of cases) {
    const error = t.throws(() => decodeChunkIndex(bytes, 'e2e.qcow2.chunks'), undefined, what);
    t.regex(error?.message ?? '', /^e2e\.qcow2\.chunks is not a usable chunk index \(/, what);
    t.regex(error?.message ?? '', message, what);
  }
});

test('range arithmetic: subtract, add, split at pieces and at the request size', (t) => {
  t.deepEqual(
    subtract(
      [
        { start: 0, end: 100 },
        { start: 200, end: 300 },
      ],
      [
        { start: 10, end: 20 },
        { start: 90, end: 210 },
        { start: 250, end: 260 },
      ],
    ),
    [
      { start: 0, end: 10 },
      { start: 20, end: 90 },
      { start: 210, end: 250 },
      { start: 260, end: 300 },
    ],
  );
  const ranges: ByteRange[] = [];
  addRange(ranges, 10, 20);
  addRange(ranges, 30, 40);
  addRange(ranges, 20, 30);
  addRange(ranges, 0, 5);
  t.deepEqual(ranges, [
    { start: 0, end: 5 },
    { start: 10, end: 40 },
  ]);
  // Pieces of 100, 100, 50; a range across both boundaries becomes one request per piece.
  t.deepEqual(splitIntoRequests([{ start: 90, end: 230 }], [100, 100, 50], 1000), [
    { piece: 0, from: 90, to: 100, target: 90 },
    { piece: 1, from: 0, to: 100, target: 100 },
    { piece: 2, from: 0, to: 30, target: 200 },
  ]);
  t.deepEqual(splitIntoRequests([{ start: 0, end: 25 }], [100], 10), [
    { piece: 0, from: 0, to: 10, target: 0 },
    { piece: 0, from: 10, to: 20, target: 10 },
    { piece: 0, from: 20, to: 25, target: 20 },
  ]);
});

/** The segments a first scan found whole: which seed holds each, and where. */
function foundSegments(first: Pick<FirstScan, 'segmentSeed' | 'segmentOffset'>): Array<{ segment: number; seed: number; offset: number }> {
  const found = [];
  for (let segment = 0; segment < first.segmentSeed.length; segment++)
    if (first.segmentSeed[segment]) found.push({ segment, seed: first.segmentSeed[segment]! - 1, offset: first.segmentOffset[segment]! });
  return found;
}
