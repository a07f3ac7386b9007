// Puts one image on a release without ever taking it off while bytes move: new assets go
// up under temporary names, then the old assets are deleted and the new ones renamed into
// place (data first, the .sha256 last), then images.json records the image.
import { randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { Failure } from '../../src/types.ts';
import { imageCompression } from '../qemu-img.ts';
import type { ImageCatalog } from './catalog.ts';
import { parseChecksumFile } from './checksum-file.ts';
import {
  checksumAssetName,
  imageAssetRole,
  MANIFEST_ASSET,
  partAssetName,
  tempAssetName,
  wholeAssetName,
} from './asset-names.ts';
import { emptyManifest, parseVersions, readManifest, serializeManifest, withManifestLock, type ManifestEntry } from './manifest.ts';
import type { Release, ReleaseAsset, ReleaseStore } from './releases.ts';
import type { TransferLimits } from './sizes.ts';

export interface PlannedPart {
  readonly name: string;
  readonly start: number;
  readonly length: number;
}

/** The assets an image of `size` bytes becomes: one whole file, or split(1)-named parts. */
export function planParts(image: string, size: number, limits: TransferLimits): PlannedPart[] {
  if (size <= limits.maxAssetSize) return [{ name: wholeAssetName(image), start: 0, length: size }];
  const parts: PlannedPart[] = [];
  for (let start = 0, index = 0; start < size; start += limits.partSize, index++) {
    parts.push({ name: partAssetName(image, index), start, length: Math.min(limits.partSize, size - start) });
  }
  return parts;
}

export interface UploadImageOptions {
  readonly store: ReleaseStore;
  readonly catalog: ImageCatalog;
  readonly name: string;
  readonly tag: string;
  readonly limits: TransferLimits;
  readonly force: boolean;
  readonly signal: AbortSignal;
  readonly log: (line: string) => void;
  readonly onProgress?: (done: number, total: number) => void;
}

export interface UploadImageResult {
  /** True when image bytes went up; false when the release already held this checksum. */
  readonly uploaded: boolean;
  readonly assets: readonly string[];
}

/** Local facts about the image, read before any request. */
async function localImage(catalog: ImageCatalog, name: string) {
  const path = catalog.imagePath(name);
  const checksumText = await readFile(catalog.checksumPath(name), 'utf8');
  const checksum = parseChecksumFile(checksumText, catalog.checksumPath(name));
  if (checksum.fileName !== wholeAssetName(name)) {
    throw new Error(`${catalog.checksumPath(name)} names ${checksum.fileName}, expected ${wholeAssetName(name)}`);
  }
  const { size } = await stat(path);
  const versions = parseVersions(await readFile(catalog.versionsPath(name), 'utf8').catch(() => ''));
  const current = await catalog.currentKey(name);
  // The key the image was built with; the current one if the key file is missing.
  const cacheKey = (await readFile(catalog.cacheKeyPath(name), 'utf8').catch(() => current.cacheKey ?? '')).trim();
  if (!cacheKey) throw new Failure('task', `${name} has no cache key (${catalog.cacheKeyPath(name)} missing and its base is not cached): build it first`);
  return { path, size, checksumText, sha256: checksum.sha256, versions, cacheKey, sources: current.sources };
}

async function remoteChecksum(store: ReleaseStore, assets: readonly ReleaseAsset[], name: string, signal: AbortSignal) {
  const asset = assets.find((candidate) => candidate.name === checksumAssetName(name) && candidate.state === 'uploaded');
  if (!asset) return undefined;
  try {
    return parseChecksumFile(await store.downloadText(asset, signal, 4096), asset.name).sha256;
  } catch {
    return undefined;
  }
}

/** True when the release holds exactly the planned data assets, complete and of the right sizes. */
function dataAssetsMatch(assets: readonly ReleaseAsset[], parts: readonly PlannedPart[], name: string): boolean {
  const data = assets.filter((asset) => {
    const role = imageAssetRole(name, asset.name);
    return role === 'whole' || role === 'part';
  });
  return (
    data.length === parts.length &&
    parts.every((part) => data.some((asset) => asset.name === part.name && asset.size === part.length && asset.state === 'uploaded'))
  );
}

export async function uploadImage(options: UploadImageOptions): Promise<UploadImageResult> {
  const { store, name, signal, log } = options;
  const local = await localImage(options.catalog, name);
  const parts = planParts(name, local.size, options.limits);
  const compression = await imageCompression(local.path, signal).catch((error: unknown) => {
    // A host that only uploads may lack qemu-img: the entry then says nothing rather than something wrong.
    log(`${name}: compression type not recorded: ${error instanceof Error ? error.message : error}`);
    return undefined;
  });
  const entry: ManifestEntry = {
    size: local.size,
    sha256: local.sha256,
    parts: parts.map((part) => ({ name: part.name, size: part.length })),
    cacheKey: local.cacheKey,
    ...(compression ? { compression } : {}),
    versions: local.versions,
    sources: { base: { ...local.sources.base }, files: { ...local.sources.files } },
  };

  const release = await store.ensureRelease(options.tag);
  let assets = await store.listAssets(release.id);
  const remote = await remoteChecksum(store, assets, name, signal);
  if (!options.force && remote === local.sha256 && dataAssetsMatch(assets, parts, name)) {
    log(`${name}: release ${options.tag} already holds sha256 ${local.sha256.slice(0, 12)}…; nothing to upload`);
    await recordInManifest(store, release, name, entry, signal, log, { keepUploadedAt: true });
    return { uploaded: false, assets: [] };
  }

  // Temp assets of an earlier interrupted run of this image hold bytes nobody will rename.
  for (const leftover of assets.filter((asset) => imageAssetRole(name, asset.name) === 'temp')) {
    log(`deleting ${leftover.name} left by an interrupted upload`);
    await store.deleteAsset(leftover);
  }
  assets = assets.filter((asset) => imageAssetRole(name, asset.name) !== 'temp');

  const runId = randomBytes(4).toString('hex');
  const total = local.size + Buffer.byteLength(local.checksumText);
  let done = 0;
  const uploaded: Array<{ asset: ReleaseAsset; finalName: string }> = [];
  options.onProgress?.(0, total);
  for (const part of parts) {
    const temp = tempAssetName(part.name, runId);
    log(`uploading ${part.name} (${part.length} bytes) as ${temp}`);
    const asset = await store.uploadAsset({
      release,
      name: temp,
      path: local.path,
      start: part.start,
      length: part.length,
      signal,
      known: assets,
      onProgress: (sent) => options.onProgress?.(done + sent, total),
    });
    done += part.length;
    uploaded.push({ asset, finalName: part.name });
  }
  const checksumTemp = await store.uploadText({
    release,
    name: tempAssetName(checksumAssetName(name), runId),
    text: local.checksumText,
    contentType: 'text/plain',
    signal,
    known: assets,
  });
  options.onProgress?.(total, total);

  // The swap: metadata requests only. Old data (stale parts included) out, new data in, then the checksum.
  signal.throwIfAborted();
  assets = await store.listAssets(release.id);
  const newIds = new Set([...uploaded.map((item) => item.asset.id), checksumTemp.id]);
  for (const old of assets.filter((asset) => !newIds.has(asset.id))) {
    const role = imageAssetRole(name, old.name);
    if (role === 'whole' || role === 'part') {
      log(`deleting old ${old.name}`);
      await store.deleteAsset(old);
    }
  }
  for (const item of uploaded) await store.renameAsset(item.asset, item.finalName);
  const oldChecksum = assets.find((asset) => asset.name === checksumAssetName(name) && !newIds.has(asset.id));
  if (oldChecksum) await store.deleteAsset(oldChecksum);
  await store.renameAsset(checksumTemp, checksumAssetName(name));
  log(`${name}: ${parts.length === 1 ? 'uploaded whole' : `uploaded in ${parts.length} parts`}, sha256 ${local.sha256}`);

  await recordInManifest(store, release, name, entry, signal, log, { keepUploadedAt: false });
  return { uploaded: true, assets: [...parts.map((part) => part.name), checksumAssetName(name)] };
}

function sameEntry(a: ManifestEntry | undefined, b: ManifestEntry): boolean {
  if (!a) return false;
  const { uploadedAt: _a, ...restA } = a;
  const { uploadedAt: _b, ...restB } = b;
  return JSON.stringify(canonical(restA)) === JSON.stringify(canonical(restB));
}

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value as Record<string, unknown>).sort(([x], [y]) => x.localeCompare(y)).map(([k, v]) => [k, canonical(v)]));
  }
  return value;
}

