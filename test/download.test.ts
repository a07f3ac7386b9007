// The base-image download against a loopback mirror: caching by upstream checksum,
// resume after a dropped connection, verification, offline use, errors a user reads.
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { StatCache } from '../src/hasher.ts';
import { createTaskContext } from '../src/task-context.ts';
import type { NodeDef } from '../src/types.ts';
import { downloadNode, NOTE_OFFLINE, NOTE_UNREACHABLE, redownload, UNVERIFIED, type DownloadSpec } from '../tasks/download.ts';
import { MirrorServer, sha512 } from './support/mirror-server.ts';
import { throwsFailure } from './support/failures.ts';

const IMAGE = 'debian-13-generic-amd64.qcow2';
const FILE = `cache/${IMAGE}`;
const SIZE = 1024 * 1024;

type Flags = Record<string, boolean | string | undefined>;

async function tempRoot(t: ExecutionContext): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'pipeline-download-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  return root;
}

async function mirrorWith(t: ExecutionContext, content: Buffer): Promise<MirrorServer> {
  const mirror = await MirrorServer.start({ [IMAGE]: content });
  t.teardown(() => mirror.close());
  return mirror;
}

function nodeFor(mirror: MirrorServer, extra: Partial<DownloadSpec> = {}): NodeDef {
  return downloadNode({
    id: 'trixie:download',
    url: mirror.urlOf(IMAGE),
    checksumsUrl: mirror.checksumsUrl,
    file: FILE,
    retryDelayMs: 5,
    // The probe keeps its default timeout: no test here waits for it to fire, and 2 s of
    // wall time was too little for a loopback fetch on a loaded 2-core machine.
    ...extra,
  });
}

/** Runs a node's `run` the way the engine does: a task context, temps removed after a failure. */
async function run(node: NodeDef, root: string, flags: Flags = {}) {
  const lines: string[] = [];
  const progress: Array<[number, number | undefined]> = [];
  const ctx = createTaskContext({
    id: node.id,
    root,
    logFile: join(root, 'logs', 'download.log'),
    signal: new AbortController().signal,
    hasher: await StatCache.open(),
    flags,
    onStatus: (line) => lines.push(line),
    onProgress: (done, total) => progress.push([done, total]),
  });
  try {
    await node.run(ctx);
  } catch (error) {
    await ctx.removeTemps();
    throw error;
  } finally {
    await ctx.close();
  }
  return { lines, progress, ctx };
}

async function probe(node: NodeDef, root: string, previous?: string, flags: Flags = {}) {
  if (!node.probe) throw new Error('download node has no probe');
  return node.probe({ root, flags, signal: new AbortController().signal, previous });
}

async function cacheEntries(root: string): Promise<string[]> {
  return (await readdir(join(root, 'cache')).catch(() => [] as string[])).sort();
}

test('node shape: network pool, SHA-256 of the output wanted, --force does not re-download', (t) => {
  const node = downloadNode({ id: 'trixie:download', url: 'http://127.0.0.1:1/x.qcow2', checksumsUrl: 'http://127.0.0.1:1/SHA512SUMS', file: FILE });
  t.is(node.kind, 'download');
  t.is(node.pool, 'network');
  t.false(node.honorsForce);
  t.deepEqual(node.outputs, [FILE]);
  t.deepEqual(node.sha256Outputs, [FILE]);
  t.deepEqual(node.deps, []);
});

