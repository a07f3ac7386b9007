// `release check/remove/retag` and `images list/download` against a loopback GitHub,
// called as Command objects with a recording CommandIO.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import test from 'ava';
import { exitCodeFor } from '../src/failure.ts';
import { isFailure, type CommandIO } from '../src/types.ts';
import { imagesCommand } from '../tasks/images.ts';
import { releaseCommand } from '../tasks/release.ts';
import { assertSafeFileName } from '../tasks/store/names.ts';
import { createGitHubClient } from '../tasks/store/github/client.ts';
import { ReleaseApi } from '../tasks/store/github/release-api.ts';
import { readLocalImage } from '../tasks/store/local-image.ts';
import { openImageStore, type StoreOptions } from '../tasks/store/open.ts';
import { createImageFixture, GitHubServer } from './support/github-server.ts';
import { throwsFailure } from './support/failures.ts';
import { schemaErrors, validateOutput } from './support/output-schema.ts';
import { neverAborted } from './support/signals.ts';

interface RecordingIO extends CommandIO {
  readonly lines: string[];
  readonly errors: string[];
}

function recordingIO(root: string, json = false): RecordingIO {
  const lines: string[] = [];
  const errors: string[] = [];
  return {
    root,
    signal: neverAborted(),
    json,
    lines,
    errors,
    out: (line) => lines.push(line),
    err: (line) => errors.push(line),
    progress: () => {},
    hasher: { hash: async () => ({ size: 0, xxh: '0'.repeat(16) }) },
  };
}

const limits = { maxAssetSize: 400 * 1024, partSize: 350 * 1024 };

/** Three small qcow2 images (made by qemu-img, one padded past the split limit) uploaded to `latest`. */
async function setup(t: import('ava').ExecutionContext) {
  const server = await GitHubServer.start();
  const fixture = await createImageFixture(
    [
      { name: 'debian-12', size: 1000 },
      { name: 'debian-13', size: 1000 },
      { name: 'pve-9', size: 1000 },
    ],
    { repo: `${server.owner}/${server.repo}`, apiUrl: server.url, tag: 'latest', ...limits },
  );
  t.teardown(async () => {
    await server.close();
    await fixture.cleanup();
  });
  // Real qcow2 files so --publish can run qemu-img on what comes back.
  for (const name of fixture.catalog.names) {
    const path = fixture.catalog.imagePath(name);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, name === 'pve-9' ? '64M' : '16M']);
    if (name === 'pve-9') {
      // qcow2 images are sparse and tiny; write random data so pve-9 exceeds the split limit.
      execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 600k', path], { stdio: 'ignore' });
    }
    const digest = createHash('sha256')
      .update(await readFile(path))
      .digest('hex');
    await writeFile(`${path}.sha256`, `${digest}  ${name}.qcow2\n`);
  }
  const env = { GITHUB_TOKEN: server.token };
  const options: StoreOptions = { env, tuning: { retryBaseMs: 2 } };
  const store = await openImageStore(fixture.catalog.release, 'latest', options);
  for (const name of fixture.catalog.names) {
    await store.put(await readLocalImage(fixture.catalog, name), { force: false, signal: neverAborted(), log: () => {} });
  }
  const release = releaseCommand(fixture.catalog, { store: options });
  await mkdir(join(fixture.root, 'pve-storage'));
  const images = imagesCommand(fixture.catalog, { store: { ...options, env: { ...env, PIPELINE_PUBLISH_DIR: join(fixture.root, 'pve-storage') } } });
  const run = async (command: typeof release, argv: string[], values: Record<string, string | boolean> = {}, json = false) => {
    const io = recordingIO(fixture.root, json);
    // A command throws its Failure; the CLI turns it into one line and the kind's exit code.
    const code = await command.run({ values, positionals: argv }, io).catch((error: unknown) => {
      if (!isFailure(error) || error.kind === 'usage') throw error;
      io.errors.push(`pipeline: ${error.message}`);
      return exitCodeFor(error.kind);
    });
    return { code, out: io.lines, err: io.errors, io };
  };
  return { server, fixture, store, release, images, run };
}

