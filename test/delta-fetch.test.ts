// Seeded fetches against the loopback GitHub server: the image is rebuilt byte for byte
// from a local seed and ranged reads, fetching no more than the chunks the seed lacks;
// a seed that changes during the fetch, an index that lies, and a fetch killed mid-way
// still end with the store's bytes. Seeded: DELTA_FETCH_SEED replays a failure.
import test from 'ava';
import fc from 'fast-check';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GearChunker } from '../tasks/store/delta/gear-chunker.ts';
import { DEFAULT_CHUNKING, decodeChunkIndex, recordSpan, segmentByteRange } from '../tasks/store/delta/chunk-index.ts';
import { type GetImageOptions, getImage } from '../tasks/store/get-image.ts';
import { chunkIndexOfBytes, type DeltaRelease, rangedRequests, releaseWithIndex, tempDir } from './support/delta-release.ts';
import { seededBytes, seededRandom } from './support/seeded-bytes.ts';
import { neverAborted } from './support/signals.ts';

const seed = Number(process.env.DELTA_FETCH_SEED ?? Date.now() % 2 ** 31);
const runs = Number(process.env.DELTA_FETCH_RUNS ?? 12);

/** Bytes of `after`'s chunks (distinct) that `before` does not have: what a seeded fetch must fetch at most. */
function missingChunkBytes(before: Uint8Array, after: Uint8Array): number {
  const keys = (bytes: Uint8Array): Map<string, number> => {
    const chunker = new GearChunker(DEFAULT_CHUNKING);
    const found = new Map<string, number>();
    const each = (_offset: number, length: number, high: number, low: number) => found.set(`${high}:${low}:${length}`, length);
    chunker.push(bytes, each);
    chunker.end(each);
    return found;
  };
  const old = keys(before);
  let missing = 0;
  for (const [key, length] of keys(after)) if (!old.has(key)) missing += length;
  return missing;
}

type Edit = { kind: 'insert' | 'delete' | 'overwrite'; at: number; size: number };

function applyEdits(bytes: Buffer, edits: readonly Edit[], random: () => number): Buffer {
  let out = bytes;
  for (const edit of edits) {
    const at = Math.floor(edit.at * out.length);
    const fresh = seededBytes(edit.size, random);
    if (edit.kind === 'insert') out = Buffer.concat([out.subarray(0, at), fresh, out.subarray(at)]);
    else if (edit.kind === 'delete') out = Buffer.concat([out.subarray(0, at), out.subarray(Math.min(out.length, at + edit.size))]);
    else out = Buffer.concat([out.subarray(0, at), fresh.subarray(0, out.length - at), out.subarray(Math.min(out.length, at + edit.size))]);
  }
  return out;
}

/** Fetches `img` from `release` into `{dir}/img.qcow2` with one seed, `{dir}/seed`, holding `seedBytes`; returns what getImage gave and the log's lines. */
async function fetchWithSeed(release: DeltaRelease, dir: string, seedBytes: Uint8Array, options: Partial<GetImageOptions> = {}) {
  const seedPath = join(dir, 'seed');
  await writeFile(seedPath, seedBytes);
  const path = join(dir, 'img.qcow2');
  const logs: string[] = [];
  const got = await getImage(release.store, 'img', {
    path,
    overwrite: false,
    signal: neverAborted(),
    seeds: [{ path: seedPath, role: 'old' }],
    log: (line) => logs.push(line),
    ...options,
  });
  return { got, path, logs };
}

