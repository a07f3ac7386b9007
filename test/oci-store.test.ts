// The OCI store against a real registry (distribution 2.8): what it writes is read back by
// skopeo, not only by itself; unchanged images send no bytes; uploads go in chunks when
// the registry wants them; reads survive resets, 5xx and short bodies, follow redirects to
// blob storage without credentials, and are verified; a remove touches only its tag.
import { execFile } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import { getImage } from '../tasks/store/get-image.ts';
import { openOciStore, type OciOptions, type OciSettings } from '../tasks/store/oci/index.ts';
import { RECORD_ANNOTATION } from '../tasks/store/oci/manifest.ts';
import type { ImageToPut } from '../tasks/store/store.ts';
import { type RegistryServer, startRegistry } from './support/registry.ts';
import { RegistryProxy, type RegistryProxyOptions } from './support/registry-proxy.ts';

const run = promisify(execFile);
const NAMESPACE = 'acme/images';

interface Setup {
  readonly registry: RegistryServer;
  readonly proxy: RegistryProxy;
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  readonly settings: OciSettings;
  store(tag?: string, options?: OciOptions, settings?: Partial<OciSettings>): ReturnType<typeof openOciStore>;
  image(name: string, bytes: Buffer): Promise<ImageToPut>;
}

async function setup(
  t: ExecutionContext,
  registryOptions: Parameters<typeof startRegistry>[0] = { auth: 'htpasswd' },
  /** `redirectBlobsFrom: ''` redirects blob reads to storage over this registry's directory. */
  proxyOptions: RegistryProxyOptions = {},
): Promise<Setup> {
  const registry = await startRegistry(registryOptions);
  const proxy = await RegistryProxy.start(registry.url, {
    ...proxyOptions,
    ...(proxyOptions.redirectBlobsFrom === '' ? { redirectBlobsFrom: registry.storageDir } : {}),
  });
  const dir = await mkdtemp(join(tmpdir(), 'oci-store-test-'));
  t.teardown(async () => {
    await proxy.close();
    await registry.close();
    await rm(dir, { recursive: true, force: true });
  });
  const authFile = join(dir, 'auth.json');
  await writeFile(authFile, JSON.stringify({ auths: { [proxy.host]: { auth: Buffer.from(`${registry.user}:${registry.password}`).toString('base64') } } }));
  const env = { REGISTRY_AUTH_FILE: authFile, HOME: dir, PATH: process.env.PATH };
  const settings: OciSettings = { registry: `${proxy.host}/${NAMESPACE}`, plainHttp: true };
  return {
    registry,
    proxy,
    dir,
    env,
    settings,
    store: (tag = 'latest', options = {}, overrides = {}) =>
      openOciStore({ ...settings, ...overrides }, tag, { env, retryBaseMs: 5, readPieceBytes: 64 * 1024, ...options }),
    async image(name, bytes) {
      const path = join(dir, `${name}-${randomBytes(4).toString('hex')}.qcow2`);
      await writeFile(path, bytes);
      return {
        name,
        path,
        size: bytes.length,
        sha256: createHash('sha256').update(bytes).digest('hex'),
        cacheKey: createHash('sha256').update(name).digest('hex'),
        versions: { DEBIAN_VERSION: '12.13' },
        sources: { base: { path: 'cache/base.qcow2', sha256: 'b'.repeat(64) }, files: { 'templates/x/template.pkr.hcl': 'c'.repeat(64) } },
      };
    },
  };
}

const quiet = { force: false, signal: new AbortController().signal, log: () => {} };

async function download(t: ExecutionContext, s: Setup, name: string, store = s.store()): Promise<Buffer> {
  const path = join(s.dir, `got-${name}-${randomBytes(3).toString('hex')}.qcow2`);
  await getImage(store, name, { path, overwrite: false, signal: new AbortController().signal, replacingWaitsMs: [] });
  t.teardown(() => rm(path, { force: true }));
  return readFile(path);
}

/** Uploads that carried image bytes (the index and the empty config are a few hundred bytes at most). */
function blobUploads(proxy: RegistryProxy): number {
  return proxy.requests.filter(
    (request) => (request.method === 'PUT' || request.method === 'PATCH') && request.path.includes('/blobs/uploads/') && (request.contentLength ?? 0) > 4096,
  ).length;
}

