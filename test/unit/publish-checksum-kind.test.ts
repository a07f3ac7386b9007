// The checksum and publish kinds' runs in process: qemu-img is the test's fake
// (test/unit/support/programs.ts), given to the production TaskContext; the image files are
// real qcow2 headers (test/unit/support/qcow2.ts) in a temp directory.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { isFailure } from '../../src/failure.ts';
import { StatCache } from '../../src/hasher.ts';
import { checksumNode } from '../../tasks/checksum.ts';
import { PUBLISH_DIR_ENV, publishNode } from '../../tasks/publish.ts';
import { FakePrograms, FakeQemuImg, kindContext, tempRoot } from './support/programs.ts';
import { qcow2Bytes } from './support/qcow2.ts';

// The environment would choose the publish directory over the one each test gives.
delete process.env[PUBLISH_DIR_ENV];

const NAME = 'debian-12';
const IMAGE = `images/${NAME}/${NAME}.qcow2`;

function imageTree(t: Parameters<typeof tempRoot>[0], image: Buffer): { root: string; publishDir: string; image: string } {
  const root = tempRoot(t);
  mkdirSync(join(root, 'images', NAME), { recursive: true });
  mkdirSync(join(root, 'publish'));
  writeFileSync(join(root, IMAGE), image);
  return { root, publishDir: join(root, 'publish'), image: join(root, IMAGE) };
}

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

test('checksum writes the image’s sha256sum line beside it and starts no program', async (t) => {
  const bytes = qcow2Bytes({ data: 'checksum me' });
  const tree = imageTree(t, bytes);
  const fake = new FakePrograms({});
  const node = checksumNode({ name: NAME });
  await node.run(await kindContext(t, tree.root, fake, node.id));
  t.is(readFileSync(`${tree.image}.sha256`, 'utf8'), `${sha256(bytes)}  ${NAME}.qcow2\n`);
  t.deepEqual(fake.calls, []);
  t.deepEqual(readdirSync(join(tree.root, 'images', NAME)).sort(), [`${NAME}.qcow2`, `${NAME}.qcow2.sha256`]);
});

test('checksum adopts a .sha256 another tool wrote only when it holds the image’s digest', async (t) => {
  const bytes = qcow2Bytes({ data: 'adopt me' });
  const tree = imageTree(t, bytes);
  const node = checksumNode({ name: NAME });
  const adopt = async () =>
    node.adopt!({ root: tree.root, flags: {}, signal: new AbortController().signal, hasher: await StatCache.open(), probe: undefined, waitingOn: [] });
  t.deepEqual(await adopt(), { adopt: false, reason: `${IMAGE} has no ${NAME}.qcow2.sha256 to check it against` });
  writeFileSync(`${tree.image}.sha256`, `${sha256(bytes)} *${NAME}.qcow2\n`);
  t.deepEqual(await adopt(), { adopt: true, reason: `it holds the SHA-256 of ${NAME}.qcow2` });
  writeFileSync(`${tree.image}.sha256`, `${sha256(Buffer.from('other bytes'))}  ${NAME}.qcow2\n`);
  t.deepEqual(await adopt(), { adopt: false, reason: `${IMAGE} does not match its .sha256` });
});

test('publish copies a compressed image byte for byte, and a second publish of the same image starts nothing', async (t) => {
  const bytes = qcow2Bytes({ data: 'compressed' });
  const tree = imageTree(t, bytes);
  const qemuImg = new FakeQemuImg();
  qemuImg.facts.set(tree.image, { compressedClusters: 12, compressionType: 'zstd' });
  const fake = new FakePrograms({ 'qemu-img': qemuImg.program });
  const node = publishNode({ name: NAME, publishDir: tree.publishDir });
  await node.run(await kindContext(t, tree.root, fake, node.id));

  t.deepEqual(fake.commands(), ['qemu-img --version', 'qemu-img info', 'qemu-img info', 'qemu-img check']);
  for (const call of fake.calls.slice(1)) {
    t.is(call.args[call.args.indexOf('-f') + 1], 'qcow2', 'every image is opened as qcow2…');
    t.is(call.args.at(-1), tree.image, '…by its absolute path');
  }
  t.deepEqual(readFileSync(join(tree.publishDir, `${NAME}.img`)), bytes);
  t.true(existsSync(join(tree.publishDir, `.${NAME}.img.source`)));

  fake.calls.length = 0;
  const again = await kindContext(t, tree.root, fake, node.id);
  await node.run(again);
  await again.close();
  t.deepEqual(fake.calls, []);
  t.regex(readFileSync(again.logFile, 'utf8'), /is already published from this image \(sha256 [0-9a-f]{12}…\); skipping/);
});

