// The image store as the build's remote cache: when the store's record of an image says it
// was built from exactly what the image would be built from now (the hash of every
// template file; the base by its SHA-256 when cached here, else by upstream's SHA-512),
// `{image}:build` fetches it instead of running packer, and the engine leaves the base
// download out of the run (a fetched image needs no base).
//
// Written against the store interface only. The decision reuses the catalog's current key
// (tasks/catalog.ts, tasks/cache-key.ts) and `release check`'s comparison
// (tasks/store/stale.ts), so "current on the release" and "fetchable" are one answer.
import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Failure, fsyncPath, isFailure, type NodeDef, type RemoteCache, type RemoteLookup, type TaskContext, toFailure } from '../src/index.ts';
import { assertSelfContainedImage, prepareSelfContainedCheck } from './image-check.ts';
import { type ProvenanceGate, provenanceGate } from './provenance/gate.ts';
import type { Compression } from './qemu-img.ts';
import type { CurrentImageKey, ImageCatalog } from './store/catalog.ts';
import { fetchedSourcesText } from './store/fetched-sources.ts';
import { describeTransfer } from './store/delta/describe.ts';
import { seedCandidates } from './store/delta/local-seeds.ts';
import { getImage } from './store/get-image.ts';
import { describeStore, openImageStore, storeConfigured, type StoreOptions } from './store/open.ts';
import type { ImageRecord } from './store/record.ts';
import { staleReasons } from './store/stale.ts';
import type { ImageStore, StoreListing } from './store/store.ts';

/** What the build kind hands the remote cache: what it makes, and how to make it instead. */
export interface BuildFallback {
  readonly name: string;
  /** The build's compression: a stored image compressed otherwise is not what it would make. */
  readonly compression: Compression;
  /** The base image, relative to the root, and how to fetch it when a build must run after all. */
  readonly baseImage: string;
  readonly fetchBase: (ctx: TaskContext) => Promise<void>;
  /** The build node: its setup checks and its run, for a fetch that falls back to building. */
  readonly build: Pick<NodeDef, 'preflight' | 'run'>;
}

export interface ImageRemoteCache {
  forBuild(fallback: BuildFallback): RemoteCache;
}

export interface RemoteCacheOptions {
  readonly store?: StoreOptions;
}

type Listing = { readonly store: ImageStore; readonly listing: StoreListing } | { readonly unreadable: string };

/** One remote cache per loaded config: one look at the store per run, shared by every image's build. */
export function createRemoteCache(catalog: ImageCatalog, tag: string, options: RemoteCacheOptions = {}): ImageRemoteCache {
  const env = options.store?.env ?? process.env;
  // A repository that names no store has no remote cache: nothing to say about it.
  const configured = storeConfigured(catalog.release, env);
  let unreadableSaid = false;
  // One trust per run (its trusted root is fetched once), loaded at the first fetch.
  let gate: Promise<ProvenanceGate> | undefined;
  const provenance = (): Promise<ProvenanceGate> => (gate ??= provenanceGate({ trust: catalog.release.trust, root: catalog.root, env }));
  const fallbackRunner = createFallbackRunner();
  const list = listOnce(catalog, tag, options.store, env);

  return {
    forBuild(fallback) {
      return {
        async lookup({ flags, signal }): Promise<RemoteLookup> {
          // --offline promises no network: no look at the store either.
          if (!configured || flags.noRemoteCache === true || flags.offline === true) return { hit: false };
          const found = await list(signal);
          if ('unreadable' in found) {
            // Said once per run, not once per image.
            if (unreadableSaid) return { hit: false };
            unreadableSaid = true;
            return { hit: false, note: `no remote cache: ${found.unreadable}` };
          }
          const { store, listing } = found;
          const match = await matchingRecord(fallback, listing, () => catalog.inputsToBuild(fallback.name, signal));
          if ('why' in match) return { hit: false, note: `not fetched from ${store.location}: ${match.why}` };
          const { record, key } = match;
          return {
            hit: true,
            source: store.location,
            reason: `would fetch from ${store.location} (cache key matches)`,
            key,
            pool: 'network',
            fetch: async (ctx) => fetchOrBuild(catalog, fallback, fallbackRunner, store, record, await provenance(), ctx),
          };
        },
      };
    },
  };
}

