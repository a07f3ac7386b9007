// Readers meeting an image while it is being replaced, and a damaged images.json: the
// download reads a complete copy mid-swap, looks again when the bytes vanish under it,
// says "being replaced" (not "missing part") when no complete copy is there, and a
// garbage index is rebuilt from the records with a note, never failing an upload.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import type { CommandIO } from '../src/types.ts';
import { imagesCommand } from '../tasks/images.ts';
import { releaseCommand } from '../tasks/release.ts';
import { getImage } from '../tasks/store/get-image.ts';
import { readLocalImage } from '../tasks/store/local-image.ts';
import { openImageStore, type StoreOptions } from '../tasks/store/open.ts';
import { createImageFixture, GitHubServer } from './support/github-server.ts';
import { throwsFailure } from './support/failures.ts';
import { neverAborted } from './support/signals.ts';

async function setup(t: import('ava').ExecutionContext) {
  const server = await GitHubServer.start();
  const fixture = await createImageFixture(
    [
      { name: 'pve-9', size: 10_000 },
      { name: 'debian-12', size: 3000 },
    ],
    {
      repo: `${server.owner}/${server.repo}`,
      apiUrl: server.url,
      tag: 'latest',
      maxAssetSize: 4096,
      partSize: 3500,
    },
  );
  t.teardown(async () => {
    await server.close();
    await fixture.cleanup();
  });
  const options: StoreOptions = { env: { GITHUB_TOKEN: server.token }, tuning: { retryBaseMs: 2 } };
  const store = await openImageStore(fixture.catalog.release, 'latest', options);
  const logs: string[] = [];
  const put = async (name: string) =>
    store.put(await readLocalImage(fixture.catalog, name), { force: false, signal: neverAborted(), log: (line) => logs.push(line) });
  return { server, fixture, options, store, put, logs };
}

