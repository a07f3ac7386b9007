// The image store on a GitHub release: one release (by tag) is one store location.
// Readers prefer the per-image records and fall back to images.json for images nobody
// recorded (releases written before records existed).
import { Failure } from '../../../src/index.ts';
import { type AttachmentKind, type AttachmentRef, attachmentRange, type ImageRecord, MAX_ATTACHMENT_BYTES, verifiedAttachment } from '../record.ts';
import type {
  ImagePiece,
  ImageStore,
  ImageToPut,
  LocationDescriptions,
  OpenedImage,
  PutOptions,
  PutResult,
  RemoveOptions,
  RemoveResult,
  RetagOptions,
  RetagResult,
  StoredImage,
  StoreListing,
} from '../store.ts';
import { imageAssetRole, isFinalData, parseAssetName, recordAssetName } from './asset-names.ts';
import { indexFrom, readIndex, syncIndex } from './index-sync.ts';
import { bindByName, layoutOf, type Asset, type ImageLayout } from './layout.ts';
import { putImage } from './put-image.ts';
import type { Release, ReleaseApi } from './release-api.ts';
import { checksumOf } from '../record.ts';
import type { TransferLimits } from './sizes.ts';
import { ReleaseReader, type Snapshot } from './snapshot.ts';

export class GitHubStore implements ImageStore {
  readonly location: string;
  /** Release descriptions: where `release note` writes and `images list --version` reads. */
  readonly descriptions: LocationDescriptions;
  private reader: ReleaseReader | undefined;

  constructor(
    private readonly api: ReleaseApi,
    readonly tag: string,
    /** Resolved when an image is put (a bad PIPELINE_PART_SIZE is no reason to fail a read). */
    private readonly limits: () => TransferLimits,
    private readonly log: (line: string) => void = () => {},
  ) {
    this.location = `release ${tag} of ${api.client.owner}/${api.client.repo}`;
    this.descriptions = {
      where: `${api.client.owner}/${api.client.repo}`,
      read: async (tag) => {
        const release = await api.findRelease(tag);
        return release ? { text: release.body ?? '', url: release.html_url } : undefined;
      },
      write: async (tag, text) => {
        await api.updateReleaseBody(await api.requireRelease(tag), text);
      },
    };
  }

  private async readerFor(create: boolean): Promise<ReleaseReader | undefined> {
    if (this.reader) return this.reader;
    const release: Release | undefined = create ? await this.api.ensureRelease(this.tag) : await this.api.findRelease(this.tag);
    if (release) this.reader = new ReleaseReader(this.api, release);
    return this.reader;
  }

  async list(signal: AbortSignal): Promise<StoreListing> {
    const reader = await this.readerFor(false);
    if (!reader) return { exists: false, images: [], notes: [] };
    const snapshot = await reader.stableSnapshot('all', signal);
    const index = await readIndex({ reader, signal }, snapshot.assets);
    const notes = index.problem ? [`${index.problem}; using the per-image records`] : [];
    const recorded = indexFrom(snapshot.assets, snapshot.docs, index.index);
    const names = new Set<string>();
    for (const asset of snapshot.assets) {
      const image = parseAssetName(asset.name)?.image;
      if (image) names.add(image);
    }
    const images = [...names].sort().map((name) => describe(layoutOf(name, snapshot.assets, snapshot.docs), snapshot, recorded.images[name], reader));
    for (const image of images) {
      if (image.state === 'damaged')
        notes.push(`${this.location}: ${image.detail}; ${image.name} is damaged (upload it again, or release remove ${image.name})`);
    }
    return { exists: true, images, notes };
  }