interface FallbackRunner {
  /** The base image in place (fetched once however many builds want it). */
  fetchBase(fallback: BuildFallback, ctx: TaskContext): Promise<void>;
  /** Runs `build` when no other fallback build runs. */
  build(build: () => Promise<void>): Promise<void>;
}

/**
 * Builds that replace a refused copy run outside the packer pool (a fetch holds a network
 * slot): one at a time, and one download of each base they share.
 */
function createFallbackRunner(): FallbackRunner {
  let fallbackBuilds: Promise<unknown> = Promise.resolve();
  const baseFetches = new Map<string, Promise<void>>();
  return {
    fetchBase(fallback, ctx) {
      let fetching = baseFetches.get(fallback.baseImage);
      if (!fetching) {
        fetching = (async () => {
          if (!(await stat(join(ctx.root, fallback.baseImage)).catch(() => undefined))) await fallback.fetchBase(ctx);
        })();
        baseFetches.set(fallback.baseImage, fetching);
        fetching.catch(() => baseFetches.delete(fallback.baseImage));
      }
      return fetching;
    },
    build(run) {
      const turn = fallbackBuilds.then(run, run);
      fallbackBuilds = turn.catch(() => undefined);
      return turn;
    },
  };
}

/** The store's listing, read at the first lookup of the run and shared by the rest; or why it cannot be read. */
function listOnce(catalog: ImageCatalog, tag: string, store: StoreOptions | undefined, env: NodeJS.ProcessEnv): (signal: AbortSignal) => Promise<Listing> {
  let listed: Promise<Listing> | undefined;
  return (signal) =>
    (listed ??= (async (): Promise<Listing> => {
      try {
        const opened = await openImageStore(catalog.release, tag, store);
        const listing = await opened.list(signal);
        return listing.exists ? { store: opened, listing } : { unreadable: `${opened.location} does not exist yet` };
      } catch (error) {
        if (signal.aborted) throw error;
        return { unreadable: `${describeStore(catalog.release, tag, env)} cannot be read (${toFailure(error).message})` };
      }
    })());
}

/** The store's record of the image when it is what a build here would make now; else why not. */
async function matchingRecord(
  fallback: BuildFallback,
  listing: StoreListing,
  current: () => Promise<CurrentImageKey>,
): Promise<{ readonly record: ImageRecord; readonly key: string } | { readonly why: string }> {
  const stored = listing.images.find((image) => image.name === fallback.name);
  if (!stored) return { why: `it holds no ${fallback.name}` };
  if (stored.state !== 'complete') return { why: `${fallback.name} is ${stored.state}${stored.detail ? ` (${stored.detail})` : ''}` };
  const record = stored.record;
  if (!record?.cacheKey) return { why: `${fallback.name} has no recorded cache key` };
  if (record.compression !== undefined && record.compression !== fallback.compression) {
    return { why: `${fallback.name} is stored with ${record.compression} compression; this build makes ${fallback.compression}` };
  }
  let reasons: string[];
  try {
    reasons = staleReasons(record, await current());
  } catch (error) {
    return { why: `its inputs cannot be compared here (${toFailure(error).message})` };
  }
  return reasons.length > 0 ? { why: reasons.join('; ') } : { record, key: record.cacheKey };
}

/**
 * Fetches the image into place with its version file, as a build would leave it (the
 * engine writes `.cache-key` from the record after this returns). A copy that cannot be
 * used (its SHA-256 does not match, it was replaced or removed since the plan, the
 * transfer failed) is refused, and the image is built here instead.
 */
