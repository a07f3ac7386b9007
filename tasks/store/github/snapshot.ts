// One look at a release: its assets and the record docs they hold. Assets never change
// content (a replacement is a new asset with a new id), so a doc read once by id is kept
// for the life of the store; a look costs one listing plus the records that are new.
import { setTimeout as sleep } from 'node:timers/promises';
import { isFailure } from '../../../src/index.ts';
import { parseAssetName } from './asset-names.ts';
import { decisive, recordAssetsOf, type Asset, type Docs } from './layout.ts';
import { readRecordDoc, type RecordDoc } from './record-asset.ts';
import type { Release, ReleaseApi } from './release-api.ts';

export interface Snapshot {
  readonly assets: readonly Asset[];
  readonly docs: Docs;
}

/** Records and indexes are small; anything larger under such a name is not one. */
export const SMALL_ASSET_LIMIT = 4 * 1024 * 1024;

export class ReleaseReader {
  private readonly docs = new Map<number, RecordDoc | undefined>();
  /** Why a record asset holds no doc, by asset id. */
  private readonly problems = new Map<number, string>();
  private readonly texts = new Map<number, string>();

  constructor(
    readonly api: ReleaseApi,
    readonly release: Pick<Release, 'id' | 'upload_url' | 'tag_name'>,
  ) {}

  /**
   * Lists the release and reads the records of `images` (every image's, with 'all'). Every
   * record listed has its doc (undefined when it is not a valid one): a record deleted
   * between the listing and the read means the listing is out of date, so it is taken again.
   */
  async snapshot(images: readonly string[] | 'all', signal: AbortSignal): Promise<Snapshot> {
    for (let attempt = 1; ; attempt++) {
      const assets = await this.api.listAssets(this.release.id);
      const records =
        images === 'all'
          ? assets.filter((asset) => asset.state === 'uploaded' && parseAssetName(asset.name)?.role === 'record')
          : images.flatMap((name) => recordAssetsOf(name, assets));
      let stale = false;
      await inParallel(
        records.filter((asset) => !this.docs.has(asset.id)),
        6,
        async (asset) => {
          const image = parseAssetName(asset.name)!.image;
          if (asset.size > SMALL_ASSET_LIMIT) {
            this.docs.set(asset.id, undefined);
            this.problems.set(asset.id, `is ${asset.size} bytes, more than a record ever is`);
            return;
          }
          const text = await this.text(asset, signal).catch((error: unknown) => {
            if (isFailure(error, 'not-found') && attempt < 10) return undefined;
            throw error;
          });
          if (text === undefined) {
            stale = true;
            return;
          }
          const read = readRecordDoc(text, image);
          this.docs.set(asset.id, 'doc' in read ? read.doc : undefined);
          if ('problem' in read) this.problems.set(asset.id, read.problem);
        },
      );
      if (!stale) return { assets, docs: this.docs };
    }
  }

  /** Why the record asset `id` holds no valid doc, when it does not. */
  problemOf(id: number): string | undefined {
    return this.problems.get(id);
  }

  /**
   * Whether a second listing equals `assets`. A paginated listing taken while another writer
   * changes the release can skip an asset (a page boundary moves); a decision that nothing
   * is left to do is taken only on a listing that two looks agree on (as far as the assets
   * the decision is about go: other images' uploads may change the rest meanwhile).
   */
  async confirms(assets: readonly Asset[], relevant: (asset: Asset) => boolean): Promise<boolean> {
    const key = (list: readonly Asset[]) =>
      list
        .filter(relevant)
        .map((asset) => `${asset.id}:${asset.name}:${asset.state}`)
        .sort()
        .join('\n');
    return key(await this.api.listAssets(this.release.id)) === key(assets);
  }

  /** A snapshot that a second listing confirms (see `confirms`); after a few tries, the last one taken. */
  async stableSnapshot(images: readonly string[] | 'all', signal: AbortSignal): Promise<Snapshot> {
    let snapshot = await this.snapshot(images, signal);
    for (let attempt = 1; attempt < 10 && !(await this.confirms(snapshot.assets, decisive(snapshot.assets))); attempt++) {
      await sleep(10 + Math.random() * 40, undefined, { signal });
      snapshot = await this.snapshot(images, signal);
    }
    return snapshot;
  }

  /** A small asset's text, read once per asset id. */
  async text(asset: Asset, signal: AbortSignal): Promise<string> {
    const known = this.texts.get(asset.id);
    if (known !== undefined) return known;
    const text = await this.api.downloadText(asset, signal, SMALL_ASSET_LIMIT);
    this.texts.set(asset.id, text);
    return text;
  }
}

/** Runs `action` over `items`, at most `limit` at a time; the first failure rejects (after the others settle). */
export async function inParallel<T, R>(items: readonly T[], limit: number, action: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (next < items.length && !failure) {
      const index = next++;
      try {
        results[index] = await action(items[index]!);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.error;
  return results;
}