test('downloads, verifies and renames; a second run needs no download', async (t) => {
  const root = await tempRoot(t);
  const content = randomBytes(SIZE);
  const mirror = await mirrorWith(t, content);
  const node = nodeFor(mirror);

  const first = await probe(node, root);
  t.is(first.value, sha512(content));
  const { progress } = await run(node, root);
  t.deepEqual(await readFile(join(root, FILE)), content);
  t.deepEqual(await cacheEntries(root), [IMAGE], 'no partial or temp file left');
  t.deepEqual(progress.at(-1), [SIZE, SIZE]);
  t.is(mirror.requestsFor(IMAGE).length, 1);

  // The engine compares the probe value with the recorded one: equal means fresh.
  const second = await probe(node, root, first.value);
  t.is(second.value, first.value);
  t.is(second.note, undefined);
  t.is(mirror.requestsFor(IMAGE).length, 1, 'the probe reads only the checksum list');

  // Run anyway (stamp lost, or a cache the shell script filled): the file is adopted.
  const { lines } = await run(node, root);
  t.is(mirror.requestsFor(IMAGE).length, 1);
  t.true(lines.some((line) => line.includes('no download needed')));
});

test('upstream publishing a new image changes the probe value and re-downloads', async (t) => {
  const root = await tempRoot(t);
  const mirror = await mirrorWith(t, randomBytes(SIZE));
  const node = nodeFor(mirror);
  const before = await probe(node, root);
  await run(node, root);

  const newer = randomBytes(SIZE + 123);
  mirror.setFile(IMAGE, newer);
  const after = await probe(node, root, before.value);
  t.not(after.value, before.value);
  t.is(after.value, sha512(newer));
  await run(node, root);
  t.deepEqual(await readFile(join(root, FILE)), newer);
  t.is(mirror.requestsFor(IMAGE).length, 2);
});

test('a dropped connection resumes with a Range request', async (t) => {
  const root = await tempRoot(t);
  const content = randomBytes(SIZE);
  const mirror = await mirrorWith(t, content);
  mirror.dropAfter(IMAGE, 400 * 1024);
  await run(nodeFor(mirror), root);

  t.deepEqual(await readFile(join(root, FILE)), content);
  const requests = mirror.requestsFor(IMAGE);
  t.is(requests.length, 2);
  t.is(requests[0]?.range, undefined);
  t.regex(requests[1]?.range ?? '', /^bytes=\d+-$/);
  t.is(requests[1]?.status, 206);
  t.true(mirror.bytesServed < 2 * SIZE, `served ${mirror.bytesServed} bytes for a ${SIZE}-byte file`);
  t.deepEqual(await cacheEntries(root), [IMAGE]);
});

test('a later run resumes the partial file an interrupted run left', async (t) => {
  const root = await tempRoot(t);
  const content = randomBytes(SIZE);
  const mirror = await mirrorWith(t, content);
  mirror.dropAfter(IMAGE, 300 * 1024);
  const error = await throwsFailure(t, run(nodeFor(mirror, { attempts: 1 }), root), 'task');
  t.regex(error?.message ?? '', /partial file is kept/);
  const partials = (await cacheEntries(root)).filter((name) => name.endsWith('.partial'));
  t.is(partials.length, 1);

  await run(nodeFor(mirror), root);
  t.deepEqual(await readFile(join(root, FILE)), content);
  t.regex(mirror.requestsFor(IMAGE)[1]?.range ?? '', /^bytes=\d+-$/);
  t.true(mirror.bytesServed < 2 * SIZE, `served ${mirror.bytesServed} bytes: ${JSON.stringify(mirror.requests)}`);
  t.deepEqual(await cacheEntries(root), [IMAGE]);
});

test('Ctrl-C during a download keeps the partial for the next run and leaves no final file', async (t) => {
  const root = await tempRoot(t);
  const content = randomBytes(SIZE);
  const mirror = await mirrorWith(t, content);
  mirror.faults.slowChunkBytes = 64 * 1024;
  mirror.faults.slowDelayMs = 20;
  const controller = new AbortController();
  const ctx = createTaskContext({
    id: 'trixie:download',
    root,
    logFile: join(root, 'logs', 'download.log'),
    signal: controller.signal,
    hasher: await StatCache.open(),
    onProgress: (done, total) => {
      if (done > 0 && total !== undefined && done < total) controller.abort();
    },
  });
  const outcome = await nodeFor(mirror)
    .run(ctx)
    .then(
      () => 'finished',
      (error: unknown) => (error as { name?: string }).name,
    );
  await ctx.removeTemps();
  await ctx.close();
  t.is(outcome, 'AbortError');
  const left = await cacheEntries(root);
  t.false(left.includes(IMAGE));
  t.is(left.filter((name) => name.endsWith('.partial')).length, 1);

  mirror.faults.slowDelayMs = 0;
  await run(nodeFor(mirror), root);
  t.deepEqual(await readFile(join(root, FILE)), content);
  t.regex(mirror.requestsFor(IMAGE)[1]?.range ?? '', /^bytes=\d+-$/);
});