test('a seeded fetch rebuilds the new file byte for byte and fetches no more than the chunks the seed lacks', async (t) => {
  t.log(`seed ${seed} (replay: DELTA_FETCH_SEED=${seed}), ${runs} runs`);
  const dir = await tempDir(t);
  const edits = fc.array(
    fc.record({
      kind: fc.constantFrom<Edit['kind']>('insert', 'delete', 'overwrite'),
      at: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
      size: fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 40_000 })),
    }),
    { minLength: 0, maxLength: 8 },
  );
  let round = 0;
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 400_000 }), edits, fc.integer(), async (size, list, salt) => {
      round++;
      // Every byte follows from the generated values, so the printed seed replays a failure exactly.
      const random = seededRandom(salt);
      const before = seededBytes(size, random);
      const after = applyEdits(before, list, random);
      if (after.length === 0) return true;
      const release = await releaseWithIndex(t, dir, after, { partSize: 96 * 1024 });
      try {
        const seedPath = join(dir, `seed-${round}`);
        await writeFile(seedPath, before);
        const path = join(dir, `got-${round}.qcow2`);
        // Ranged reads cost nothing here: small files, where they would otherwise outweigh the bytes saved.
        const got = await getImage(release.store, 'img', {
          path,
          overwrite: false,
          signal: neverAborted(),
          seeds: [{ path: seedPath, role: 'old' }],
          rangedReadCost: 0,
        });
        if (!(await readFile(path)).equals(after)) throw new Error('the fetched file differs from the image');
        const bound = missingChunkBytes(before, after);
        const reused = got.transfer.reused.reduce((sum, seed) => sum + seed.bytes, 0);
        if (reused > 0 && got.transfer.fetched > bound) throw new Error(`fetched ${got.transfer.fetched} bytes; the seed lacks chunks of ${bound} bytes`);
        if (got.transfer.fetched + reused !== after.length) throw new Error(`${got.transfer.fetched} fetched + ${reused} reused is not ${after.length}`);
        return true;
      } finally {
        await release.server.close();
      }
    }),
    { seed, numRuns: runs },
  );
  t.pass();
});

test('a seed that changes while the fetch copies from it still gives the image', async (t) => {
  const dir = await tempDir(t);
  const before = randomBytes(600_000);
  const after = Buffer.concat([before.subarray(0, 300_000), randomBytes(5000), before.subarray(300_000)]);
  const release = await releaseWithIndex(t, dir, after);
  // Where fetchWithSeed writes the seed.
  const seedPath = join(dir, 'seed');
  let scrambled = false;
  const { got, path, logs } = await fetchWithSeed(release, dir, before, {
    // The scan's last progress report: the seed is rewritten after it was read, before it is copied from.
    onProgress: (done, total) => {
      if (!scrambled && done === total && total === before.length) {
        scrambled = true;
        const bytes = Buffer.from(before);
        for (let at = 0; at < bytes.length; at += 50_000) bytes.fill(0x5a, at, at + 3000);
        writeFileSync(seedPath, bytes);
      }
    },
  });
  t.true(scrambled, 'the seed was changed during the fetch');
  t.deepEqual(await readFile(path), after);
  t.regex(logs.join('\n'), /changed in a seed while it was read; fetched instead/);
  t.true(got.transfer.reused.length > 0, 'what still matched was copied');
});

test("an index whose hashes are not the image's still gives the store's bytes", async (t) => {
  const dir = await tempDir(t);
  const image = randomBytes(500_000);
  const other = randomBytes(500_000);
  // An index of other bytes that claims the image's size and SHA-256, and a seed holding those other bytes.
  const { createHash } = await import('node:crypto');
  const sha256 = createHash('sha256').update(image).digest('hex');
  const release = await releaseWithIndex(t, dir, image, { index: await chunkIndexOfBytes(other, sha256) });
  const { got, path, logs } = await fetchWithSeed(release, dir, other);
  t.deepEqual(await readFile(path), image);
  t.regex(logs.join('\n'), /hashes to [0-9a-f]{64}, not [0-9a-f]{64}; downloading it whole/);
  t.deepEqual(got.transfer.reused, []);
  t.deepEqual((await readdir(dir)).sort(), ['img.qcow2', 'seed']);
});

