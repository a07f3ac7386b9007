// Token and repository resolution, GitHub's failures as actionable messages, the upload
// node, and the token never leaking into anything a user or log sees.
import test from 'ava';
import { boundExec } from '../src/exec.ts';
import type { TaskContext } from '../src/types.ts';
import { createGitHubClient, resolveApiUrl, resolveRepository, resolveToken } from '../tasks/store/github/client.ts';
import { imagesCommand } from '../tasks/images.ts';
import { releaseCommand } from '../tasks/release.ts';
import { ReleaseApi } from '../tasks/store/github/release-api.ts';
import { parseByteSize, resolveTransferLimits } from '../tasks/store/github/sizes.ts';
import { partSuffix } from '../tasks/store/github/asset-names.ts';
import { parseVersions } from '../tasks/store/record.ts';
import { createUploadNode } from '../tasks/upload.ts';
import { createImageFixture, GitHubServer } from './support/github-server.ts';
import { throwsFailure } from './support/failures.ts';
import { neverAborted } from './support/signals.ts';

test('token comes from GITHUB_TOKEN, then GH_TOKEN, then gh auth token', async (t) => {
  const gh = async () => 'from-gh';
  t.is(await resolveToken({ GITHUB_TOKEN: 'a', GH_TOKEN: 'b' }, gh), 'a');
  t.is(await resolveToken({ GH_TOKEN: 'b' }, gh), 'b');
  t.is(await resolveToken({}, gh), 'from-gh');
  await throwsFailure(
    t,
    resolveToken({}, async () => undefined),
    'setup',
    /GITHUB_TOKEN or GH_TOKEN.*gh auth login/,
  );
});

test('repository and API URL: config, overridden by the environment', (t) => {
  const settings = { repo: 'acme/images', apiUrl: 'https://ghe.example/api/v3/' };
  t.deepEqual(resolveRepository(settings, {}), { owner: 'acme', repo: 'images' });
  t.deepEqual(resolveRepository(settings, { GITHUB_REPOSITORY: 'other/repo' }), { owner: 'other', repo: 'repo' });
  t.throws(() => resolveRepository({}, {}), { message: /GITHUB_REPOSITORY/ });
  t.throws(() => resolveRepository({ repo: 'nope' }, {}), { message: /owner\/name/ });
  t.is(resolveApiUrl(settings, {}), 'https://ghe.example/api/v3');
  t.is(resolveApiUrl(settings, { GITHUB_API_URL: 'http://127.0.0.1:1' }), 'http://127.0.0.1:1');
  t.is(resolveApiUrl({}, {}), 'https://api.github.com');
});

test('sizes: bytes and units, env overrides config', (t) => {
  t.is(parseByteSize('2147483648'), 2147483648);
  t.is(parseByteSize('512K'), 524288);
  t.is(parseByteSize('4KiB'), 4096);
  t.is(parseByteSize('1.9G'), 2040109465);
  t.throws(() => parseByteSize('lots'));
  t.deepEqual(resolveTransferLimits({}, {}), { maxAssetSize: 2147483648, partSize: 2040109465 });
  t.deepEqual(resolveTransferLimits({ maxAssetSize: 8192 }, { PIPELINE_PART_SIZE: '4K' }), { maxAssetSize: 8192, partSize: 4096 });
  t.deepEqual(resolveTransferLimits({}, { PIPELINE_MAX_ASSET_SIZE: '8K', PIPELINE_PART_SIZE: '3K' }), { maxAssetSize: 8192, partSize: 3072 });
  t.throws(() => resolveTransferLimits({}, { PIPELINE_MAX_ASSET_SIZE: '1K', PIPELINE_PART_SIZE: '2K' }));
  t.deepEqual([0, 1, 25, 26, 649, 650, 651].map(partSuffix), ['aa', 'ab', 'az', 'ba', 'yz', 'zaaa', 'zaab']);
  t.deepEqual(parseVersions('DEBIAN_VERSION=12.13\nPVE_VERSION=9.1\n\n'), { DEBIAN_VERSION: '12.13', PVE_VERSION: '9.1' });
});

async function serverAndStore(t: import('ava').ExecutionContext, token?: string) {
  const server = await GitHubServer.start();
  t.teardown(() => server.close());
  const settings = { repo: `${server.owner}/${server.repo}`, apiUrl: server.url, tag: 'latest' };
  const store = new ReleaseApi(await createGitHubClient(settings, { env: { GITHUB_TOKEN: token ?? server.token }, retryBaseMs: 2 }));
  return { server, store, settings };
}

test('401, 403 and 404 (repository vs release) are told apart', async (t) => {
  const wrong = await serverAndStore(t, 'ghp_wrongtoken');
  const unauthorized = await t.throwsAsync(wrong.store.findRelease('latest'));
  t.regex(unauthorized!.message, /rejected the token \(401\)/);
  t.notRegex(unauthorized!.message, /ghp_wrongtoken/);

  const { server, store } = await serverAndStore(t);
  server.arm({ kind: 'status', status: 403, path: '/releases/tags/', body: { message: 'Resource not accessible by integration' } });
  const forbidden = await t.throwsAsync(store.findRelease('latest'));
  t.regex(forbidden!.message, /refused .*\(403\).*Resource not accessible.*contents: write/);

  t.is(await store.findRelease('v1'), undefined);
  await t.throwsAsync(store.requireRelease('v1'), { message: /release v1 not found in acme\/images/ });

  const elsewhere = new ReleaseApi(await createGitHubClient({ repo: 'acme/nope', apiUrl: server.url }, { env: { GITHUB_TOKEN: server.token } }));
  await throwsFailure(t, elsewhere.findRelease('latest'), 'setup', /repository acme\/nope not found, or the token cannot see it/);
});