async function fetchOrBuild(
  catalog: ImageCatalog,
  fallback: BuildFallback,
  runner: FallbackRunner,
  store: ImageStore,
  planned: ImageRecord,
  gate: ProvenanceGate,
  ctx: TaskContext,
): Promise<{ fetched: true } | { fetched: false; note: string }> {
  try {
    await fetchImage(catalog, fallback.name, store, planned, gate, ctx);
    return { fetched: true };
  } catch (error) {
    if (ctx.signal.aborted || !isFailure(error, 'integrity', 'not-found', 'network')) throw error;
    const note = `refused the copy on ${store.location} (${error.message}); built ${fallback.name} here instead`;
    ctx.log(note);
    ctx.status('building instead of fetching');
    await runner.build(async () => {
      await fallback.build.preflight?.({ root: ctx.root, flags: ctx.flags, signal: ctx.signal });
      await runner.fetchBase(fallback, ctx);
      await fallback.build.run(ctx);
    });
    return { fetched: false, note };
  }
}

async function fetchImage(catalog: ImageCatalog, name: string, store: ImageStore, planned: ImageRecord, gate: ProvenanceGate, ctx: TaskContext): Promise<void> {
  const imagePath = catalog.imagePath(name);
  const versionsPath = catalog.versionsPath(name);
  await mkdir(dirname(imagePath), { recursive: true });
  // A stable name, so that getImage resumes an interrupted fetch on the next run.
  const landing = join(dirname(imagePath), `.remote-${basename(imagePath)}`);
  await rm(landing, { force: true });
  ctx.status(`fetching from ${store.location}`);
  prepareSelfContainedCheck(ctx.signal);
  const got = await getImage(store, name, {
    path: landing,
    // What this host holds of the image: the build it replaces, its published copy, other images (a shared base).
    seeds: seedCandidates({ name, publishDir: catalog.publishDir, builtImage: (image) => catalog.imagePath(image), others: catalog.names }),
    overwrite: false,
    signal: ctx.signal,
    onProgress: (done, total) => ctx.progress(done, total),
    log: (line) => ctx.log(line),
    accept: (image, signal) => gate.accept(image, signal, (line) => ctx.log(line)),
    acceptBytes: (path, signal) => assertSelfContainedImage(path, signal, { label: `${name} on ${store.location}`, refused: 'not fetched' }),
  });
  try {
    // Replaced on the store since the plan: these are bytes of other inputs.
    const record = got.record;
    if (!record?.cacheKey || record.cacheKey !== planned.cacheKey) {
      throw new Failure('not-found', `${name} was replaced there since the plan (cache key ${record?.cacheKey ?? 'none'})`);
    }
    const tempVersions = ctx.tempPath(versionsPath);
    await writeFile(tempVersions, versionsText(record.versions));
    await fsyncPath(tempVersions);
    const sourcesPath = catalog.sourcesPath(name);
    const tempSources = record.sources ? ctx.tempPath(sourcesPath) : undefined;
    if (tempSources && record.sources) {
      await writeFile(tempSources, fetchedSourcesText(record.cacheKey, record.sources));
      await fsyncPath(tempSources);
    }
    const provenance = await gate.stageBeside(name, imagePath, (path) => ctx.tempPath(path));
    await ctx.beginCommit();
    await rename(landing, imagePath);
    await rename(tempVersions, versionsPath);
    if (tempSources) await rename(tempSources, sourcesPath);
    else await rm(sourcesPath, { force: true });
    await provenance.commit();
    await fsyncPath(dirname(imagePath));
  } finally {
    await rm(landing, { force: true });
  }
  ctx.log(`fetched ${name} from ${store.location} (${got.size} bytes, SHA-256 ${got.sha256} verified)`);
  ctx.log(describeTransfer(name, got.size, got.transfer));
}

/** `image-version.txt` as detect-versions.sh writes it: `KEY=value` lines (the record keeps them sorted, as the script writes them). */
function versionsText(versions: Readonly<Record<string, string>>): string {
  return Object.entries(versions)
    .map(([key, value]) => `${key}=${value}\n`)
    .join('');
}
