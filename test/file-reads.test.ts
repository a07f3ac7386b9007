// Reading a file in order through one reused buffer: every byte from the start offset,
// once, in order, at the offsets it sits at; the SHA-256 of the whole file; and a
// cancelled read stops.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readInOrder, sha256OfFile } from '../tasks/store/file-reads.ts';

test('the bytes from any offset arrive once, in order, at their offsets; the digest is the SHA-256 of the file', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-file-reads-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // Around the read size (1 MiB): empty, short, exactly one read, a read and a bit, several.
  for (const size of [0, 1, 1024 * 1024, 1024 * 1024 + 1, 3 * 1024 * 1024 + 12345]) {
    const bytes = randomBytes(size);
    const path = join(dir, `file-${size}`);
    await writeFile(path, bytes);
    t.is(await sha256OfFile(path), createHash('sha256').update(bytes).digest('hex'), `${size} bytes`);
    for (const from of [0, 1, Math.floor(size / 2), size]) {
      const seen: Buffer[] = [];
      let expected = from;
      await readInOrder(path, {
        from,
        each: async (chunk, offset) => {
          t.is(offset, expected, `${size} bytes from ${from}: contiguous offsets`);
          expected += chunk.length;
          // A copy: the chunk is a view of the buffer the next read fills.
          seen.push(Buffer.from(chunk));
          await new Promise((resolve) => setImmediate(resolve));
        },
      });
      t.true(Buffer.concat(seen).equals(bytes.subarray(from)), `${size} bytes from ${from}`);
    }
  }
});

test('a cancelled read stops with the signal reason, and a missing file is ENOENT', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-file-reads-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'file');
  await writeFile(path, randomBytes(4 * 1024 * 1024));
  const controller = new AbortController();
  let chunks = 0;
  const reason = new Error('stop');
  const read = readInOrder(path, { signal: controller.signal, each: () => void (++chunks === 2 && controller.abort(reason)) });
  t.is(await t.throwsAsync(read), reason);
  t.is(chunks, 2);
  await t.throwsAsync(sha256OfFile(join(dir, 'missing')), { code: 'ENOENT' });
});
