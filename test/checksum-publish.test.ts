// Checksum, publish and verify against real tools: images made with qemu-img, checksum
// files checked with sha256sum, published files inspected with `qemu-img info` and
// `qemu-img check`.
import test, { type ExecutionContext } from 'ava';
import { execFile as execFileCallback } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { StatCache } from '../src/hasher.ts';
import { formatBytes } from '../src/report/format.ts';
import { createTaskContext } from '../src/task-context.ts';
import type { CommandIO, NodeDef, TaskContext } from '../src/types.ts';
import { checksumNode, parseSha256Line } from '../tasks/checksum.ts';
import { publishNode, resolvePublishDir, sourceRecordPath } from '../tasks/publish.ts';
import { compressedClusters, imageCompression, imageInfo, type Compression } from '../tasks/qemu-img.ts';
import { verifyCommand } from '../tasks/verify.ts';
import { throwsFailure } from './support/failures.ts';
import { neverAborted } from './support/signals.ts';

const execFile = promisify(execFileCallback);

async function tempRoot(t: ExecutionContext): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'pipeline-publish-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  return root;
}

interface ImageOptions {
  readonly bytes?: number;
  /** Compress as the build does; default: not compressed, as the shell scripts built images. */
  readonly compression?: Compression;
  /** Random bytes (incompressible) or text-like bytes (as a root filesystem compresses). */
  readonly content?: 'random' | 'text';
}

/** A real qcow2 at `images/{name}/{name}.qcow2`. */
async function makeImage(root: string, name: string, options: ImageOptions = {}): Promise<string> {
  const { bytes = 2 * 1024 * 1024, compression, content = 'random' } = options;
  const dir = join(root, 'images', name);
  await mkdir(dir, { recursive: true });
  const raw = join(dir, `.${name}.raw`);
  await writeFile(raw, content === 'random' ? randomBytes(bytes) : textBytes(bytes));
  const image = join(dir, `${name}.qcow2`);
  await rm(image, { force: true });
  const compress = compression ? ['-c', '-o', `compression_type=${compression}`] : [];
  await execFile('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', ...compress, raw, image]);
  await rm(raw);
  return image;
}

/** Lines of numbers and random words: compressible, and different every time. */
function textBytes(bytes: number): Buffer {
  const lines: string[] = [];
  let length = 0;
  for (let i = 0; length < bytes; i++) {
    const line = `${i} ${randomBytes(6).toString('base64')} /usr/lib/x86_64-linux-gnu/lib${i % 97}.so\n`;
    lines.push(line);
    length += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, bytes);
}

async function sha256Of(path: string): Promise<string> {
  return (await execFile('sha256sum', [path])).stdout.split(' ')[0]!;
}

interface Harness {
  readonly ctx: TaskContext;
  readonly lines: string[];
  /** Programs the task started, as `file arg…`, but for qemu-img's reads of metadata (`info`, `check`, `--version`). */
  readonly execs: string[];
  readonly progress: Array<[number, number | undefined]>;
}

/** A task context as the engine makes it, with the programs the task runs recorded. */
async function harness(
  root: string,
  id: string,
  controller = new AbortController(),
  hasher?: StatCache,
): Promise<Harness & { close(): Promise<void>; removeTemps(): Promise<void> }> {
  const lines: string[] = [];
  const execs: string[] = [];
  const progress: Array<[number, number | undefined]> = [];
  const owned = createTaskContext({
    id,
    root,
    logFile: join(root, 'logs', `${id.replace(':', '.')}.log`),
    signal: controller.signal,
    hasher: hasher ?? (await StatCache.open()),
    onStatus: (line) => lines.push(line),
    onProgress: (done, total) => progress.push([done, total]),
  });
  const ctx: TaskContext = {
    ...owned,
    exec(file, args, options) {
      if (!(file === 'qemu-img' && ['info', 'check', '--version'].includes(args[0] ?? ''))) execs.push([file, ...args].join(' '));
      return owned.exec(file, args, options);
    },
  };
  return { ctx, lines, execs, progress, close: () => owned.close(), removeTemps: () => owned.removeTemps() };
}

async function runNode(node: NodeDef, root: string, hasher?: StatCache, controller?: AbortController): Promise<Harness> {
  const h = await harness(root, node.id, controller, hasher);
  try {
    await node.run(h.ctx);
  } catch (error) {
    await h.removeTemps();
    throw error;
  } finally {
    await h.close();
  }
  return h;
}

