// `pipeline release check | note | remove | retag`: which images in the store are stale and
// why, ending with the decision the release issue records; the note a tag-only versioned
// release gets (the seed's option A); and the destructive operations, each with --dry-run.
// Written against the image store interface.
import { exitCodeOf, Failure, formatOutput, isCancellation, isFailure, type Command, type CommandIO } from '../src/index.ts';
import { type NoteResult, writeNote } from './release-note.ts';
import { releaseCheckOutput, releaseNoteOutput, releaseRemoveOutput, releaseRetagOutput, type ReleaseImageVerdict } from './release-output.ts';
import { signerSuffix, withSigner } from './provenance/stored-signer.ts';
import { loadTrust } from './provenance/trust.ts';
import type { CurrentImageKey, ImageCatalog } from './store/catalog.ts';
import { flag, isDryRun, openStore, stringValue, tagOf, type CommandArgs, type CommandDeps } from './store/command-support.ts';
import { checkTag, isValidImageName } from './store/names.ts';
import { INDEX_NAME } from './store/record.ts';
import { staleReasons } from './store/stale.ts';
import type { StoredImage, StoreListing } from './store/store.ts';

const DAY_MS = 24 * 60 * 60 * 1000;

async function check(catalog: ImageCatalog, deps: CommandDeps, args: CommandArgs, io: CommandIO): Promise<number> {
  try {
    return await checkImages(catalog, deps, args, io);
  } catch (error) {
    throw notAnAnswer(error, io);
  }
}

/**
 * Exit 1 means "stale", so any failure of the check itself (a 422, a bug) leaves with 2:
 * a workflow must never read an error as a rebuild decision, nor as none.
 */
function notAnAnswer(error: unknown, io: CommandIO): unknown {
  if (isCancellation(error, io.signal)) return error;
  if (!isFailure(error)) {
    if (error instanceof Error && error.stack) io.err(error.stack);
    return new Failure('task', `release check failed with an internal error (a bug in pipeline): ${error instanceof Error ? error.message : String(error)}`, {
      cause: error,
      exitCode: 2,
    });
  }
  if (exitCodeOf(error) === 2) return error;
  return new Failure(error.kind, error.message, { cause: error, exitCode: 2, ...(error.code !== undefined ? { code: error.code } : {}) });
}

async function checkImages(catalog: ImageCatalog, deps: CommandDeps, args: CommandArgs, io: CommandIO): Promise<number> {
  const tag = tagOf(catalog, args, 'tag');
  const requested = args.positionals.slice(1);
  for (const name of requested) {
    if (!catalog.names.includes(name)) throw new Failure('usage', `release check: "${name}" is not an image of this config (${catalog.names.join(', ')})`);
  }
  const names = requested.length ? [...new Set(requested)] : catalog.names;
  const maxAgeDays = maxAgeOf(args);
  const noteVersion = stringValue(args, 'note');
  if (noteVersion !== undefined) checkTag(noteVersion, '--note');
  const store = await openStore(catalog, tag, deps, io);
  if (noteVersion !== undefined && !store.descriptions) throw new Failure('usage', noDescriptions('release check --note', store.location));
  const listing = await store.list(io.signal);
  for (const note of listing.notes) io.err(`pipeline: ${note}`);
  const trust = catalog.release.trust ? await loadTrust(catalog.release.trust, { root: catalog.root, env: deps.store?.env ?? process.env }) : undefined;
  const verdicts: ReleaseImageVerdict[] = [];
  for (const name of names) {
    const verdict = await verdictFor(catalog, name, store.location, listing, maxAgeDays, io.signal);
    const record = listing.images.find((image) => image.name === name && image.state !== 'incomplete')?.record;
    verdicts.push(await withSigner(verdict, store, record, trust, io.signal));
  }
  const stale = verdicts.filter((verdict) => verdict.status === 'stale');
  const decision = decisionLine(tag, verdicts, requested.length > 0);
  let noted: NoteResult | undefined;
  if (noteVersion !== undefined && !stale.length) {
    noted = await writeNote(store.descriptions!, noteVersion, tag, { dryRun: isDryRun(args), signal: io.signal });
  }
  if (io.json) {
    io.out(formatOutput(releaseCheckOutput(tag, verdicts, decision, noted)));
  } else {
    for (const verdict of verdicts) {
      const signed = signerSuffix(verdict.signer);
      io.out(
        verdict.status === 'current'
          ? `${verdict.name}: current${signed}`
          : `${verdict.name}: ${verdict.damaged ? 'damaged' : 'stale'}: ${verdict.reasons.join('; ')}${signed}`,
      );
    }
    io.out(decision);
    if (noted) io.out(describeNote(noted));
    else if (noteVersion !== undefined) io.out(`release ${noteVersion} not noted: its images are not the ones on \`${tag}\` until they are rebuilt`);
  }
  return stale.length ? 1 : 0;
}

/** The line the release issue records: nothing to rebuild, or what to rebuild and why. */
export function decisionLine(tag: string, verdicts: readonly ReleaseImageVerdict[], some = false): string {
  const stale = verdicts.filter((verdict) => verdict.status === 'stale');
  if (stale.length) return `Rebuild needed: ${stale.map((verdict) => `${verdict.name} (${verdict.reasons.join('; ')})`).join(', ')}`;
  const subject = some
    ? `${verdicts.map((verdict) => verdict.name).join(', ')} on \`${tag}\` ${verdicts.length === 1 ? 'is' : 'are'}`
    : `images on \`${tag}\` are`;
  return `No template changes detected: ${subject} current`;
}