test('a put is one artifact skopeo reads as the file itself; download verifies; a second put sends no bytes; the index lists it', async (t) => {
  const s = await setup(t);
  const bytes = randomBytes(300_000);
  const image = await s.image('debian-12', bytes);
  const store = s.store();
  t.deepEqual(await store.put(image, quiet), { uploaded: true });

  const copy = join(s.dir, 'skopeo-copy');
  const creds = `${s.registry.user}:${s.registry.password}`;
  const raw = await run('skopeo', ['inspect', '--tls-verify=false', '--creds', creds, '--raw', `docker://${s.registry.host}/${NAMESPACE}/debian-12:latest`]);
  const manifest = JSON.parse(raw.stdout);
  t.is(manifest.artifactType, 'application/vnd.vmpipeline.image.v1');
  t.is(manifest.layers.length, 1);
  t.is(manifest.layers[0].annotations['org.opencontainers.image.title'], 'debian-12.qcow2');
  t.is(manifest.layers[0].digest, `sha256:${image.sha256}`);
  await run('skopeo', ['copy', '--src-tls-verify=false', '--src-creds', creds, `docker://${s.registry.host}/${NAMESPACE}/debian-12:latest`, `dir:${copy}`]);
  t.true((await readFile(join(copy, image.sha256))).equals(bytes));

  t.true((await download(t, s, 'debian-12')).equals(bytes));
  const listing = await store.list(quiet.signal);
  t.true(listing.exists);
  t.deepEqual(
    listing.images.map((entry) => [entry.name, entry.state, entry.size, entry.record?.sha256]),
    [['debian-12', 'complete', bytes.length, image.sha256]],
  );

  const uploadsBefore = blobUploads(s.proxy);
  const lines: string[] = [];
  t.deepEqual(await store.put(image, { ...quiet, log: (line) => lines.push(line) }), { uploaded: false });
  t.is(blobUploads(s.proxy), uploadsBefore);
  t.regex(lines.join('\n'), /already holds sha256 .*nothing to upload/);

  // images.json, as an `oras pull …/pipeline_index:latest` user gets it.
  const index = await run('skopeo', [
    'inspect',
    '--tls-verify=false',
    '--creds',
    creds,
    '--raw',
    `docker://${s.registry.host}/${NAMESPACE}/pipeline_index:latest`,
  ]);
  const layer = JSON.parse(index.stdout).layers[0];
  t.is(layer.annotations['org.opencontainers.image.title'], 'images.json');
});

test('same bytes under another name are mounted, not sent; an image past maxBlobSize goes up as ordered layers named like split parts', async (t) => {
  const s = await setup(t);
  const bytes = randomBytes(200_000);
  const store = s.store('latest', {}, { maxBlobSize: 70_000 });
  await store.put(await s.image('debian-12', bytes), quiet);
  const raw = await run('skopeo', [
    'inspect',
    '--tls-verify=false',
    '--creds',
    `${s.registry.user}:${s.registry.password}`,
    '--raw',
    `docker://${s.registry.host}/${NAMESPACE}/debian-12:latest`,
  ]);
  const layers = JSON.parse(raw.stdout).layers as Array<{ size: number; annotations: Record<string, string> }>;
  t.deepEqual(
    layers.map((layer) => [layer.annotations['org.opencontainers.image.title'], layer.size]),
    [
      ['debian-12.qcow2.partaa', 70_000],
      ['debian-12.qcow2.partab', 70_000],
      ['debian-12.qcow2.partac', 60_000],
    ],
  );
  t.true((await download(t, s, 'debian-12', store)).equals(bytes));

  const uploadsBefore = blobUploads(s.proxy);
  t.deepEqual(await store.put(await s.image('debian-12-lts', bytes), quiet), { uploaded: false });
  t.is(blobUploads(s.proxy), uploadsBefore);
  t.is(s.proxy.requests.filter((request) => request.method === 'POST' && request.path.includes('mount=') && request.status === 201).length, 3);
  t.true((await download(t, s, 'debian-12-lts', store)).equals(bytes));
});