test("a segment's record that lies, read after the head, is refused in one line and the image downloads whole", async (t) => {
  const dir = await tempDir(t);
  const image = randomBytes(4_000_000);
  const { createHash } = await import('node:crypto');
  const sha256 = createHash('sha256').update(image).digest('hex');
  const index = Buffer.from(await chunkIndexOfBytes(image, sha256));
  const whole = decodeChunkIndex(index, 'img.chunks');
  // Segment 40's first length one more: its chunks no longer add up to its size.
  const { from } = recordSpan(whole, 40, 41);
  index.writeUInt16LE(index.readUInt16LE(from) + 1, from);
  const release = await releaseWithIndex(t, dir, image, { index });
  // The seed lacks segment 40's bytes, so its record is read.
  const { start, end } = segmentByteRange(whole, 40);
  const { got, path, logs } = await fetchWithSeed(release, dir, Buffer.concat([image.subarray(0, start), randomBytes(end - start), image.subarray(end)]));
  t.deepEqual(await readFile(path), image);
  t.true(
    logs.includes(
      `the chunk index of img is not a usable chunk index (the chunks of segment 40 add up to ${end - start + 1} bytes, not ${end - start}); downloading img whole`,
    ),
    logs.join('\n'),
  );
  t.deepEqual(got.transfer.reused, []);
  t.is(rangedRequests(release.server), 0);
  t.deepEqual((await readdir(dir)).sort(), ['img.qcow2', 'seed']);
});

test('chunks that occur twice in the image and in no seed are fetched once, then copied within the file', async (t) => {
  const dir = await tempDir(t);
  const random = seededRandom(seed);
  const [a, twice, c, d] = [seededBytes(200_000, random), seededBytes(200_000, random), seededBytes(200_000, random), seededBytes(100_000, random)];
  const image = Buffer.concat([a, twice, c, twice, d]);
  const release = await releaseWithIndex(t, dir, image);
  const seedBytes = Buffer.concat([a, c, d]);
  const { got, path } = await fetchWithSeed(release, dir, seedBytes, { rangedReadCost: 0 });
  t.deepEqual(await readFile(path), image);
  // The repeated bytes once, and no more than the distinct chunks the seed lacks: not twice.
  const bound = missingChunkBytes(seedBytes, image);
  t.true(
    got.transfer.fetched >= twice.length && got.transfer.fetched <= bound && got.transfer.fetched < 1.5 * twice.length,
    `fetched ${got.transfer.fetched}, bound ${bound}`,
  );
});

test('with no seed holding any of it, the image downloads whole with no ranged reads', async (t) => {
  const dir = await tempDir(t);
  const image = randomBytes(300_000);
  const release = await releaseWithIndex(t, dir, image);
  const seedPath = join(dir, 'seed');
  await writeFile(seedPath, randomBytes(200_000));
  const unrelatedPath = join(dir, 'unrelated');
  await writeFile(unrelatedPath, randomBytes(6 * 1024 * 1024));
  const path = join(dir, 'img.qcow2');
  const logs: string[] = [];
  const got = await getImage(release.store, 'img', {
    path,
    overwrite: false,
    signal: neverAborted(),
    seeds: [
      { path: seedPath, role: 'old' },
      { path: unrelatedPath, role: 'another image' },
    ],
    log: (line) => logs.push(line),
  });
  t.deepEqual(await readFile(path), image);
  t.is(got.transfer.fetched, image.length);
  t.is(rangedRequests(release.server), 0);
  // A large seed is given up once its first MiBs hold nothing: not read whole before the download.
  t.true(logs.includes(`seed ${unrelatedPath} holds none of the image in its first 4 MiB; not read further`), logs.join('\n'));
});