async function listing(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

// ---------------------------------------------------------------------------------------
// checksum

test('checksum writes a .sha256 that sha256sum -c accepts from inside the directory', async (t) => {
  const root = await tempRoot(t);
  await makeImage(root, 'debian-12');
  const node = checksumNode({ name: 'debian-12' });
  t.is(node.id, 'debian-12:checksum');
  t.deepEqual(node.deps, ['debian-12:build']);
  t.deepEqual(node.outputs, ['images/debian-12/debian-12.qcow2.sha256']);

  const { progress } = await runNode(node, root);
  const dir = join(root, 'images', 'debian-12');
  const text = await readFile(join(dir, 'debian-12.qcow2.sha256'), 'utf8');
  t.regex(text, /^[0-9a-f]{64} {2}debian-12\.qcow2\n$/);
  const { stdout } = await execFile('sha256sum', ['-c', 'debian-12.qcow2.sha256'], { cwd: dir });
  t.is(stdout.trim(), 'debian-12.qcow2: OK');
  const expected = (await execFile('sha256sum', ['debian-12.qcow2'], { cwd: dir })).stdout.split(' ')[0];
  t.is(parseSha256Line(text)?.sha256, expected);
  t.true(progress.length > 0);
  t.deepEqual(await listing(dir), ['debian-12.qcow2', 'debian-12.qcow2.sha256'], 'no temp file left');
});

test('checksum reads no bytes when the stat cache already has the SHA-256', async (t) => {
  const root = await tempRoot(t);
  const image = await makeImage(root, 'pve-9');
  const hasher = await StatCache.open();
  await hasher.hash(image, { sha256: true }); // what the engine does for the build's output
  const before = hasher.bytesHashed;
  await runNode(checksumNode({ name: 'pve-9' }), root, hasher);
  t.is(hasher.bytesHashed, before);
  const { stdout } = await execFile('sha256sum', ['-c', 'pve-9.qcow2.sha256'], { cwd: join(root, 'images', 'pve-9') });
  t.is(stdout.trim(), 'pve-9.qcow2: OK');
});

// ---------------------------------------------------------------------------------------
// publish

function publishFor(root: string, name: string) {
  const publishDir = join(root, 'pve-iso');
  return { publishDir, node: publishNode({ name, publishDir }), dest: join(publishDir, `${name}.img`) };
}

test('publish copies a compressed image: the .img is byte-identical and has the image SHA-256', async (t) => {
  const root = await tempRoot(t);
  const image = await makeImage(root, 'debian-13', { compression: 'zstd', content: 'text' });
  const { publishDir, node, dest } = publishFor(root, 'debian-13');
  await mkdir(publishDir);
  t.is(node.id, 'debian-13:publish');
  t.deepEqual(node.deps, ['debian-13:checksum']);
  t.deepEqual(node.env, ['PIPELINE_PUBLISH_DIR']);
  await node.preflight?.({ root, flags: {}, signal: neverAborted() });

  const { execs, progress, lines } = await runNode(node, root);
  t.deepEqual(execs, [], 'no qemu-img convert: the image is compressed already');
  t.deepEqual(await readFile(dest), await readFile(image));
  t.is(await sha256Of(dest), await sha256Of(image));
  t.is(await imageCompression(dest), 'zstd');
  const size = (await stat(image)).size;
  t.deepEqual(progress.at(-1), [size, size]);
  t.true(lines.some((line) => /published .* \(copied, \d+ bytes\)/.test(line)));
  t.deepEqual(await listing(publishDir), ['.debian-13.img.source', 'debian-13.img']);
});

test('publish copies a zlib-compressed image too', async (t) => {
  const root = await tempRoot(t);
  const image = await makeImage(root, 'debian-12', { compression: 'zlib', content: 'text' });
  const { publishDir, node, dest } = publishFor(root, 'debian-12');
  await mkdir(publishDir);
  const { execs } = await runNode(node, root);
  t.deepEqual(execs, []);
  t.is(await sha256Of(dest), await sha256Of(image));
  t.is(await imageCompression(dest), 'zlib');
});

test('publish converts an uncompressed image (as the shell scripts built them) with qemu-img convert -c', async (t) => {
  const root = await tempRoot(t);
  const image = await makeImage(root, 'debian-13', { content: 'text' });
  t.is(await compressedClusters(image), 0);
  t.is(await imageCompression(image), 'none');
  const { publishDir, node, dest } = publishFor(root, 'debian-13');
  await mkdir(publishDir);

  const { execs, progress, lines } = await runNode(node, root);
  t.is(execs.length, 1);
  t.regex(execs[0] ?? '', /^qemu-img convert -p -f qcow2 -c -m \d+ -O qcow2 -o compression_type=zstd \/\S+debian-13\.qcow2 \/\S+\/\.debian-13\.img\.\S+\.tmp$/);
  t.true(lines.some((line) => line.includes('it is not compressed')));
  const info = await imageInfo(dest);
  t.is(info.format, 'qcow2');
  t.is(info.virtualSize, (await imageInfo(image)).virtualSize);
  t.true((await compressedClusters(dest)) > 0, 'the published image is compressed');
  t.is(await imageCompression(dest), 'zstd');
  t.deepEqual(progress.at(-1), [100, 100], 'qemu-img -p reports a percentage, shown as one (not as bytes of the source file)');
  t.deepEqual(await listing(publishDir), ['.debian-13.img.source', 'debian-13.img']);
  // The published image holds the same guest data.
  await t.notThrowsAsync(execFile('qemu-img', ['compare', image, dest]));
});

test('the conversion of an uncompressed image uses the configured compression', async (t) => {
  const root = await tempRoot(t);
  await makeImage(root, 'pve-9', { content: 'text' });
  const publishDir = join(root, 'pve-iso');
  await mkdir(publishDir);
  const node = publishNode({ name: 'pve-9', publishDir, compression: 'zlib' });
  const { execs } = await runNode(node, root);
  t.regex(execs[0] ?? '', /^qemu-img convert -p -f qcow2 -c -m \d+ -O qcow2 \S+pve-9\.qcow2 /, 'zlib is qcow2 default: no -o');
  t.is(await imageCompression(join(publishDir, 'pve-9.img')), 'zlib');
});

test('a published .img changed with its mtime put back is published again (ctime)', async (t) => {
  const root = await tempRoot(t);
  const image = await makeImage(root, 'debian-12', { compression: 'zstd', content: 'text' });
  const { publishDir, node, dest } = publishFor(root, 'debian-12');
  await mkdir(publishDir);
  await runNode(node, root);
  const probe = () => node.probe!({ root, flags: {}, signal: new AbortController().signal, previous: 'recorded' });
  t.is((await probe()).value, 'recorded');

  // Flip one byte in place: same size, same inode, and the old times restored to the
  // nanosecond (touch -r copies them from a reference taken before).
  const before = await stat(dest, { bigint: true });
  const reference = join(root, 'times-of-debian-12.img');
  await execFile('touch', ['-r', dest, reference]);
  const handle = await open(dest, 'r+');
  const byte = Buffer.alloc(1);
  await handle.read(byte, 0, 1, 70_000);
  await handle.write(Buffer.from([byte[0]! ^ 0xff]), 0, 1, 70_000);
  await handle.close();
  await execFile('touch', ['-r', reference, dest]);
  const after = await stat(dest, { bigint: true });
  t.is(after.mtimeNs, before.mtimeNs);
  t.not(after.ctimeNs, before.ctimeNs);
  t.is(after.size, before.size);
  t.is(after.ino, before.ino);

  const changed = await probe();
  t.not(changed.value, 'recorded');
  t.regex(changed.note ?? '', /debian-12\.img was changed outside pipeline/);
  const again = await runNode(node, root);
  t.false(again.lines.some((line) => line.includes('already published')));
  t.is(await sha256Of(dest), await sha256Of(image), 'the damaged copy was replaced');
});

test('publish is skipped when the published file was made from the same content', async (t) => {
  const root = await tempRoot(t);
  const image = await makeImage(root, 'debian-13');
  const { publishDir, node, dest } = publishFor(root, 'debian-13');
  await mkdir(publishDir);
  await runNode(node, root);
  const first = await stat(dest);

  // A touched source (same bytes, new mtime) is still the same content.
  const now = new Date(Date.now() + 5_000);
  const { utimes } = await import('node:fs/promises');
  await utimes(image, now, now);
  const second = await runNode(node, root);
  t.deepEqual(second.execs, [], 'no qemu-img run');
  t.true(second.lines.some((line) => line.includes('already published')));
  t.is((await stat(dest)).ino, first.ino);

  // The probe keeps the recorded value while the published copy is intact…
  const intact = await node.probe?.({ root, flags: {}, signal: new AbortController().signal, previous: 'recorded' });
  t.is(intact?.value, 'recorded');
  // …and changes it when someone removed the file, so the engine re-runs the node.
  await rm(dest);
  const gone = await node.probe?.({ root, flags: {}, signal: new AbortController().signal, previous: 'recorded' });
  t.not(gone?.value, 'recorded');
  t.regex(gone?.note ?? '', /debian-13\.img is missing/);
  const third = await runNode(node, root);
  t.is(third.execs.length, 1);
  await t.notThrowsAsync(stat(dest));
});

test('publish runs again when the image changed', async (t) => {
  const root = await tempRoot(t);
  const image = await makeImage(root, 'pve-9');
  const { publishDir, node, dest } = publishFor(root, 'pve-9');
  await mkdir(publishDir);
  await runNode(node, root);
  const before = JSON.parse(await readFile(sourceRecordPath(publishDir, 'pve-9'), 'utf8')) as { sourceSha256: string };

  await makeImage(root, 'pve-9');
  const again = await runNode(node, root);
  t.is(again.execs.length, 1);
  const after = JSON.parse(await readFile(sourceRecordPath(publishDir, 'pve-9'), 'utf8')) as { sourceSha256: string };
  t.not(after.sourceSha256, before.sourceSha256);
  await t.notThrowsAsync(execFile('qemu-img', ['compare', image, dest]));
});

test('preflight: a missing or unwritable publish directory is a SetupError saying what to do', async (t) => {
  const root = await tempRoot(t);
  const missing = publishNode({ name: 'x', publishDir: join(root, 'nope') });
  const error = await throwsFailure(t, missing.preflight!({ root, flags: {}, signal: neverAborted() }), 'setup');
  t.regex(error?.message ?? '', /publish directory .*nope does not exist: create it.*PIPELINE_PUBLISH_DIR/);
  t.false(error?.message.includes('\n'));

  // root writes through mode bits, so as root use a directory the kernel refuses files in.
  let unwritable = '/sys/kernel';
  if (process.getuid?.() !== 0) {
    unwritable = join(root, 'read-only');
    await mkdir(unwritable);
    await chmod(unwritable, 0o555);
  }
  const denied = publishNode({ name: 'x', publishDir: unwritable });
  const deniedError = await throwsFailure(t, denied.preflight!({ root, flags: {}, signal: neverAborted() }), 'setup');
  t.regex(deniedError?.message ?? '', /is not writable .*PIPELINE_PUBLISH_DIR/);
});

test('a failed publish leaves no temp file and the previous published image intact', async (t) => {
  const root = await tempRoot(t);
  await makeImage(root, 'debian-12');
  const { publishDir, node, dest } = publishFor(root, 'debian-12');
  await mkdir(publishDir);
  await runNode(node, root);
  const good = await readFile(dest);

  // A qcow2 header no QEMU reads: refused before anything is written.
  const image = join(root, 'images', 'debian-12', 'debian-12.qcow2');
  const handle = await open(image, 'r+');
  await handle.write(Buffer.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 99]), 0, 8, 0);
  await handle.close();
  const error = await throwsFailure(t, runNode(node, root), 'integrity');
  t.regex(error?.message ?? '', /debian-12\.qcow2 is not a self-contained qcow2 image: its qcow2 header has version 99/);
  t.deepEqual(await listing(publishDir), ['.debian-12.img.source', 'debian-12.img']);
  t.deepEqual(await readFile(dest), good);
});

