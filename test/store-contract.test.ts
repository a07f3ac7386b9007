// The store contract, in one process, against every backend (test/support/store-contract.ts):
// what is put is read back verified, whole or by byte range; attachments travel with their
// image and are verified against its record; `remove` touches nothing else.
import { createHash, randomBytes } from 'node:crypto';
import { readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import type { ImageStore, OpenedImage } from '../tasks/store/store.ts';
import { getImage } from '../tasks/store/get-image.ts';
import { readLocalImage } from '../tasks/store/local-image.ts';
import { openImageStore } from '../tasks/store/open.ts';
import { createImageFixture } from './support/github-server.ts';
import { neverAborted } from './support/signals.ts';
import { CONTRACT_BACKENDS, type ContractStore } from './support/store-contract.ts';

const LIMITS = { maxPieceSize: 4096, partSize: 3500 };
const TAG = 'latest';

async function setup(backend: (typeof CONTRACT_BACKENDS)[number]) {
  const running: ContractStore = await backend.start(LIMITS);
  const fixture = await createImageFixture(
    [
      { name: 'debian-12', size: 10_000 },
      { name: 'pve-9', size: 3_000 },
    ],
    { ...running.release, tag: TAG },
  );
  const store = await openImageStore(fixture.catalog.release, TAG, running.options);
  const put = async (name: string, attachments: Record<string, Uint8Array> = {}) =>
    store.put({ ...(await readLocalImage(fixture.catalog, name)), attachments }, { force: false, signal: neverAborted(), log: () => {} });
  return {
    running,
    fixture,
    store,
    put,
    cleanup: async () => {
      await running.close();
      await fixture.cleanup();
    },
  };
}

async function ready(store: ImageStore, name: string): Promise<Extract<OpenedImage, { status: 'ready' }>> {
  const opened = await store.open(name, neverAborted());
  if (opened.status !== 'ready') throw new Error(`${name} is ${opened.status}: ${opened.detail}`);
  return opened;
}

async function readRange(opened: Extract<OpenedImage, { status: 'ready' }>, piece: number, from: number, to: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await opened.pieces[piece]!.read({
    from,
    to,
    signal: neverAborted(),
    sink: (chunk) => void chunks.push(Buffer.from(chunk)),
    onRestart: () => {
      throw new Error('a bounded read restarted');
    },
  });
  return Buffer.concat(chunks);
}

for (const backend of CONTRACT_BACKENDS) {
  test(`${backend.name}: what is put reads back whole and by byte range, with its attachments verified`, async (t) => {
    const { fixture, store, put, cleanup } = await setup(backend);
    t.teardown(cleanup);
    const chunkIndex = randomBytes(1500);
    const provenance = Buffer.from('{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}');
    t.true((await put('debian-12', { 'chunk-index': chunkIndex, provenance })).uploaded);
    t.true((await put('pve-9')).uploaded);

    const bytes = await readFile(fixture.catalog.imagePath('debian-12'));
    const opened = await ready(store, 'debian-12');
    t.is(opened.sha256, createHash('sha256').update(bytes).digest('hex'));
    t.deepEqual(Buffer.from((await opened.readAttachment('chunk-index', neverAborted()))!), chunkIndex);
    t.deepEqual(Buffer.from((await opened.readAttachment('provenance', neverAborted()))!), provenance);
    t.is(await (await ready(store, 'pve-9')).readAttachment('provenance', neverAborted()), undefined, 'an image put without attachments has none');

    // Byte ranges of each piece, at its edges and inside it.
    let start = 0;
    for (const [index, piece] of opened.pieces.entries()) {
      for (const [from, to] of [
        [0, piece.size],
        [0, 1],
        [piece.size - 1, piece.size],
        [Math.floor(piece.size / 3), Math.floor((2 * piece.size) / 3)],
      ] as const) {
        t.deepEqual(await readRange(opened, index, from, to), bytes.subarray(start + from, start + to), `${piece.label} bytes ${from}-${to}`);
      }
      start += piece.size;
    }
    t.is(start, bytes.length, 'the pieces are the image');

    const got = await getImage(store, 'debian-12', { path: `${fixture.root}/host/debian-12.qcow2`, overwrite: false, signal: neverAborted() });
    t.deepEqual(await readFile(got.path), bytes);
  });

  test(`${backend.name}: byte ranges of an attachment read back exactly, clipped to its size`, async (t) => {
    const { store, put, cleanup } = await setup(backend);
    t.teardown(cleanup);
    const chunkIndex = randomBytes(1500);
    await put('debian-12', { 'chunk-index': chunkIndex });
    const opened = await ready(store, 'debian-12');
    const size = chunkIndex.length;
    for (const [from, to] of [
      [0, 64], // the start
      [0, size], // all of it
      [500, 501], // one byte inside
      [700, 1200], // a span inside
      [size - 100, size], // the end
      [size - 10, size + 4096], // past the end: clipped
      [size, size + 10], // at the end: empty
      [size + 5, size + 10], // beyond it: empty
      [300, 300], // an empty range
    ] as const) {
      const got = await opened.readAttachmentRange('chunk-index', from, to, neverAborted());
      t.deepEqual(Buffer.from(got!), chunkIndex.subarray(from, Math.min(to, size)), `bytes ${from}-${to}`);
    }
    t.is(await opened.readAttachmentRange('provenance', 0, 10, neverAborted()), undefined, 'a kind the record does not name');
  });

  test(`${backend.name}: an attachment gone from the store fails a ranged read as it fails a whole one`, async (t) => {
    const { running, store, put, cleanup } = await setup(backend);
    t.teardown(cleanup);
    await put('debian-12', { 'chunk-index': randomBytes(1500) });
    const opened = await ready(store, 'debian-12');
    await running.lose(TAG, opened.record!.attachments!['chunk-index']!.name);
    const whole = await t.throwsAsync(opened.readAttachment('chunk-index', neverAborted()));
    const ranged = await t.throwsAsync(opened.readAttachmentRange('chunk-index', 100, 200, neverAborted()));
    t.is((ranged as { kind?: string }).kind, 'not-found', ranged!.message);
    t.is((whole as { kind?: string }).kind, 'not-found', whole!.message);
  });

  test(`${backend.name}: new attachments for the same bytes replace the old ones without sending the image again`, async (t) => {
    const { store, put, cleanup } = await setup(backend);
    t.teardown(cleanup);
    await put('debian-12', { provenance: Buffer.from('first') });
    const again = await put('debian-12', { provenance: Buffer.from('second'), 'chunk-index': Buffer.from('chunks') });
    t.false(again.uploaded, 'the image bytes were held already');
    const opened = await ready(store, 'debian-12');
    t.is(Buffer.from((await opened.readAttachment('provenance', neverAborted()))!).toString(), 'second');
    t.is(Buffer.from((await opened.readAttachment('chunk-index', neverAborted()))!).toString(), 'chunks');
    const listed = await store.list(neverAborted());
    t.deepEqual(
      listed.images.map((image) => [image.name, image.state]),
      [['debian-12', 'complete']],
    );
  });

  test(`${backend.name}: an attachment whose bytes changed behind the store is refused, naming the image`, async (t) => {
    const { running, store, put, cleanup } = await setup(backend);
    t.teardown(cleanup);
    await put('debian-12', { provenance: Buffer.from('signed statement') });
    const ref = (await ready(store, 'debian-12')).record?.attachments?.provenance;
    t.truthy(ref);
    await running.corrupt(TAG, ref!.name);
    const opened = await ready(store, 'debian-12');
    const error = await t.throwsAsync(opened.readAttachment('provenance', neverAborted()));
    t.is((error as { kind?: string }).kind, 'integrity');
    t.regex(error!.message, /provenance of debian-12/);
  });

  test(`${backend.name}: remove takes one image and its attachments, and nothing else`, async (t) => {
    const { fixture, store, put, cleanup } = await setup(backend);
    t.teardown(cleanup);
    await put('debian-12', { provenance: Buffer.from('a') });
    await put('pve-9', { provenance: Buffer.from('b') });
    const removed = await store.remove(['debian-12'], { dryRun: false, signal: neverAborted() });
    t.deepEqual(removed.notInStore, []);
    t.is((await store.open('debian-12', neverAborted())).status, 'missing');
    const kept = await ready(store, 'pve-9');
    t.is(Buffer.from((await kept.readAttachment('provenance', neverAborted()))!).toString(), 'b');
    const got = await getImage(store, 'pve-9', { path: `${fixture.root}/host/pve-9.qcow2`, overwrite: false, signal: neverAborted() });
    t.deepEqual(await readFile(got.path), await readFile(fixture.catalog.imagePath('pve-9')));
    t.deepEqual(
      (await store.list(neverAborted())).images.map((image) => image.name),
      ['pve-9'],
    );
  });
}

test('directory: a ranged read of an attachment refuses a name that is not a blob, a link, and a blob shorter than its record', async (t) => {
  const { running, store, put, cleanup } = await setup(CONTRACT_BACKENDS.find((backend) => backend.name === 'directory')!);
  t.teardown(cleanup);
  const chunkIndex = randomBytes(1500);
  await put('debian-12', { 'chunk-index': chunkIndex });
  const dir = join((running.release as { dir: string }).dir, TAG);
  const recordPath = join(dir, 'debian-12.json');
  const record = JSON.parse(await readFile(recordPath, 'utf8')) as { image: { attachments: Record<string, { name: string }> } };
  const blob = join(dir, 'blobs', record.image.attachments['chunk-index']!.name);
  const refused = async (what: string, pattern: RegExp) => {
    const opened = await ready(store, 'debian-12');
    const whole = await t.throwsAsync(opened.readAttachment('chunk-index', neverAborted()));
    const ranged = await t.throwsAsync(opened.readAttachmentRange('chunk-index', 1000, 1500, neverAborted()));
    t.is((whole as { kind?: string }).kind, 'integrity', `${what}: ${whole!.message}`);
    t.is((ranged as { kind?: string }).kind, 'integrity', `${what}: ${ranged!.message}`);
    t.regex(ranged!.message, pattern, what);
  };

  const named = structuredClone(record);
  named.image.attachments['chunk-index']!.name = '../images.json';
  await writeFile(recordPath, JSON.stringify(named));
  await refused('a name outside blobs/', /names "\.\.\/images\.json" for its chunk-index, not a blob of this store/);
  await writeFile(recordPath, JSON.stringify(record));

  await rename(blob, `${blob}.aside`);
  await symlink(`${blob}.aside`, blob);
  await refused('a symbolic link', /is a symbolic link/);
  await rm(blob);

  await writeFile(blob, chunkIndex.subarray(0, 1200));
  await refused('a blob cut short', /the chunk-index of debian-12 .* gave 200 of its bytes 1000-1500: it is shorter than the 1500 bytes its record says/);
});