/** Manifest PUTs the proxy saw, as `status path`, in order. */
function manifestPuts(proxy: RegistryProxy): string[] {
  return proxy.requests
    .filter((request) => request.method === 'PUT' && request.path.includes('/manifests/'))
    .map((request) => `${request.status} ${request.path}`);
}

test('a manifest checked while another writer commits one of its blobs (distribution 2.8 empties the link meanwhile) is refused, and the put restores and writes it again', async (t) => {
  const s = await setup(t);
  const bytes = randomBytes(60_000);
  const image = { ...(await s.image('debian-12', bytes)), attachments: { provenance: Buffer.from('statement') } };
  const repositories = join(s.registry.storageDir, 'docker/registry/v2/repositories');
  // What a concurrent upload or mount of a blob the repository holds does on distribution 2.8:
  // its link file is truncated, then written again. Here every blob link of the repository a
  // manifest goes to is empty while the registry checks that manifest (once per manifest),
  // and written back before the next request.
  let emptied: Array<[file: string, content: string]> = [];
  const raced = new Set<string>();
  s.proxy.hook = (request) => {
    for (const [file, content] of emptied) writeFileSync(file, content);
    emptied = [];
    const manifest = /^\/v2\/(.+)\/manifests\/[^/]+$/.exec(request.path);
    if (request.method === 'PUT' && manifest && !raced.has(request.path)) {
      raced.add(request.path);
      const links = join(repositories, manifest[1]!, '_layers/sha256');
      for (const hex of readdirSync(links)) {
        const file = join(links, hex, 'link');
        emptied.push([file, readFileSync(file, 'utf8')]);
        writeFileSync(file, '');
      }
    }
    return 'forward';
  };
  const store = s.store();
  t.deepEqual(await store.put(image, quiet), { uploaded: true });
  s.proxy.hook = undefined;

  const puts = manifestPuts(s.proxy);
  const refused = puts.filter((put) => put.startsWith('400 ')).map((put) => put.slice(4));
  // The marker, the provenance referrer, the image and the index (the referrers tag names manifests, not blobs).
  t.deepEqual(
    refused.map((path) => path.replace(/sha256:[0-9a-f]{64}/, 'sha256:…')),
    [
      `/v2/${NAMESPACE}/pipeline_index/manifests/_debian-12_latest`,
      `/v2/${NAMESPACE}/debian-12/manifests/sha256:…`,
      `/v2/${NAMESPACE}/debian-12/manifests/latest`,
      `/v2/${NAMESPACE}/pipeline_index/manifests/latest`,
    ],
  );
  for (const path of refused) t.true(puts.indexOf(`201 ${path}`) > puts.indexOf(`400 ${path}`), `${path} written after its refusal`);
  t.true((await download(t, s, 'debian-12', store)).equals(bytes));
  const opened = await store.open('debian-12', quiet.signal);
  t.is(opened.status === 'ready' && Buffer.from((await opened.readAttachment('provenance', quiet.signal)) ?? []).toString(), 'statement');
  t.deepEqual(
    (await store.list(quiet.signal)).images.map((entry) => [entry.name, entry.state]),
    [['debian-12', 'complete']],
  );
});

test('a layer that is gone by the time its manifest goes up (the registry collected it) is sent again, and the put completes', async (t) => {
  const s = await setup(t);
  const bytes = randomBytes(60_000);
  const image = await s.image('debian-12', bytes);
  const hex = image.sha256;
  let collected = false;
  s.proxy.hook = (request) => {
    if (!collected && request.method === 'PUT' && request.path === `/v2/${NAMESPACE}/debian-12/manifests/latest`) {
      collected = true;
      rmSync(join(s.registry.storageDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex), { recursive: true });
    }
    return 'forward';
  };
  const store = s.store();
  t.deepEqual(await store.put(image, quiet), { uploaded: true });
  t.true(collected);
  t.deepEqual(
    manifestPuts(s.proxy).filter((put) => put.endsWith('/debian-12/manifests/latest')),
    [`400 /v2/${NAMESPACE}/debian-12/manifests/latest`, `201 /v2/${NAMESPACE}/debian-12/manifests/latest`],
  );
  t.is(blobUploads(s.proxy), 2);
  t.true((await download(t, s, 'debian-12', store)).equals(bytes));
});