test('a server that ignores Range makes the download start over, still correct', async (t) => {
  const root = await tempRoot(t);
  const content = randomBytes(SIZE);
  const mirror = await mirrorWith(t, content);
  mirror.dropAfter(IMAGE, 200 * 1024);
  mirror.faults.ignoreRange = true;
  const { lines } = await run(nodeFor(mirror), root);
  t.deepEqual(await readFile(join(root, FILE)), content);
  t.true(lines.some((line) => line.includes('starting over')));
});

test('a 500 is retried; a redirect is followed', async (t) => {
  const root = await tempRoot(t);
  const content = randomBytes(SIZE);
  const mirror = await mirrorWith(t, content);
  mirror.redirect('/current/image.qcow2', `/${IMAGE}`);
  mirror.failWith(IMAGE, 500);
  await run(nodeFor(mirror, { url: `${mirror.url}/current/image.qcow2` }), root);
  t.deepEqual(await readFile(join(root, FILE)), content);
  t.deepEqual(
    mirror.requestsFor(IMAGE).map((entry) => entry.status),
    [500, 200],
  );
});

test('a checksum mismatch fails with expected, got and the URL, and leaves no file', async (t) => {
  const root = await tempRoot(t);
  const mirror = await mirrorWith(t, randomBytes(SIZE));
  const wrong = 'ab'.repeat(64);
  mirror.listChecksum(IMAGE, wrong);
  const error = await throwsFailure(t, run(nodeFor(mirror), root), 'task');
  const message = error?.message ?? '';
  t.false(message.includes('\n'), 'one line');
  t.true(message.includes(`expected ${wrong}`));
  t.regex(message, /got [0-9a-f]{128}/);
  t.true(message.includes(mirror.urlOf(IMAGE)));
  t.deepEqual(await cacheEntries(root), [], 'neither the final file nor a partial');
});

test('offline or unreachable: the cached file is used and the user is told', async (t) => {
  const root = await tempRoot(t);
  const mirror = await mirrorWith(t, randomBytes(SIZE));
  const node = nodeFor(mirror);
  const online = await probe(node, root);
  await run(node, root);

  const offline = await probe(node, root, online.value, { offline: true });
  t.is(offline.value, online.value);
  t.is(offline.note, NOTE_OFFLINE);
  const offlineRun = await run(node, root, { offline: true });
  t.true(offlineRun.lines.includes(NOTE_OFFLINE));

  await mirror.close();
  const unreachable = await probe(node, root, online.value);
  t.is(unreachable.value, online.value);
  t.is(unreachable.note, NOTE_UNREACHABLE);
  // Without a recorded value nothing stands in for upstream's: the cached file is used
  // unverified, and the first run that reaches upstream checks it.
  const unrecorded = await probe(node, root, undefined);
  t.is(unrecorded.value, UNVERIFIED);
  const unreachableRun = await run(node, root);
  t.true(unreachableRun.lines.includes(NOTE_UNREACHABLE));
});

