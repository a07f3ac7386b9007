// A store someone else can write, for the hostile-store tests: each backend behind one
// interface that a test plants content through, as a writer with no regard for the tool
// would (bytes and records of its choosing, and whatever the backend lets it put where
// the tool looks). Adding a backend is one more entry in STORE_BACKENDS.
//
// "The host" is a directory outside every store and target directory: a secret file whose
// marker must never appear in anything the tool writes, an old file a sweep must not
// delete, and a folder a symbolic link in the store may point at.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import {
  EMPTY_CONFIG,
  EMPTY_CONFIG_BYTES,
  IMAGE_ARTIFACT_TYPE,
  IMAGE_LAYER_TYPE,
  INDEX_ARTIFACT_TYPE,
  MANIFEST_MEDIA_TYPE,
  MARKER_ARTIFACT_TYPE,
  NAME_ANNOTATION,
  RECORD_ANNOTATION,
  TAG_ANNOTATION,
  TITLE,
} from '../../tasks/store/oci/manifest.ts';
import { INDEX_REPOSITORY } from '../../tasks/store/oci/reference.ts';
import { GitHubServer, type ServerState } from './github-server.ts';
import { makeHostFile } from './hostile-images.ts';
import { startRegistry } from './registry.ts';

export const TAG = 'latest';

/** The host outside the stores: what must stay as it is. */
export interface Host {
  readonly dir: string;
  readonly secret: string;
  readonly marker: Buffer;
  /** A folder with an old file under a blob's name, for links out of the store to point at. */
  readonly outside: string;
  /** Every file under `dir`, with its bytes' SHA-256, size and mtime (a link: its target). */
  fingerprint(): Promise<Map<string, string>>;
}

export async function makeHost(): Promise<Host> {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-host-'));
  const { path: secret, marker } = await makeHostFile(dir);
  const outside = join(dir, 'outside');
  await mkdir(outside);
  const old = new Date(Date.now() - 2 * 24 * 3600 * 1000);
  const oldBlob = join(outside, `${'0'.repeat(64)}.qcow2`);
  await writeFile(oldBlob, 'an old file a sweep through a link would delete\n');
  await writeFile(join(outside, 'host.json'), '{"schemaVersion":1,"name":"debian-12"}\n');
  await utimes(oldBlob, old, old);
  await utimes(secret, old, old);
  return { dir, secret, marker, outside, fingerprint: () => fingerprintTree(dir) };
}

async function fingerprintTree(dir: string): Promise<Map<string, string>> {
  const result = new Map<string, string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    const info = await lstat(path);
    const key = relative(dir, path);
    if (info.isSymbolicLink()) result.set(key, `link ${await readlink(path)}`);
    else if (info.isFile())
      result.set(
        key,
        `${info.size} ${info.mtimeMs} ${createHash('sha256')
          .update(await readFile(path))
          .digest('hex')}`,
      );
    else result.set(key, info.isDirectory() ? 'dir' : 'other');
  }
  return result;
}

/** An entry a writer can put where the store looks, other than bytes with a record. */
export type OddEntry =
  | { readonly kind: 'record-text'; readonly name: string; readonly text: string }
  /** A record `bytes` long (more than any record is). */
  | { readonly kind: 'record-huge'; readonly name: string; readonly bytes: number }
  | { readonly kind: 'record-fifo' | 'record-dir' | 'record-link-out'; readonly name: string }
  /** The record of `name` names as its bytes a link to the host's secret file (with that file's size and SHA-256). */
  | { readonly kind: 'blob-link-out'; readonly name: string }
  | { readonly kind: 'blobs-link-out' | 'blobs-hold-dir' | 'index-fifo' | 'index-dir' | 'tag-link-out' }
  | { readonly kind: 'index-text'; readonly text: string }
  /** An asset or file under a name that is a path trick (`../x.qcow2`, an absolute path). */
  | { readonly kind: 'odd-name'; readonly name: string; readonly bytes: Buffer }
  /** A registry only: the marker of `name` with no manifest under the tag, or a manifest that is not this tool's (a container image). */
  | { readonly kind: 'marker-only' | 'foreign-manifest'; readonly name: string };