test('release check says current, then names the changed template file and the changed base image', async (t) => {
  const { fixture, release, run } = await setup(t);
  let result = await run(release, ['check']);
  t.is(result.code, 0);
  t.deepEqual(result.out, ['debian-12: current', 'debian-13: current', 'pve-9: current', 'No template changes detected: images on `latest` are current']);

  const pve = fixture.sources.get('pve-9')!;
  pve.files['templates/pve-9/template.pkr.hcl'] = 'f'.repeat(64);
  fixture.sources.get('debian-13')!.base.sha256 = 'e'.repeat(64);
  result = await run(release, ['check']);
  t.is(result.code, 1);
  t.deepEqual(result.out, [
    'debian-12: current',
    'debian-13: stale: upstream base image changed (cache/debian-13-base.qcow2)',
    'pve-9: stale: template file templates/pve-9/template.pkr.hcl changed',
    'Rebuild needed: debian-13 (upstream base image changed (cache/debian-13-base.qcow2)), pve-9 (template file templates/pve-9/template.pkr.hcl changed)',
  ]);

  result = await run(release, ['check'], {}, true);
  t.is(result.out.length, 1);
  const parsed = JSON.parse(result.out[0]!);
  t.true(validateOutput(parsed), schemaErrors(parsed));
  t.like(parsed, {
    command: 'release-check',
    ok: false,
    tag: 'latest',
    stale: ['debian-13', 'pve-9'],
    decision:
      'Rebuild needed: debian-13 (upstream base image changed (cache/debian-13-base.qcow2)), pve-9 (template file templates/pve-9/template.pkr.hcl changed)',
  });
});

test('release check reports images missing from the release', async (t) => {
  const { release, run } = await setup(t);
  t.is((await run(release, ['remove', 'debian-12'])).code, 0);
  const result = await run(release, ['check']);
  t.is(result.code, 1);
  t.regex(result.out[0]!, /^debian-12: stale: not on the release/);
  t.is((await run(release, ['check'], { tag: 'v9' })).code, 1);
});

test('release remove deletes one image (parts and checksum) and its manifest entry; --dry-run changes nothing', async (t) => {
  const { server, release, run } = await setup(t);
  const mutations = server.events.length;
  const dry = await run(release, ['remove', 'pve-9'], { 'dry-run': true });
  t.is(dry.code, 0);
  // The record first (readers go by it), then the checksum, then the bytes.
  t.deepEqual(dry.out, [
    'would delete pve-9.qcow2.json',
    'would delete pve-9.qcow2.sha256',
    'would delete pve-9.qcow2.chunks',
    'would delete pve-9.qcow2.partaa',
    'would delete pve-9.qcow2.partab',
    'would delete pve-9.qcow2.partac',
    'would remove pve-9 from images.json',
  ]);
  t.is(server.events.length, mutations, 'dry run made no mutating request');
  const dryJson = await run(release, ['remove', 'pve-9', 'gone'], { 'dry-run': true }, true);
  const wouldRemove = JSON.parse(dryJson.out[0]!);
  t.true(validateOutput(wouldRemove), schemaErrors(wouldRemove));
  t.like(wouldRemove, { command: 'release-remove', ok: true, tag: 'latest', dryRun: true, notOnRelease: ['gone'], manifestUpdated: ['pve-9'] });
  t.is(wouldRemove.deleted.length, 6);
  t.is(server.events.length, mutations, 'nor did its --json');

  const real = await run(release, ['remove', 'pve-9']);
  t.is(real.code, 0);
  const left = server
    .assets('latest')
    .map((asset) => asset.name)
    .sort();
  t.deepEqual(left, [
    'debian-12.qcow2',
    'debian-12.qcow2.chunks',
    'debian-12.qcow2.json',
    'debian-12.qcow2.sha256',
    'debian-13.qcow2',
    'debian-13.qcow2.chunks',
    'debian-13.qcow2.json',
    'debian-13.qcow2.sha256',
    'images.json',
  ]);
  const manifest = JSON.parse((await server.assetBytes('latest', 'images.json')).toString());
  t.deepEqual(Object.keys(manifest.images).sort(), ['debian-12', 'debian-13']);

  // --all: every image the config or the store names, and nothing else on the release.
  await server.putAsset('latest', 'unrelated-000.txt', Buffer.from('keep me'));
  await server.putAsset('latest', 'old-image.qcow2', Buffer.from('an image only the store knows'));
  await server.putAsset('latest', 'old-image.qcow2.sha256', Buffer.from(`${'0'.repeat(64)}  old-image.qcow2\n`));
  const dryAll = await run(release, ['remove'], { all: true, 'dry-run': true });
  t.deepEqual(dryAll.out.filter((line) => line.startsWith('would delete')).sort(), [
    'would delete debian-12.qcow2',
    'would delete debian-12.qcow2.chunks',
    'would delete debian-12.qcow2.json',
    'would delete debian-12.qcow2.sha256',
    'would delete debian-13.qcow2',
    'would delete debian-13.qcow2.chunks',
    'would delete debian-13.qcow2.json',
    'would delete debian-13.qcow2.sha256',
    'would delete old-image.qcow2',
    'would delete old-image.qcow2.sha256',
  ]);
  t.is(server.assets('latest').length, 12);
  t.is((await run(release, ['remove'], { all: true })).code, 0);
  t.deepEqual(
    server
      .assets('latest')
      .map((asset) => asset.name)
      .sort(),
    ['images.json', 'unrelated-000.txt'],
  );
  t.deepEqual(JSON.parse((await server.assetBytes('latest', 'images.json')).toString()).images, {});

  await throwsFailure(t, run(release, ['remove']), 'usage');
  await throwsFailure(t, run(release, ['remove', 'x'], { all: true }), 'usage');
  await throwsFailure(t, run(release, ['remove', '../x']), 'usage');
});

