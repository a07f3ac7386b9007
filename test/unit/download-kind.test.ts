// The download kind's run in process, against a `file:` mirror (as the offline demo uses):
// the SHA512SUMS list and the image are files in the test's temp directory, so no server
// and no program is needed. What the loopback-HTTP tests cover (Range, redirects, retries)
// stays in test/download.test.ts.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ExecutionContext } from 'ava';
import test from 'ava';
import { isFailure } from '../../src/failure.ts';
import { createTaskContext } from '../../src/task-context.ts';
import { StatCache } from '../../src/hasher.ts';
import { downloadNode } from '../../tasks/download.ts';
import { FakePrograms, kindContext, tempRoot } from './support/programs.ts';

const FILE = 'debian-13-generic-amd64.qcow2';
const sha512 = (data: string): string => createHash('sha512').update(data).digest('hex');

/** An upstream directory holding the image and a SHA512SUMS that names it (by default, with its digest). */
function mirror(t: ExecutionContext, image: string, listed = sha512(image)) {
  const root = tempRoot(t);
  const upstream = join(root, 'upstream');
  mkdirSync(upstream);
  writeFileSync(join(upstream, FILE), image);
  writeFileSync(join(upstream, 'SHA512SUMS'), `${listed}  ${FILE}\n`);
  const node = downloadNode({
    id: 'trixie:download',
    url: pathToFileURL(join(upstream, FILE)).href,
    checksumsUrl: pathToFileURL(join(upstream, 'SHA512SUMS')).href,
    file: `cache/${FILE}`,
    attempts: 1,
  });
  return { root, node, cached: join(root, 'cache', FILE) };
}

test('a download copies the image, verifies its SHA-512 and renames it into place, starting no program', async (t) => {
  const { root, node, cached } = mirror(t, 'the image bytes');
  const fake = new FakePrograms({});
  const context = await kindContext(t, root, fake, node.id);
  await node.run(context);
  t.is(readFileSync(cached, 'utf8'), 'the image bytes');
  t.deepEqual(readdirSync(join(root, 'cache')), [FILE], 'no partial file is left');
  t.deepEqual(fake.calls, []);
  await context.close();
  t.regex(readFileSync(context.logFile, 'utf8'), /\(SHA-512 verified\)/);
});

test('bytes that do not match the list fail the download, naming both digests, and nothing is cached', async (t) => {
  const { root, node, cached } = mirror(t, 'bytes upstream replaced', sha512('the bytes the list names'));
  const error = await t.throwsAsync(async () => node.run(await kindContext(t, root, new FakePrograms({}), node.id)));
  t.true(isFailure(error, 'task'));
  t.regex(
    error!.message,
    new RegExp(`^SHA-512 mismatch for .*${FILE}: expected ${sha512('the bytes the list names')}, got ${sha512('bytes upstream replaced')}$`),
  );
  t.false(existsSync(cached));
});

test('a cached file that already is upstream’s image is kept without a download', async (t) => {
  const { root, node, cached } = mirror(t, 'the image bytes');
  mkdirSync(join(root, 'cache'));
  writeFileSync(cached, 'the image bytes');
  const context = await kindContext(t, root, new FakePrograms({}), node.id);
  await node.run(context);
  await context.close();
  t.regex(readFileSync(context.logFile, 'utf8'), new RegExp(`cache/${FILE} matches upstream SHA-512; no download needed`));
});

test('--offline with nothing cached fails in one line saying what to do', async (t) => {
  const { root, node } = mirror(t, 'the image bytes');
  const context = createTaskContext({
    id: node.id,
    root,
    logFile: join(root, 'download.log'),
    signal: new AbortController().signal,
    hasher: await StatCache.open(),
    flags: { offline: true },
  });
  t.teardown(() => context.close());
  const error = await t.throwsAsync(() => node.run(context));
  t.is(error!.message, `--offline, but cache/${FILE} is not cached; run once with network access`);
});

test('a list that does not name the image fails, naming the list', async (t) => {
  const { root, node } = mirror(t, 'the image bytes');
  writeFileSync(join(root, 'upstream', 'SHA512SUMS'), `${sha512('x')}  other.qcow2\n`);
  const error = await t.throwsAsync(async () => node.run(await kindContext(t, root, new FakePrograms({}), node.id)));
  t.regex(error!.message, /SHA512SUMS/);
  t.regex(error!.message, new RegExp(FILE.replace(/\./g, '\\.')));
});
