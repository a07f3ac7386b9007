// Upload of images to a release on a loopback GitHub through the image store: whole files
// and split parts, skip when unchanged, replacement without downtime, convergence after faults.
import { createHash } from 'node:crypto';
import test from 'ava';
import { imageAssetRole } from '../tasks/store/github/asset-names.ts';
import { createGitHubClient } from '../tasks/store/github/client.ts';
import { ReleaseApi } from '../tasks/store/github/release-api.ts';
import type { ImageCatalog } from '../tasks/store/catalog.ts';
import { readLocalImage } from '../tasks/store/local-image.ts';
import { openImageStore } from '../tasks/store/open.ts';
import { createImageFixture, GitHubServer, type AssetRecord, type MutationEvent } from './support/github-server.ts';
import { neverAborted } from './support/signals.ts';

const images = [
  { name: 'debian-12', size: 3000 },
  { name: 'debian-13', size: 2500 },
  { name: 'pve-9', size: 10_000 },
];
const limits = { maxAssetSize: 4096, partSize: 3500 };

async function setup() {
  const server = await GitHubServer.start();
  const fixture = await createImageFixture(images, { repo: `${server.owner}/${server.repo}`, apiUrl: server.url, tag: 'latest', ...limits });
  const env = { GITHUB_TOKEN: server.token };
  const api = new ReleaseApi(await createGitHubClient(fixture.decl, { env, retryBaseMs: 2 }));
  const store = await openImageStore(fixture.catalog.release, 'latest', { env, tuning: { retryBaseMs: 2 } });
  const logs: string[] = [];
  const upload = async (name: string, force = false) =>
    store.put(await readLocalImage(fixture.catalog, name), { force, signal: neverAborted(), log: (line) => logs.push(line) });
  const uploadAll = async () => {
    const results = [];
    for (const name of fixture.catalog.names) results.push(await upload(name));
    return results;
  };
  return {
    server,
    fixture,
    api,
    store,
    upload,
    uploadAll,
    logs,
    cleanup: async () => {
      await server.close();
      await fixture.cleanup();
    },
  };
}

function names(records: readonly AssetRecord[]): string[] {
  return records.map((record) => record.name).sort();
}

function complete(image: string, assets: readonly AssetRecord[]): boolean {
  const uploaded = assets.filter((asset) => asset.state === 'uploaded');
  if (!uploaded.some((asset) => asset.name === `${image}.qcow2.sha256`)) return false;
  if (uploaded.some((asset) => asset.name === `${image}.qcow2`)) return true;
  return uploaded.some((asset) => asset.name === `${image}.qcow2.partaa`);
}

/** No upload request may start while an image that was complete earlier is incomplete. */
function assertNoDowntime(t: import('ava').ExecutionContext, events: readonly MutationEvent[], imageNames: readonly string[]) {
  const seenComplete = new Set<string>();
  let uploads = 0;
  for (const event of events) {
    if (event.kind === 'upload') {
      uploads++;
      for (const image of seenComplete) {
        t.true(complete(image, event.before), `upload of ${event.target} started while ${image} was incomplete: ${names(event.before).join(', ')}`);
      }
    }
    for (const image of imageNames) if (complete(image, event.after)) seenComplete.add(image);
  }
  return uploads;
}

async function sha256Of(catalog: ImageCatalog, name: string): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  return createHash('sha256')
    .update(await readFile(catalog.imagePath(name)))
    .digest('hex');
}

