// Checksum, publish and verify against real tools: images made with qemu-img, checksum
// files checked with sha256sum, published files inspected with `qemu-img info`.
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
import { type CommandIO, type NodeDef, type TaskContext } from '../src/types.ts';
import { checksumNode, parseSha256Line } from '../tasks/checksum.ts';
import { publishNode, resolvePublishDir, sourceRecordPath } from '../tasks/publish.ts';
import { imageInfo } from '../tasks/qemu-img.ts';
import { verifyCommand } from '../tasks/verify.ts';
import { throwsFailure } from './support/failures.ts';

const execFile = promisify(execFileCallback);

async function tempRoot(t: ExecutionContext): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'pipeline-publish-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  return root;
}

/** A real qcow2 holding `bytes` random bytes, at `images/{name}/{name}.qcow2`. */
async function makeImage(root: string, name: string, bytes = 2 * 1024 * 1024): Promise<string> {
  const dir = join(root, 'images', name);
  await mkdir(dir, { recursive: true });
  const raw = join(dir, `.${name}.raw`);
  await writeFile(raw, randomBytes(bytes));
  const image = join(dir, `${name}.qcow2`);
  await rm(image, { force: true });
  await execFile('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, image]);
  await rm(raw);
  return image;
}

interface Harness {
  readonly ctx: TaskContext;
  readonly lines: string[];
  /** Programs the task started, as `file arg…`. */
  readonly execs: string[];
  readonly progress: Array<[number, number | undefined]>;
}

/** A task context as the engine makes it, with the programs the task runs recorded. */
async function harness(root: string, id: string, controller = new AbortController(), hasher?: StatCache): Promise<Harness & { close(): Promise<void>; removeTemps(): Promise<void> }> {
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
      execs.push([file, ...args].join(' '));
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

test('publish produces a compressed qcow2 .img and leaves no temp file', async (t) => {
  const root = await tempRoot(t);
  const image = await makeImage(root, 'debian-13');
  const { publishDir, node, dest } = publishFor(root, 'debian-13');
  await mkdir(publishDir);
  t.is(node.id, 'debian-13:publish');
  t.deepEqual(node.deps, ['debian-13:checksum']);
  t.deepEqual(node.env, ['PIPELINE_PUBLISH_DIR']);
  await node.preflight?.({ root, flags: {} });

  const { execs, progress } = await runNode(node, root);
  t.is(execs.length, 1);
  t.regex(execs[0] ?? '', /^qemu-img convert -p -c -O qcow2 \S+debian-13\.qcow2 \S+\/\.debian-13\.img\.\S+\.tmp$/);
  const info = await imageInfo(dest);
  const source = await imageInfo(image);
  t.is(info.format, 'qcow2');
  t.is(info.virtualSize, source.virtualSize);
  t.deepEqual(progress.at(-1), [100, 100], 'qemu-img -p reports a percentage, shown as one (not as bytes of the source file)');
  t.deepEqual(await listing(publishDir), ['.debian-13.img.source', 'debian-13.img']);
  // The published image holds the same guest data.
  await t.notThrowsAsync(execFile('qemu-img', ['compare', image, dest]));
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
  const error = await throwsFailure(t, missing.preflight!({ root, flags: {} }), 'setup');
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
  const deniedError = await throwsFailure(t, denied.preflight!({ root, flags: {} }), 'setup');
  t.regex(deniedError?.message ?? '', /is not writable .*PIPELINE_PUBLISH_DIR/);
});

test('a failed conversion leaves no temp file and the previous published image intact', async (t) => {
  const root = await tempRoot(t);
  await makeImage(root, 'debian-12');
  const { publishDir, node, dest } = publishFor(root, 'debian-12');
  await mkdir(publishDir);
  await runNode(node, root);
  const good = await readFile(dest);

  // A qcow2 header qemu-img refuses: the conversion fails.
  const image = join(root, 'images', 'debian-12', 'debian-12.qcow2');
  const handle = await open(image, 'r+');
  await handle.write(Buffer.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 99]), 0, 8, 0);
  await handle.close();
  const error = await throwsFailure(t, runNode(node, root), 'task');
  t.regex(error?.message ?? '', /qemu-img convert .* failed: /);
  t.deepEqual(await listing(publishDir), ['.debian-12.img.source', 'debian-12.img']);
  t.deepEqual(await readFile(dest), good);
});

test('an interrupted conversion removes its temp file', async (t) => {
  const root = await tempRoot(t);
  await makeImage(root, 'big', 96 * 1024 * 1024);
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

test('PIPELINE_PUBLISH_DIR overrides the configured directory; --dry-run says what would be copied', async (t) => {
  t.is(resolvePublishDir(undefined, {}), '/var/lib/vz/template/iso');
  t.is(resolvePublishDir('/srv/iso', {}), '/srv/iso');
  t.is(resolvePublishDir('/srv/iso', { PIPELINE_PUBLISH_DIR: '/tmp/other' }), '/tmp/other');

  const root = await tempRoot(t);
  const image = await makeImage(root, 'debian-12', 3 * 1024 * 1024);
  const node = publishNode({ name: 'debian-12', publishDir: '/srv/iso' });
  const size = formatBytes((await stat(image)).size);
  t.is(await node.describeRun?.({ root, flags: {} }), `would copy images/debian-12/debian-12.qcow2 -> /srv/iso/debian-12.img (${size})`);
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
    runTargets: async () => 0,
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
