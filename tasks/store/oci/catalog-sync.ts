// Which images a store tag holds, without the registry's catalog API (GHCR has none), and
// the index (images.json) rebuilt from them.
//
// Each image put under a tag first gets a marker, its own tag in the index repository
// (reference.ts), so the images of a tag are one tag list away; each image's record is
// its own manifest. The index artifact is never edited: like the GitHub backend's
// images.json, every writer computes it from the records it sees, writes it when it
// differs, and looks again, until a look finds it equal. A manifest PUT overwrites with no
// compare-and-swap, so a writer that read before another's record existed may write a
// short index; but it looks again after its write, and that look sees the record (which
// landed before its writer's own look), so the last writer to look leaves it complete.
import { setTimeout as sleep } from 'node:timers/promises';
import { isFailure } from '../../../src/index.ts';
import { emptyIndex, INDEX_NAME, parseIndex, serializeIndex, type ImageIndex } from '../record.ts';
import { pushBytes, restoring } from './blob-upload.ts';
import {
  EMPTY_CONFIG,
  EMPTY_CONFIG_BYTES,
  indexManifest,
  isRemoved,
  MANIFEST_MEDIA_TYPE,
  markerManifest,
  parseManifest,
  readImageManifest,
  type ImageArtifact,
} from './manifest.ts';
import { indexRepository, markerName, markerTag, repositoryOf, type RegistryLocation } from './reference.ts';
import type { RegistryClient } from './registry-client.ts';

const MAX_ROUNDS = 25;
/** Manifests read at once when looking at every image of a tag. */
const PARALLEL_READS = 8;

export interface CatalogContext {
  readonly client: RegistryClient;
  readonly location: RegistryLocation;
  readonly tag: string;
  readonly signal: AbortSignal;
  readonly log: (line: string) => void;
}

export type SeenImage =
  | { readonly name: string; readonly state: 'complete'; readonly artifact: ImageArtifact; readonly digest: string }
  | { readonly name: string; readonly state: 'incomplete'; readonly detail: string }
  /** Its manifest is there but is not one this tool writes (not JSON, no valid record, layers that disagree with it). */
  | { readonly name: string; readonly state: 'damaged'; readonly detail: string };

/** The tag's markers: the names of the images put under it (sorted), and whether the tag exists at all. */
export async function markedNames(context: CatalogContext): Promise<{ exists: boolean; names: string[] }> {
  const tags = await context.client.tags(indexRepository(context.location), context.signal);
  const names = tags.map((tag) => markerName(tag, context.tag)).filter((name): name is string => name !== undefined);
  return { exists: names.length > 0 || tags.includes(context.tag), names: [...new Set(names)].sort() };
}

/** One image as its manifest under the tag says (or why it cannot be read). */
export async function seeImage(context: CatalogContext, name: string): Promise<SeenImage | undefined> {
  const repository = repositoryOf(context.location, name);
  let found: Awaited<ReturnType<RegistryClient['manifest']>>;
  try {
    found = await context.client.manifest(repository, context.tag, context.signal);
  } catch (error) {
    // Larger than any manifest this tool writes: damage too, never the end of a listing.
    if (!isFailure(error, 'integrity')) throw error;
    return { name, state: 'damaged', detail: error.message };
  }
  if (!found || isRemoved(found.bytes)) return undefined;
  try {
    return { name, state: 'complete', artifact: readImageManifest(found.bytes, name, `${repository}:${context.tag}`), digest: found.digest };
  } catch (error) {
    if (!isFailure(error, 'integrity')) throw error;
    // A manifest PUT replaces whole: one that does not parse is not an upload in flight but damage.
    return { name, state: 'damaged', detail: error.message };
  }
}

export async function seeImages(context: CatalogContext, names: readonly string[]): Promise<Map<string, SeenImage | undefined>> {
  const seen = new Map<string, SeenImage | undefined>();
  let next = 0;
  const worker = async () => {
    while (next < names.length) {
      const name = names[next++]!;
      seen.set(name, await seeImage(context, name));
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_READS, names.length) }, worker));
  return seen;
}