/** Entries only a registry holds. */
const REGISTRY_ONLY: readonly OddEntry['kind'][] = ['marker-only', 'foreign-manifest'];

export interface StoreUnderTest {
  readonly backend: string;
  /** The config's `release:` entry. */
  readonly releaseConfig: string;
  /** Environment the CLI needs to reach the store. */
  readonly env: Readonly<Record<string, string>>;
  /** Which odd entries this backend can hold at all (a release has no FIFOs). */
  supports(kind: OddEntry['kind']): boolean;
  /** The record the store keeps for `name`, as JSON (undefined when none). */
  record(name: string): Promise<Record<string, unknown> | undefined>;
  /** Replaces `name` with `bytes` and a record saying so (`patch` edits the record first). */
  plantImage(name: string, bytes: Buffer, patch?: (record: Record<string, unknown>) => void): Promise<void>;
  plantOdd(entry: OddEntry): Promise<void>;
  /** Every file's bytes the store holds (to look for the host's marker in). */
  contents(): Promise<Buffer[]>;
  /** Whether anything under `name`'s record name is still there. */
  hasRecord(name: string): Promise<boolean>;
  snapshot(): Promise<unknown>;
  restore(snapshot: unknown): Promise<void>;
  close(): Promise<void>;
}

export type StoreFactory = (host: Host) => Promise<StoreUnderTest>;

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** What a writer records for `bytes` as `name`, starting from the store's current record of it (its key and inputs). */
function imageRecord(name: string, bytes: Buffer, previous: Record<string, unknown> | undefined): Record<string, unknown> {
  return {
    cacheKey: 'f'.repeat(64),
    versions: {},
    ...previous,
    size: bytes.length,
    sha256: sha256(bytes),
    parts: [{ name: `${name}.qcow2`, size: bytes.length }],
    uploadedAt: new Date().toISOString(),
  };
}