/** `--max-age DAYS` (or `6d`): images uploaded longer ago are stale too. */
function maxAgeOf(args: CommandArgs): number | undefined {
  const value = stringValue(args, 'max-age');
  if (value === undefined) return undefined;
  const match = /^(\d+(?:\.\d+)?)d?$/.exec(value);
  if (!match) throw new Failure('usage', `--max-age takes a number of days (6, or 6d), not "${value}"`);
  return Number(match[1]);
}

async function verdictFor(
  catalog: ImageCatalog,
  name: string,
  location: string,
  listing: StoreListing,
  maxAgeDays: number | undefined,
  signal: AbortSignal,
): Promise<ReleaseImageVerdict> {
  let current: CurrentImageKey | undefined;
  let keyError: unknown;
  try {
    current = await catalog.inputsToBuild(name, signal);
  } catch (error) {
    keyError = error;
  }
  const base = current ? { path: current.sources.base.path, ...(current.sources.base.sha512 ? { sha512: current.sources.base.sha512 } : {}) } : undefined;
  const stale = (...reasons: string[]): ReleaseImageVerdict => ({ name, status: 'stale', reasons, ...(base ? { base } : {}) });
  if (!listing.exists) return stale(`not on the release (${location} does not exist)`);
  const stored: StoredImage | undefined = listing.images.find((image) => image.name === name);
  if (!stored) return stale(`not on the release`);
  // Being replaced means someone is uploading it right now: judge the record it will have.
  if (stored.state === 'incomplete') return stale(`not on the release (${stored.detail ?? 'incomplete'})`);
  // Counted as stale: an upload of it replaces the damaged record.
  if (stored.state === 'damaged') return { ...stale(stored.detail ?? 'its record is damaged'), damaged: true };
  const recorded = stored.record;
  if (!recorded?.cacheKey) return stale(`no cache key recorded (neither ${name}'s record nor ${INDEX_NAME} has one)`);
  if (!current) return stale(`cannot compute the current cache key: ${keyError instanceof Error ? keyError.message : keyError}`);
  const reasons = staleReasons(recorded, current);
  if (maxAgeDays !== undefined) {
    const uploadedAt = recorded.uploadedAt ? Date.parse(recorded.uploadedAt) : Number.NaN;
    if (Number.isNaN(uploadedAt)) reasons.push(`no upload time recorded (--max-age ${maxAgeDays})`);
    else if (Date.now() - uploadedAt > maxAgeDays * DAY_MS) {
      const days = Math.floor((Date.now() - uploadedAt) / DAY_MS);
      reasons.push(`uploaded ${days} day${days === 1 ? '' : 's'} ago (${recorded.uploadedAt}), more than --max-age ${maxAgeDays}`);
    }
  }
  return reasons.length ? stale(...reasons) : { name, status: 'current', reasons: [], ...(base ? { base } : {}) };
}

function noDescriptions(command: string, location: string): string {
  return `${command}: ${location} keeps no release descriptions, so the note does not apply (it is for GitHub releases)`;
}

function describeNote(result: NoteResult): string {
  if (!result.changed) return `release ${result.version}'s description already says: ${result.line}`;
  return `${result.dryRun ? 'would add' : 'added'} to release ${result.version}'s description: ${result.line}`;
}

/** `release note <version>`: the seed's option A, the versioned release pointing at where its images are. */
async function note(catalog: ImageCatalog, deps: CommandDeps, args: CommandArgs, io: CommandIO): Promise<number> {
  const tag = tagOf(catalog, args, 'tag');
  const version = args.positionals[1];
  if (!version || args.positionals.length > 2) throw new Failure('usage', 'usage: release note <version> [--tag TAG] [--dry-run]');
  checkTag(version, 'release note <version>');
  if (version === tag) throw new Failure('usage', `release note: ${version} is the release the note points at; give the versioned release (v0.50)`);
  const store = await openStore(catalog, tag, deps, io);
  if (!store.descriptions) throw new Failure('usage', noDescriptions('release note', store.location));
  const result = await writeNote(store.descriptions, version, tag, { dryRun: isDryRun(args), signal: io.signal });
  if (io.json) io.out(formatOutput(releaseNoteOutput(tag, result)));
  else io.out(describeNote(result));
  return 0;
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
    io.out(
      formatOutput(
        releaseRemoveOutput({ tag, dryRun, deleted: result.deleted, notOnRelease: all ? [] : result.notInStore, manifestUpdated: result.unindexed }),
      ),
    );
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
  if (io.json) io.out(formatOutput(releaseRetagOutput({ tag, version, sha: result.commit, dryRun })));
  else io.out(dryRun ? result.said.planned : result.said.done);
  return 0;
}

export function releaseCommand(catalog: ImageCatalog, deps: CommandDeps = {}): Command {
  return {
    subcommands: ['check', 'note', 'remove', 'retag'],
    usage:
      'release check [names…] [--tag TAG] [--max-age DAYS] [--note VERSION [--dry-run]] | release note <version> [--tag TAG] [--dry-run] | release remove <names…|--all> [--tag TAG] [--dry-run] | release retag <version> [--tag TAG] [--dry-run]',
    description:
      'compare images with a GitHub release and state the decision, note in a versioned release where its images are, remove images from a release, or move its tag',
    options: {
      tag: { type: 'string' },
      all: { type: 'boolean' },
      'dry-run': { type: 'boolean' },
      note: { type: 'string' },
      'max-age': { type: 'string' },
    },
    async run(args, io) {
      const sub = args.positionals[0];
      const body = sub === 'check' ? check : sub === 'note' ? note : sub === 'remove' ? remove : sub === 'retag' ? retag : undefined;
      if (!body) throw new Failure('usage', `release: unknown subcommand ${sub ? `"${sub}"` : '(none)'}; use check, note, remove or retag`);
      return body(catalog, deps, args, io);
    },
  };
}