test('a registry that wants chunks gets PATCH chunks of at least OCI-Chunk-Min-Length, resent from its Range after a reset', async (t) => {
  const s = await setup(t, { auth: 'htpasswd' }, { requireChunks: { minLength: 40_000 } });
  const bytes = randomBytes(150_000);
  const store = s.store('latest', { chunkBytes: 1000 });
  s.proxy.arm({ kind: 'reset', side: 'request', method: 'PATCH', afterBytes: 10_000 });
  await store.put(await s.image('debian-12', bytes), quiet);
  const patches = s.proxy.requests.filter((request) => request.method === 'PATCH' && request.status === 202 && request.path.includes('/blobs/uploads/'));
  const image = patches.filter((request) => (request.contentLength ?? 0) > 4096);
  t.true(image.length >= 4);
  t.true(image.slice(0, -1).every((request) => request.contentLength === 40_000));
  t.is(s.proxy.requests.filter((request) => request.method === 'PUT' && request.status === 413).length, 0);
  t.true((await download(t, s, 'debian-12')).equals(bytes));
});

test('a registry that refuses a monolithic PUT with 413 gets chunks instead', async (t) => {
  const s = await setup(t);
  const bytes = randomBytes(50_000);
  const store = s.store('latest', { chunkBytes: 16_384 });
  const image = await s.image('debian-12', bytes);
  s.proxy.arm({ kind: 'status', status: 413, method: 'PUT', path: `digest=sha256%3A${image.sha256}` });
  await store.put(image, quiet);
  t.is(s.proxy.requests.filter((request) => request.method === 'PATCH' && request.status === 202).length, 4);
  t.true((await download(t, s, 'debian-12')).equals(bytes));
});

test('reads survive a reset, a 503 and a short body, resume with Range, and follow blob redirects without credentials', async (t) => {
  const s = await setup(t, { auth: 'htpasswd' }, { redirectBlobsFrom: '' });
  const bytes = randomBytes(200_000);
  await s.store().put(await s.image('debian-12', bytes), quiet);
  s.proxy.arm({ kind: 'status', status: 503, method: 'GET', path: '/blobs/sha256:' });
  s.proxy.arm({ kind: 'reset', method: 'STORAGE', afterBytes: 20_000 });
  s.proxy.arm({ kind: 'truncate', method: 'STORAGE', afterBytes: 30_000 });
  // One range for the whole image: any later Range request is a resume.
  const got = await download(t, s, 'debian-12', s.store('latest', { readPieceBytes: 16 * 1024 * 1024 }));
  t.true(got.equals(bytes));
  t.true(s.proxy.storageRequests.length >= 3);
  t.false(s.proxy.storageRequests.some((request) => request.credentials));
  t.true(s.proxy.storageRequests.some((request) => /^bytes=[1-9]\d*-/.test(request.range ?? '')));
});