test('release retag moves the tag to the version commit, notes it in the body and keeps the assets', async (t) => {
  const { server, release, run } = await setup(t);
  const commit = server.addTag('v2025.01', undefined, true);
  const before = server.assets('latest');
  const oldCommit = server.tagCommit('latest');

  const dry = await run(release, ['retag', 'v2025.01'], { 'dry-run': true });
  t.is(dry.code, 0);
  t.regex(dry.out[0]!, /^would point tag latest at v2025\.01/);
  t.is(server.tagCommit('latest'), oldCommit);

  const dryJson = JSON.parse((await run(release, ['retag', 'v2025.01'], { 'dry-run': true }, true)).out[0]!);
  t.true(validateOutput(dryJson), schemaErrors(dryJson));
  t.like(dryJson, { command: 'release-retag', ok: true, tag: 'latest', version: 'v2025.01', sha: commit, dryRun: true });
  t.is(server.tagCommit('latest'), oldCommit);

  const result = await run(release, ['retag', 'v2025.01'], {}, true);
  t.is(result.code, 0, result.err.join('\n'));
  const retagged = JSON.parse(result.out[0]!);
  t.true(validateOutput(retagged), schemaErrors(retagged));
  t.like(retagged, { command: 'release-retag', ok: true, version: 'v2025.01', sha: commit, dryRun: false });
  t.is(server.tagCommit('latest'), commit);
  t.is(server.release('latest')!.body, 'Points to v2025.01');
  t.deepEqual(server.assets('latest'), before);

  const missing = await run(release, ['retag', 'v0']);
  t.is(missing.code, 2, 'an error is never exit 1 (which would read as "stale")');
  t.regex(missing.err[0]!, /not found \(404\).*find tag v0/);
});

test('images list shows sizes and multipart images', async (t) => {
  const { server, images, run } = await setup(t);
  const result = await run(images, ['list']);
  t.is(result.code, 0);
  t.is(result.out.length, 3);
  t.regex(result.out[2]!, /^pve-9 .*\(multipart: 3 parts\)$/);
  t.notRegex(result.out[0]!, /multipart/);
  const json = JSON.parse((await run(images, ['list'], {}, true)).out[0]!);
  t.true(validateOutput(json), schemaErrors(json));
  t.like(json, { command: 'images-list', ok: true, tag: 'latest' });
  t.like(json.images[2], { name: 'pve-9', pieces: 3, multipart: true, state: 'complete' });
  t.deepEqual(
    json.images.map((image: { name: string }) => image.name),
    ['debian-12', 'debian-13', 'pve-9'],
  );
  t.is(
    json.images[2].size,
    server
      .assets('latest')
      .filter((a) => a.name.startsWith('pve-9.qcow2.part'))
      .reduce((s, a) => s + a.size, 0),
  );
});

