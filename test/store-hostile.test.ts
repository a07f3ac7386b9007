// Issue 25, findings 3 to 5: what a writer of the store can leave there (a damaged or
// oversized record, a FIFO, a link out of the store, a directory where a file goes, an
// image nobody declared, a share that is not mounted) gives notes and one-line errors
// with the exit codes the README defines, never a stack, a hang, or a write or delete
// outside the store. Through the real CLI, on every backend that can hold the entry.
import test, { type ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isFailure } from '../src/index.ts';
import { DirectoryStore } from '../tasks/store/directory/directory-store.ts';
import type { CliResult } from './support/engine-project.ts';
import { makeGoodQcow2 } from './support/hostile-images.ts';
import { type Host, makeHost, STORE_BACKENDS, type StoreUnderTest } from './support/hostile-store.ts';
import { type ImageProject, makeImageProject } from './support/image-project.ts';
import { schemaErrors, validateOutput } from './support/output-schema.ts';

interface Setup {
  readonly host: Host;
  readonly store: StoreUnderTest;
  readonly project: ImageProject;
  readonly run: (args: readonly string[], env?: Record<string, string>) => Promise<CliResult>;
  /** Sound qcow2 bytes for an image name, made once. */
  readonly good: (name: string) => Promise<Buffer>;
}

async function setUp(t: ExecutionContext, backend: string): Promise<Setup> {
  const host = await makeHost();
  t.teardown(() => rm(host.dir, { recursive: true, force: true }));
  const store = await STORE_BACKENDS[backend]!(host);
  t.teardown(() => store.close());
  const project = await makeImageProject(t, store.releaseConfig);
  const made = new Map<string, Buffer>();
  return {
    host,
    store,
    project,
    run: (args, env = {}) => project.run(args, { env: { ...store.env, ...env }, timeoutMs: 60_000 }),
    async good(name) {
      let bytes = made.get(name);
      if (!bytes) {
        makeGoodQcow2(project.path(`good-${name}.qcow2`), 64 * 1024);
        made.set(name, (bytes = await readFile(project.path(`good-${name}.qcow2`))));
      }
      return bytes;
    },
  };
}

/** Every stderr line is one line of the tool's (no stack, no raw exception). */
function assertOneLiners(t: ExecutionContext, result: CliResult, what: string): void {
  t.notRegex(result.stderr, /\n\s+at |SyntaxError|TypeError|Unexpected token|EISDIR|ELOOP/, `${what}:\n${result.stderr}`);
}