test('an interrupted conversion removes its temp file', async (t) => {
  const root = await tempRoot(t);
  await makeImage(root, 'big', { bytes: 96 * 1024 * 1024 });
  const { publishDir, node } = publishFor(root, 'big');
  await mkdir(publishDir);
  const controller = new AbortController();
  const h = await harness(root, node.id, controller);
  const running = node.run({
    ...h.ctx,
    // Abort once qemu-img reports progress: the temp file exists and is half written.
    progress(done, total) {
      if (done > 0 && total !== undefined && done < total) controller.abort();
    },
  });
  // The abort reason is a DOMException, which Node 20 does not make an Error.
  const outcome = await running.then(
    () => 'finished',
    (error: unknown) => (error as { name?: string }).name,
  );
  t.is(outcome, 'AbortError');
  await h.removeTemps();
  await h.close();
  t.deepEqual(await listing(publishDir), []);
});

test('an interrupted copy removes its temp file and leaves the published image alone', async (t) => {
  const root = await tempRoot(t);
  await makeImage(root, 'big', { bytes: 64 * 1024 * 1024, compression: 'zstd', content: 'text' });
  const { publishDir, node, dest } = publishFor(root, 'big');
  await mkdir(publishDir);
  await writeFile(dest, 'the previous image\n');
  const controller = new AbortController();
  const h = await harness(root, node.id, controller);
  const outcome = await node
    .run({
      ...h.ctx,
      // Interrupted as the copy starts (its first progress report is 0 bytes).
      progress(done, total) {
        if (done === 0 && total !== undefined && total > 0) controller.abort();
      },
    })
    .then(
      () => 'finished',
      (error: unknown) => (error as { name?: string }).name,
    );
  t.is(outcome, 'AbortError');
  await h.removeTemps();
  await h.close();
  t.deepEqual(await listing(publishDir), ['big.img']);
  t.is(await readFile(dest, 'utf8'), 'the previous image\n');
});