test('images download reassembles parts, verifies and publishes with qemu-img', async (t) => {
  const { fixture, images, run } = await setup(t);
  const dir = join(fixture.root, 'downloads');
  const result = await run(images, ['download', 'all'], { dir, publish: true });
  t.is(result.code, 0, result.err.join('\n'));
  // The project's own builds hold every byte: what moved is said per image.
  for (const name of fixture.catalog.names) {
    t.true(
      result.out.some((line) => line.startsWith(`${name}: 0 B fetched, `) && line.includes(`reused from ${fixture.catalog.imagePath(name)}`)),
      result.out.join('\n'),
    );
  }
  for (const name of fixture.catalog.names) {
    t.deepEqual(await readFile(join(dir, `${name}.qcow2`)), await readFile(fixture.catalog.imagePath(name)));
    const published = join(fixture.root, 'pve-storage', `${name}.img`);
    t.true(existsSync(published));
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', published]).toString());
    t.is(info.format, 'qcow2');
  }
  t.deepEqual((await readdir(dir)).sort(), ['debian-12.qcow2', 'debian-13.qcow2', 'pve-9.qcow2']);
  const published = (await readdir(join(fixture.root, 'pve-storage'))).filter((name) => !name.startsWith('.'));
  t.deepEqual(published.sort(), ['debian-12.img', 'debian-13.img', 'pve-9.img']);

  // Present and verified: nothing downloaded again; a different file needs --overwrite.
  const again = await run(images, ['download', 'pve-9'], { dir });
  t.regex(again.out[0]!, /already present/);
  const againJson = JSON.parse((await run(images, ['download', 'pve-9'], { dir }, true)).out[0]!);
  t.true(validateOutput(againJson), schemaErrors(againJson));
  t.like(againJson, { command: 'images-download', ok: true, tag: 'latest', dir, images: [{ name: 'pve-9', status: 'present', fetched: 0 }] });
  await writeFile(join(dir, 'debian-12.qcow2'), 'local edit');
  const refused = await run(images, ['download', 'debian-12'], { dir });
  t.is(refused.code, 1);
  t.regex(refused.err[0]!, /--overwrite/);
  const refusedJson = await run(images, ['download', 'debian-12', 'pve-9'], { dir }, true);
  t.is(refusedJson.code, 1);
  const partly = JSON.parse(refusedJson.out[0]!);
  t.true(validateOutput(partly), schemaErrors(partly));
  t.like(partly, {
    command: 'images-download',
    ok: false,
    images: [
      { name: 'debian-12', status: 'failed' },
      { name: 'pve-9', status: 'present' },
    ],
  });
  t.regex(partly.images[0].error, /--overwrite/);
  t.is((await run(images, ['download', 'debian-12'], { dir, overwrite: true })).code, 0);
});

test('a corrupted part is refused and nothing is published', async (t) => {
  const { server, fixture, images, run } = await setup(t);
  const dir = join(fixture.root, 'downloads');
  // No local copy to seed from: every byte comes from the release.
  await rm(join(fixture.root, 'images'), { recursive: true, force: true });
  server.arm({ kind: 'corrupt', path: 'pve-9.qcow2.partab' });
  const result = await run(images, ['download', 'pve-9'], { dir, publish: true });
  t.is(result.code, 1);
  t.regex(result.err.join('\n'), /checksum mismatch for pve-9.*nothing was installed/);
  t.deepEqual(await readdir(dir), []);
  t.false(existsSync(join(fixture.root, 'pve-storage', 'pve-9.img')));
});