  async open(name: string, signal: AbortSignal): Promise<OpenedImage> {
    const reader = await this.readerFor(false);
    if (!reader) return { status: 'missing', detail: `${this.location} does not exist` };
    const snapshot = await reader.stableSnapshot([name], signal);
    const layout = layoutOf(name, snapshot.assets, snapshot.docs);
    const piece = (asset: Asset): ImagePiece => ({
      id: String(asset.id),
      label: asset.name,
      size: asset.size,
      read: (request) => this.api.downloadAsset({ asset, ...request }),
    });
    if (layout.current) {
      // Mid-swap the new bytes are read by id under their temporary names: never a gap.
      const { doc, bound } = layout.current;
      const where = `${name} on ${this.location}`;
      /** The attachment of `kind` the record names and the asset it binds; undefined when it names none. */
      const attachment = (kind: AttachmentKind): { ref: AttachmentRef; asset: Asset } | undefined => {
        const ref = doc.image.attachments?.[kind];
        if (!ref) return undefined;
        const asset = bound.get(ref.name);
        if (!asset) throw new Failure('integrity', `the record of ${where} names ${ref.name} for its ${kind}, which it does not bind`);
        return { ref, asset };
      };
      return {
        status: 'ready',
        name,
        sha256: doc.image.sha256,
        size: doc.image.size,
        record: doc.image,
        pieces: doc.image.parts.map((part) => piece(bound.get(part.name)!)),
        readAttachment: async (kind, signal) => {
          const found = attachment(kind);
          if (!found) return undefined;
          return verifiedAttachment(await this.api.downloadBytes(found.asset, signal, MAX_ATTACHMENT_BYTES), found.ref, kind, where);
        },
        readAttachmentRange: async (kind, from, to, signal) => {
          const found = attachment(kind);
          if (!found) return undefined;
          const { ref, asset } = found;
          // An asset of another size is not the attachment the record names (readAttachment's check, as far as a range can make it).
          if (asset.size !== ref.size)
            throw new Failure('integrity', `the ${kind} of ${where} (${asset.name}) is ${asset.size} bytes; the record says ${ref.size}`);
          return attachmentRange(ref, kind, where, { from, to }, (start, end, sink) => this.api.downloadAsset({ asset, from: start, to: end, signal, sink }));
        },
      };
    }
    const seen = describe(layout, snapshot, undefined, reader);
    if (seen.state === 'replacing') return { status: 'replacing', detail: seen.detail ?? 'an upload is underway' };
    if (layout.finalRecord || layout.commits.length) return { status: 'missing', detail: `${this.location}: ${seen.detail}` };
    const found = bindByName(name, layout.assets);
    if (!('data' in found)) return { status: 'missing', detail: `${this.location}: ${found.missing}` };
    const index = await readIndex({ reader, signal }, snapshot.assets);
    const listed = index.index?.images[name]?.parts;
    if (listed && listed.length !== found.data.length) {
      const missing = listed.find((part) => !found.data.some((asset) => asset.name === part.name));
      return {
        status: 'missing',
        detail: `${this.location}: ${name} is missing part ${missing?.name ?? `(${listed.length} listed, ${found.data.length} present)`}`,
      };
    }
    const sha256 = checksumOf(await reader.text(found.checksum, signal), name, `${found.checksum.name} on ${this.location}`);
    const record = index.index?.images[name];
    return {
      status: 'ready',
      name,
      sha256,
      size: found.data.reduce((sum, asset) => sum + asset.size, 0),
      ...(record && record.sha256 === sha256 ? { record } : {}),
      pieces: found.data.map(piece),
      // Images nobody recorded predate attachments.
      readAttachment: async () => undefined,
      readAttachmentRange: async () => undefined,
    };
  }

  async put(image: ImageToPut, options: PutOptions): Promise<PutResult> {
    const limits = this.limits();
    const reader = (await this.readerFor(true))!;
    return putImage(reader, image, limits, options);
  }

  async remove(names: readonly string[], options: RemoveOptions): Promise<RemoveResult> {
    const reader = await this.readerFor(false);
    if (!reader) throw new Failure('not-found', `${this.location} does not exist`);
    const snapshot = await reader.stableSnapshot('all', options.signal);
    const index = await readIndex({ reader, signal: options.signal }, snapshot.assets);
    const indexed = indexFrom(snapshot.assets, snapshot.docs, index.index);
    const doomed: Asset[] = [];
    const notInStore: string[] = [];
    for (const name of names) {
      const mine = snapshot.assets.filter((asset) => imageAssetRole(name, asset.name) !== undefined);
      if (!mine.length) notInStore.push(name);
      doomed.push(...mine.sort((a, b) => removalOrder(name, a) - removalOrder(name, b) || a.name.localeCompare(b.name)));
    }
    const unindexed = names.filter((name) => indexed.images[name] !== undefined || index.index?.images[name] !== undefined);
    if (!options.dryRun) {
      for (const asset of doomed) await this.api.deleteAsset(asset);
      if (doomed.length || unindexed.length) await syncIndex({ reader, signal: options.signal, log: this.log });
    }
    return { deleted: doomed.map((asset) => asset.name), notInStore, unindexed };
  }