test('a seed that holds too little to be worth its ranged reads: the image downloads whole, and the log says why', async (t) => {
  const dir = await tempDir(t);
  const image = randomBytes(1_000_000);
  const release = await releaseWithIndex(t, dir, image);
  const cases: Array<[string, Buffer]> = [
    // A twentieth of the image: nine tenths would still be fetched.
    ['little of it', Buffer.concat([image.subarray(0, 50_000), randomBytes(400_000)])],
    // Half of it, in 40 pieces between changes: 40 ranged reads at 64 KiB each weigh more than the half saved.
    [
      'half of it, in many pieces',
      Buffer.concat(Array.from({ length: 40 }, (_, at) => [image.subarray(at * 25_000, at * 25_000 + 12_500), randomBytes(12_500)]).flat()),
    ],
  ];
  for (const [what, seedBytes] of cases) {
    const rangedBefore = rangedRequests(release.server);
    const { got, path, logs } = await fetchWithSeed(release, dir, seedBytes, { overwrite: true });
    t.deepEqual(await readFile(path), image, what);
    t.is(got.transfer.fetched, image.length, what);
    t.deepEqual(got.transfer.reused, [], what);
    t.is(rangedRequests(release.server), rangedBefore, `${what}: no ranged reads`);
    t.regex(
      logs.join('\n'),
      /img: local copies hold \d+ of its 1000000 bytes; \d+ ranged reads would cost about as much as the whole download, so downloading it whole/,
      what,
    );
    await rm(path);
  }
});

test('ranged reads go straight to the storage URL a part first redirected to, with no token; an expired one is asked for again', async (t) => {
  const dir = await tempDir(t);
  const before = randomBytes(1_200_000);
  // A change every 20 KB: about 60 ranged reads of one part, eight at a time.
  const pieces: Buffer[] = [];
  for (let at = 0; at < before.length; at += 20_000) pieces.push(before.subarray(at, at + 17_500), randomBytes(2_500));
  const after = Buffer.concat(pieces);
  const release = await releaseWithIndex(t, dir, after, { partSize: 4 * 1024 * 1024 });
  const seedPath = join(dir, 'seed');
  await writeFile(seedPath, before);
  const apiReads = () => release.server.requests.filter((request) => request.method === 'GET' && /\/releases\/assets\/\d+$/.test(request.path));
  const assetReads = () => apiReads().filter((request) => request.range);
  const storageReads = () => release.server.requests.filter((request) => request.path.includes('/storage/') && request.range);

  // One ranged read at a time per transfer, every read worth its cost: the seed is used.
  const fetchTo = async (name: string) => {
    const got = await getImage(release.store, 'img', {
      path: join(dir, name, 'img.qcow2'),
      overwrite: false,
      signal: neverAborted(),
      seeds: [{ path: seedPath, role: 'old' }],
      rangedReadCost: 0,
      concurrency: 1,
    });
    t.deepEqual(await readFile(join(dir, name, 'img.qcow2')), after);
    return got;
  };

  const first = await fetchTo('first');
  t.true(first.transfer.reused.length > 0);
  const ranged = storageReads();
  t.true(ranged.length > 40, `${ranged.length} ranged reads`);
  // The first reads run at once, so each may ask the API before one's redirect is known.
  t.true(assetReads().length <= 12, `${assetReads().length} API requests for ${ranged.length} ranged reads`);
  t.true(
    ranged.every((request) => request.authorization === undefined),
    'no token goes to storage',
  );

  // A storage URL that has expired (403, as signed storage answers then; the first read of
  // the second run, the chunk index's, meets it): the asset's own URL is asked again, and the
  // fetch completes.
  release.server.arm({ kind: 'status', path: '/storage/', status: 403 });
  const apiBefore = apiReads().length;
  const second = await fetchTo('second');
  t.true(apiReads().length > apiBefore, 'the API was asked again');
  t.is(second.transfer.fetched, first.transfer.fetched);
});