test('bytes that do not match the record are never installed', async (t) => {
  const s = await setup(t);
  const bytes = randomBytes(100_000);
  const image = await s.image('debian-12', bytes);
  await s.store().put(image, quiet);
  // Corrupt the blob in the registry's own storage: the registry serves what it holds.
  const hex = image.sha256;
  const file = join(s.registry.storageDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
  const damaged = Buffer.from(bytes);
  damaged[5000] = damaged[5000]! ^ 0xff;
  await writeFile(file, damaged);
  const target = join(s.dir, 'corrupt.qcow2');
  const error = await t.throwsAsync(getImage(s.store(), 'debian-12', { path: target, overwrite: false, signal: quiet.signal, replacingWaitsMs: [] }));
  t.regex(error.message, /checksum mismatch/);
  await t.throwsAsync(readFile(target));
});

test('remove deletes the tag and marker of that image only; other tags and images stay readable; retag copies the manifests', async (t) => {
  const s = await setup(t);
  const a = randomBytes(40_000);
  const b = randomBytes(30_000);
  const latest = s.store('latest');
  await latest.put(await s.image('debian-12', a), quiet);
  await latest.put(await s.image('pve-9', b), quiet);
  const retagged = await latest.retag!('v2025.01', { dryRun: false, signal: quiet.signal });
  t.is(retagged.note, 'Copied 2 images from latest');
  const dry = await latest.remove(['debian-12', 'nope'], { dryRun: true, signal: quiet.signal });
  t.deepEqual(dry.notInStore, ['nope']);
  t.deepEqual(dry.deleted, [`${NAMESPACE}/debian-12:latest`, `${NAMESPACE}/pipeline_index:_debian-12_latest`]);
  t.is((await latest.list(quiet.signal)).images.length, 2);
  const removed = await latest.remove(['debian-12'], { dryRun: false, signal: quiet.signal });
  t.deepEqual(removed.unindexed, ['debian-12']);
  t.deepEqual(
    (await latest.list(quiet.signal)).images.map((image) => image.name),
    ['pve-9'],
  );
  t.is((await latest.open('debian-12', quiet.signal)).status, 'missing');
  t.true((await download(t, s, 'debian-12', s.store('v2025.01'))).equals(a));
  t.true((await download(t, s, 'pve-9', latest)).equals(b));
  t.deepEqual(
    (await s.store('v2025.01').list(quiet.signal)).images.map((image) => [image.name, image.state]),
    [
      ['debian-12', 'complete'],
      ['pve-9', 'complete'],
    ],
  );
});

test('token auth: a push with the user credential, an anonymous pull of a public repository, a refused anonymous pull of a private one', async (t) => {
  const s = await setup(t, { auth: 'token', publicRepositories: (name) => name.startsWith(`${NAMESPACE}/`) && !name.endsWith('/secret') });
  const bytes = randomBytes(50_000);
  await s.store().put(await s.image('debian-12', bytes), quiet);
  await s.store().put(await s.image('secret', bytes), quiet);
  const anonymous = openOciStore(s.settings, 'latest', { env: { HOME: s.dir, PATH: process.env.PATH }, retryBaseMs: 5 });
  const path = join(s.dir, 'anonymous.qcow2');
  await getImage(anonymous, 'debian-12', { path, overwrite: false, signal: quiet.signal, replacingWaitsMs: [] });
  t.true((await readFile(path)).equals(bytes));
  t.true(s.registry.tokenRequests.some((request) => request.account === undefined && request.granted.includes(`repository:${NAMESPACE}/debian-12:pull`)));
  const refused = await t.throwsAsync(anonymous.open('secret', quiet.signal));
  t.regex(refused.message, /needs credentials to read manifest .*none were found: log in with podman login/);
  t.false(refused.message.includes(s.registry.password));
});

test('where the registry refuses deletes (405, as GHCR and Docker Hub do), remove moves the tags to tombstones: gone for readers, back with the next put', async (t) => {
  const s = await setup(t);
  const a = randomBytes(30_000);
  const store = s.store();
  await store.put(await s.image('debian-12', a), quiet);
  await store.put(await s.image('pve-9', randomBytes(20_000)), quiet);
  s.proxy.arm({
    kind: 'status',
    status: 405,
    method: 'DELETE',
    times: 100,
    body: JSON.stringify({ errors: [{ code: 'UNSUPPORTED', message: 'The operation is unsupported.' }] }),
  });
  const removed = await store.remove(['debian-12'], { dryRun: false, signal: quiet.signal });
  t.deepEqual(removed.deleted, [`${NAMESPACE}/debian-12:latest`, `${NAMESPACE}/pipeline_index:_debian-12_latest`]);
  t.is((await store.open('debian-12', quiet.signal)).status, 'missing');
  t.deepEqual(
    (await store.list(quiet.signal)).images.map((image) => image.name),
    ['pve-9'],
  );
  t.deepEqual((await store.remove(['debian-12'], { dryRun: true, signal: quiet.signal })).notInStore, ['debian-12']);
  await store.put(await s.image('debian-12', a), quiet);
  t.true((await download(t, s, 'debian-12')).equals(a));
  t.deepEqual(
    (await store.list(quiet.signal)).images.map((image) => [image.name, image.state]),
    [
      ['debian-12', 'complete'],
      ['pve-9', 'complete'],
    ],
  );
});

test('a manifest whose record is not valid is a damaged image with a note: the rest of the tag lists and downloads, and remove takes it', async (t) => {
  const s = await setup(t);
  const good = randomBytes(20_000);
  await s.store().put(await s.image('debian-12', good), quiet);
  await s.store().put(await s.image('pve-9', randomBytes(10_000)), quiet);
  // A writer of the registry replaces pve-9's manifest with one whose record annotation is not JSON.
  const url = `${s.registry.url}/v2/${NAMESPACE}/pve-9/manifests/latest`;
  const mediaType = 'application/vnd.oci.image.manifest.v1+json';
  const manifest = (await (await fetch(url, { headers: { authorization: s.registry.basic(), accept: mediaType } })).json()) as {
    annotations: Record<string, string>;
  };
  t.truthy(manifest.annotations[RECORD_ANNOTATION], 'the record annotation');
  manifest.annotations[RECORD_ANNOTATION] = '{';
  const put = await fetch(url, { method: 'PUT', headers: { authorization: s.registry.basic(), 'content-type': mediaType }, body: JSON.stringify(manifest) });
  t.is(put.status, 201);

  const listing = await s.store().list(quiet.signal);
  t.deepEqual(
    listing.images.map((image) => [image.name, image.state]),
    [
      ['debian-12', 'complete'],
      ['pve-9', 'damaged'],
    ],
  );
  t.is(listing.notes.length, 1);
  t.regex(listing.notes[0]!, /pve-9:latest's record is not valid JSON; pve-9 is damaged \(upload it again, or release remove pve-9\)/);
  const opened = await s.store().open('pve-9', quiet.signal);
  t.is(opened.status, 'missing');
  t.true((await download(t, s, 'debian-12')).equals(good));
  const removed = await s.store().remove(['pve-9'], { dryRun: false, signal: quiet.signal });
  t.deepEqual(removed.notInStore, []);
  t.deepEqual(
    (await s.store().list(quiet.signal)).images.map((image) => image.name),
    ['debian-12'],
  );
});

test('a manifest larger than any the tool writes (where a registry holds one) is a damaged image: the tag still lists, and remove takes it by the digest the registry names', async (t) => {
  const s = await setup(t);
  await s.store().put(await s.image('debian-12', randomBytes(20_000)), quiet);
  await s.store().put(await s.image('pve-9', randomBytes(10_000)), quiet);
  // Distribution refuses manifests past 4 MiB; a registry that takes one is the proxy answering for it.
  const mediaType = 'application/vnd.oci.image.manifest.v1+json';
  const huge = JSON.stringify({ schemaVersion: 2, mediaType, annotations: { [RECORD_ANNOTATION]: ' '.repeat(5 * 1024 * 1024) } });
  s.proxy.arm({
    kind: 'status',
    method: 'GET',
    path: `/v2/${NAMESPACE}/pve-9/manifests/latest`,
    status: 200,
    headers: { 'content-type': mediaType },
    body: huge,
    times: 100,
  });

  const listing = await s.store().list(quiet.signal);
  t.deepEqual(
    listing.images.map((image) => [image.name, image.state]),
    [
      ['debian-12', 'complete'],
      ['pve-9', 'damaged'],
    ],
  );
  t.regex(listing.notes[0] ?? '', /pve-9:latest is larger than \d+ bytes; pve-9 is damaged/);
  t.is((await s.store().open('pve-9', quiet.signal)).status, 'missing');
  const removed = await s.store().remove(['pve-9'], { dryRun: false, signal: quiet.signal });
  t.deepEqual(removed.notInStore, []);
  const gone = await fetch(`${s.registry.url}/v2/${NAMESPACE}/pve-9/manifests/latest`, {
    method: 'HEAD',
    headers: { authorization: s.registry.basic(), accept: mediaType },
  });
  t.is(gone.status, 404, 'the registry no longer holds pve-9:latest');
  t.deepEqual(
    (await s.store().list(quiet.signal)).images.map((image) => image.name),
    ['debian-12'],
  );
});