const directoryStore: StoreFactory = async (host) => {
  const root = await mkdtemp(join(tmpdir(), 'pipeline-store-'));
  const dir = join(root, TAG);
  await mkdir(join(dir, 'blobs'), { recursive: true });
  const readRecord = async (name: string): Promise<Record<string, unknown> | undefined> => {
    try {
      return JSON.parse(await readFile(join(dir, `${name}.json`), 'utf8')) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  };
  const copies: string[] = [];
  const writeRecord = async (name: string, file: Record<string, unknown>) => {
    await rm(join(dir, `${name}.json`), { recursive: true, force: true });
    await writeFile(join(dir, `${name}.json`), `${JSON.stringify(file, null, 2)}\n`);
  };
  return {
    backend: 'directory',
    releaseConfig: `release: { dir: ${JSON.stringify(root)}, tag: '${TAG}' },`,
    env: {},
    supports: (kind) => !REGISTRY_ONLY.includes(kind),
    async record(name) {
      return (await readRecord(name))?.image as Record<string, unknown> | undefined;
    },
    async plantImage(name, bytes, patch) {
      const blob = `${sha256(bytes)}.qcow2`;
      await writeFile(join(dir, 'blobs', blob), bytes);
      const image = imageRecord(name, bytes, (await readRecord(name))?.image as Record<string, unknown> | undefined);
      const file: Record<string, unknown> = { schemaVersion: 1, name, image, blob };
      patch?.(file);
      await writeRecord(name, file);
    },
    async plantOdd(entry) {
      const at = (name: string) => join(dir, name);
      switch (entry.kind) {
        case 'record-text':
          await rm(at(`${entry.name}.json`), { recursive: true, force: true });
          return writeFile(at(`${entry.name}.json`), entry.text);
        case 'record-huge':
          await rm(at(`${entry.name}.json`), { recursive: true, force: true });
          return writeFile(at(`${entry.name}.json`), Buffer.alloc(entry.bytes, 0x20));
        case 'record-fifo':
          await rm(at(`${entry.name}.json`), { recursive: true, force: true });
          execFileSync('mkfifo', [at(`${entry.name}.json`)]);
          return;
        case 'record-dir':
          await rm(at(`${entry.name}.json`), { recursive: true, force: true });
          return void (await mkdir(at(`${entry.name}.json`)));
        case 'record-link-out':
          await rm(at(`${entry.name}.json`), { recursive: true, force: true });
          return symlink(join(host.outside, 'host.json'), at(`${entry.name}.json`));
        case 'blob-link-out': {
          const secret = await readFile(host.secret);
          const blob = `${sha256(secret)}.qcow2`;
          await rm(at(`blobs/${blob}`), { force: true });
          await symlink(host.secret, at(`blobs/${blob}`));
          const image = imageRecord(entry.name, secret, (await readRecord(entry.name))?.image as Record<string, unknown> | undefined);
          return writeRecord(entry.name, { schemaVersion: 1, name: entry.name, image, blob });
        }
        case 'blobs-link-out':
          await rm(at('blobs'), { recursive: true, force: true });
          return symlink(host.outside, at('blobs'));
        case 'blobs-hold-dir': {
          const old = new Date(Date.now() - 2 * 24 * 3600 * 1000);
          for (const name of [`${'1'.repeat(64)}.qcow2`, 'stray']) {
            await mkdir(at(`blobs/${name}`), { recursive: true });
            await writeFile(at(`blobs/${name}/kept`), 'a file inside a directory in blobs/\n');
            await utimes(at(`blobs/${name}`), old, old);
          }
          return;
        }
        case 'index-fifo':
          await rm(at('images.json'), { recursive: true, force: true });
          execFileSync('mkfifo', [at('images.json')]);
          return;
        case 'index-dir':
          await rm(at('images.json'), { recursive: true, force: true });
          return void (await mkdir(at('images.json')));
        case 'index-text':
          await rm(at('images.json'), { recursive: true, force: true });
          return writeFile(at('images.json'), entry.text);
        case 'tag-link-out':
          await rm(dir, { recursive: true, force: true });
          return symlink(host.outside, dir);
        case 'odd-name': {
          // A file name cannot hold '/' nor be '.' or '..': the nearest a writer gets is a name the store never makes.
          const file = entry.name.replaceAll('/', '_');
          return file === '.' || file === '..' ? writeFile(at(`${file}_`), entry.bytes) : writeFile(at(file), entry.bytes);
        }
      }
    },
    async contents() {
      const files: Buffer[] = [];
      for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
        if (entry.isFile()) files.push(await readFile(join(entry.parentPath, entry.name)));
      }
      return files;
    },
    async hasRecord(name) {
      return (await lstat(join(dir, `${name}.json`)).catch(() => undefined)) !== undefined;
    },
    async snapshot() {
      const copy = await mkdtemp(join(tmpdir(), 'pipeline-store-copy-'));
      copies.push(copy);
      await cp(root, copy, { recursive: true, verbatimSymlinks: true });
      return copy;
    },
    async restore(snapshot) {
      await rm(root, { recursive: true, force: true });
      await cp(snapshot as string, root, { recursive: true, verbatimSymlinks: true });
    },
    async close() {
      for (const path of [root, ...copies]) await rm(path, { recursive: true, force: true });
    },
  };
};