test('uploads whole images and parts, creates the release, writes images.json; a second run uploads nothing', async (t) => {
  const { server, fixture, uploadAll, cleanup } = await setup();
  t.teardown(cleanup);
  await uploadAll();

  const release = server.release('latest');
  t.truthy(release);
  t.is(release!.name, 'Latest Images');
  t.true(release!.prerelease);
  t.deepEqual(names(server.assets('latest')), [
    'debian-12.qcow2',
    'debian-12.qcow2.chunks',
    'debian-12.qcow2.json',
    'debian-12.qcow2.sha256',
    'debian-13.qcow2',
    'debian-13.qcow2.chunks',
    'debian-13.qcow2.json',
    'debian-13.qcow2.sha256',
    'images.json',
    'pve-9.qcow2.chunks',
    'pve-9.qcow2.json',
    'pve-9.qcow2.partaa',
    'pve-9.qcow2.partab',
    'pve-9.qcow2.partac',
    'pve-9.qcow2.sha256',
  ]);
  t.true(server.assets('latest').every((asset) => asset.state === 'uploaded'));
  const parts = await Promise.all(['partaa', 'partab', 'partac'].map((suffix) => server.assetBytes('latest', `pve-9.qcow2.${suffix}`)));
  t.deepEqual(
    parts.map((part) => part.length),
    [3500, 3500, 3000],
  );
  t.is(createHash('sha256').update(Buffer.concat(parts)).digest('hex'), await sha256Of(fixture.catalog, 'pve-9'));
  t.is((await server.assetBytes('latest', 'debian-12.qcow2.sha256')).toString(), `${await sha256Of(fixture.catalog, 'debian-12')}  debian-12.qcow2\n`);

  const manifest = JSON.parse((await server.assetBytes('latest', 'images.json')).toString());
  t.is(manifest.schemaVersion, 1);
  t.deepEqual(Object.keys(manifest.images).sort(), ['debian-12', 'debian-13', 'pve-9']);
  const pve = manifest.images['pve-9'];
  t.is(pve.size, 10_000);
  t.is(pve.sha256, await sha256Of(fixture.catalog, 'pve-9'));
  t.deepEqual(pve.parts, [
    { name: 'pve-9.qcow2.partaa', size: 3500 },
    { name: 'pve-9.qcow2.partab', size: 3500 },
    { name: 'pve-9.qcow2.partac', size: 3000 },
  ]);
  t.deepEqual(pve.versions, { DEBIAN_VERSION: '13.2', PVE_VERSION: '9.1' });
  t.is(pve.cacheKey, (await fixture.catalog.currentKey('pve-9')).cacheKey);
  t.is(pve.compression, 'none', 'the fixture is a qcow2 with no compressed cluster');
  t.truthy(pve.sources.files['templates/pve-9/template.pkr.hcl']);
  // The image's own record says the same, and names the assets that hold its bytes.
  const record = JSON.parse((await server.assetBytes('latest', 'pve-9.qcow2.json')).toString());
  t.deepEqual(record.image, pve);
  t.deepEqual(
    record.assets.map((entry: { name: string; id: number }) => entry.name),
    ['pve-9.qcow2.partaa', 'pve-9.qcow2.partab', 'pve-9.qcow2.partac', 'pve-9.qcow2.sha256', 'pve-9.qcow2.chunks'],
  );
  // Every image carries its chunk index (for seeded fetches), named by the record like its bytes.
  const chunks = await server.assetBytes('latest', 'pve-9.qcow2.chunks');
  t.deepEqual(pve.attachments['chunk-index'], { name: 'pve-9.qcow2.chunks', size: chunks.length, sha256: createHash('sha256').update(chunks).digest('hex') });
  for (const entry of record.assets) t.is(server.assets('latest').find((asset) => asset.name === entry.name)?.id, entry.id);

  const before = server.events.length;
  const results = await uploadAll();
  t.true(results.every((result) => !result.uploaded));
  t.deepEqual(server.events.slice(before), [], 'a no-op run changes nothing on the release');
});

test('a changed image is re-uploaded alone, its stale parts removed, with no downtime for any image', async (t) => {
  const { server, fixture, upload, uploadAll, cleanup } = await setup();
  t.teardown(cleanup);
  await uploadAll();
  const untouched = await server.assetBytes('latest', 'debian-12.qcow2');

  const firstChange = server.events.length;
  await fixture.writeImage('pve-9', 6000);
  const results = [];
  for (const name of fixture.catalog.names) results.push({ name, ...(await upload(name)) });
  t.deepEqual(
    results.filter((result) => result.uploaded).map((result) => result.name),
    ['pve-9'],
  );
  const uploads = server.events
    .slice(firstChange)
    .filter((event) => event.kind === 'upload')
    .map((event) => event.target);
  t.true(
    uploads.every((target) => target.startsWith('pve-9.qcow2') || target.startsWith('images.json')),
    uploads.join(', '),
  );

  t.deepEqual(
    names(server.assets('latest')).filter((name) => name.startsWith('pve-9')),
    ['pve-9.qcow2.chunks', 'pve-9.qcow2.json', 'pve-9.qcow2.partaa', 'pve-9.qcow2.partab', 'pve-9.qcow2.sha256'],
  );
  t.deepEqual(await server.assetBytes('latest', 'debian-12.qcow2'), untouched);
  const manifest = JSON.parse((await server.assetBytes('latest', 'images.json')).toString());
  t.is(manifest.images['pve-9'].parts.length, 2);
  t.is(manifest.images['pve-9'].sha256, await sha256Of(fixture.catalog, 'pve-9'));

  // Shrink below the limit: parts give way to one whole asset.
  await fixture.writeImage('pve-9', 1000);
  await upload('pve-9');
  t.deepEqual(
    names(server.assets('latest')).filter((name) => name.startsWith('pve-9')),
    ['pve-9.qcow2', 'pve-9.qcow2.chunks', 'pve-9.qcow2.json', 'pve-9.qcow2.sha256'],
  );
  t.true(assertNoDowntime(t, server.events, fixture.catalog.names) > 0);
});

