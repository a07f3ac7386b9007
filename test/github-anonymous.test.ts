// Reading a release without any token, as a fresh host does: a public release lists,
// downloads and verifies through the public download URLs, with a handful of API requests;
// writing still needs a token; a private repository says a token may be needed; and an API
// that cannot be reached fails within seconds, not after a minute of backoff.
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import test from 'ava';
import { storeSettings } from '../tasks/store/backends.ts';
import { getImage } from '../tasks/store/get-image.ts';
import { readLocalImage } from '../tasks/store/local-image.ts';
import { openImageStore } from '../tasks/store/open.ts';
import { throwsFailure } from './support/failures.ts';
import { createImageFixture, GitHubServer } from './support/github-server.ts';
import { neverAborted } from './support/signals.ts';

/** No token in the environment, and no `gh` to ask for one. */
const ANONYMOUS_ENV = { GITHUB_TOKEN: '', GH_TOKEN: '', PATH: '/nonexistent' };

async function publishedRelease(t: { teardown(fn: () => unknown): void }, options: { private?: boolean } = {}) {
  const server = await GitHubServer.start(options);
  t.teardown(() => server.close());
  const fixture = await createImageFixture(
    [
      { name: 'debian-12', size: 9000 },
      { name: 'pve-9', size: 3000 },
    ],
    { repo: `${server.owner}/${server.repo}`, apiUrl: server.url, tag: 'latest', maxAssetSize: 4096, partSize: 3500 },
  );
  t.teardown(() => fixture.cleanup());
  const writer = await openImageStore(fixture.catalog.release, 'latest', { env: { GITHUB_TOKEN: server.token }, tuning: { retryBaseMs: 2 } });
  for (const name of fixture.catalog.names) {
    await writer.put(await readLocalImage(fixture.catalog, name), { force: false, signal: neverAborted(), log: () => {} });
  }
  return { server, fixture };
}

/** API requests (not asset downloads through public URLs or storage) made without a token since `from`. */
function anonymousApiRequests(server: GitHubServer, from: number): string[] {
  return server.requests
    .slice(from)
    .filter((request) => request.authorization === undefined && request.path.startsWith('/repos/'))
    .map((request) => `${request.method} ${request.path}`);
}

test('a public release is listed, downloaded and verified with no token, in a few API requests', async (t) => {
  const { server, fixture } = await publishedRelease(t);
  const from = server.requests.length;
  const store = await openImageStore(fixture.catalog.release, 'latest', { env: ANONYMOUS_ENV, tuning: { retryBaseMs: 2 } });
  const listing = await store.list(neverAborted());
  t.deepEqual(
    listing.images.map((image) => [image.name, image.state]),
    [
      ['debian-12', 'complete'],
      ['pve-9', 'complete'],
    ],
  );
  for (const name of fixture.catalog.names) {
    const got = await getImage(store, name, { path: `${fixture.root}/host/${name}.qcow2`, overwrite: false, signal: neverAborted() });
    t.deepEqual(await readFile(got.path), await readFile(fixture.catalog.imagePath(name)));
  }
  const requests = server.requests.slice(from);
  t.true(
    requests.every((request) => request.authorization === undefined),
    'no credential was sent',
  );
  const api = anonymousApiRequests(server, from);
  t.log(`API requests for listing and downloading ${fixture.catalog.names.length} images anonymously: ${api.length}`);
  t.true(api.length <= 12, `far below GitHub's 60 an hour for anonymous clients:\n${api.join('\n')}`);
  t.true(
    requests.some((request) => request.path.includes('/releases/download/latest/')),
    'asset bytes came through the public download URLs',
  );
  t.false(
    requests.some((request) => /\/releases\/assets\/\d+$/.test(request.path)),
    'never through the API asset endpoint, which counts against the rate limit',
  );
});