test('a cached file with no stamp is adopted when it matches upstream; offline, unverified, and checked once upstream answers', async (t) => {
  const root = await tempRoot(t);
  const content = randomBytes(SIZE);
  const mirror = await mirrorWith(t, content);
  // Not a test of unreachability: a loopback answer slowed by a busy machine is still an answer.
  const node = nodeFor(mirror, { probeTimeoutMs: 60_000 });
  await mkdir(join(root, 'cache'));
  await writeFile(join(root, FILE), content);
  const adopt = async (flags: Flags = {}, probed: Awaited<ReturnType<typeof probe>> | undefined = undefined) =>
    node.adopt!({ root, flags, signal: new AbortController().signal, hasher: await StatCache.open(), probe: probed, waitingOn: [] });

  const online = await probe(node, root);
  t.deepEqual(await adopt({}, online), { adopt: true, reason: `${FILE} matches upstream's SHA-512` });
  const offline = await probe(node, root, undefined, { offline: true });
  t.deepEqual(await adopt({ offline: true }, offline), { adopt: true, reason: `${FILE} as cached, not verified against upstream (offline)` });
  t.deepEqual(await adopt({ refreshBase: true }, await probe(node, root, undefined, { refreshBase: true })), {
    adopt: false,
    reason: 're-download requested (--refresh-base)',
  });
  t.is(await adopt({}, undefined), undefined, 'no probe answer yet (its upstream is made by a dependency): cannot tell');
  t.is(mirror.requestsFor(IMAGE).length, 0, 'adoption downloads nothing');

  // Once upstream answers, a value recorded unverified makes the node run, and the run checks the file.
  const checked = await probe(node, root, UNVERIFIED);
  t.is(checked.value, online.value);
  t.regex(checked.note ?? '', /used unverified; checking it against upstream/);
  const { lines } = await run(node, root);
  t.true(lines.some((line) => line.includes('matches upstream SHA-512; no download needed')));
  t.is(mirror.requestsFor(IMAGE).length, 0);

  await writeFile(join(root, FILE), randomBytes(SIZE));
  t.deepEqual(await adopt({}, online), { adopt: false, reason: `${FILE} differs from upstream's SHA-512` });
});

test('no network and no cached file fails clearly', async (t) => {
  const root = await tempRoot(t);
  const mirror = await mirrorWith(t, randomBytes(1024));
  const node = nodeFor(mirror);
  await mirror.close();
  const error = await throwsFailure(t, probe(node, root), 'task');
  t.regex(error?.message ?? '', /cannot reach http:\/\/127\.0\.0\.1:\d+\/SHA512SUMS .* is not cached/);
  const offline = await throwsFailure(t, probe(node, root, undefined, { offline: true }), 'task');
  t.regex(offline?.message ?? '', /--offline.*not cached/);
});

test('HTTP errors name the status and the URL', async (t) => {
  const root = await tempRoot(t);
  const mirror = await mirrorWith(t, randomBytes(1024));
  // The list names the file but the image URL is wrong.
  mirror.setFile('missing.qcow2', Buffer.from('x'));
  const url = mirror.urlOf('nowhere/missing.qcow2');
  const error = await throwsFailure(t, run(nodeFor(mirror, { url, file: 'cache/missing.qcow2' }), root), 'task');
  t.is(error?.message, `HTTP 404 Not Found from ${url}`);

  const listUrl = mirror.urlOf('no/SHA512SUMS');
  const listError = await throwsFailure(t, probe(nodeFor(mirror, { checksumsUrl: listUrl }), root), 'task');
  t.is(listError?.message, `HTTP 404 Not Found from ${listUrl}`);
});

test('a checksum list without the image fails naming it', async (t) => {
  const root = await tempRoot(t);
  const mirror = await MirrorServer.start({ 'other.qcow2': Buffer.from('x') });
  t.teardown(() => mirror.close());
  const error = await throwsFailure(t, probe(nodeFor(mirror), root), 'task');
  t.regex(error?.message ?? '', new RegExp(`SHA512SUMS has no SHA-512 line for ${IMAGE.replaceAll('.', '\\.')}`));
});