test('--force re-uploads an unchanged image', async (t) => {
  const { server, upload, cleanup } = await setup();
  t.teardown(cleanup);
  await upload('debian-12');
  const result = await upload('debian-12', true);
  t.true(result.uploaded);
  t.deepEqual(names(server.assets('latest')), ['debian-12.qcow2', 'debian-12.qcow2.chunks', 'debian-12.qcow2.json', 'debian-12.qcow2.sha256', 'images.json']);
});

test('a 502 that leaves a half-made asset is retried after deleting it', async (t) => {
  const { server, upload, cleanup } = await setup();
  t.teardown(cleanup);
  server.arm({ kind: 'status', method: 'POST', path: 'pve-9.qcow2.partab', status: 502, leaveHalfMade: true, body: { message: 'Error uploading asset' } });
  await upload('pve-9');
  t.is(server.pendingFaults, 0);
  t.deepEqual(names(server.assets('latest')), [
    'images.json',
    'pve-9.qcow2.chunks',
    'pve-9.qcow2.json',
    'pve-9.qcow2.partaa',
    'pve-9.qcow2.partab',
    'pve-9.qcow2.partac',
    'pve-9.qcow2.sha256',
  ]);
  t.true(server.assets('latest').every((asset) => asset.state === 'uploaded'));
});

test('a connection reset mid-body is retried with the byte range re-opened', async (t) => {
  const { server, fixture, upload, cleanup } = await setup();
  t.teardown(cleanup);
  server.arm({ kind: 'reset', method: 'POST', path: 'pve-9.qcow2.partac', afterBytes: 1000 });
  server.arm({ kind: 'status', method: 'POST', path: 'pve-9.qcow2.partaa', status: 500 });
  await upload('pve-9');
  t.is(server.pendingFaults, 0);
  const parts = await Promise.all(['partaa', 'partab', 'partac'].map((suffix) => server.assetBytes('latest', `pve-9.qcow2.${suffix}`)));
  t.is(createHash('sha256').update(Buffer.concat(parts)).digest('hex'), await sha256Of(fixture.catalog, 'pve-9'));
});

test('an interrupted upload leaves the old image in place, and a re-run converges', async (t) => {
  const { server, fixture, api, upload, cleanup } = await setup();
  t.teardown(cleanup);
  await upload('pve-9');
  const oldParts = names(server.assets('latest'));
  await fixture.writeImage('pve-9', 6000);
  // Every attempt at the second part fails: the run gives up mid-way.
  for (let i = 0; i < api.client.transferAttempts; i++) {
    server.arm({ kind: 'status', method: 'POST', path: 'pve-9.qcow2.partab', status: 502, leaveHalfMade: true });
  }
  await t.throwsAsync(upload('pve-9'), { message: /502/ });
  const afterFailure = server.assets('latest');
  for (const name of oldParts)
    t.true(
      afterFailure.some((asset) => asset.name === name && asset.state === 'uploaded'),
      `${name} still there`,
    );
  t.true(complete('pve-9', afterFailure));

  await upload('pve-9');
  t.deepEqual(names(server.assets('latest')), [
    'images.json',
    'pve-9.qcow2.chunks',
    'pve-9.qcow2.json',
    'pve-9.qcow2.partaa',
    'pve-9.qcow2.partab',
    'pve-9.qcow2.sha256',
  ]);
  const parts = await Promise.all(['partaa', 'partab'].map((suffix) => server.assetBytes('latest', `pve-9.qcow2.${suffix}`)));
  t.is(createHash('sha256').update(Buffer.concat(parts)).digest('hex'), await sha256Of(fixture.catalog, 'pve-9'));
  t.true(assertNoDowntime(t, server.events, ['pve-9']) > 0);
});

