// Fetches one image from a release: parts in parallel, each written at its offset into a
// single temp file (no reassembly pass), resumable across resets and runs, verified
// against the release's .sha256 before it is renamed into place.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertSafeAssetName, checksumAssetName, isValidImageName, partSuffix, wholeAssetName } from './asset-names.ts';
import { parseChecksumFile } from './checksum-file.ts';
import { Failure } from '../../src/types.ts';
import { GitHubFailure } from './client.ts';
import type { ImagesManifest } from './manifest.ts';
import type { ReleaseAsset, ReleaseStore } from './releases.ts';

export interface ImageAssets {
  readonly checksum: ReleaseAsset;
  /** The whole file, or its parts in order. */
  readonly data: readonly ReleaseAsset[];
}

/** The assets that make up `name` on a release; throws naming what is missing. */
export function imageAssets(name: string, assets: readonly ReleaseAsset[], tag: string, manifest?: ImagesManifest): ImageAssets {
  if (!isValidImageName(name)) throw new GitHubFailure(`"${name}" is not a valid image name`);
  const uploaded = assets.filter((asset) => asset.state === 'uploaded');
  for (const asset of uploaded) if (asset.name.startsWith(`${name}.qcow2`)) assertSafeAssetName(asset.name);
  const checksum = uploaded.find((asset) => asset.name === checksumAssetName(name));
  const whole = uploaded.find((asset) => asset.name === wholeAssetName(name));
  const parts = uploaded
    .filter((asset) => asset.name.startsWith(`${name}.qcow2.part`) && /\.part[a-z]{2,4}$/.test(asset.name))
    .sort((a, b) => a.name.length - b.name.length || a.name.localeCompare(b.name));
  if (!whole && parts.length === 0) throw new GitHubFailure(`release ${tag} has no ${wholeAssetName(name)} (nor parts of it)`);
  if (!checksum) throw new GitHubFailure(`release ${tag} has ${name} but not its ${checksumAssetName(name)}; refusing to download unverifiable bytes`);
  if (whole) return { checksum, data: [whole] };
  parts.forEach((part, index) => {
    const expected = `${name}.qcow2.part${partSuffix(index)}`;
    if (part.name !== expected) throw new GitHubFailure(`release ${tag} is missing part ${expected} of ${name}`);
  });
  const listed = manifest?.images[name]?.parts;
  if (listed && listed.length > 1 && listed.length !== parts.length) {
    const missing = listed.find((part) => !parts.some((asset) => asset.name === part.name));
    throw new GitHubFailure(`release ${tag} is missing part ${missing?.name ?? `(${listed.length} listed, ${parts.length} present)`} of ${name}`);
  }
  return { checksum, data: parts };
}

export interface DownloadImageOptions {
  readonly store: ReleaseStore;
  readonly tag: string;
  readonly name: string;
  readonly assets: ImageAssets;
  readonly dir: string;
  readonly overwrite: boolean;
  readonly signal: AbortSignal;
  readonly concurrency?: number;
  readonly onProgress?: (done: number, total: number) => void;
  readonly log?: (line: string) => void;
}

export interface DownloadImageResult {
  readonly name: string;
  readonly path: string;
  readonly sha256: string;
  readonly size: number;
  /** True when the file was already present with the right checksum. */
  readonly alreadyPresent: boolean;
}

interface ResumeState {
  sha256: string;
  parts: Array<{ id: number; size: number }>;
  done: number[];
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function readResumeState(path: string): Promise<ResumeState | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as ResumeState;
  } catch {
    return undefined;
  }
}

export async function downloadImage(options: DownloadImageOptions): Promise<DownloadImageResult> {
  const { store, name, assets, signal } = options;
  const log = options.log ?? (() => {});
  const expected = parseChecksumFile(await store.downloadText(assets.checksum, signal, 4096), assets.checksum.name);
  if (expected.fileName !== wholeAssetName(name)) {
    throw new GitHubFailure(`${assets.checksum.name} names ${expected.fileName}, expected ${wholeAssetName(name)}`);
  }
  await mkdir(options.dir, { recursive: true });
  const finalPath = join(options.dir, assertSafeAssetName(wholeAssetName(name)));
  const total = assets.data.reduce((sum, part) => sum + part.size, 0);

  const existing = await stat(finalPath).catch(() => undefined);
  if (existing && !options.overwrite) {
    if (existing.size === total && (await sha256File(finalPath)) === expected.sha256) {
      return { name, path: finalPath, sha256: expected.sha256, size: total, alreadyPresent: true };
    }
    throw new GitHubFailure(`${finalPath} exists and differs from release ${options.tag}; pass --overwrite to replace it`);
  }

  const tempPath = join(options.dir, `.${wholeAssetName(name)}.partial`);
  const statePath = `${tempPath}.json`;
  const layout = assets.data.map((asset) => ({ id: asset.id, size: asset.size }));
  const previous = await readResumeState(statePath);
  const resumable =
    previous &&
    previous.sha256 === expected.sha256 &&
    JSON.stringify(previous.parts) === JSON.stringify(layout) &&
    (await stat(tempPath).catch(() => undefined))?.size === total;
  const state: ResumeState = resumable ? previous : { sha256: expected.sha256, parts: layout, done: layout.map(() => 0) };
  if (resumable) log(`${name}: resuming at ${state.done.reduce((a, b) => a + b, 0)} of ${total} bytes`);

  const handle = await open(tempPath, resumable ? 'r+' : 'w');
  let completed = false;
  try {
    await handle.truncate(total);
    const offsets = assets.data.map((_, index) => assets.data.slice(0, index).reduce((sum, part) => sum + part.size, 0));
    const report = () => options.onProgress?.(state.done.reduce((a, b) => a + b, 0), total);
    report();
    let next = 0;
    const worker = async () => {
      while (next < assets.data.length) {
        const index = next++;
        const asset = assets.data[index]!;
        if (state.done[index]! >= asset.size) continue;
        await store.downloadAsset({
          asset,
          from: state.done[index]!,
          signal,
          onRestart: () => (state.done[index] = 0),
          sink: async (chunk, offset) => {
            if (offset + chunk.length > asset.size) throw new GitHubFailure(`${asset.name} is longer than the release lists`);
            await handle.write(chunk, 0, chunk.length, offsets[index]! + offset);
            state.done[index] = offset + chunk.length;
            report();
          },
        });
      }
    };
    await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 4, assets.data.length) }, worker));
    await handle.sync();
    completed = true;
  } finally {
    await handle.close();
    // Keep what arrived for the next run; positional writes make any finished prefix reusable.
    if (!completed) await writeFile(statePath, JSON.stringify(state)).catch(() => {});
  }

  const actual = await sha256File(tempPath);
  if (actual !== expected.sha256) {
    await rm(tempPath, { force: true });
    await rm(statePath, { force: true });
    throw new Failure('integrity', `checksum mismatch for ${name}: release says ${expected.sha256}, downloaded bytes hash to ${actual}; nothing was installed`);
  }
  await rename(tempPath, finalPath);
  await rm(statePath, { force: true });
  return { name, path: finalPath, sha256: expected.sha256, size: total, alreadyPresent: false };
}