test('PIPELINE_PUBLISH_DIR overrides the configured directory; --dry-run says whether it would copy or convert', async (t) => {
  t.is(resolvePublishDir(undefined, {}), '/var/lib/vz/template/iso');
  t.is(resolvePublishDir('/srv/iso', {}), '/srv/iso');
  t.is(resolvePublishDir('/srv/iso', { PIPELINE_PUBLISH_DIR: '/tmp/other' }), '/tmp/other');

  const root = await tempRoot(t);
  const node = publishNode({ name: 'debian-12', publishDir: '/srv/iso' });
  t.is(
    await node.describeRun?.({ root, flags: {}, signal: neverAborted() }),
    'would copy images/debian-12/debian-12.qcow2 -> /srv/iso/debian-12.img (not built yet)',
  );

  const compressed = await makeImage(root, 'debian-12', { bytes: 3 * 1024 * 1024, compression: 'zstd', content: 'text' });
  t.is(
    await node.describeRun?.({ root, flags: {}, signal: neverAborted() }),
    `would copy images/debian-12/debian-12.qcow2 -> /srv/iso/debian-12.img (${formatBytes((await stat(compressed)).size)}, compressed)`,
  );
  const plain = await makeImage(root, 'debian-12', { bytes: 3 * 1024 * 1024, content: 'text' });
  t.is(
    await node.describeRun?.({ root, flags: {}, signal: neverAborted() }),
    `would convert images/debian-12/debian-12.qcow2 -> /srv/iso/debian-12.img with qemu-img convert -c (zstd): it is not compressed (${formatBytes((await stat(plain)).size)})`,
  );
});

