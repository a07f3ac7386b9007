// Shared pieces of the provenance CLI tests: an origin tree built once (real packer on the
// demo templates), copies of it as fresh hosts with `release.trust` in their config,
// signing keys, and an attacker's hand on the store: puts through the backend itself
// (in this process) of other bytes, other records and other bundles.
import type { ExecutionContext } from 'ava';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { imageStatement } from '../../tasks/provenance/image-statement.ts';
import { signStatement } from '../../tasks/provenance/sign.ts';
import type { Statement } from '../../tasks/provenance/statement.ts';
import { type ReleaseDecl, type StoreSettings, storeSettings } from '../../tasks/store/backends.ts';
import { openImageStore, type StoreOptions } from '../../tasks/store/open.ts';
import type { ImageRecord } from '../../tasks/store/record.ts';
import type { ImageToPut } from '../../tasks/store/store.ts';
import type { CliResult } from './engine-project.ts';
import { flipByte } from './image-project.ts';
import type { Tree, Trees } from './runner-trees.ts';

/** Nothing from the environment the tests run in may sign, or point at another store. */
export const NEUTRAL_ENV = {
  PIPELINE_SIGNING_KEY: undefined,
  ACTIONS_ID_TOKEN_REQUEST_URL: undefined,
  ACTIONS_ID_TOKEN_REQUEST_TOKEN: undefined,
  GITHUB_ACTIONS: undefined,
  GITHUB_REPOSITORY: undefined,
  GITHUB_API_URL: undefined,
};

export const RELEASE_MARKER = 'release: {"tag":"latest"},';

export interface KeyFiles {
  readonly privatePath: string;
  readonly publicPath: string;
  readonly keyId: string;
}

export async function makeKeys(dir: string, label: string): Promise<KeyFiles> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const privatePath = join(dir, `${label}.pem`);
  const publicPath = join(dir, `${label}.pub`);
  await writeFile(privatePath, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  await writeFile(publicPath, publicKey.export({ type: 'spki', format: 'pem' }));
  const keyId = createHash('sha256')
    .update(publicKey.export({ type: 'spki', format: 'der' }))
    .digest('hex');
  return { privatePath, publicPath, keyId };
}

export async function tempDir(cleanups: Array<() => Promise<unknown>>, label: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `pipeline-${label}-`));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A copy of `origin` whose config's release settings are `release` (the origin is built with RELEASE_MARKER). */
export async function withRelease(trees: Trees, origin: Tree, label: string, release: object): Promise<Tree> {
  const tree = await trees.copy(origin, label);
  const config = await readFile(tree.path('pipeline.config.ts'), 'utf8');
  if (!config.includes(RELEASE_MARKER)) throw new Error('the origin config has no release marker');
  await writeFile(tree.path('pipeline.config.ts'), config.replace(RELEASE_MARKER, `release: ${JSON.stringify(release)},`).replaceAll(origin.root, tree.root));
  return tree;
}

/** A fresh host: a copy of the repository with nothing built, downloaded or recorded, and its own publish directory. */
export async function freshHost(trees: Trees, origin: Tree, label: string): Promise<Tree> {
  const host = await trees.copy(origin, label);
  for (const dir of ['cache', 'images', '.pipeline', 'logs']) await rm(host.path(dir), { recursive: true, force: true });
  for (const file of await readdir(host.path('publish'))) if (file.endsWith('.img')) await rm(host.path(`publish/${file}`));
  const config = await readFile(host.path('pipeline.config.ts'), 'utf8');
  await writeFile(host.path('pipeline.config.ts'), config.replaceAll(origin.root, host.root));
  return host;
}

/** Trusts `key` on `tree`: its public key at keys/images.pub, as a host's repository would hold it. */
export async function installTrustedKey(tree: Tree, key: KeyFiles): Promise<void> {
  await mkdir(tree.path('keys'), { recursive: true });
  await copyFile(key.publicPath, tree.path('keys/images.pub'));
}

export const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

export function explain(result: CliResult): string {
  return `exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`;
}

/** Writes to a store as anyone who can write it: through the backend, in this process. */
export class StoreHand {
  private readonly release: StoreSettings;

  /** `release` as a config declares it (its `tag` is the one written). */
  constructor(
    release: object,
    private readonly options: StoreOptions,
  ) {
    const decl = release as ReleaseDecl;
    this.release = storeSettings(decl, decl.tag ?? 'latest');
  }