const githubStore: StoreFactory = async () => {
  const server = await GitHubServer.start();
  const assetNamed = (name: string) => server.assets(TAG).find((asset) => asset.name === name);
  const recordDoc = async (name: string): Promise<Record<string, unknown> | undefined> => {
    if (!assetNamed(`${name}.qcow2.json`)) return undefined;
    try {
      return JSON.parse((await server.assetBytes(TAG, `${name}.qcow2.json`)).toString('utf8')) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  };
  const removeImage = async (name: string) => {
    for (const asset of server.assets(TAG)) {
      if (asset.name === `${name}.qcow2` || asset.name.startsWith(`${name}.qcow2.`)) await server.removeAsset(TAG, asset.name);
    }
  };
  return {
    backend: 'github',
    releaseConfig: `release: { repo: '${server.owner}/${server.repo}', apiUrl: ${JSON.stringify(server.url)}, tag: '${TAG}' },`,
    env: { GITHUB_TOKEN: server.token, GITHUB_API_URL: server.url, GITHUB_REPOSITORY: `${server.owner}/${server.repo}` },
    supports: (kind) => ['record-text', 'record-huge', 'index-text', 'odd-name'].includes(kind),
    async record(name) {
      return (await recordDoc(name))?.image as Record<string, unknown> | undefined;
    },
    async plantImage(name, bytes, patch) {
      const previous = (await recordDoc(name))?.image as Record<string, unknown> | undefined;
      await removeImage(name);
      await server.putAsset(TAG, `${name}.qcow2`, bytes);
      await server.putAsset(TAG, `${name}.qcow2.sha256`, Buffer.from(`${sha256(bytes)}  ${name}.qcow2\n`));
      const assets = [`${name}.qcow2`, `${name}.qcow2.sha256`].map((asset) => ({ name: asset, id: assetNamed(asset)!.id }));
      const doc: Record<string, unknown> = { schemaVersion: 1, name, image: imageRecord(name, bytes, previous), assets };
      patch?.(doc);
      await server.putAsset(TAG, `${name}.qcow2.json`, Buffer.from(`${JSON.stringify(doc, null, 2)}\n`));
    },
    async plantOdd(entry) {
      switch (entry.kind) {
        case 'record-text':
          if (assetNamed(`${entry.name}.qcow2.json`)) await server.removeAsset(TAG, `${entry.name}.qcow2.json`);
          return server.putAsset(TAG, `${entry.name}.qcow2.json`, Buffer.from(entry.text));
        case 'record-huge':
          if (assetNamed(`${entry.name}.qcow2.json`)) await server.removeAsset(TAG, `${entry.name}.qcow2.json`);
          return server.putAsset(TAG, `${entry.name}.qcow2.json`, Buffer.alloc(entry.bytes, 0x20));
        case 'index-text':
          if (assetNamed('images.json')) await server.removeAsset(TAG, 'images.json');
          return server.putAsset(TAG, 'images.json', Buffer.from(entry.text));
        case 'odd-name':
          return server.putAsset(TAG, entry.name, entry.bytes);
        default:
          throw new Error(`the GitHub store cannot hold ${entry.kind}`);
      }
    },
    async contents() {
      return Promise.all(server.assets(TAG).map((asset) => server.assetBytes(TAG, asset.name)));
    },
    async hasRecord(name) {
      return server.assets(TAG).some((asset) => asset.name === `${name}.qcow2.json` || asset.name.startsWith(`${name}.qcow2.json.`));
    },
    snapshot: () => server.exportState(),
    async restore(snapshot) {
      await server.importState(snapshot as ServerState);
    },
    close: () => server.close(),
  };
};

/**
 * An OCI registry (Debian's docker-registry) written over plain HTTP as a writer with push
 * rights would: each image's manifest under the tag (its record, name and tag annotations,
 * its layers' titles), the index's images.json blob, marker tags in the index repository.
 * Blobs go up with their true digests (the registry checks them); what the registry itself
 * refuses (a manifest it cannot parse) no writer can plant, and the plant falls back to the
 * nearest it accepts. State between cases is the registry's storage directory, copied back.
 */
const ociStore: StoreFactory = async () => {
  const registry = await startRegistry({ auth: 'htpasswd' });
  const home = await mkdtemp(join(tmpdir(), 'pipeline-hostile-oci-'));
  const authFile = join(home, 'auth.json');
  await writeFile(authFile, JSON.stringify({ auths: { [registry.host]: { auth: Buffer.from(`${registry.user}:${registry.password}`).toString('base64') } } }));
  const namespace = 'acme/images';
  const indexRepo = `${namespace}/${INDEX_REPOSITORY}`;
  const copies: string[] = [];
  const call = async (method: string, path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(path.startsWith('http') ? path : `${registry.url}${path}`, {
      method,
      headers: { authorization: registry.basic(), ...headers },
      ...(body ? { body: new Uint8Array(body) } : {}),
    });
  const pushBlob = async (repository: string, bytes: Buffer): Promise<string> => {
    const digest = `sha256:${sha256(bytes)}`;
    if ((await call('HEAD', `/v2/${repository}/blobs/${digest}`)).ok) return digest;
    const started = await call('POST', `/v2/${repository}/blobs/uploads/`);
    if (started.status !== 202) throw new Error(`plant: POST blob upload to ${repository} answered ${started.status}`);
    const location = new URL(started.headers.get('location')!, registry.url);
    location.searchParams.set('digest', digest);
    const put = await call('PUT', location.toString(), bytes, { 'content-type': 'application/octet-stream' });
    if (put.status !== 201) throw new Error(`plant: PUT blob ${digest} to ${repository} answered ${put.status}: ${await put.text()}`);
    return digest;
  };
  /** Puts a manifest under `tag`; false when the registry refuses it, which no writer gets past (distribution answers 500 to a schema version it does not know). */
  const putManifest = async (repository: string, tag: string, manifest: unknown): Promise<boolean> => {
    await pushBlob(repository, EMPTY_CONFIG_BYTES);
    const body = Buffer.isBuffer(manifest) ? manifest : Buffer.from(JSON.stringify(manifest));
    const answer = await call('PUT', `/v2/${repository}/manifests/${tag}`, body, { 'content-type': MANIFEST_MEDIA_TYPE });
    await answer.arrayBuffer();
    return answer.status === 201;
  };
  const readManifest = async (repository: string, tag: string): Promise<Record<string, unknown> | undefined> => {
    const answer = await call('GET', `/v2/${repository}/manifests/${tag}`, undefined, { accept: MANIFEST_MEDIA_TYPE });
    if (!answer.ok) return undefined;
    try {
      return (await answer.json()) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  };
  const recordOf = async (name: string): Promise<Record<string, unknown> | undefined> => {
    const annotations = (await readManifest(`${namespace}/${name}`, TAG))?.annotations as Record<string, string> | undefined;
    try {
      return JSON.parse(annotations?.[RECORD_ANNOTATION] ?? '') as Record<string, unknown>;
    } catch {
      return undefined;
    }
  };
  const marker = (name: string) =>
    putManifest(indexRepo, `_${name}_${TAG}`, {
      schemaVersion: 2,
      mediaType: MANIFEST_MEDIA_TYPE,
      artifactType: MARKER_ARTIFACT_TYPE,
      config: EMPTY_CONFIG,
      layers: [],
      annotations: { [NAME_ANNOTATION]: name, [TAG_ANNOTATION]: TAG },
    });
  const text = (value: unknown) => (typeof value === 'string' ? value : (JSON.stringify(value) ?? 'undefined'));
  /** The image manifest of `name` as a writer shapes it: `record` is the record annotation's text, layers as given. */
  const imageManifestOf = (name: string, record: string, layers: Array<{ digest: string; size: number; title: string }>, schemaVersion: unknown = 2) => ({
    schemaVersion,
    mediaType: MANIFEST_MEDIA_TYPE,
    artifactType: IMAGE_ARTIFACT_TYPE,
    config: EMPTY_CONFIG,
    layers: layers.map((layer) => ({ mediaType: IMAGE_LAYER_TYPE, digest: layer.digest, size: layer.size, annotations: { [TITLE]: layer.title } })),
    annotations: { [NAME_ANNOTATION]: name, [TAG_ANNOTATION]: TAG, [RECORD_ANNOTATION]: record },
  });
  /** Replaces the record annotation of `name`'s manifest by `record` (a manifest with no layers when it has none yet). */
  const plantRecordText = async (name: string, record: string) => {
    const current = await readManifest(`${namespace}/${name}`, TAG);
    const layers = (current?.layers as Array<{ digest: string; size: number; annotations?: Record<string, string> }> | undefined) ?? [];
    await marker(name);
    const manifest = imageManifestOf(
      name,
      record,
      layers.map((layer) => ({ digest: layer.digest, size: layer.size, title: layer.annotations?.[TITLE] ?? '' })),
    );
    if (!(await putManifest(`${namespace}/${name}`, TAG, manifest))) throw new Error(`plant: the registry refused ${name}'s manifest`);
  };
  return {
    backend: 'oci',
    releaseConfig: `release: { registry: '${registry.host}/${namespace}', plainHttp: true, tag: '${TAG}' },`,
    env: { REGISTRY_AUTH_FILE: authFile, HOME: home },
    supports: (kind) => ['record-text', 'record-huge', 'index-text', 'odd-name', ...REGISTRY_ONLY].includes(kind),
    record: recordOf,
    async plantImage(name, bytes, patch) {
      const repository = `${namespace}/${name}`;
      const digest = await pushBlob(repository, bytes);
      const title = `${name}.qcow2`;
      // The record document a patch edits: the manifest's fields where a writer sets them.
      const doc: Record<string, unknown> = {
        schemaVersion: 2,
        name,
        image: imageRecord(name, bytes, await recordOf(name)),
        blob: title,
        assets: [{ name: title }],
      };
      patch?.(doc);
      const assetName = (doc.assets as Array<{ name?: unknown }> | undefined)?.[0]?.name;
      const layerTitle = doc.blob !== title ? text(doc.blob) : assetName !== title ? text(assetName) : title;
      const annotations = { name: text(doc.name), record: text(doc.image) };
      const layers = [{ digest, size: bytes.length, title: layerTitle }];
      await marker(name);
      const manifest = {
        ...imageManifestOf(name, annotations.record, layers, doc.schemaVersion),
        annotations: { [NAME_ANNOTATION]: annotations.name, [TAG_ANNOTATION]: TAG, [RECORD_ANNOTATION]: annotations.record },
      };
      if (await putManifest(repository, TAG, manifest)) return;
      // A schema version the registry will not parse: the nearest a writer gets is the rest of the manifest.
      if (!(await putManifest(repository, TAG, { ...manifest, schemaVersion: 2 }))) throw new Error(`plant: the registry refused ${name}'s manifest`);
    },
    async plantOdd(entry) {
      switch (entry.kind) {
        case 'record-text':
          return plantRecordText(entry.name, entry.text);
        case 'record-huge': {
          // A manifest whose record annotation is `bytes` long; distribution refuses manifests past 4 MiB, so the
          // largest it takes where it refuses (still more than any record is). A registry that takes more gets more.
          const repository = `${namespace}/${entry.name}`;
          await marker(entry.name);
          for (const size of [entry.bytes, 4 * 1024 * 1024 - 16 * 1024, 2 * 1024 * 1024]) {
            if (await putManifest(repository, TAG, imageManifestOf(entry.name, ' '.repeat(size), []))) return;
          }
          throw new Error(`plant: the registry refused every large manifest for ${entry.name}`);
        }
        case 'index-text': {
          const blob = Buffer.from(entry.text);
          const digest = await pushBlob(indexRepo, blob);
          if (!(await putManifest(indexRepo, TAG, indexManifestOf(digest, blob.length)))) throw new Error('plant: the registry refused the index manifest');
          return;
        }
        case 'odd-name': {
          // A tag cannot hold '/': the marker of a name the tool never makes, naming the raw name and a layer titled with it.
          const tagged = `_${entry.name.replace(/[^A-Za-z0-9._-]/g, '.')}_${TAG}`.slice(0, 128);
          const digest = await pushBlob(indexRepo, entry.bytes);
          const manifest = {
            schemaVersion: 2,
            mediaType: MANIFEST_MEDIA_TYPE,
            artifactType: IMAGE_ARTIFACT_TYPE,
            config: EMPTY_CONFIG,
            layers: [{ mediaType: IMAGE_LAYER_TYPE, digest, size: entry.bytes.length, annotations: { [TITLE]: entry.name } }],
            annotations: { [NAME_ANNOTATION]: entry.name, [TAG_ANNOTATION]: TAG },
          };
          if (!(await putManifest(indexRepo, tagged, manifest))) throw new Error(`plant: the registry refused the tag ${tagged}`);
          return;
        }
        case 'marker-only': {
          await marker(entry.name);
          const digest = (await call('HEAD', `/v2/${namespace}/${entry.name}/manifests/${TAG}`, undefined, { accept: MANIFEST_MEDIA_TYPE })).headers.get(
            'docker-content-digest',
          );
          if (digest) await call('DELETE', `/v2/${namespace}/${entry.name}/manifests/${digest}`);
          return;
        }
        case 'foreign-manifest': {
          // A container image pushed over the image's tag: its layer titled as the image, its config a container's.
          const repository = `${namespace}/${entry.name}`;
          const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
          const layer = Buffer.from(`not a disk image: ${entry.name}\n`);
          const [configDigest, layerDigest] = [await pushBlob(repository, config), await pushBlob(repository, layer)];
          await marker(entry.name);
          const manifest = {
            schemaVersion: 2,
            mediaType: MANIFEST_MEDIA_TYPE,
            config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
            layers: [
              { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size: layer.length, annotations: { [TITLE]: `${entry.name}.qcow2` } },
            ],
          };
          if (!(await putManifest(repository, TAG, manifest))) throw new Error(`plant: the registry refused a container image for ${entry.name}`);
          return;
        }
        default:
          throw new Error(`the OCI store cannot hold ${entry.kind}`);
      }
    },
    async contents() {
      const blobs = join(registry.storageDir, 'docker/registry/v2/blobs');
      const files: Buffer[] = [];
      for (const entry of await readdir(blobs, { recursive: true, withFileTypes: true }).catch(() => [])) {
        if (entry.isFile()) files.push(await readFile(join(entry.parentPath, entry.name)));
      }
      return files;
    },
    async hasRecord(name) {
      return (await call('HEAD', `/v2/${namespace}/${name}/manifests/${TAG}`, undefined, { accept: MANIFEST_MEDIA_TYPE })).ok;
    },
    async snapshot() {
      const copy = await mkdtemp(join(tmpdir(), 'pipeline-registry-copy-'));
      copies.push(copy);
      await cp(registry.storageDir, copy, { recursive: true });
      return copy;
    },
    async restore(snapshot) {
      // The registry keeps no cache (none is configured): its state is this directory.
      await rm(registry.storageDir, { recursive: true, force: true });
      await cp(snapshot as string, registry.storageDir, { recursive: true });
    },
    async close() {
      await registry.close();
      for (const path of [home, ...copies]) await rm(path, { recursive: true, force: true });
    },
  };
};

/** The index artifact's manifest with images.json as the blob `digest`. */
function indexManifestOf(digest: string, size: number): Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: MANIFEST_MEDIA_TYPE,
    artifactType: INDEX_ARTIFACT_TYPE,
    config: EMPTY_CONFIG,
    layers: [{ mediaType: 'application/json', digest, size, annotations: { [TITLE]: 'images.json' } }],
    annotations: { [TAG_ANNOTATION]: TAG },
  };
}

/** Every store backend the hostile-store tests run against. */
export const STORE_BACKENDS: Readonly<Record<string, StoreFactory>> = {
  directory: directoryStore,
  github: githubStore,
  oci: ociStore,
};