// ---------------------------------------------------------------------------------------
// verify

function commandIO(root: string): CommandIO & { lines: string[] } {
  const lines: string[] = [];
  return {
    root,
    signal: new AbortController().signal,
    json: false,
    lines,
    out: (line) => lines.push(line),
    err: (line) => lines.push(`stderr: ${line}`),
    progress: () => {},
    hasher: { hash: () => Promise.reject(new Error('verify must not use the stat cache')) },
  };
}

function catalogOf(root: string, names: string[]) {
  return {
    names,
    root,
    imagePath: (name: string) => join(root, 'images', name, `${name}.qcow2`),
    checksumPath: (name: string) => join(root, 'images', name, `${name}.qcow2.sha256`),
  };
}

test('verify re-hashes each image: OK, FAILED with both digests, missing; exit 1', async (t) => {
  const root = await tempRoot(t);
  for (const name of ['debian-12', 'debian-13']) {
    await makeImage(root, name);
    await runNode(checksumNode({ name }), root);
  }
  const command = verifyCommand(catalogOf(root, ['debian-12', 'debian-13', 'pve-9']));
  const clean = commandIO(root);
  t.is(await command.run({ values: {}, positionals: ['debian-12', 'debian-13'] }, clean), 0);
  t.deepEqual(clean.lines, ['debian-12: OK', 'debian-13: OK']);

  // Flip one byte without changing size: only a full read notices.
  const image = join(root, 'images', 'debian-13', 'debian-13.qcow2');
  const bytes = await readFile(image);
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0xff;
  await writeFile(image, bytes);
  const io = commandIO(root);
  t.is(await command.run({ values: {}, positionals: [] }, io), 1);
  t.is(io.lines[0], 'debian-12: OK');
  t.regex(io.lines[1] ?? '', /^debian-13: FAILED \(expected [0-9a-f]{64}, got [0-9a-f]{64}\)$/);
  t.is(io.lines[2], 'pve-9: missing');
});

test('verify: an unknown name is a usage error with a suggestion', async (t) => {
  const root = await tempRoot(t);
  const command = verifyCommand(catalogOf(root, ['debian-12', 'pve-9']));
  const error = await throwsFailure(t, command.run({ values: {}, positionals: ['pve9'] }, commandIO(root)), 'usage');
  t.regex(error?.message ?? '', /unknown image "pve9" \(did you mean "pve-9"\?\)/);
});