/** Writes the image's entry into images.json (same no-downtime swap), unless it is already there. */
async function recordInManifest(
  store: ReleaseStore,
  release: Release,
  name: string,
  entry: ManifestEntry,
  signal: AbortSignal,
  log: (line: string) => void,
  { keepUploadedAt }: { keepUploadedAt: boolean },
): Promise<void> {
  await withManifestLock(`${store.client.apiUrl} ${store.client.owner}/${store.client.repo} ${release.id}`, async () => {
    const assets = await store.listAssets(release.id);
    const manifest = (await readManifest(store, assets, signal)) ?? emptyManifest();
    const previous = manifest.images[name];
    if (sameEntry(previous, entry)) return;
    const uploadedAt = keepUploadedAt && previous?.uploadedAt ? previous.uploadedAt : new Date().toISOString();
    manifest.images[name] = { ...entry, uploadedAt };
    await replaceManifest(store, release, assets, serializeManifest(manifest), signal);
    log(`recorded ${name} in ${MANIFEST_ASSET}`);
  });
}

/** Uploads images.json under a temp name, then swaps it in. */
export async function replaceManifest(
  store: ReleaseStore,
  release: Release,
  assets: readonly ReleaseAsset[],
  text: string,
  signal: AbortSignal,
): Promise<void> {
  for (const leftover of assets.filter((asset) => asset.name.startsWith(`${MANIFEST_ASSET}.uploading-`))) await store.deleteAsset(leftover);
  const temp = await store.uploadText({
    release,
    name: tempAssetName(MANIFEST_ASSET, randomBytes(4).toString('hex')),
    text,
    contentType: 'application/json',
    signal,
    known: assets,
  });
  const old = assets.find((asset) => asset.name === MANIFEST_ASSET);
  if (old) await store.deleteAsset(old);
  await store.renameAsset(temp, MANIFEST_ASSET);
}