test('a rate limit far in the future fails naming the reset time; a 5xx is retried', async (t) => {
  const { server, store } = await serverAndStore(t);
  server.createRelease('latest');
  const reset = server.armRateLimit(3600);
  const limited = await t.throwsAsync(store.findRelease('latest'));
  t.true(limited!.message.includes(new Date(reset * 1000).toISOString()), limited!.message);
  t.regex(limited!.message, /rate limit exceeded; it resets at .* \(in 60 min\)/);

  server.arm({ kind: 'status', status: 502, path: '/releases/tags/' });
  server.arm({ kind: 'status', status: 500, path: '/releases/tags/' });
  t.truthy(await store.findRelease('latest'));
  t.is(server.pendingFaults, 0);

  // A reset that is due now is waited out and retried.
  server.armRateLimit(0, { path: '/releases/tags/' });
  t.truthy(await store.findRelease('latest'));
});

test('the upload node: declared shape, probe reads the remote checksum, run uploads and reports progress', async (t) => {
  const server = await GitHubServer.start();
  const fixture = await createImageFixture([{ name: 'debian-12', size: 5000 }], {
    repo: `${server.owner}/${server.repo}`,
    apiUrl: server.url,
    tag: 'latest',
    maxAssetSize: 4096,
    partSize: 2048,
  });
  t.teardown(async () => {
    await server.close();
    await fixture.cleanup();
  });
  const node = createUploadNode(fixture.catalog, 'debian-12', 'latest', { store: { env: { GITHUB_TOKEN: server.token }, tuning: { retryBaseMs: 2 } } });
  t.is(node.id, 'debian-12:upload');
  t.deepEqual(node.deps, ['debian-12:checksum']);
  t.is(node.kind, 'upload');
  t.is(node.pool, 'network');
  t.false(JSON.stringify(node.params).includes(server.token));

  const probeContext = { root: fixture.root, flags: {}, signal: neverAborted(), previous: undefined };
  t.is((await node.probe!(probeContext)).value, 'release missing');

  const progress: Array<[number, number | undefined]> = [];
  const logs: string[] = [];
  const context: TaskContext = {
    id: node.id,
    root: fixture.root,
    signal: neverAborted(),
    force: false,
    flags: {},
    log: (line) => logs.push(line),
    status: () => {},
    progress: (done, total) => progress.push([done, total]),
    logFile: '/dev/null',
    hasher: { hash: async () => ({ size: 0, xxh: '0'.repeat(16) }) },
    tempPath: (path) => `${path}.tmp`,
    beginCommit: async () => {},
    // The upload checks the image is a self-contained qcow2 with the real qemu-img.
    exec: boundExec(neverAborted()),
  };
  await node.run(context);
  t.deepEqual(
    server
      .assets('latest')
      .map((asset) => asset.name)
      .sort(),
    [
      'debian-12.qcow2.chunks',
      'debian-12.qcow2.json',
      'debian-12.qcow2.partaa',
      'debian-12.qcow2.partab',
      'debian-12.qcow2.partac',
      'debian-12.qcow2.sha256',
      'images.json',
    ],
  );
  const total = progress.at(-1)![1]!;
  t.true(total > 5000);
  t.is(progress.at(-1)![0], total);
  const { readFile } = await import('node:fs/promises');
  const local = (await readFile(fixture.catalog.checksumPath('debian-12'), 'utf8')).split(' ')[0]!;
  t.regex((await node.probe!(probeContext)).value, new RegExp(`^sha256 ${local} record \\d+$`));
  for (const line of logs) t.false(line.includes(server.token));
});

test('the token never appears in output, errors or JSON', async (t) => {
  const server = await GitHubServer.start();
  const fixture = await createImageFixture([{ name: 'debian-12', size: 100 }], { repo: `${server.owner}/${server.repo}`, apiUrl: server.url, tag: 'latest' });
  t.teardown(async () => {
    await server.close();
    await fixture.cleanup();
  });
  const captured: string[] = [];
  const io = (json: boolean) => ({
    root: fixture.root,
    signal: neverAborted(),
    json,
    out: (line: string) => captured.push(line),
    err: (line: string) => captured.push(line),
    progress: (label: string) => captured.push(label),
    hasher: { hash: async () => ({ size: 0, xxh: '0'.repeat(16) }) },
  });
  // The server echoes the Authorization header in its error message: the client must redact it.
  const client = { env: { GITHUB_TOKEN: server.token }, tuning: { retryBaseMs: 2 } };
  server.arm({ kind: 'status', status: 403, body: { message: `forbidden for token ${server.token}` } });
  const release = releaseCommand(fixture.catalog, { store: client });
  const images = imagesCommand(fixture.catalog, { store: client });
  for (const json of [false, true]) {
    await release.run({ values: {}, positionals: ['check'] }, io(json)).catch((error: Error) => captured.push(error.message, String(error.stack)));
    await images.run({ values: {}, positionals: ['list'] }, io(json)).catch((error: Error) => captured.push(error.message, String(error.stack)));
    await release.run({ values: {}, positionals: ['retag', 'v9'] }, io(json)).catch((error: Error) => captured.push(error.message, String(error.stack)));
  }
  const wrong = releaseCommand(fixture.catalog, { store: { ...client, env: { GITHUB_TOKEN: 'ghp_secretwrong' } } });
  await wrong.run({ values: {}, positionals: ['check'] }, io(false)).catch((error: Error) => captured.push(error.message));
  t.true(captured.length > 4);
  t.true(
    captured.some((line) => /forbidden for token \*\*\*/.test(line)),
    captured.join('\n'),
  );
  t.true(captured.some((line) => /401/.test(line)));
  for (const line of captured) {
    t.false(line.includes(server.token), line);
    t.false(line.includes('ghp_secretwrong'), line);
  }
});
