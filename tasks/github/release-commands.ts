// `pipeline release check | remove | retag`: what is stale on a release and why, and the
// destructive operations on it, each with --dry-run.
import { Failure, type Command, type CommandIO } from '../../src/types.ts';
import { imageAssetRole, isValidImageName, MANIFEST_ASSET } from './asset-names.ts';
import type { CurrentImageKey, ImageCatalog, ImageSources } from './catalog.ts';
import { flag, isDryRun, openStore, reportFailures, stringValue, type CommandArgs, type CommandDeps } from './command-support.ts';
import { imageAssets } from './download-image.ts';
import { readManifest, serializeManifest, type ManifestEntry } from './manifest.ts';
import type { ReleaseAsset } from './releases.ts';
import { replaceManifest } from './upload-image.ts';

export interface ImageVerdict {
  readonly name: string;
  readonly status: 'current' | 'stale';
  readonly reasons: readonly string[];
}

/** Why the recorded inputs differ from the current ones, in words a release manager acts on. */
export function staleReasons(recorded: ManifestEntry, current: CurrentImageKey): string[] {
  if (current.cacheKey !== undefined && recorded.cacheKey === current.cacheKey) return [];
  const reasons: string[] = [];
  const before = recorded.sources;
  if (!before) return ['cache key changed (the release records no inputs to compare)'];
  const base = compareBase(before.base, current.sources.base);
  if (base) reasons.push(base);
  const files = [...new Set([...Object.keys(before.files), ...Object.keys(current.sources.files)])].sort();
  for (const file of files) {
    const was = before.files[file];
    const now = current.sources.files[file];
    if (was === now) continue;
    reasons.push(was === undefined ? `template file ${file} added` : now === undefined ? `template file ${file} removed` : `template file ${file} changed`);
  }
  if (reasons.length) return reasons;
  // Without the base here there is no key to compare; equal inputs are the same image.
  return current.cacheKey === undefined ? [] : ['cache key changed'];
}

/**
 * The base by upstream SHA-512 when both sides know it (a machine without the base still
 * does, from SHA512SUMS), else by SHA-256 of the cached file.
 */
function compareBase(before: ImageSources['base'], now: ImageSources['base']): string | undefined {
  const changed = `upstream base image changed (${now.path})`;
  if (before.sha512 && now.sha512) return before.sha512 === now.sha512 ? undefined : changed;
  if (before.sha256 && now.sha256) return before.sha256 === now.sha256 ? undefined : changed;
  return `base image ${now.path} cannot be compared: the release and this machine share no checksum of it (download it here to compare by SHA-256)`;
}

async function check(catalog: ImageCatalog, deps: CommandDeps, args: CommandArgs, io: CommandIO): Promise<number> {
  const tag = stringValue(args, 'tag') ?? catalog.release.tag;
  const store = await openStore(catalog, deps);
  const release = await store.findRelease(tag);
  const assets = release ? await store.listAssets(release.id) : [];
  const manifest = release ? await readManifest(store, assets, io.signal) : undefined;
  const verdicts: ImageVerdict[] = [];
  for (const name of catalog.names) {
    verdicts.push(await verdictFor(catalog, name, tag, assets, manifest?.images[name], release !== undefined));
  }
  const stale = verdicts.filter((verdict) => verdict.status === 'stale');
  if (io.json) {
    io.out(JSON.stringify({ tag, stale: stale.length, images: verdicts }));
  } else {
    for (const verdict of verdicts) {
      io.out(verdict.status === 'current' ? `${verdict.name}: current` : `${verdict.name}: stale: ${verdict.reasons.join('; ')}`);
    }
  }
  return stale.length ? 1 : 0;
}

async function verdictFor(
  catalog: ImageCatalog,
  name: string,
  tag: string,
  assets: readonly ReleaseAsset[],
  recorded: ManifestEntry | undefined,
  releaseExists: boolean,
): Promise<ImageVerdict> {
  const stale = (...reasons: string[]): ImageVerdict => ({ name, status: 'stale', reasons });
  if (!releaseExists) return stale(`not on the release (release ${tag} does not exist)`);
  try {
    imageAssets(name, assets, tag);
  } catch (error) {
    return stale(`not on the release (${error instanceof Error ? error.message : error})`);
  }
  if (!recorded?.cacheKey) return stale(`no cache key recorded in ${MANIFEST_ASSET}`);
  let current: CurrentImageKey;
  try {
    current = await catalog.currentKey(name);
  } catch (error) {
    return stale(`cannot compute the current cache key: ${error instanceof Error ? error.message : error}`);
  }
  const reasons = staleReasons(recorded, current);
  return reasons.length ? stale(...reasons) : { name, status: 'current', reasons: [] };
}

