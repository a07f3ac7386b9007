// Issue 25, finding 1: an image in the store that names a file on the consumer's host (a
// qcow2 with a backing file or an external data file, a VMDK descriptor) must never make
// the tool copy that file's bytes anywhere, and neither may an image that is not a sound
// qcow2. Refused, in one line naming the image and what it references: at download
// (before the rename), at publish, at upload and at adoption. Real qemu-img makes the
// images; the stores are the directory store and the loopback GitHub server.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isFailure } from '../src/index.ts';
import { publishDownloaded } from '../tasks/store/publish-image.ts';
import { createUploadNode } from '../tasks/upload.ts';
import { nodeOf } from './support/engine-project.ts';
import { createImageFixture } from './support/github-server.ts';
import { HOSTILE_IMAGE_KINDS, type HostileImageKind, makeGoodQcow2, makeHostileImage, REFUSAL_OF } from './support/hostile-images.ts';
import { type Host, makeHost, STORE_BACKENDS } from './support/hostile-store.ts';
import { makeImageProject, makeShellBuiltTree } from './support/image-project.ts';

/** The findings of the issue, and the other ways an image can fail to be a sound qcow2. */
const DOWNLOAD_KINDS: readonly HostileImageKind[] = ['backing-file', 'vmdk-descriptor', 'data-file', 'json-backing-file', 'truncated-header'];

async function withHost(t: import('ava').ExecutionContext): Promise<Host> {
  const host = await makeHost();
  t.teardown(() => rm(host.dir, { recursive: true, force: true }));
  return host;
}

/** Every file under `dir` (recursive), with its bytes. */
async function filesUnder(dir: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])) {
    if (entry.isFile()) files.set(join(entry.parentPath, entry.name), await readFile(join(entry.parentPath, entry.name)));
  }
  return files;
}

for (const [backend, open] of Object.entries(STORE_BACKENDS)) {
  test(`${backend} store: images download --publish refuses an image that reads another file, before the rename, naming what it reads`, async (t) => {
    const host = await withHost(t);
    const store = await open(host);
    t.teardown(() => store.close());
    const project = await makeImageProject(t, store.releaseConfig);
    const scratch = await mkdtemp(join(tmpdir(), 'pipeline-hostile-image-'));
    t.teardown(() => rm(scratch, { recursive: true, force: true }));
    const before = await host.fingerprint();
    for (const kind of DOWNLOAD_KINDS) {
      const image = join(scratch, `${kind}.img`);
      await makeHostileImage(kind, image, host.secret);
      await store.plantImage('debian-12', await readFile(image));
      const downloads = join(scratch, `downloads-${kind}`);
      const result = await project.run(['images', 'download', 'debian-12', '--dir', downloads, '--publish'], {
        env: { ...store.env, PIPELINE_PUBLISH_DIR: project.publishDir },
      });
      t.is(result.code, 1, `${kind}: ${result.stderr}`);
      const lines = result.stderr.split('\n').filter((line) => line.includes('not a self-contained qcow2 image'));
      t.is(lines.length, 1, `${kind}: ${result.stderr}`);
      t.regex(lines[0]!, /^debian-12: debian-12 on \S+ .* is not a self-contained qcow2 image: .*; nothing was downloaded$/, kind);
      t.regex(lines[0]!, REFUSAL_OF[kind], kind);
      t.notRegex(result.stderr, /\n\s+at /, `${kind}: no stack trace`);
      // Nothing under the image's name, no partial download, no lock: the directory holds nothing at all.
      t.deepEqual([...(await filesUnder(downloads)).keys()], [], kind);
      t.deepEqual(
        [...(await filesUnder(project.publishDir)).keys()].map((path) => path.slice(project.publishDir.length + 1)),
        ['.gitkeep'],
        kind,
      );
    }
    t.deepEqual(await host.fingerprint(), before, 'the host is as it was');
  });
}

