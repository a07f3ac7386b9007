// The SHA-256 thread's file jobs: ranges of an open file, named in order, hash as the file's
// bytes; a range past the end fails the job (and its digest) rather than hashing less; a
// released job lets the file close only once the thread is done with it.
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sha256Thread } from '../src/sha256-thread.ts';

async function fileOf(bytes: Buffer) {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-sha256-thread-'));
  const path = join(dir, 'file');
  await writeFile(path, bytes);
  return { handle: await open(path, 'r'), remove: () => rm(dir, { recursive: true, force: true }) };
}

/** A file job that records each range's end as it is hashed, and fails the test on an error. */
function recordingJob(t: ExecutionContext) {
  const hashed: number[] = [];
  const job = Sha256Thread.shared().startFile(
    (end) => hashed.push(end),
    (error) => t.fail(error.message),
  );
  return { job, hashed };
}

test('ranges named in order hash as the whole file, and each is reported once read', async (t) => {
  // Past the thread's 1 MiB read size, so a range takes several reads.
  const bytes = randomBytes(3 * 1024 * 1024 + 17);
  const { handle, remove } = await fileOf(bytes);
  t.teardown(remove);
  const { job, hashed } = recordingJob(t);
  const cuts = [0, 1, 4096, 1024 * 1024 + 5, 2 * 1024 * 1024, bytes.length];
  for (let index = 1; index < cuts.length; index++) job.hashRange(handle.fd, cuts[index - 1]!, cuts[index]! - cuts[index - 1]!);
  t.is(await job.digest(), createHash('sha256').update(bytes).digest('hex'));
  t.deepEqual(hashed, cuts.slice(1));
  await job.release();
  await handle.close();
});

test('a range past the end of the file fails the job, and its digest says so', async (t) => {
  const { handle, remove } = await fileOf(Buffer.from('short'));
  t.teardown(remove);
  const errors: string[] = [];
  const job = Sha256Thread.shared().startFile(
    () => {},
    (error) => errors.push(error.message),
  );
  job.hashRange(handle.fd, 0, 100);
  job.hashRange(handle.fd, 100, 5);
  await t.throwsAsync(job.digest(), { message: /ended at byte 5/ });
  t.is(errors.length, 1, 'the later range of a failed job is not read');
  await job.release();
  await handle.close();
});

test('release waits for the ranges asked for, then forgets the job', async (t) => {
  const bytes = randomBytes(8 * 1024 * 1024);
  const { handle, remove } = await fileOf(bytes);
  t.teardown(remove);
  const { job, hashed } = recordingJob(t);
  job.hashRange(handle.fd, 0, bytes.length);
  await job.release();
  t.deepEqual(hashed, [bytes.length], 'the range was read before the release settled');
  await handle.close();
});
