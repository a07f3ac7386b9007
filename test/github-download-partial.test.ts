// What a failed `getImage` leaves behind, against the loopback GitHub: a failure worth
// resuming (the network dropped) keeps `.partial` and its `.partial.json` and the next run
// resumes from them; one that is not (a full disk, bytes that do not match the SHA-256)
// removes both. The full disk is a real one: a small tmpfs (this needs root, as the
// developers' machines and CI are).
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getImage } from '../tasks/store/get-image.ts';
import { storeSettings } from '../tasks/store/backends.ts';
import { openImageStore } from '../tasks/store/open.ts';
import { GitHubServer } from './support/github-server.ts';
import { throwsFailure } from './support/failures.ts';
import { neverAborted } from './support/signals.ts';

const PART = 300 * 1024;
const PARTS = ['aa', 'ab', 'ac'];

/** A release holding image `img` in three parts and its `.sha256`. */
async function serve(t: ExecutionContext) {
  const server = await GitHubServer.start();
  t.teardown(() => server.close());
  server.createRelease('latest');
  const image = randomBytes(PART * PARTS.length - 1000);
  for (const [index, suffix] of PARTS.entries()) await server.putAsset('latest', `img.qcow2.part${suffix}`, image.subarray(index * PART, (index + 1) * PART));
  const sha256 = createHash('sha256').update(image).digest('hex');
  await server.putAsset('latest', 'img.qcow2.sha256', Buffer.from(`${sha256}  img.qcow2\n`));
  const store = await openImageStore(storeSettings({ repo: `${server.owner}/${server.repo}`, apiUrl: server.url }, 'latest'), 'latest', {
    env: { GITHUB_TOKEN: server.token },
    tuning: { retryBaseMs: 1, transferAttempts: 2 },
  });
  return { server, store, image, sha256 };
}

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-partial-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function canMountTmpfs(): boolean {
  if (process.getuid?.() !== 0) return false;
  const probe = join(tmpdir(), `pipeline-mount-probe-${process.pid}`);
  try {
    execFileSync('mkdir', ['-p', probe]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe], { stdio: 'ignore' });
    execFileSync('umount', [probe]);
    return true;
  } catch {
    return false;
  } finally {
    execFileSync('rmdir', [probe]);
  }
}

test('a dropped connection keeps the .partial and its record, and the next run resumes and verifies', async (t) => {
  const { server, store, image } = await serve(t);
  const dir = await tempDir(t);
  const path = join(dir, 'img.qcow2');
  // Both attempts at the second part drop after 100 KiB: the download gives up as a network failure.
  server.arm({ kind: 'reset', path: 'img.qcow2.partab', afterBytes: 100 * 1024 });
  server.arm({ kind: 'reset', path: 'img.qcow2.partab', afterBytes: 100 * 1024 });
  await throwsFailure(t, getImage(store, 'img', { path, overwrite: false, signal: neverAborted(), concurrency: 1 }), 'network');
  t.deepEqual((await readdir(dir)).sort(), ['.img.qcow2.partial', '.img.qcow2.partial.json']);
  const record = JSON.parse(await readFile(join(dir, '.img.qcow2.partial.json'), 'utf8')) as { done: number[] };
  t.is(record.done[0], PART, 'the first part is on disk');
  t.true(record.done[1]! > 0 && record.done[1]! < PART, `the second part is partly there (${record.done[1]} bytes)`);

  const logs: string[] = [];
  const got = await getImage(store, 'img', { path, overwrite: false, signal: neverAborted(), log: (line) => logs.push(line) });
  t.false(got.alreadyPresent);
  t.regex(logs.join('\n'), /img: resuming at \d+ of \d+ bytes/);
  t.deepEqual(await readFile(path), image);
  t.deepEqual(await readdir(dir), ['img.qcow2']);
  const resumed = server.requests.filter((request) => request.path.includes('/storage/') && request.range !== undefined);
  t.true(resumed.length > 0, 'the second run asked for the rest with a Range request');
});

test('bytes that do not match the SHA-256 leave neither the .partial nor its record', async (t) => {
  const { server, store } = await serve(t);
  const dir = await tempDir(t);
  server.arm({ kind: 'corrupt', path: 'img.qcow2.partac' });
  await throwsFailure(
    t,
    getImage(store, 'img', { path: join(dir, 'img.qcow2'), overwrite: false, signal: neverAborted() }),
    'integrity',
    /checksum mismatch for img/,
  );
  t.deepEqual(await readdir(dir), []);
});

(canMountTmpfs() ? test : test.skip)('a full disk removes the .partial and its record, and says what to do', async (t) => {
  const { store } = await serve(t);
  const dir = await tempDir(t);
  const disk = join(dir, 'small-disk');
  await mkdir(disk);
  // Room for about half the image: the writes fail part way with ENOSPC.
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${PART * 1.5}`, 'tmpfs', disk]);
  t.teardown(() => execFileSync('umount', ['-l', disk]));
  const failure = await throwsFailure(
    t,
    getImage(store, 'img', { path: join(disk, 'img.qcow2'), overwrite: false, signal: neverAborted() }),
    'setup',
    /no space left for .*img\.qcow2 \(img needs \d+ bytes\): free some space and download again; the partial download was removed/,
  );
  t.is(failure.code, 'ENOSPC');
  t.deepEqual(await readdir(disk), [], 'the space is given back');
});