test('publish refuses every kind of image that is not a self-contained qcow2, and installs nothing', async (t) => {
  const host = await withHost(t);
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-hostile-publish-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const publishDir = join(dir, 'iso');
  await mkdir(publishDir);
  for (const kind of HOSTILE_IMAGE_KINDS) {
    const image = join(dir, `${kind}.qcow2`);
    await makeHostileImage(kind, image, host.secret);
    const sha256 = createHash('sha256')
      .update(await readFile(image))
      .digest('hex');
    const error = await t.throwsAsync(
      publishDownloaded({ source: image, sourceSha256: sha256, publishDir, name: 'debian-12', root: dir, signal: new AbortController().signal }),
    );
    t.true(isFailure(error, 'integrity'), `${kind}: ${error?.message}`);
    t.regex(error?.message ?? '', REFUSAL_OF[kind], kind);
    t.regex(error?.message ?? '', new RegExp(`^${image.replaceAll('/', '\\/')} is not a self-contained qcow2 image: .*; nothing was published to `), kind);
    t.deepEqual(await readdir(publishDir), [], kind);
  }
  // A sound image still publishes.
  const good = join(dir, 'good.qcow2');
  makeGoodQcow2(good);
  const sha256 = createHash('sha256')
    .update(await readFile(good))
    .digest('hex');
  await publishDownloaded({ source: good, sourceSha256: sha256, publishDir, name: 'debian-12', root: dir, signal: new AbortController().signal });
  t.true((await readdir(publishDir)).includes('debian-12.img'));
});

test('the upload node refuses an image with a backing file, and the store gets nothing', async (t) => {
  const host = await withHost(t);
  const store = join(host.dir, '..', `${host.dir.split('/').at(-1)}-store`);
  await mkdir(store);
  t.teardown(() => rm(store, { recursive: true, force: true }));
  const fixture = await createImageFixture([{ name: 'debian-12', size: 4096 }], { dir: store, tag: 'latest' });
  t.teardown(() => fixture.cleanup());
  const image = fixture.catalog.imagePath('debian-12');
  await rm(image);
  await makeHostileImage('backing-file', image, host.secret);
  const sha256 = createHash('sha256')
    .update(await readFile(image))
    .digest('hex');
  await writeFile(`${image}.sha256`, `${sha256}  debian-12.qcow2\n`);
  const node = createUploadNode(fixture.catalog, 'debian-12', 'latest');
  const logs: string[] = [];
  const error = await t.throwsAsync(
    node.run({
      id: node.id,
      root: fixture.root,
      signal: new AbortController().signal,
      force: false,
      flags: {},
      log: (line) => logs.push(line),
      status: () => {},
      progress: () => {},
      logFile: '/dev/null',
      hasher: { hash: async () => ({ size: 0, xxh: '0'.repeat(16) }) },
      tempPath: (path) => `${path}.tmp`,
      beginCommit: async () => {},
      exec: async () => ({ exitCode: 0, stdout: '', stderr: '' }),
    }),
  );
  t.true(isFailure(error, 'integrity'), error?.message);
  t.is(error?.message, `${image} is not a self-contained qcow2 image: it reads through a backing file, "${host.secret}"; not uploaded`);
  t.deepEqual(await readdir(store), [], 'nothing was written to the store');
});

test('a shell-built image that reads a backing file is never adopted: the build is stale and says why', async (t) => {
  const host = await withHost(t);
  const project = await makeImageProject(t);
  await makeShellBuiltTree(project);
  const image = project.path('images/debian-12/debian-12.qcow2');
  await rm(image);
  await makeHostileImage('backing-file', image, host.secret);
  execFileSync('sh', ['-c', 'sha256sum debian-12.qcow2 > debian-12.qcow2.sha256'], { cwd: project.path('images/debian-12') });
  const plan = await project.run(['all', '--dry-run', '--json', '--offline']);
  t.is(plan.code, 0, plan.stderr);
  const build = nodeOf(plan.json, 'debian-12:build');
  t.is(build.status, 'stale');
  t.is(build.reason, `images/debian-12/debian-12.qcow2 is not a self-contained qcow2 image: it reads through a backing file, "${host.secret}"`);
  // The others, sound, are adopted as before.
  t.is(nodeOf(plan.json, 'debian-13:build').status, 'adopted');
});