test('asset lists are paginated', async (t) => {
  const server = await GitHubServer.start({ defaultPerPage: 2 });
  t.teardown(() => server.close());
  const release = server.createRelease('latest');
  for (let i = 0; i < 150; i++) await server.putAsset('latest', `file-${i}.bin`, Buffer.from([i]));
  const api = new ReleaseApi(await createGitHubClient({ repo: `${server.owner}/${server.repo}`, apiUrl: server.url }, { env: { GITHUB_TOKEN: server.token } }));
  const assets = await api.listAssets(release.id);
  t.is(assets.length, 150);
  t.true(server.requests.filter((request) => request.path.includes('/assets')).every((request) => request.path.includes('per_page=100')));
  t.is(server.requests.filter((request) => request.path.includes(`/releases/${release.id}/assets`)).length, 2);
});

test('asset roles tell images apart', (t) => {
  t.is(imageAssetRole('debian-12', 'debian-12.qcow2')?.role, 'whole');
  t.is(imageAssetRole('debian-12', 'debian-12.qcow2.partab')?.role, 'part');
  t.is(imageAssetRole('debian-12', 'debian-12.qcow2.sha256')?.role, 'checksum');
  t.is(imageAssetRole('debian-12', 'debian-12.qcow2.json')?.role, 'record');
  t.deepEqual(imageAssetRole('debian-12', 'debian-12.qcow2.partab.uploading-0a1b2c3d'), { role: 'part', run: '0a1b2c3d', finalName: 'debian-12.qcow2.partab' });
  t.is(imageAssetRole('debian-12', 'debian-12.qcow2.json.uploading-0a1b2c3d-1f-00aa11')?.run, '0a1b2c3d-1f-00aa11');
  t.is(imageAssetRole('debian-12', 'debian-12.1.qcow2'), undefined);
  t.is(imageAssetRole('debian', 'debian-12.qcow2'), undefined);
  t.is(imageAssetRole('images', 'images.json'), undefined, "the index is nobody's record");
});

test('a listing that skips the commit (a page boundary moved under another writer) does not leave the swap unfinished', async (t) => {
  const server = await GitHubServer.start({ maxPerPage: 5 });
  const fixture = await createImageFixture([{ name: 'debian-12', size: 1000 }], {
    repo: `${server.owner}/${server.repo}`,
    apiUrl: server.url,
    tag: 'latest',
    ...limits,
  });
  t.teardown(async () => {
    await server.close();
    await fixture.cleanup();
  });
  server.createRelease('latest');
  await server.putAsset('latest', 'notes-1.txt', Buffer.from('1'));
  await server.putAsset('latest', 'notes-2.txt', Buffer.from('2'));
  // Assets in order: notes-1, notes-2, the image, its .sha256, its chunk index, the commit: the commit opens page 2.
  // Right when page 2 is asked for after the commit, another writer deletes notes-1: page 2 comes back empty.
  let committed = false;
  let shifted = false;
  server.hook = async (request): Promise<'handle'> => {
    if (request.method === 'POST' && request.path.includes('debian-12.qcow2.json.uploading-')) committed = true;
    else if (committed && !shifted && request.method === 'GET' && /\/assets\?.*page=2/.test(request.path)) {
      shifted = true;
      await server.removeAsset('latest', 'notes-1.txt');
    }
    return 'handle';
  };
  const store = await openImageStore(fixture.catalog.release, 'latest', { env: { GITHUB_TOKEN: server.token }, tuning: { retryBaseMs: 2 } });
  await store.put(await readLocalImage(fixture.catalog, 'debian-12'), { force: false, signal: neverAborted(), log: () => {} });
  t.true(shifted, 'the listing was shifted under the settle');
  t.deepEqual(names(server.assets('latest')), [
    'debian-12.qcow2',
    'debian-12.qcow2.chunks',
    'debian-12.qcow2.json',
    'debian-12.qcow2.sha256',
    'images.json',
    'notes-2.txt',
  ]);
});