for (const backend of Object.keys(STORE_BACKENDS)) {
  test(`${backend} store: records that are not JSON, not valid, or too large are notes and damaged images; the rest of the store works, and release remove removes them`, async (t) => {
    const { store, run, good, project } = await setUp(t, backend);
    await store.plantImage('debian-12', await good('debian-12'));
    await store.plantImage('debian-13', await good('debian-13'));
    // pve-9: a writer's record naming a piece outside the store; zzz: not JSON (nobody declares it); big: 5 MiB.
    await store.plantImage('pve-9', await good('pve-9'), (record) => {
      ((record.image as Record<string, unknown>).parts as Array<Record<string, unknown>>)[0]!.name = '../../etc/passwd';
    });
    await store.plantOdd({ kind: 'record-text', name: 'zzz', text: '{' });
    await store.plantOdd({ kind: 'record-huge', name: 'big', bytes: 5 * 1024 * 1024 });

    const list = await run(['images', 'list']);
    t.is(list.code, 0, list.stderr);
    assertOneLiners(t, list, 'images list');
    const rows = list.stdout.trim().split('\n');
    t.deepEqual(
      rows.map((row) => row.split(/\s+/)[0]),
      ['big', 'debian-12', 'debian-13', 'pve-9', 'zzz'],
    );
    for (const name of ['big', 'pve-9', 'zzz']) t.regex(rows.find((row) => row.startsWith(`${name} `)) ?? '', /\[damaged: /, name);
    // A record is a file or asset (zzz.json, zzz.qcow2.json), or in a registry the annotation of zzz:latest.
    t.regex(list.stderr, /zzz(\.(qcow2\.)?json|:latest's record) is not valid JSON; zzz is damaged/);
    t.regex(list.stderr, /big(\.(qcow2\.)?json|:latest's record) is \d+ bytes, more than a record ever is/);
    t.regex(list.stderr, /pve-9(\.(qcow2\.)?json|:latest's record) is not a valid record \((image\.)?parts\.0\.name/);

    const check = await run(['release', 'check', '--json']);
    t.is(check.code, 1, check.stderr);
    const output = JSON.parse(check.stdout) as { images: Array<{ name: string; status: string; damaged?: boolean; reasons: string[] }> };
    t.true(validateOutput(output), schemaErrors(output));
    t.like(
      output.images.find((image) => image.name === 'pve-9'),
      { status: 'stale', damaged: true },
    );
    const text = await run(['release', 'check']);
    t.regex(text.stdout, /^pve-9: damaged: (pve-9\.(qcow2\.)?json|\S*pve-9:latest's record) is not a valid record/m);

    const downloads = project.path('downloads');
    const all = await run(['images', 'download', 'all', '--dir', downloads]);
    t.is(all.code, 1, all.stderr);
    assertOneLiners(t, all, 'images download all');
    t.regex(all.stderr, /also holds big, zzz, which the config does not declare: not downloaded/);
    t.regex(all.stderr, /^pve-9: .*pve-9(\.(qcow2\.)?json|:latest's record) is not a valid record/m);
    t.deepEqual((await readdir(downloads)).sort(), ['debian-12.qcow2', 'debian-13.qcow2']);

    const removed = await run(['release', 'remove', 'zzz', 'big', 'pve-9']);
    t.is(removed.code, 0, removed.stderr);
    for (const name of ['zzz', 'big', 'pve-9']) t.false(await store.hasRecord(name), `${name}'s record is gone`);
    const after = await run(['images', 'list']);
    t.is(after.code, 0);
    t.deepEqual(
      after.stdout
        .trim()
        .split('\n')
        .map((row) => row.split(/\s+/)[0]),
      ['debian-12', 'debian-13'],
    );
    t.is(after.stderr, '');
  });

  test(`${backend} store: images download all means the images the config declares; another is listed in a note and downloaded only by name`, async (t) => {
    const { store, run, good, project } = await setUp(t, backend);
    await store.plantImage('debian-12', await good('debian-12'));
    await store.plantImage('evil', await good('evil'));
    const downloads = project.path('downloads');
    const all = await run(['images', 'download', 'all', '--dir', downloads, '--publish'], { PIPELINE_PUBLISH_DIR: project.publishDir });
    t.is(all.code, 0, all.stderr);
    t.regex(all.stderr, /also holds evil, which the config does not declare: not downloaded \(name one to download it\)/);
    t.regex(all.stderr, /holds no debian-13, pve-9/);
    t.deepEqual(await readdir(downloads), ['debian-12.qcow2']);
    t.false(existsSync(join(project.publishDir, 'evil.img')));
    const named = await run(['images', 'download', 'evil', '--dir', downloads]);
    t.is(named.code, 0, named.stderr);
    t.deepEqual(await readFile(join(downloads, 'evil.qcow2')), await good('evil'));
  });
}

test('directory store: FIFOs, links out of the store and directories where files go are never followed or waited on', async (t) => {
  const { store, run, good, project, host } = await setUp(t, 'directory');
  const before = await host.fingerprint();
  await store.plantImage('debian-12', await good('debian-12'));
  await store.plantOdd({ kind: 'record-fifo', name: 'debian-13' });
  await store.plantOdd({ kind: 'index-fifo' });
  await store.plantOdd({ kind: 'record-link-out', name: 'pve-9' });
  await store.plantOdd({ kind: 'blob-link-out', name: 'evil' });
  await store.plantOdd({ kind: 'record-dir', name: 'odd' });

  const started = Date.now();
  const list = await run(['images', 'list']);
  t.is(list.code, 0, list.stderr);
  t.true(Date.now() - started < 30_000, 'a FIFO is never opened for a read that waits');
  assertOneLiners(t, list, 'images list');
  t.regex(list.stderr, /debian-13\.json is a FIFO; debian-13 is damaged/);
  t.regex(list.stderr, /pve-9\.json is a symbolic link; pve-9 is damaged/);
  t.regex(list.stderr, /odd\.json is a directory; odd is damaged/);
  t.regex(list.stdout, /^evil .*\[incomplete: evil's bytes \(\w+\.qcow2\) are a symbolic link\]/m);

  const downloads = project.path('downloads');
  const evil = await run(['images', 'download', 'evil', 'debian-12', '--dir', downloads]);
  t.is(evil.code, 1, evil.stderr);
  assertOneLiners(t, evil, 'images download');
  t.regex(evil.stderr, /^evil: store \S+: evil's bytes \(\w+\.qcow2\) are a symbolic link$/m);
  t.deepEqual(await readdir(downloads), ['debian-12.qcow2']);

  const check = await run(['release', 'check', '--json']);
  t.is(check.code, 1, check.stderr);
  t.true(validateOutput(JSON.parse(check.stdout)));

  const removed = await run(['release', 'remove', 'debian-13', 'pve-9', 'evil', 'odd']);
  t.is(removed.code, 0, removed.stderr);
  t.regex(removed.stderr, /odd\.json is a directory, which this store never makes there/);
  for (const name of ['debian-13', 'pve-9', 'evil']) t.false(await store.hasRecord(name), name);
  t.deepEqual(await host.fingerprint(), before, 'nothing the links pointed at was read into the store, changed or removed');
  for (const file of await store.contents()) t.false(file.includes(host.marker), 'no host bytes in the store');
});

test('directory store: a symbolic link for blobs/ stops an upload before its record, and the sweep never deletes through it; a directory in blobs/ is left alone with a note', async (t) => {
  const host = await makeHost();
  t.teardown(() => rm(host.dir, { recursive: true, force: true }));
  const root = await mkdtemp(join(tmpdir(), 'pipeline-store-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const image = join(root, '..', `${root.split('/').at(-1)}-image.qcow2`);
  t.teardown(() => rm(image, { force: true }));
  makeGoodQcow2(image, 64 * 1024);
  const bytes = await readFile(image);
  const { createHash } = await import('node:crypto');
  const toPut = {
    name: 'debian-12',
    path: image,
    size: bytes.length,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    cacheKey: 'a'.repeat(64),
    versions: {},
    sources: { base: { path: 'cache/base.qcow2' }, files: {} },
  };
  const store = new DirectoryStore(root, 'latest');
  const logs: string[] = [];
  const options = { force: false, signal: new AbortController().signal, log: (line: string) => logs.push(line) };
  await mkdir(join(root, 'latest'));
  const { symlink } = await import('node:fs/promises');
  await symlink(host.outside, join(root, 'latest', 'blobs'));
  const before = await host.fingerprint();
  const error = await t.throwsAsync(store.put(toPut, options));
  t.true(isFailure(error, 'setup'), error?.message);
  t.regex(error?.message ?? '', /latest\/blobs is a symbolic link, which this store never makes there/);
  t.deepEqual(await readdir(join(root, 'latest')), ['blobs'], 'no record written');
  t.deepEqual(await host.fingerprint(), before, 'the old file the link points at is still there');

  await rm(join(root, 'latest', 'blobs'));
  await mkdir(join(root, 'latest', 'blobs', `${'1'.repeat(64)}.qcow2`), { recursive: true });
  const old = new Date(Date.now() - 2 * 24 * 3600 * 1000);
  await utimes(join(root, 'latest', 'blobs', `${'1'.repeat(64)}.qcow2`), old, old);
  await writeFile(join(root, 'latest', 'blobs', 'stray'), 'x');
  await utimes(join(root, 'latest', 'blobs', 'stray'), old, old);
  const put = await store.put(toPut, options);
  t.true(put.uploaded);
  t.true((await stat(join(root, 'latest', 'blobs', `${'1'.repeat(64)}.qcow2`))).isDirectory(), 'the directory is still there');
  t.true(existsSync(join(root, 'latest', 'blobs', 'stray')), 'a file under a name the store never makes is left alone');
  t.true(
    logs.some((line) => /left blobs\/"1+\.qcow2" alone \(a directory/.test(line)),
    logs.join('\n'),
  );
  t.deepEqual(
    (await store.list()).images.map((entry) => [entry.name, entry.state]),
    [['debian-12', 'complete']],
  );
});

test('directory store: a release.dir that does not exist (an unmounted share) is one line and exit 2, and is never created', async (t) => {
  const missing = join(tmpdir(), `pipeline-unmounted-${process.pid}-${Date.now()}`);
  const project = await makeImageProject(t, `release: { dir: ${JSON.stringify(missing)}, tag: 'latest' },`);
  for (const args of [
    ['images', 'list'],
    ['release', 'check', '--json'],
    ['release', 'remove', 'debian-12'],
    ['images', 'download', 'all'],
  ]) {
    const result = await project.run(args);
    t.is(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    t.is(result.stderr.trim(), `pipeline: release.dir ${missing} is not a directory: create it (or mount the shared storage there)`, args.join(' '));
  }
  const store = new DirectoryStore(missing, 'latest');
  const error = await t.throwsAsync(
    store.put(
      { name: 'debian-12', path: '/nonexistent', size: 1, sha256: 'a'.repeat(64), cacheKey: 'k', versions: {}, sources: { base: { path: 'b' }, files: {} } },
      { force: false, signal: new AbortController().signal, log: () => {} },
    ),
  );
  t.true(isFailure(error, 'setup'), error?.message);
  t.false(existsSync(missing), 'no fresh empty store');
});

test('SIGTERM and SIGINT end an images download within 2 s', async (t) => {
  const { GitHubServer } = await import('./support/github-server.ts');
  const server = await GitHubServer.start({ bytesPerSecond: 256 * 1024 });
  t.teardown(() => server.close());
  const project = await makeImageProject(t, `release: { repo: '${server.owner}/${server.repo}', apiUrl: ${JSON.stringify(server.url)}, tag: 'latest' },`);
  makeGoodQcow2(project.path('image.qcow2'), 4 * 1024 * 1024);
  const bytes = await readFile(project.path('image.qcow2'));
  const { createHash } = await import('node:crypto');
  await server.putAsset('latest', 'debian-12.qcow2', bytes);
  await server.putAsset('latest', 'debian-12.qcow2.sha256', Buffer.from(`${createHash('sha256').update(bytes).digest('hex')}  debian-12.qcow2\n`));
  const env = { GITHUB_TOKEN: server.token, GITHUB_API_URL: server.url, GITHUB_REPOSITORY: `${server.owner}/${server.repo}` };
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    const running = project.start(['images', 'download', 'debian-12', '--dir', project.path(`downloads-${signal}`)], { env });
    // Once bytes flow (a progress line), the command is well past start-up.
    for (const deadline = Date.now() + 60_000; !/debian-12: \d+%/.test(running.stderrSoFar()) && Date.now() < deadline; ) await sleep(50);
    const sent = Date.now();
    running.child.kill(signal);
    const result = await running.done;
    const took = Date.now() - sent;
    t.is(result.code, 130, `${signal}: ${result.stderr}`);
    t.true(took < 2_000, `${signal}: ended ${took} ms after the signal`);
  }
});
