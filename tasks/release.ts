// `pipeline release check | remove | retag`: which images in the store are stale and why,
// and the destructive operations on it, each with --dry-run. Written against the image
// store interface; the store is a GitHub release today.
import { Failure, formatOutput, releaseCheckOutput, type Command, type CommandIO } from '../src/index.ts';
import type { CurrentImageKey, ImageCatalog } from './store/catalog.ts';
import { flag, isDryRun, openStore, tagOf, type CommandArgs, type CommandDeps } from './store/command-support.ts';
import { checkTag, isValidImageName } from './store/names.ts';
import { INDEX_NAME } from './store/record.ts';
import { staleReasons } from './store/stale.ts';
import type { StoredImage, StoreListing } from './store/store.ts';

export interface ImageVerdict {
  readonly name: string;
  readonly status: 'current' | 'stale';
  readonly reasons: readonly string[];
  /** Stale because its record in the store is damaged: the reason says how. */
  readonly damaged?: true;
}

async function check(catalog: ImageCatalog, deps: CommandDeps, args: CommandArgs, io: CommandIO): Promise<number> {
  const tag = tagOf(catalog, args, 'tag');
  const store = await openStore(catalog, tag, deps, io);
  const listing = await store.list(io.signal);
  for (const note of listing.notes) io.err(`pipeline: ${note}`);
  const verdicts: ImageVerdict[] = [];
  for (const name of catalog.names) verdicts.push(await verdictFor(catalog, name, store.location, listing, io.signal));
  const stale = verdicts.filter((verdict) => verdict.status === 'stale');
  if (io.json) {
    io.out(formatOutput(releaseCheckOutput(tag, verdicts)));
  } else {
    for (const verdict of verdicts) {
      io.out(
        verdict.status === 'current' ? `${verdict.name}: current` : `${verdict.name}: ${verdict.damaged ? 'damaged' : 'stale'}: ${verdict.reasons.join('; ')}`,
      );
    }
  }
  return stale.length ? 1 : 0;
}

async function verdictFor(catalog: ImageCatalog, name: string, location: string, listing: StoreListing, signal: AbortSignal): Promise<ImageVerdict> {
  const stale = (...reasons: string[]): ImageVerdict => ({ name, status: 'stale', reasons });
  if (!listing.exists) return stale(`not on the release (${location} does not exist)`);
  const stored: StoredImage | undefined = listing.images.find((image) => image.name === name);
  if (!stored) return stale(`not on the release`);
  // Being replaced means someone is uploading it right now: judge the record it will have.
  if (stored.state === 'incomplete') return stale(`not on the release (${stored.detail ?? 'incomplete'})`);
  // Counted as stale: an upload of it replaces the damaged record.
  if (stored.state === 'damaged') return { ...stale(stored.detail ?? 'its record is damaged'), damaged: true };
  const recorded = stored.record;
  if (!recorded?.cacheKey) return stale(`no cache key recorded (neither ${name}'s record nor ${INDEX_NAME} has one)`);
  let current: CurrentImageKey;
  try {
    current = await catalog.inputsToBuild(name, signal);
  } catch (error) {
    return stale(`cannot compute the current cache key: ${error instanceof Error ? error.message : error}`);
  }
  const reasons = staleReasons(recorded, current);
  return reasons.length ? stale(...reasons) : { name, status: 'current', reasons: [] };
}

async function remove(catalog: ImageCatalog, deps: CommandDeps, args: CommandArgs, io: CommandIO): Promise<number> {
  const tag = tagOf(catalog, args, 'tag');
  const all = flag(args, 'all');
  const requested = args.positionals.slice(1);
  if (all === requested.length > 0) throw new Failure('usage', 'release remove: give image names or --all (not both)');
  for (const name of requested) if (!isValidImageName(name)) throw new Failure('usage', `release remove: "${name}" is not an image name`);
  const dryRun = isDryRun(args);
  const store = await openStore(catalog, tag, deps, io);
  // --all means every image the config or the store names: never an asset that is no image's.
  const names = all ? [...new Set([...catalog.names, ...(await store.list(io.signal)).images.map((image) => image.name)])].sort() : requested;
  const result = await store.remove(names, { dryRun, signal: io.signal });
  if (io.json) {
    io.out(JSON.stringify({ tag, dryRun, deleted: result.deleted, notOnRelease: all ? [] : result.notInStore, manifestUpdated: result.unindexed }));
    return 0;
  }
  for (const note of result.notes ?? []) io.err(`pipeline: ${note}`);
  for (const name of result.deleted) io.out(`${dryRun ? 'would delete' : 'deleted'} ${name}`);
  if (!all) for (const name of result.notInStore) io.out(`${name}: not on ${store.location}`);
  if (result.unindexed.length) io.out(`${dryRun ? 'would remove' : 'removed'} ${result.unindexed.join(', ')} from ${INDEX_NAME}`);
  return 0;
}

async function retag(catalog: ImageCatalog, deps: CommandDeps, args: CommandArgs, io: CommandIO): Promise<number> {
  const tag = tagOf(catalog, args, 'tag');
  const version = args.positionals[1];
  if (!version || args.positionals.length > 2) throw new Failure('usage', 'usage: release retag <version> [--tag TAG]');
  if (version === tag) throw new Failure('usage', `release retag: ${version} is the tag being moved`);
  checkTag(version, 'release retag <version>');
  const store = await openStore(catalog, tag, deps, io);
  if (!store.retag) throw new Failure('usage', `${store.location} has no tag to move`);
  const dryRun = isDryRun(args);
  const result = await store.retag(version, { dryRun, signal: io.signal });
  if (io.json) io.out(JSON.stringify({ tag, version, sha: result.commit, dryRun }));
  else if (dryRun) io.out(`would point tag ${tag} at ${version} (${result.commit.slice(0, 12)}) and set the release body to "${result.note}"`);
  else io.out(`tag ${tag} now points at ${version} (${result.commit.slice(0, 12)}); assets kept`);
  return 0;
}

export function releaseCommand(catalog: ImageCatalog, deps: CommandDeps = {}): Command {
  return {
    subcommands: ['check', 'remove', 'retag'],
    usage: 'release check [--tag TAG] | release remove <names…|--all> [--tag TAG] [--dry-run] | release retag <version> [--tag TAG] [--dry-run]',
    description: 'compare images with a GitHub release, remove images from it, or move its tag',
    options: {
      tag: { type: 'string' },
      all: { type: 'boolean' },
      'dry-run': { type: 'boolean' },
    },
    async run(args, io) {
      const sub = args.positionals[0];
      const body = sub === 'check' ? check : sub === 'remove' ? remove : sub === 'retag' ? retag : undefined;
      if (!body) throw new Failure('usage', `release: unknown subcommand ${sub ? `"${sub}"` : '(none)'}; use check, remove or retag`);
      return body(catalog, deps, args, io);
    },
  };
}