test('downloads resume after a reset and a truncated body', async (t) => {
  const { server, fixture, images, run } = await setup(t);
  const dir = join(fixture.root, 'downloads');
  // No local copy to seed from: every byte comes from the release.
  const expected = await readFile(fixture.catalog.imagePath('pve-9'));
  await rm(join(fixture.root, 'images'), { recursive: true, force: true });
  server.arm({ kind: 'reset', path: '/storage/', afterBytes: 1000 });
  server.arm({ kind: 'reset', path: 'pve-9.qcow2.partaa', afterBytes: 100_000 });
  server.arm({ kind: 'truncate', path: 'pve-9.qcow2.partac', afterBytes: 70_000 });
  const result = await run(images, ['download', 'pve-9'], { dir });
  t.is(result.code, 0, result.err.join('\n'));
  t.is(server.pendingFaults, 0);
  t.true(
    server.requests.some((request) => request.path.startsWith('/storage/') && request.range !== undefined),
    'resumed with a Range request',
  );
  t.deepEqual(await readFile(join(dir, 'pve-9.qcow2')), expected);
  // Storage redirects never see the token.
  t.true(server.requests.filter((request) => request.path.startsWith('/storage/')).every((request) => request.authorization === undefined));
});

test('a slow body still completes, reporting progress along the way', async (t) => {
  const { server, fixture, images } = await setup(t);
  const dir = join(fixture.root, 'downloads');
  server.arm({ kind: 'slow', path: '/storage/', delayMs: 15, chunkBytes: 16 * 1024 });
  const progress: number[] = [];
  const io = { ...recordingIO(fixture.root), progress: (_label: string, done: number) => void progress.push(done) };
  const code = await images.run({ values: { dir }, positionals: ['download', 'pve-9'] }, io);
  t.is(code, 0, io.errors.join('\n'));
  t.is(server.pendingFaults, 0, 'the slow response was served');
  t.true(new Set(progress).size > 3, `progress reported while bytes trickled in (${progress.length} updates)`);
  t.deepEqual(await readFile(join(dir, 'pve-9.qcow2')), await readFile(fixture.catalog.imagePath('pve-9')));
});

test('missing parts, missing checksums and unsafe asset names are clear errors', async (t) => {
  const { server, fixture, images, release, run } = await setup(t);
  const dir = join(fixture.root, 'downloads');
  const api = new ReleaseApi(await createGitHubClient(fixture.decl, { env: { GITHUB_TOKEN: server.token } }));
  const rel = await api.requireRelease('latest');
  const assets = await api.listAssets(rel.id);
  await api.deleteAsset(assets.find((asset) => asset.name === 'pve-9.qcow2.partab')!);
  // An image uploaded before records existed: its checksum is what vouches for it.
  await api.deleteAsset(assets.find((asset) => asset.name === 'debian-13.qcow2.json')!);
  await api.deleteAsset(assets.find((asset) => asset.name === 'debian-13.qcow2.sha256')!);
  await server.putAsset('latest', '..x.qcow2', Buffer.from('x'));

  let result = await run(images, ['download', 'pve-9'], { dir });
  t.is(result.code, 1);
  t.regex(result.err[0]!, /missing part pve-9\.qcow2\.partab/);
  result = await run(images, ['download', 'debian-13'], { dir });
  t.is(result.code, 1);
  t.regex(result.err[0]!, /debian-13 has no debian-13\.qcow2\.sha256; refusing to download unverifiable bytes/);
  await throwsFailure(t, run(images, ['download', '../x'], { dir }), 'usage');
  await throwsFailure(t, run(images, ['download', 'a/b'], { dir }), 'usage');
  t.throws(() => assertSafeFileName('../x'));
  t.throws(() => assertSafeFileName('a/b'));
  t.throws(() => assertSafeFileName('a..b'));
  t.is(assertSafeFileName('pve-9.qcow2.partaa'), 'pve-9.qcow2.partaa');

  result = await run(images, ['download', 'all'], { dir });
  t.is(result.code, 1);
  t.regex(result.out.join('\n'), /debian-12: downloaded/);
  t.deepEqual(
    (await readdir(dir)).filter((name) => !name.startsWith('.')),
    ['debian-12.qcow2'],
  );
  t.false(existsSync(join(fixture.root, 'x.qcow2')));
  void release;
});