test('publish converts an image that is not compressed with qemu-img convert -c', async (t) => {
  const tree = imageTree(t, qcow2Bytes({ data: 'as the shell scripts built it' }));
  const qemuImg = new FakeQemuImg();
  const fake = new FakePrograms({ 'qemu-img': qemuImg.program });
  const node = publishNode({ name: NAME, publishDir: tree.publishDir, compression: 'zlib' });
  const context = await kindContext(t, tree.root, fake, node.id);
  await node.run(context);
  await context.close();

  const [convert] = fake.argsOf('qemu-img', 'convert');
  t.is(convert![convert!.indexOf('-f') + 1], 'qcow2');
  t.true(convert!.includes('-c'));
  t.is(convert!.at(-2), tree.image);
  t.regex(convert!.at(-1)!, new RegExp(`^${tree.publishDir}/`), 'converted into a temp name beside the published file');
  t.deepEqual(readFileSync(join(tree.publishDir, `${NAME}.img`)), readFileSync(tree.image));
  t.regex(readFileSync(context.logFile, 'utf8'), /converting .*: it is not compressed/);
  t.deepEqual(readdirSync(tree.publishDir).sort(), [`.${NAME}.img.source`, `${NAME}.img`]);
});

test('publish refuses an image whose header names a backing file before qemu-img opens it', async (t) => {
  const tree = imageTree(t, qcow2Bytes({ backingFile: '/etc/shadow' }));
  const fake = new FakePrograms({ 'qemu-img': new FakeQemuImg().program });
  const node = publishNode({ name: NAME, publishDir: tree.publishDir });
  const error = await t.throwsAsync(async () => node.run(await kindContext(t, tree.root, fake, node.id)));
  t.true(isFailure(error, 'integrity'));
  t.is(
    error!.message,
    `${tree.image} is not a self-contained qcow2 image: it reads through a backing file, "/etc/shadow"; nothing was published to ${join(tree.publishDir, `${NAME}.img`)}`,
  );
  t.deepEqual(fake.calls, []);
  t.deepEqual(readdirSync(tree.publishDir), []);
});

test('publish refuses an image in which qemu-img finds a backing file', async (t) => {
  const tree = imageTree(t, qcow2Bytes());
  const qemuImg = new FakeQemuImg();
  qemuImg.facts.set(tree.image, { compressedClusters: 3, backingFile: 'nbd://elsewhere/disk' });
  const fake = new FakePrograms({ 'qemu-img': qemuImg.program });
  const node = publishNode({ name: NAME, publishDir: tree.publishDir });
  const error = await t.throwsAsync(async () => node.run(await kindContext(t, tree.root, fake, node.id)));
  t.true(isFailure(error, 'integrity'));
  t.regex(error!.message, /qemu-img finds a backing file, "nbd:\/\/elsewhere\/disk"; nothing was published/);
  t.deepEqual(fake.commands(), ['qemu-img --version', 'qemu-img info']);
  t.deepEqual(readdirSync(tree.publishDir), []);
});

test('publish without qemu-img installed fails in one line and publishes nothing', async (t) => {
  const tree = imageTree(t, qcow2Bytes());
  const fake = new FakePrograms({});
  const node = publishNode({ name: NAME, publishDir: tree.publishDir });
  const error = await t.throwsAsync(async () => node.run(await kindContext(t, tree.root, fake, node.id)));
  t.regex(error!.message, /^qemu-img info .* failed: \/bin\/sh: 1: exec: qemu-img: not found$/);
  t.deepEqual(readdirSync(tree.publishDir), []);
});