function io(root: string, json = false) {
  const lines: string[] = [];
  const errors: string[] = [];
  const value: CommandIO = {
    root,
    signal: neverAborted(),
    json,
    out: (line) => lines.push(line),
    err: (line) => errors.push(line),
    progress: () => {},
    hasher: { hash: async () => ({ size: 0, xxh: '0'.repeat(16) }) },
  };
  return { io: value, lines, errors };
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

test('a download in the middle of a swap reads a complete copy (by id, under the temporary names)', async (t) => {
  const { server, fixture, store, put } = await setup(t);
  await put('pve-9');
  const old = await readFile(fixture.catalog.imagePath('pve-9'));
  await fixture.writeImage('pve-9', 10_000);
  const fresh = await readFile(fixture.catalog.imagePath('pve-9'));

  // Hold the swap right after its first delete: the final names are not a complete copy then.
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let paused!: () => void;
  const pausedAt = new Promise<void>((resolve) => (paused = resolve));
  let deletes = 0;
  server.hook = async (request): Promise<'handle'> => {
    if (request.method === 'PATCH' && deletes > 0) {
      paused();
      await held;
    }
    if (request.method === 'DELETE') deletes++;
    return 'handle';
  };
  const replacing = put('pve-9');
  await pausedAt;
  const names = server.assets('latest').map((asset) => asset.name);
  t.false(
    ['pve-9.qcow2.partaa', 'pve-9.qcow2.partab', 'pve-9.qcow2.partac'].every((name) => names.includes(name)),
    'mid-swap, the final names miss a part',
  );

  const reader = await openImageStore(fixture.catalog.release, 'latest', { env: { GITHUB_TOKEN: server.token }, tuning: { retryBaseMs: 2 } });
  const got = await getImage(reader, 'pve-9', { path: join(fixture.root, 'read', 'pve-9.qcow2'), overwrite: true, signal: neverAborted() });
  const bytes = await readFile(got.path);
  t.true(bytes.equals(fresh), 'the committed new image is read by id');
  t.is(got.sha256, sha256(fresh));
  t.false(bytes.equals(old));
  release();
  server.hook = undefined;
  await replacing;
  void store;
});

test('bytes that vanish under a download (replaced meanwhile) are looked up again and the new image is read', async (t) => {
  const { server, fixture, put, options } = await setup(t);
  await put('pve-9');
  await fixture.writeImage('pve-9', 10_000);
  const fresh = await readFile(fixture.catalog.imagePath('pve-9'));
  let replaced: Promise<unknown> | undefined;
  server.hook = async (request): Promise<'handle'> => {
    // The first piece the reader asks for is gone when it gets there: a newer upload replaced the image.
    if (request.path.startsWith('/storage/') && request.path.includes('pve-9.qcow2.part') && !replaced) {
      replaced = put('pve-9');
      await replaced;
    }
    return 'handle';
  };
  const store = await openImageStore(fixture.catalog.release, 'latest', options);
  const logs: string[] = [];
  const got = await getImage(store, 'pve-9', {
    path: join(fixture.root, 'read', 'pve-9.qcow2'),
    overwrite: true,
    signal: neverAborted(),
    log: (line) => logs.push(line),
    replacingWaitsMs: [10, 10],
  });
  server.hook = undefined;
  t.true((await readFile(got.path)).equals(fresh));
  t.true(
    logs.some((line) => /pve-9: being replaced on release latest/.test(line)),
    logs.join('\n'),
  );
});

test('with no complete copy and an upload underway, images download says "being replaced", not "missing part"', async (t) => {
  const { server, fixture, options } = await setup(t);
  // A release written by the old tool, caught mid-swap: one part deleted, its replacement not yet renamed.
  server.createRelease('latest');
  const bytes = Buffer.alloc(9000, 7);
  await server.putAsset('latest', 'pve-9.qcow2.partaa', bytes.subarray(0, 3500));
  await server.putAsset('latest', 'pve-9.qcow2.partac', bytes.subarray(7000));
  await server.putAsset('latest', 'pve-9.qcow2.partab.uploading-0a1b2c3d', bytes.subarray(3500, 7000));
  await server.putAsset('latest', 'pve-9.qcow2.sha256', Buffer.from(`${sha256(bytes)}  pve-9.qcow2\n`));
  const images = imagesCommand(fixture.catalog, { store: options });
  const { io: commandIO, errors } = io(fixture.root);
  const started = Date.now();
  const code = await images.run({ values: { dir: join(fixture.root, 'dl') }, positionals: ['download', 'pve-9'] }, commandIO);
  t.is(code, 1);
  const last = errors.at(-1) ?? '';
  t.regex(last, /^pve-9: pve-9 is being replaced on release latest of acme\/images; try again in a minute/);
  t.notRegex(last, /^pve-9: .*missing part/);
  t.true(Date.now() - started >= 3000, 'it waited and looked again before giving up');
  t.true(errors.filter((line) => /being replaced .*looking again/.test(line)).length >= 3);
  await throwsFailure(
    t,
    getImage(await openImageStore(fixture.catalog.release, 'latest', options), 'pve-9', {
      path: join(fixture.root, 'x.qcow2'),
      overwrite: true,
      signal: neverAborted(),
      replacingWaitsMs: [],
    }),
    'network',
    /being replaced/,
  );
});

test('a garbage images.json is rebuilt from the records with a note; release check reads the records meanwhile', async (t) => {
  const { server, fixture, put, logs, options } = await setup(t);
  await put('pve-9');
  await put('debian-12');
  const index = server.assets('latest').find((asset) => asset.name === 'images.json')!;
  t.truthy(index);
  // Replace images.json with garbage, as a broken external tool might.
  const { ReleaseApi } = await import('../tasks/store/github/release-api.ts');
  const { createGitHubClient } = await import('../tasks/store/github/client.ts');
  const api = new ReleaseApi(await createGitHubClient(fixture.decl, { env: { GITHUB_TOKEN: server.token } }));
  await api.deleteAsset({ id: index.id, name: 'images.json' });
  await server.putAsset('latest', 'images.json', Buffer.from('<html>502 Bad Gateway</html>'));

  const release = releaseCommand(fixture.catalog, { store: options });
  const check = io(fixture.root);
  t.is(await release.run({ values: {}, positionals: ['check'] }, check.io), 0);
  t.deepEqual(check.lines, ['pve-9: current', 'debian-12: current', 'No template changes detected: images on `latest` are current']);
  t.deepEqual(check.errors, ['pipeline: images.json on release latest is not JSON; using the per-image records']);

  await fixture.writeImage('debian-12', 2000);
  await put('debian-12');
  t.true(logs.includes('images.json on release latest is not JSON; rebuilding it from the per-image records'), logs.join('\n'));
  const rebuilt = JSON.parse((await server.assetBytes('latest', 'images.json')).toString()) as { images: Record<string, { sha256: string }> };
  t.deepEqual(Object.keys(rebuilt.images), ['debian-12', 'pve-9']);
  t.is(rebuilt.images['debian-12']!.sha256, sha256(await readFile(fixture.catalog.imagePath('debian-12'))));
});