test('file: URLs work (the offline demo)', async (t) => {
  const root = await tempRoot(t);
  const upstream = join(root, 'upstream');
  await mkdir(upstream);
  const content = randomBytes(SIZE);
  await writeFile(join(upstream, IMAGE), content);
  await writeFile(join(upstream, 'SHA512SUMS'), `${sha512('other')}  other.qcow2\n${sha512(content)}  ${IMAGE}\n`);
  const node = downloadNode({
    id: 'trixie:download',
    url: pathToFileURL(join(upstream, IMAGE)).href,
    checksumsUrl: pathToFileURL(join(upstream, 'SHA512SUMS')).href,
    file: FILE,
  });
  const value = await probe(node, root);
  t.is(value.value, sha512(content));
  await run(node, root);
  t.deepEqual(await readFile(join(root, FILE)), content);
  t.deepEqual(await cacheEntries(root), [IMAGE]);
});

test('--refresh-base re-downloads an unchanged image once, then the node is fresh again', async (t) => {
  const root = await tempRoot(t);
  const content = randomBytes(SIZE);
  const mirror = await mirrorWith(t, content);
  const node = nodeFor(mirror);
  const first = await probe(node, root);
  await run(node, root);

  const refresh = await probe(node, root, first.value, { refreshBase: true });
  t.not(refresh.value, first.value, 'a new value makes the engine run the node');
  await run(node, root, { refreshBase: true });
  // Fetched once more in full; a transport retry under load may add a resumed request.
  t.true(mirror.requestsFor(IMAGE).length >= 2, 'the image was fetched again');
  t.true(mirror.bytesServed < 2.5 * SIZE, 'one more full transfer, not two');

  const after = await probe(node, root, refresh.value);
  t.is(after.value, refresh.value, 'no re-run after the refresh while upstream is unchanged');
  mirror.setFile(IMAGE, randomBytes(SIZE));
  const moved = await probe(node, root, refresh.value);
  t.not(moved.value, refresh.value);
});

test('redownload re-fetches the list and the image whatever is cached', async (t) => {
  const root = await tempRoot(t);
  const mirror = await mirrorWith(t, randomBytes(SIZE));
  const node = nodeFor(mirror);
  await run(node, root);
  const newer = randomBytes(SIZE);
  mirror.setFile(IMAGE, newer);
  const ctx = createTaskContext({
    id: 'debian-13:build',
    root,
    logFile: join(root, 'logs', 'build.log'),
    signal: new AbortController().signal,
    hasher: await StatCache.open(),
  });
  const digest = await redownload(ctx, { url: mirror.urlOf(IMAGE), checksumsUrl: mirror.checksumsUrl, file: FILE });
  await ctx.close();
  t.is(digest, sha512(newer));
  t.deepEqual(await readFile(join(root, FILE)), newer);
});

test('the download node and a build fetching the same base at once take turns: one transfer, the file whole and verified', async (t) => {
  const root = await tempRoot(t);
  const content = randomBytes(SIZE);
  const mirror = await mirrorWith(t, content);
  // Slow enough that the second caller arrives while the first is still writing the partial.
  mirror.faults.slowDelayMs = 5;
  mirror.faults.slowChunkBytes = 64 * 1024;
  const build = createTaskContext({
    id: 'debian-13:build',
    root,
    logFile: join(root, 'logs', 'build.log'),
    signal: new AbortController().signal,
    hasher: await StatCache.open(),
  });
  t.teardown(() => build.close());
  const [downloaded, fetched] = await Promise.all([
    run(nodeFor(mirror), root),
    redownload(build, { url: mirror.urlOf(IMAGE), checksumsUrl: mirror.checksumsUrl, file: FILE }),
  ]);
  t.truthy(downloaded);
  t.is(fetched, sha512(content));
  t.deepEqual(await readFile(join(root, FILE)), content);
  t.is(mirror.requestsFor(IMAGE).filter((request) => request.method === 'GET').length, 1, 'the image was transferred once');
  t.deepEqual(await cacheEntries(root), [IMAGE], 'no partial file left');
});