test('kill -9 in the middle of a seeded fetch: the next run resumes, skips what landed, and leaves no debris', async (t) => {
  const dir = await tempDir(t);
  const before = randomBytes(1_500_000);
  // Changes spread over the file: many ranges to fetch, some done before the kill.
  const pieces: Buffer[] = [];
  const changed: Array<{ start: number; end: number }> = [];
  for (let at = 0, offset = 0; at < before.length; at += 100_000) {
    const kept = before.subarray(at, at + 90_000);
    changed.push({ start: offset + kept.length, end: offset + kept.length + 12_000 });
    pieces.push(kept, randomBytes(12_000));
    offset += kept.length + 12_000;
  }
  const after = Buffer.concat(pieces);
  const release = await releaseWithIndex(t, dir, after, { partSize: 512 * 1024 });
  const seedPath = join(dir, 'seed');
  await writeFile(seedPath, before);

  // What the same fetch moves when nothing has landed yet: the resumed run must move less.
  // (Ranged reads cost nothing here: 15 of them would outweigh what the seed saves of 1.5 MB.)
  const fresh = await getImage(release.store, 'img', {
    path: join(dir, 'fresh', 'img.qcow2'),
    overwrite: false,
    signal: neverAborted(),
    seeds: [{ path: seedPath, role: 'old' }],
    rangedReadCost: 0,
  });
  await rm(join(dir, 'fresh'), { recursive: true });
  const freshRanged = rangedRequests(release.server);

  // The child's first ranged reads trickle (so the state is saved while they land, at most once a
  // second); every later one is held until the kill, so the child cannot finish whatever the machine's load.
  const passed = 6;
  t.true(freshRanged > passed, `the fetch takes ${freshRanged} ranged reads, more than the ${passed} let through`);
  let ranged = 0;
  const held: Array<() => void> = [];
  release.server.hook = ({ seq, path }) => {
    if (!path.includes('/storage/') || release.server.requests[seq]?.range === undefined) return 'handle';
    if (++ranged <= passed) return 'handle';
    return new Promise((resolve) => held.push(() => resolve('drop')));
  };
  for (let index = 0; index < passed; index++) release.server.arm({ kind: 'slow', path: '/storage/', delayMs: 100, chunkBytes: 1024 });
  const path = join(dir, 'img.qcow2');
  const child = spawn(
    process.execPath,
    [
      '--import=tsx',
      join(import.meta.dirname, 'support', 'delta-fetch-child.ts'),
      JSON.stringify({ env: release.env, path, seed: seedPath, rangedReadCost: 0 }),
    ],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const statePath = join(dir, '.img.qcow2.partial.delta.json');
  const deadline = Date.now() + 60_000;
  // Killed once the saved state holds some fetched bytes (a changed region is in place).
  for (;;) {
    if (Date.now() > deadline) throw new Error(`no fetched range was saved within 60 s; child output:\n${output}`);
    const state = await readFile(statePath, 'utf8')
      .then((text) => JSON.parse(text) as { done: Array<{ start: number; end: number }> })
      .catch(() => undefined);
    const landed = (state?.done ?? []).some((range) => changed.some((region) => range.start < region.end && region.start < range.end));
    if (landed) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  t.false(output.includes('done'), 'the child was killed before it finished');
  release.server.hook = undefined;
  for (const letGo of held) letGo();

  const logs: string[] = [];
  const got = await getImage(release.store, 'img', {
    path,
    overwrite: false,
    signal: neverAborted(),
    seeds: [{ path: seedPath, role: 'old' }],
    log: (line) => logs.push(line),
    rangedReadCost: 0,
  });
  t.deepEqual(await readFile(path), after);
  t.regex(logs.join('\n'), /resuming a seeded fetch, \d+ of \d+ bytes already in place/);
  t.true(got.transfer.fetched < fresh.transfer.fetched, `the resumed run fetched ${got.transfer.fetched} bytes, a fresh one ${fresh.transfer.fetched}`);
  t.deepEqual((await readdir(dir)).sort(), ['img.qcow2', 'seed']);
});