  async probe(name: string, signal: AbortSignal): Promise<string> {
    const reader = await this.readerFor(false);
    if (!reader) return 'release missing';
    const snapshot = await reader.snapshot([name], signal);
    const layout = layoutOf(name, snapshot.assets, snapshot.docs);
    if (layout.current) return `sha256 ${layout.current.doc.image.sha256} record ${layout.current.asset.id}`;
    const found = bindByName(name, layout.assets);
    if (!('data' in found)) return 'image missing';
    return `sha256 ${(await reader.text(found.checksum, signal)).trim()}`;
  }

  readonly retag = async (version: string, options: RetagOptions): Promise<RetagResult> => {
    const release = await this.api.requireRelease(this.tag);
    const commit = await this.api.tagCommit(version);
    const note = `Points to ${version}`;
    if (!options.dryRun) {
      await this.api.moveTag(this.tag, commit);
      await this.api.updateReleaseBody(release, note);
    }
    return {
      version,
      commit,
      note,
      said: {
        done: `tag ${this.tag} now points at ${version} (${commit.slice(0, 12)}); assets kept`,
        planned: `would point tag ${this.tag} at ${version} (${commit.slice(0, 12)}) and set the release body to "${note}"`,
      },
    };
  };
}

/**
 * Whoever reads an image goes by its record, then its checksum: removing in this order
 * (commits, the record, the checksum, then the bytes) never shows a reader a record or a
 * checksum whose bytes are half gone.
 */
function removalOrder(name: string, asset: Asset): number {
  const role = imageAssetRole(name, asset.name)!;
  if (role.role === 'record') return role.run === undefined ? 1 : 0;
  if (role.run !== undefined) return 4;
  return role.role === 'checksum' ? 2 : 3;
}

/** What a reader sees of one image. */
function describe(layout: ImageLayout, snapshot: Snapshot, indexed: ImageRecord | undefined, reader: Pick<ReleaseReader, 'problemOf'>): StoredImage {
  const { name } = layout;
  const uploading = layout.assets.some((asset) => imageAssetRole(name, asset.name)?.run !== undefined);
  if (layout.current) {
    const record = layout.current.doc.image;
    return { name, state: 'complete', record, size: record.size, pieces: record.parts.length };
  }
  const finalDoc = layout.finalRecord ? snapshot.docs.get(layout.finalRecord.id) : undefined;
  if (layout.finalRecord || layout.commits.length) {
    const missing = finalDoc
      ? finalDoc.assets
          .filter((entry) => !layout.assets.some((asset) => asset.name === entry.name))
          .map((entry) => (imageAssetRole(name, entry.name)?.role === 'part' ? `part ${entry.name}` : entry.name))
      : [];
    const detail = missing.length
      ? `${name} is missing ${missing.join(', ')}`
      : finalDoc
        ? `${name}'s pieces do not match its record`
        : `${recordAssetName(name)} ${(layout.finalRecord && reader.problemOf(layout.finalRecord.id)) ?? 'is not a valid record'}`;
    const record = finalDoc?.image ?? indexed;
    // A record that cannot be read, with no upload to replace it: damaged, whatever else is there.
    if (layout.finalRecord && !finalDoc && !uploading) return { name, state: 'damaged', detail, size: 0, pieces: 0 };
    return {
      name,
      state: uploading ? 'replacing' : 'incomplete',
      detail: uploading ? `an upload is replacing it (${detail})` : detail,
      ...(record ? { record } : {}),
      size: record?.size ?? 0,
      pieces: record?.parts.length ?? 0,
    };
  }
  const found = bindByName(name, layout.assets);
  const data = 'data' in found ? found.data : layout.assets.filter((asset) => asset.state === 'uploaded' && isFinalData(name, asset.name));
  const base = { name, ...(indexed ? { record: indexed } : {}), size: data.reduce((sum, asset) => sum + asset.size, 0), pieces: data.length };
  if ('data' in found) return { ...base, state: 'complete' };
  if (uploading) return { ...base, state: 'replacing', detail: `an upload is replacing it (${found.missing})` };
  return { ...base, state: 'incomplete', detail: found.missing };
}