  async record(name: string): Promise<ImageRecord> {
    const store = await openImageStore(this.release, this.release.tag, this.options);
    const listing = await store.list(AbortSignal.timeout(60_000));
    const record = listing.images.find((image) => image.name === name)?.record;
    if (!record) throw new Error(`the store holds no record of ${name}`);
    return record;
  }

  async bundle(name: string): Promise<Uint8Array> {
    const store = await openImageStore(this.release, this.release.tag, this.options);
    const opened = await store.open(name, AbortSignal.timeout(60_000));
    if (opened.status !== 'ready') throw new Error(`${name} is ${opened.status}`);
    const bundle = await opened.readAttachment('provenance', AbortSignal.timeout(60_000));
    if (!bundle) throw new Error(`${name} has no provenance attachment`);
    return bundle;
  }

  /** Puts `image` with `bundle` as its provenance (none: unsigned), replacing what the store holds. */
  async put(image: ImageToPut, bundle: Uint8Array | undefined): Promise<void> {
    const store = await openImageStore(this.release, this.release.tag, this.options);
    const { attachments: _dropped, ...bare } = image;
    await store.put(bundle ? { ...bare, attachments: { provenance: bundle } } : bare, {
      force: true,
      signal: AbortSignal.timeout(120_000),
      log: () => {},
    });
  }
}

/** The image `tree` holds, as the store recorded it (`record`): what an upload of it puts. */
export async function imageFrom(tree: Tree, name: string, record: ImageRecord): Promise<ImageToPut> {
  const path = tree.path(`images/${name}/${name}.qcow2`);
  const bytes = await readFile(path);
  return {
    name,
    path,
    size: bytes.length,
    sha256: sha256(bytes),
    cacheKey: record.cacheKey ?? '',
    ...(record.compression ? { compression: record.compression } : {}),
    versions: record.versions,
    sources: record.sources ?? { base: { path: 'cache/none' }, files: {} },
  };
}

/** The same image with one byte changed, in a file of its own: other bytes under the same name, the record to match. */
export async function otherBytes(image: ImageToPut, dir: string): Promise<ImageToPut> {
  const path = join(dir, `${image.name}-other.qcow2`);
  await copyFile(image.path, path);
  await flipByte(path, Math.floor(image.size / 2));
  return { ...image, path, sha256: sha256(await readFile(path)) };
}

export function statementOf(image: ImageToPut): Statement {
  return imageStatement(
    image,
    { baseUrl: 'file:///upstream/base.qcow2', template: `templates/${image.name}/template.pkr.hcl`, accelerator: 'kvm' },
    undefined,
    {},
  );
}

export async function signedWithKey(statement: Statement, key: KeyFiles): Promise<Uint8Array> {
  return (await signStatement(statement, { kind: 'key', keyPath: key.privatePath }, {})).bundle;
}

/**
 * `images download --publish` refuses debian-12 in one line and installs nothing; the
 * remote cache refuses it and builds it here instead, publishing what it built.
 */
export async function refusedEverywhere(
  t: ExecutionContext,
  trees: Trees,
  origin: Tree,
  env: Readonly<Record<string, string | undefined>>,
  label: string,
  reason: RegExp,
  tampered?: ImageToPut,
): Promise<void> {
  const host = await freshHost(trees, origin, label);
  const downloads = host.path('downloads');
  const download = await host.run(['images', 'download', 'debian-12', '--publish', '--dir', downloads], { env });
  t.is(download.code, 1, `${label}: ${explain(download)}`);
  t.regex(download.stderr, new RegExp(`^debian-12: not trusted \\(release\\.trust\\): ${reason.source}`, 'm'), label);
  t.false(existsSync(host.path('publish/debian-12.img')), `${label}: nothing published`);
  t.false(existsSync(join(downloads, 'debian-12.qcow2')), `${label}: nothing downloaded`);

  const cache = await host.run(['debian-12:publish'], { env, timeoutMs: 240_000 });
  t.is(cache.code, 0, `${label}: ${explain(cache)}`);
  t.regex(
    cache.stdout + cache.stderr,
    new RegExp(`refused the copy on .*\\(not trusted \\(release\\.trust\\): ${reason.source}.*\\); built debian-12 here instead`),
    label,
  );
  const built = sha256(await readFile(host.path('images/debian-12/debian-12.qcow2')));
  t.is(sha256(await readFile(host.path('publish/debian-12.img'))), built, `${label}: the image built here is published`);
  if (tampered) t.not(built, tampered.sha256, `${label}: not the store's bytes`);
  t.false(existsSync(host.path('images/debian-12/debian-12.qcow2.sigstore.json')), `${label}: no bundle kept for a local build`);
}