/** Puts the marker of `name` under the tag (before its manifest, so every image can be found). */
export async function putMarker(context: CatalogContext, name: string): Promise<void> {
  const repository = indexRepository(context.location);
  const tag = markerTag(name, context.tag);
  const bytes = markerManifest(name, context.tag);
  await ensureEmptyConfig(context, repository);
  await context.client.putManifest(repository, tag, bytes, MANIFEST_MEDIA_TYPE, context.signal, () => ensureEmptyConfig(context, repository));
}

export async function ensureEmptyConfig(context: CatalogContext, repository: string): Promise<void> {
  await pushBytes(context.client, repository, EMPTY_CONFIG_BYTES, context.signal);
}

/** The index artifact's images.json, as text and parsed (undefined when missing or damaged, with why). */
export async function readIndex(context: CatalogContext): Promise<{ text?: string; index?: ImageIndex; problem?: string }> {
  const repository = indexRepository(context.location);
  const found = await context.client.manifest(repository, context.tag, context.signal);
  if (!found) return {};
  const source = `${INDEX_NAME} in ${repository}:${context.tag}`;
  try {
    const layer = parseManifest(found.bytes, source).layers[0];
    if (!layer) return { problem: `${source} has no layer` };
    const text = (await context.client.blob(repository, layer.digest, 16 * 1024 * 1024, context.signal)).toString('utf8');
    try {
      return { text, index: parseIndex(text, source) };
    } catch (error) {
      return { text, problem: error instanceof Error ? error.message : String(error) };
    }
  } catch (error) {
    if (!isFailure(error, 'integrity')) throw error;
    return { problem: error.message };
  }
}

/** Rewrites the index from the images' records until a look finds it equal to them. */
export async function syncIndex(context: CatalogContext): Promise<void> {
  let told = false;
  for (let round = 1; round <= MAX_ROUNDS; round++) {
    context.signal.throwIfAborted();
    const { names } = await markedNames(context);
    const seen = await seeImages(context, names);
    const index = emptyIndex();
    for (const name of names) {
      const image = seen.get(name);
      if (image?.state === 'complete') index.images[name] = image.artifact.record;
    }
    const wanted = serializeIndex(index);
    const current = await readIndex(context);
    if (current.problem && !told) {
      context.log(`${current.problem}; rebuilding it from the images' records`);
      told = true;
    }
    if (current.text === wanted) return;
    await writeIndex(context, wanted);
    // Let a writer that is mid-way land, then look at what is there now.
    await sleep(Math.random() * 30 * Math.min(round, 5), undefined, { signal: context.signal });
  }
  context.log(`${INDEX_NAME} kept changing under other writers; the last of them leaves it complete`);
}

async function writeIndex(context: CatalogContext, text: string): Promise<void> {
  const repository = indexRepository(context.location);
  const bytes = Buffer.from(text, 'utf8');
  await ensureEmptyConfig(context, repository);
  const digest = await pushBytes(context.client, repository, bytes, context.signal);
  const manifest = indexManifest(context.tag, { mediaType: 'application/json', digest, size: bytes.length });
  const restorers = new Map<string, () => Promise<unknown>>([
    [EMPTY_CONFIG.digest, () => ensureEmptyConfig(context, repository)],
    [digest, () => pushBytes(context.client, repository, bytes, context.signal)],
  ]);
  await context.client.putManifest(repository, context.tag, manifest, MANIFEST_MEDIA_TYPE, context.signal, restoring(restorers));
}

/** Whether the marker of `name` is a tombstone (the image was removed where the registry cannot delete). */
export async function markerRemoved(context: CatalogContext, name: string): Promise<boolean> {
  const found = await context.client.manifest(indexRepository(context.location), markerTag(name, context.tag), context.signal);
  return !found || isRemoved(found.bytes);
}
