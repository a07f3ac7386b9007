// The second image store backend, a shared directory, through the same upload node and the
// same release and images commands as GitHub releases (the seam: nothing above the store
// knows which one it talks to). Two trees upload at once into one directory.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { startCli } from './support/engine-project.ts';
import { IMAGES, makeImageProject } from './support/image-project.ts';

test('upload, release check, images list|download and release remove work on a shared directory, with two writers at once', async (t) => {
  const shared = await mkdtemp(join(tmpdir(), 'pipeline-shared-'));
  t.teardown(() => rm(shared, { recursive: true, force: true }));
  const project = await makeImageProject(t, `release: { dir: ${JSON.stringify(shared)}, tag: 'latest' },`);
  const built = await project.run(['all'], { timeoutMs: 300_000 });
  t.is(built.code, 0, built.stderr);
  const other = `${project.root}-other`;
  t.teardown(() => rm(other, { recursive: true, force: true }));
  await cp(project.root, other, { recursive: true });

  // Two machines upload every image into the same directory at the same moment.
  const [first, second] = await Promise.all([startCli(project.root, ['upload:latest']).done, startCli(other, ['upload:latest']).done]);
  t.is(first.code, 0, first.stderr);
  t.is(second.code, 0, second.stderr);
  const index = JSON.parse(await readFile(join(shared, 'latest', 'images.json'), 'utf8')) as { images: Record<string, { sha256: string }> };
  t.deepEqual(Object.keys(index.images), [...IMAGES]);
  for (const name of IMAGES) {
    const bytes = await readFile(project.path(`images/${name}/${name}.qcow2`));
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    t.is(index.images[name]!.sha256, sha256);
    t.deepEqual(await readFile(join(shared, 'latest', `${name}.qcow2`)), bytes);
    t.is(await readFile(join(shared, 'latest', `${name}.qcow2.sha256`), 'utf8'), `${sha256}  ${name}.qcow2\n`);
  }
  t.deepEqual(
    (await readdir(join(shared, 'latest'))).filter((file) => file.endsWith('.tmp')),
    [],
    'no temporary file left',
  );

  const again = await project.run(['upload:latest', '--json']);
  t.is(again.code, 0, again.stderr);
  t.deepEqual(
    again.json?.nodes.filter((node) => node.status === 'ran').map((node) => node.id),
    [],
    'nothing is stored twice',
  );

  const check = await project.run(['release', 'check']);
  t.is(check.code, 0, check.stderr);
  t.deepEqual(check.stdout.trim().split('\n'), [...IMAGES.map((name) => `${name}: current`), 'No template changes detected: images on `latest` are current']);
  const list = await project.run(['images', 'list']);
  t.is(list.code, 0, list.stderr);
  t.is(list.stdout.trim().split('\n').length, 3);

  const host = join(project.root, 'fresh-host');
  await mkdir(host);
  const download = await project.run(['images', 'download', 'all', '--dir', join(host, 'images'), '--publish'], {
    env: { PIPELINE_PUBLISH_DIR: join(host, 'iso') },
  });
  t.is(download.code, 0, download.stderr);
  t.deepEqual(
    (await readdir(join(host, 'iso'))).filter((file) => !file.startsWith('.')).sort(),
    IMAGES.map((name) => `${name}.img`),
  );

  const removed = await project.run(['release', 'remove', 'pve-9']);
  t.is(removed.code, 0, removed.stderr);
  t.false(existsSync(join(shared, 'latest', 'pve-9.qcow2')));
  const after = JSON.parse(await readFile(join(shared, 'latest', 'images.json'), 'utf8')) as { images: Record<string, unknown> };
  t.deepEqual(Object.keys(after.images), ['debian-12', 'debian-13']);
  const stale = await project.run(['release', 'check']);
  t.is(stale.code, 1);
  t.regex(stale.stdout, /pve-9: stale: not on the release/);
});