test('an attachment is read by byte range with no token, through the public download URLs', async (t) => {
  const { server, fixture } = await publishedRelease(t);
  const writer = await openImageStore(fixture.catalog.release, 'latest', { env: { GITHUB_TOKEN: server.token }, tuning: { retryBaseMs: 2 } });
  const chunkIndex = randomBytes(2000);
  const image = { ...(await readLocalImage(fixture.catalog, 'debian-12')), attachments: { 'chunk-index': chunkIndex } };
  await writer.put(image, { force: false, signal: neverAborted(), log: () => {} });
  const store = await openImageStore(fixture.catalog.release, 'latest', { env: ANONYMOUS_ENV, tuning: { retryBaseMs: 2 } });
  const opened = await store.open('debian-12', neverAborted());
  if (opened.status !== 'ready') throw new Error(`debian-12 is ${opened.status}: ${opened.detail}`);
  const from = server.requests.length;
  t.deepEqual(Buffer.from((await opened.readAttachmentRange('chunk-index', 0, 100, neverAborted()))!), chunkIndex.subarray(0, 100));
  t.deepEqual(Buffer.from((await opened.readAttachmentRange('chunk-index', 1500, 5000, neverAborted()))!), chunkIndex.subarray(1500));
  const requests = server.requests.slice(from);
  t.true(
    requests.every((request) => request.authorization === undefined),
    'no credential was sent',
  );
  t.true(
    requests[0]?.path.endsWith('/releases/download/latest/debian-12.qcow2.chunks'),
    'the asset came through its public download URL (then the storage it redirects to)',
  );
  t.false(
    requests.some((request) => request.path.startsWith('/repos/')),
    `no API request, which counts against the rate limit:\n${requests.map((request) => `${request.method} ${request.path}`).join('\n')}`,
  );
});

test('writing without a token is refused in one line that says how to give one', async (t) => {
  const { fixture } = await publishedRelease(t);
  const store = await openImageStore(fixture.catalog.release, 'latest', { env: ANONYMOUS_ENV, tuning: { retryBaseMs: 2 } });
  await fixture.writeImage('pve-9', 3100);
  await throwsFailure(
    t,
    store.put(await readLocalImage(fixture.catalog, 'pve-9'), { force: false, signal: neverAborted(), log: () => {} }),
    'setup',
    /^no GitHub token: set GITHUB_TOKEN or GH_TOKEN, or log in with `gh auth login` \(needed to upload pve-9\.qcow2/,
  );
  await throwsFailure(t, store.remove(['pve-9'], { dryRun: false, signal: neverAborted() }), 'setup', /no GitHub token.*needed to delete asset/);
  const dryRun = await store.remove(['pve-9'], { dryRun: true, signal: neverAborted() });
  t.true(dryRun.deleted.length > 0, 'a dry run lists what it would delete, without a token');
});

test('a private repository read without a token says a token may be needed', async (t) => {
  const { fixture } = await publishedRelease(t, { private: true });
  const store = await openImageStore(fixture.catalog.release, 'latest', { env: ANONYMOUS_ENV, tuning: { retryBaseMs: 2 } });
  await throwsFailure(t, store.list(neverAborted()), 'setup', /not found, or it is private: .*a private repository needs a token \(GITHUB_TOKEN, GH_TOKEN/);
});

for (const [what, apiUrl] of [
  ['a refused connection', 'http://127.0.0.1:1'],
  ['a name that does not resolve', 'http://pipeline-test.invalid'],
] as const) {
  test(`${what} fails within 5 s, in one line, with or without a token`, async (t) => {
    for (const env of [ANONYMOUS_ENV, { ...ANONYMOUS_ENV, GITHUB_TOKEN: 'ghp_unused' }]) {
      const store = await openImageStore(storeSettings({ repo: 'acme/images', apiUrl }, 'latest'), 'latest', { env });
      const started = performance.now();
      await throwsFailure(t, store.list(neverAborted()), 'network', /^cannot reach the GitHub API at /);
      const ms = performance.now() - started;
      t.true(ms < 5000, `failed after ${Math.round(ms)} ms`);
    }
  });
}
