// A store someone else can write, for the hostile-store tests: each backend behind one
// interface that a test plants content through, as a writer with no regard for the tool
// would (bytes and records of its choosing, and whatever the backend lets it put where
// the tool looks). Adding a backend (OCI) is one more entry in STORE_BACKENDS.
//
// "The host" is a directory outside every store and target directory: a secret file whose
// marker must never appear in anything the tool writes, an old file a sweep must not
// delete, and a folder a symbolic link in the store may point at.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { GitHubServer, type ServerState } from './github-server.ts';
import { makeHostFile } from './hostile-images.ts';

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
  | { readonly kind: 'odd-name'; readonly name: string; readonly bytes: Buffer };

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
    supports: () => true,
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

/** Every store backend the hostile-store tests run against. OCI: one more entry. */
export const STORE_BACKENDS: Readonly<Record<string, StoreFactory>> = {
  directory: directoryStore,
  github: githubStore,
};