async function remove(catalog: ImageCatalog, deps: CommandDeps, args: CommandArgs, io: CommandIO): Promise<number> {
  const tag = stringValue(args, 'tag') ?? catalog.release.tag;
  const all = flag(args, 'all');
  const names = args.positionals.slice(1);
  if (all === names.length > 0) throw new Failure('usage', 'release remove: give image names or --all (not both)');
  for (const name of names) if (!isValidImageName(name)) throw new Failure('usage', `release remove: "${name}" is not an image name`);
  const dryRun = isDryRun(args);
  const store = await openStore(catalog, deps);
  const release = await store.requireRelease(tag);
  const assets = await store.listAssets(release.id);

  // Checksums go first, so nobody downloads an image whose parts are half gone.
  const order = (asset: ReleaseAsset) => (asset.name.endsWith('.sha256') ? 0 : asset.name === MANIFEST_ASSET ? 2 : 1);
  const doomed = (all ? [...assets] : assets.filter((asset) => names.some((name) => imageAssetRole(name, asset.name) !== undefined))).sort(
    (a, b) => order(a) - order(b) || a.name.localeCompare(b.name),
  );
  const missing = names.filter((name) => !assets.some((asset) => imageAssetRole(name, asset.name) !== undefined));
  const verb = dryRun ? 'would delete' : 'deleted';
  const done: string[] = [];
  for (const asset of doomed) {
    if (!dryRun) await store.deleteAsset(asset);
    done.push(asset.name);
    if (!io.json) io.out(`${verb} ${asset.name}`);
  }
  if (!io.json) for (const name of missing) io.out(`${name}: not on release ${tag}`);

  const manifest = all ? undefined : await readManifest(store, assets, io.signal);
  const listed = names.filter((name) => manifest?.images[name]);
  if (manifest && listed.length) {
    if (!io.json) io.out(`${dryRun ? 'would remove' : 'removed'} ${listed.join(', ')} from ${MANIFEST_ASSET}`);
    if (!dryRun) {
      for (const name of listed) delete manifest.images[name];
      await replaceManifest(store, release, await store.listAssets(release.id), serializeManifest(manifest), io.signal);
    }
  }
  if (io.json) io.out(JSON.stringify({ tag, dryRun, deleted: done, notOnRelease: missing, manifestUpdated: listed }));
  return 0;
}

async function retag(catalog: ImageCatalog, deps: CommandDeps, args: CommandArgs, io: CommandIO): Promise<number> {
  const tag = stringValue(args, 'tag') ?? catalog.release.tag;
  const version = args.positionals[1];
  if (!version || args.positionals.length > 2) throw new Failure('usage', 'usage: release retag <version> [--tag TAG]');
  if (version === tag) throw new Failure('usage', `release retag: ${version} is the tag being moved`);
  const store = await openStore(catalog, deps);
  const release = await store.requireRelease(tag);
  const sha = await store.tagCommit(version);
  const body = `Points to ${version}`;
  if (isDryRun(args)) {
    if (io.json) io.out(JSON.stringify({ tag, version, sha, dryRun: true }));
    else io.out(`would point tag ${tag} at ${version} (${sha.slice(0, 12)}) and set the release body to "${body}"`);
    return 0;
  }
  await store.moveTag(tag, sha);
  await store.updateReleaseBody(release, body);
  if (io.json) io.out(JSON.stringify({ tag, version, sha, dryRun: false }));
  else io.out(`tag ${tag} now points at ${version} (${sha.slice(0, 12)}); assets kept`);
  return 0;
}

export function releaseCommand(catalog: ImageCatalog, deps: CommandDeps = {}): Command {
  return {
    usage: 'release check [--tag TAG] | release remove <names…|--all> [--tag TAG] [--dry-run] | release retag <version> [--tag TAG] [--dry-run]',
    description: 'compare images with a GitHub release, remove images from it, or move its tag',
    options: {
      tag: { type: 'string' },
      all: { type: 'boolean' },
      'dry-run': { type: 'boolean' },
    },
    async run(args, io) {
      const sub = args.positionals[0];
      const body =
        sub === 'check' ? check : sub === 'remove' ? remove : sub === 'retag' ? retag : undefined;
      if (!body) throw new Failure('usage', `release: unknown subcommand ${sub ? `"${sub}"` : '(none)'}; use check, remove or retag`);
      return reportFailures(io, () => body(catalog, deps, args, io));
    },
  };
}

