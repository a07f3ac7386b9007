// `images.json`: the index external consumers read, rebuilt from the per-image records.
// Writers never edit it: each computes it from the records it sees, writes it when it
// differs, and looks again, until what is on the release equals what the records say.
// Since every writer does this after changing a record, the last writer to look leaves it
// complete, however the others interleaved (a writer that listed before another's record
// existed writes a short index, then sees it is short and writes it again).
import { setTimeout as sleep } from 'node:timers/promises';
import { isFailure } from '../../../src/index.ts';
import { emptyIndex, INDEX_NAME, parseIndex, serializeIndex, type ImageIndex } from '../record.ts';
import { INDEX_ASSET, parseAssetName, tempAssetName, tempRun } from './asset-names.ts';
import { bindByName, decisive, layoutOf, type Asset, type Docs } from './layout.ts';
import { endRun, newRunId, runIsOver } from './runs.ts';
import { type ReleaseReader, SMALL_ASSET_LIMIT } from './snapshot.ts';

const MAX_ROUNDS = 25;

/** What the index should say: each image's current record, else (an image nobody recorded) the old index's entry. */
export function indexFrom(assets: readonly Asset[], docs: Docs, previous: ImageIndex | undefined): ImageIndex {
  const names = new Set<string>(Object.keys(previous?.images ?? {}));
  for (const asset of assets) {
    const image = parseAssetName(asset.name)?.image;
    if (image) names.add(image);
  }
  const index = emptyIndex();
  for (const name of [...names].sort()) {
    const layout = layoutOf(name, assets, docs);
    if (layout.current) {
      index.images[name] = layout.current.doc.image;
      continue;
    }
    const legacy = previous?.images[name];
    if (legacy && !layout.finalRecord && !layout.commits.length && 'data' in bindByName(name, assets)) index.images[name] = legacy;
  }
  return index;
}

export interface IndexContext {
  readonly reader: ReleaseReader;
  readonly signal: AbortSignal;
  readonly log: (line: string) => void;
}

/** The index on the release as text and as parsed (undefined when missing or not a valid index, with why). */
export async function readIndex(
  context: Pick<IndexContext, 'reader' | 'signal'>,
  assets: readonly Asset[],
): Promise<{ asset?: Asset; text?: string; index?: ImageIndex; problem?: string }> {
  const asset = assets.find((candidate) => candidate.name === INDEX_ASSET && candidate.state === 'uploaded');
  if (!asset) return {};
  if (asset.size > SMALL_ASSET_LIMIT)
    return { asset, problem: `${INDEX_NAME} on release ${context.reader.release.tag_name} is ${asset.size} bytes, too large to be an index` };
  let text: string;
  try {
    text = await context.reader.text(asset, context.signal);
  } catch (error) {
    if (isFailure(error, 'not-found')) return {};
    throw error;
  }
  try {
    return { asset, text, index: parseIndex(text, `${INDEX_NAME} on release ${context.reader.release.tag_name}`) };
  } catch (error) {
    return { asset, text, problem: error instanceof Error ? error.message : String(error) };
  }
}

export async function syncIndex(context: IndexContext): Promise<void> {
  const { reader, signal } = context;
  let told = false;
  for (let round = 1; round <= MAX_ROUNDS; round++) {
    signal.throwIfAborted();
    const { assets, docs } = await reader.snapshot('all', signal);
    const current = await readIndex(context, assets);
    if (current.problem && !told) {
      context.log(`${current.problem}; rebuilding it from the per-image records`);
      told = true;
    }
    const wanted = serializeIndex(indexFrom(assets, docs, current.index));
    if (current.text === wanted) {
      if (await reader.confirms(assets, decisive(assets))) return;
      await sleep(10 + Math.random() * 40, undefined, { signal });
      continue;
    }
    await removeAbandonedIndexTemps(context, assets);
    await writeIndex(context, wanted, current.asset);
    // Let a writer that is mid-way land, then check what is there now.
    await sleep(Math.random() * 30 * Math.min(round, 5), undefined, { signal });
  }
  context.log(`${INDEX_NAME} kept changing under other writers; the last of them leaves it complete`);
}

/** Uploads the index under a temporary name, then swaps it in; a name taken means another writer's index landed first. */
async function writeIndex(context: IndexContext, text: string, old: Asset | undefined): Promise<void> {
  const { api, release } = context.reader;
  const run = newRunId();
  try {
    const temp = await api.uploadText({ release, name: tempAssetName(INDEX_ASSET, run), text, contentType: 'application/json', signal: context.signal });
    if (old) await api.deleteAsset(old);
    if ((await api.renameAsset(temp, INDEX_ASSET)) !== 'renamed') await api.deleteAsset(temp);
  } finally {
    endRun(run);
  }
}

async function removeAbandonedIndexTemps(context: IndexContext, assets: readonly Asset[]): Promise<void> {
  for (const asset of assets) {
    if (!asset.name.startsWith(`${INDEX_ASSET}.`)) continue;
    const run = tempRun(asset.name);
    if (run !== undefined && runIsOver(run, asset.created_at)) await context.reader.api.deleteAsset(asset);
  }
}
