// `pipeline images list | download`: the consumer side of a release.
import { join } from 'node:path';
import { Failure, type Command, type CommandIO } from '../../src/types.ts';
import { imageAssetRole, imagesOnRelease, isValidImageName } from './asset-names.ts';
import type { ImageCatalog } from './catalog.ts';
import { expandHome, flag, openStore, reportFailures, stringValue, type CommandArgs, type CommandDeps } from './command-support.ts';
import { downloadImage, imageAssets } from './download-image.ts';
import { readManifest } from './manifest.ts';
import { checkPublishDir } from '../publish.ts';
import { publishDownloaded, resolvePublishDir } from './publish-image.ts';
import { formatBytes } from '../../src/report/format.ts';

async function list(catalog: ImageCatalog, deps: CommandDeps, args: CommandArgs, io: CommandIO): Promise<number> {
  const tag = stringValue(args, 'version') ?? catalog.release.tag;
  const store = await openStore(catalog, deps);
  const release = await store.requireRelease(tag);
  const assets = (await store.listAssets(release.id)).filter((asset) => asset.state === 'uploaded');
  const images = imagesOnRelease(assets.map((asset) => asset.name)).map((name) => {
    const data = assets.filter((asset) => ['whole', 'part'].includes(imageAssetRole(name, asset.name) ?? ''));
    return {
      name,
      size: data.reduce((sum, asset) => sum + asset.size, 0),
      parts: data.map((asset) => ({ name: asset.name, size: asset.size })).sort((a, b) => a.name.localeCompare(b.name)),
      multipart: data.some((asset) => imageAssetRole(name, asset.name) === 'part'),
      checksum: assets.some((asset) => imageAssetRole(name, asset.name) === 'checksum'),
    };
  });
  if (io.json) {
    io.out(JSON.stringify({ tag, images }));
    return 0;
  }
  if (!images.length) io.out(`release ${tag} holds no images`);
  const width = Math.max(0, ...images.map((image) => image.name.length));
  for (const image of images) {
    const notes = [image.multipart ? `(multipart: ${image.parts.length} parts)` : '', image.checksum ? '' : '[no .sha256]'].filter(Boolean);
    io.out(`${image.name.padEnd(width)}  ${formatBytes(image.size).padStart(10)}${notes.length ? `  ${notes.join(' ')}` : ''}`);
  }
  return 0;
}

async function download(catalog: ImageCatalog, deps: CommandDeps, args: CommandArgs, io: CommandIO): Promise<number> {
  const tag = stringValue(args, 'version') ?? catalog.release.tag;
  const requested = args.positionals.slice(1);
  if (!requested.length) throw new Failure('usage', 'usage: images download <names…|all> [--version TAG] [--dir DIR] [--publish] [--overwrite]');
  for (const name of requested) if (name !== 'all' && !isValidImageName(name)) throw new Failure('usage', `images download: "${name}" is not an image name`);
  const dir = expandHome(stringValue(args, 'dir') ?? '~/.cache/images');
  const publish = flag(args, 'publish');
  const publishDir = resolvePublishDir(catalog.publishDir, deps.client?.env ?? process.env);
  // A publish directory that cannot take the images is found before gigabytes move.
  if (publish) await checkPublishDir(publishDir);

  const store = await openStore(catalog, deps);
  const release = await store.requireRelease(tag);
  const assets = await store.listAssets(release.id);
  const manifest = await readManifest(store, assets, io.signal).catch(() => undefined);
  const names = requested.includes('all') ? imagesOnRelease(assets.map((asset) => asset.name)) : [...new Set(requested)];
  if (!names.length) throw new Failure('usage', `release ${tag} holds no images`);

  const results: Array<Record<string, unknown>> = [];
  let failed = 0;
  for (const name of names) {
    try {
      const found = imageAssets(name, assets, tag, manifest);
      const result = await downloadImage({
        store,
        tag,
        name,
        assets: found,
        dir,
        overwrite: flag(args, 'overwrite'),
        signal: io.signal,
        onProgress: (done, total) => io.progress(name, done, total),
        log: (line) => io.err(line),
      });
      const entry: Record<string, unknown> = { name, path: result.path, size: result.size, sha256: result.sha256, status: result.alreadyPresent ? 'present' : 'downloaded' };
      if (!io.json) io.out(`${name}: ${result.alreadyPresent ? 'already present, checksum verified' : 'downloaded, checksum verified'}: ${result.path}`);
      if (publish) {
        const published = await publishDownloaded({
          source: result.path,
          sourceSha256: result.sha256,
          publishDir,
          name,
          root: io.root,
          signal: io.signal,
          onProgress: (done, total) => io.progress(`${name} publish`, done, total),
        });
        entry.published = published;
        if (!io.json) io.out(`${name}: published ${join(publishDir, `${name}.img`)}`);
      }
      results.push(entry);
    } catch (error) {
      if (error instanceof Error && error.name === 'AbortError') throw error;
      failed++;
      const message = error instanceof Error ? error.message : String(error);
      results.push({ name, status: 'failed', error: message });
      if (!io.json) io.err(`${name}: ${message}`);
    }
  }
  if (io.json) io.out(JSON.stringify({ tag, dir, images: results }));
  return failed ? 1 : 0;
}

export function imagesCommand(catalog: ImageCatalog, deps: CommandDeps = {}): Command {
  return {
    usage: 'images list [--version TAG] | images download <names…|all> [--version TAG] [--dir DIR] [--publish] [--overwrite]',
    description: 'list the images on a GitHub release, or download, verify and install them',
    options: {
      version: { type: 'string' },
      dir: { type: 'string' },
      publish: { type: 'boolean' },
      overwrite: { type: 'boolean' },
    },
    async run(args, io) {
      const sub = args.positionals[0];
      const body = sub === 'list' ? list : sub === 'download' ? download : undefined;
      if (!body) throw new Failure('usage', `images: unknown subcommand ${sub ? `"${sub}"` : '(none)'}; use list or download`);
      return reportFailures(io, () => body(catalog, deps, args, io));
    },
  };
}
