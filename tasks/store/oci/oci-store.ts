// The image store in an OCI registry: store tag `latest` of `ghcr.io/acme/images` holds each
// image as the artifact `ghcr.io/acme/images/{name}:latest` (manifest.ts), found through
// its marker and listed in the index (catalog-sync.ts).
//
// A put sends the image's layers first (each skipped when the repository holds it, mounted
// when another repository of the registry does), then the manifest: the registry refuses
// a manifest whose blobs it lacks, and a PUT replaces the tag in one step, so the tag names
// the old image or the new one, never a part of either, whenever the put is killed.
// A remove deletes the image's manifest under the tag (by digest; each tag's manifest is
// its own, so no other tag loses anything) and its marker; the blobs stay until the
// registry's garbage collection takes them, which is the registry's job.
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Failure, isFailure } from '../../../src/index.ts';
import { readInOrder } from '../file-reads.ts';
import { TransferError } from '../http/http-transfer.ts';
import { imageFileName } from '../names.ts';
import { type AttachmentKind, attachmentRange, type ImageRecord, MAX_ATTACHMENT_BYTES, recordOf, sameRecord, verifiedAttachment } from '../record.ts';
import type {
  ImagePiece,
  ImageStore,
  ImageToPut,
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
import { type BlobRestorers, pushBlob, pushBytes, restoring, type UploadTuning } from './blob-upload.ts';
import { type CatalogContext, ensureEmptyConfig, markedNames, markerRemoved, putMarker, readIndex, seeImage, seeImages, syncIndex } from './catalog-sync.ts';
import {
  EMPTY_CONFIG,
  type ImageArtifact,
  type ImageLayer,
  imageManifest,
  INDEX_MEDIA_TYPE,
  isRemoved,
  MANIFEST_MEDIA_TYPE,
  PROVENANCE_ARTIFACT_TYPE,
  parseReferrersIndex,
  provenanceManifest,
  referrersIndex,
  removedManifest,
} from './manifest.ts';
import { indexRepository, markerTag, repositoryOf, type RegistryLocation } from './reference.ts';
import { digestOf, type RegistryClient } from './registry-client.ts';

export interface OciStoreTuning extends UploadTuning {
  /** Largest layer; a larger image goes up as several layers in order. */
  readonly maxBlobSize: number;
  /** A layer is read as byte ranges of at most this size, fetched in parallel. */
  readonly readPieceBytes?: number;
  /** Attempts at a range read before giving up. */
  readonly readAttempts?: number;
}

/** GHCR takes layers up to 10 GB, and an upload must finish within 10 minutes: 4 GiB layers keep well within both. */
export const DEFAULT_MAX_BLOB_SIZE = 4 * 1024 ** 3;
export const DEFAULT_READ_PIECE_BYTES = 128 * 1024 * 1024;

export class OciStore implements ImageStore {
  readonly location: string;

  constructor(
    private readonly client: RegistryClient,
    private readonly registry: RegistryLocation,
    readonly tag: string,
    private readonly tuning: OciStoreTuning,
    private readonly log: (line: string) => void = () => {},
  ) {
    this.location = `registry ${registry.reference} (tag ${tag})`;
  }

  private context(signal: AbortSignal, log = this.log, tag = this.tag): CatalogContext {
    return { client: this.client, location: this.registry, tag, signal, log };
  }

  async list(signal: AbortSignal): Promise<StoreListing> {
    const context = this.context(signal);
    const { exists, names } = await markedNames(context);
    const seen = await seeImages(context, names);
    const images: StoredImage[] = [];
    const notes: string[] = [];
    for (const name of names) {
      const image = seen.get(name);
      if (image?.state === 'complete') {
        const { record } = image.artifact;
        images.push({ name, state: 'complete', record, size: record.size, pieces: record.parts.length });
      } else if (image?.state === 'damaged') {
        images.push({ name, state: 'damaged', detail: image.detail, size: 0, pieces: 0 });
        notes.push(`${this.location}: ${image.detail}; ${name} is damaged (upload it again, or release remove ${name})`);
      } else {
        // Removed where the registry cannot delete: its marker is a tombstone too.
        if (!image && (await markerRemoved(context, name))) continue;
        const detail = image?.detail ?? `${name} has no manifest under ${this.tag}: an upload did not finish (the next put of ${name} completes it)`;
        images.push({ name, state: 'incomplete', detail, size: 0, pieces: 0 });
      }
    }
    return { exists, images, notes };
  }

  async open(name: string, signal: AbortSignal): Promise<OpenedImage> {
    const seen = await seeImage(this.context(signal), name);
    if (!seen) return { status: 'missing', detail: `${this.location} has no ${name}` };
    if (seen.state !== 'complete') return { status: 'missing', detail: `${this.location}: ${seen.detail}` };
    const { record, layers } = seen.artifact;
    const repository = repositoryOf(this.registry, name);
    return {
      status: 'ready',
      name,
      sha256: record.sha256,
      size: record.size,
      record,
      pieces: this.readPieces(name, layers),
      readAttachment: async (kind, attachmentSignal) => {
        const ref = record.attachments?.[kind];
        if (!ref) return undefined;
        const where = `${name} on ${this.location}`;
        const bytes = await this.client.blob(repository, `sha256:${ref.sha256}`, MAX_ATTACHMENT_BYTES, attachmentSignal, false);
        return verifiedAttachment(bytes, ref, kind, where);
      },
      readAttachmentRange: async (kind, from, to, attachmentSignal) => {
        const ref = record.attachments?.[kind];
        if (!ref) return undefined;
        const blob: ImageLayer = { title: ref.name, digest: `sha256:${ref.sha256}`, size: ref.size };
        return attachmentRange(ref, kind, `${name} on ${this.location}`, { from, to }, (start, end, sink) =>
          this.readRange(repository, blob, 0, end, {
            from: start,
            to: end,
            signal: attachmentSignal,
            sink,
            // readRange fails a bounded read the registry will not serve by range; it never starts one over.
            onRestart: () => {
              throw new Error(`a bounded read of ${ref.name} restarted`);
            },
          }),
        );
      },
    };
  }

  /** Each layer as byte ranges of at most readPieceBytes (readSpans), so one large layer downloads in parallel. */
  private readPieces(name: string, layers: readonly ImageLayer[]): ImagePiece[] {
    const repository = repositoryOf(this.registry, name);
    const span = this.tuning.readPieceBytes ?? DEFAULT_READ_PIECE_BYTES;
    return layers.flatMap((layer) => {
      const spans = readSpans(layer.size, span);
      return spans.map(({ start, end }) => ({
        id: spans.length === 1 ? layer.digest : `${layer.digest}@${start}`,
        label: spans.length === 1 ? layer.title : `${layer.title} [${start}, ${end})`,
        size: end - start,
        read: (request) => this.readRange(repository, layer, start, request.to === undefined ? end : Math.min(end, start + request.to), request),
      }));
    });
  }

  /** Streams layer bytes [start + from, end) to the sink, resuming with a Range request after a reset or a short body. */
  private async readRange(repository: string, layer: ImageLayer, start: number, end: number, request: Parameters<ImagePiece['read']>[0]): Promise<void> {
    const attempts = this.tuning.readAttempts ?? 5;
    let offset = request.from;
    let lastError: unknown;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (start + offset >= end) return;
      request.signal.throwIfAborted();
      try {
        await this.client.readBlobRange({
          repository,
          digest: layer.digest,
          from: start + offset,
          to: end,
          size: layer.size,
          signal: request.signal,
          sink: (chunk) => {
            const at = offset;
            offset += chunk.length;
            return request.sink(chunk, at);
          },
        });
        if (start + offset !== end) throw new TransferError(`read of ${layer.title} ended at ${start + offset} of ${end}`, 0);
        return;
      } catch (error) {
        if (!(error instanceof TransferError)) throw error;
        lastError = error;
        if (error.status === 404) throw new Failure('not-found', `${layer.title} (${layer.digest.slice(0, 19)}) is gone from ${repository}`, { code: 404 });
        if (error.status === 401 || error.status === 403)
          throw await this.client.failure(error.status, error.body, { repository, actions: ['pull'] }, `read ${layer.title}`);
        if (error.status === 416) {
          // A bounded read cannot start over (its caller keeps what came before `from`).
          if (request.to !== undefined) throw this.client.connectionFailure(error, `read ${layer.title}: the registry ignored the range`);
          offset = 0;
          request.onRestart();
        } else if (!error.retryable || (error.status === 0 && this.client.connectionFailure(error, '').code === 'unreachable')) {
          throw error.status === 0
            ? this.client.connectionFailure(error, `read ${layer.title}`)
            : await this.client.failure(error.status, error.body, { repository, actions: ['pull'] }, `read ${layer.title}`);
        }
        if (attempt < attempts) await sleep(attempt * attempt * (this.tuning.retryBaseMs ?? 250), undefined, { signal: request.signal });
      }
    }
    throw lastError instanceof TransferError ? this.client.connectionFailure(lastError, `read ${layer.title}`) : lastError;
  }

  async put(image: ImageToPut, options: PutOptions): Promise<PutResult> {
    const { signal, log } = options;
    const context = this.context(signal, log);
    const name = image.name;
    const repository = repositoryOf(this.registry, name);
    markerTag(name, this.tag); // a name too long for the registry fails before any byte moves
    const parts = planLayers(name, image.size, this.tuning.maxBlobSize);
    const before = await seeImage(context, name);
    const current = before?.state === 'complete' ? before.artifact : undefined;
    // Bytes the store holds already keep the commit and upload time they came in with, forced or not.
    const held = current?.record.sha256 === image.sha256 ? current.record : undefined;
    const record = (uploadedAt: string): ImageRecord =>
      recordOf(
        image,
        parts.map((part) => ({ name: part.title, size: part.length })),
        uploadedAt,
        (kind) => attachmentTitle(name, kind),
        held,
      );

    await putMarker(context, name);
    await ensureEmptyConfig(context, repository);
    const attachments = await this.pushAttachments(repository, image, signal);
    const upload: LayerUpload = { image, repository, parts, restorers: new Map(attachments.restorers) };
    if (current && held && sameLayout(current.record, parts) && !options.force) {
      if (await this.keepStored(context, upload, current, { ...attachments, record: record(new Date().toISOString()) })) {
        await syncIndex(context);
        return { uploaded: false };
      }
    }

    // Deciding to replace what is there: before any bytes move, and again right before the manifest.
    if (current) await options.mayReplace?.(current.record);
    const { layers, sent } = await this.pushLayers(context, upload, options);
    if (options.mayReplace) {
      const now = await seeImage(context, name);
      if (now?.state === 'complete') await options.mayReplace(now.artifact.record);
    }
    await this.putManifest(
      context,
      { name, tag: this.tag, record: record(new Date().toISOString()), layers, ...attachments.artifact },
      attachments.provenance,
      upload.restorers,
    );
    log(`${name}: ${parts.length === 1 ? 'stored as one layer' : `stored as ${parts.length} layers`}, sha256 ${image.sha256}`);
    await syncIndex(context);
    return { uploaded: sent };
  }

  /**
   * The same bytes in the same layout are stored already: true when their blobs are all
   * still there (a registry's garbage collection may have run), after rewriting the
   * manifest if the record changed; false when the layers must go up again.
   */
  private async keepStored(
    context: CatalogContext,
    upload: LayerUpload,
    current: ImageArtifact,
    wanted: StoredAttachments & { record: ImageRecord },
  ): Promise<boolean> {
    const { image, repository, parts } = upload;
    const { signal, log } = context;
    const present = await Promise.all(current.layers.map(async (layer) => (await this.client.blobSize(repository, layer.digest, signal)) === layer.size));
    if (!present.every(Boolean)) return false;
    if (sameRecord(current.record, wanted.record)) {
      log(`${image.name}: ${this.location} already holds sha256 ${image.sha256.slice(0, 12)}…; nothing to upload`);
      return true;
    }
    for (const [index, layer] of current.layers.entries()) upload.restorers.set(layer.digest, this.layerRestorer(upload, layer.digest, parts[index]!, signal));
    await this.putManifest(
      context,
      { name: image.name, tag: this.tag, record: wanted.record, layers: current.layers, ...wanted.artifact },
      wanted.provenance,
      upload.restorers,
    );
    log(`${image.name}: ${this.location} already holds sha256 ${image.sha256.slice(0, 12)}…; updated its record`);
    return true;
  }

  /** Sends each planned layer in order (skipped when present, mounted when another repository holds it); whether any bytes went. */
  private async pushLayers(context: CatalogContext, upload: LayerUpload, options: PutOptions): Promise<{ layers: ImageLayer[]; sent: boolean }> {
    const { image, repository, parts } = upload;
    const { signal, log } = context;
    const digests = parts.length === 1 ? [`sha256:${image.sha256}`] : await partDigests(image.path, parts, signal);
    const mountFrom = options.force ? [] : await this.mountSources(context, image, parts.length);
    const total = image.size;
    let done = 0;
    let sent = false;
    options.onProgress?.(0, total);
    const layers: ImageLayer[] = [];
    for (const [index, part] of parts.entries()) {
      const digest = digests[index]!;
      const outcome = await pushBlob(
        this.client,
        {
          repository,
          digest,
          path: image.path,
          start: part.start,
          length: part.length,
          mountFrom,
          signal,
          onProgress: (bytes) => options.onProgress?.(done + bytes, total),
        },
        this.tuning,
      ).catch((error: unknown) => {
        throw error instanceof Failure ? error.prefixed(image.name) : error;
      });
      if (outcome === 'uploaded') sent = true;
      log(
        `${image.name}: ${part.title} (${part.length} bytes) ${outcome === 'uploaded' ? 'uploaded' : outcome === 'mounted' ? 'mounted from another repository' : 'already there'}`,
      );
      done += part.length;
      options.onProgress?.(done, total);
      layers.push({ title: part.title, digest, size: part.length });
      upload.restorers.set(digest, this.layerRestorer(upload, digest, part, signal));
    }
    return { layers, sent };
  }

  /** How to put a layer back should the registry refuse the manifest for lacking it (putManifest). */
  private layerRestorer(upload: LayerUpload, digest: string, part: PlannedLayer, signal: AbortSignal): () => Promise<unknown> {
    const { image, repository } = upload;
    return () => pushBlob(this.client, { repository, digest, path: image.path, start: part.start, length: part.length, signal }, this.tuning);
  }

  /** The image's attachments as blobs of its repository, before the manifest that names them. */
  private async pushAttachments(repository: string, image: ImageToPut, signal: AbortSignal): Promise<StoredAttachments> {
    const stored: Partial<Record<AttachmentKind, ImageLayer>> = {};
    const restorers = new Map<string, () => Promise<unknown>>();
    for (const kind of ['chunk-index', 'provenance'] as const) {
      const bytes = image.attachments?.[kind];
      if (!bytes) continue;
      const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const push = () => pushBytes(this.client, repository, buffer, signal);
      stored[kind] = { title: attachmentTitle(image.name, kind), digest: await push(), size: buffer.length };
      restorers.set(stored[kind].digest, push);
    }
    return {
      artifact: stored['chunk-index'] ? { chunkIndex: stored['chunk-index'] } : {},
      ...(stored.provenance ? { provenance: stored.provenance } : {}),
      restorers,
    };
  }

  /**
   * Writes the image's manifest under its tag; a provenance bundle first goes up as a
   * referrer of that manifest (its digest is known before the PUT), listed under the
   * `sha256-<hex>` tag for registries without the referrers API, as the spec's fallback says.
   * `restorers` put back the blobs it names (the empty config always can be) should the
   * registry refuse a manifest for lacking one.
   */
  private async putManifest(context: CatalogContext, artifact: ImageArtifact, provenance?: ImageLayer, restorers: BlobRestorers = new Map()): Promise<string> {
    const { signal } = context;
    const repository = repositoryOf(this.registry, artifact.name);
    const bytes = imageManifest(artifact);
    const restore = restoring(new Map(restorers).set(EMPTY_CONFIG.digest, () => ensureEmptyConfig(context, repository)));
    if (provenance) {
      const subject = { mediaType: MANIFEST_MEDIA_TYPE, digest: digestOf(bytes), size: bytes.length };
      const referrer = provenanceManifest(subject, { mediaType: PROVENANCE_ARTIFACT_TYPE, digest: provenance.digest, size: provenance.size }, provenance.title);
      const putReferrer = () => this.client.putManifest(repository, digestOf(referrer), referrer, MANIFEST_MEDIA_TYPE, signal, restore);
      const referrerDigest = await putReferrer();
      const fallback = fallbackTag(subject.digest);
      const listed = await this.client.manifest(repository, fallback, signal);
      const entries = (listed ? parseReferrersIndex(listed.bytes) : []).filter((entry) => entry.digest !== referrerDigest);
      entries.push({ mediaType: MANIFEST_MEDIA_TYPE, digest: referrerDigest, size: referrer.length, artifactType: PROVENANCE_ARTIFACT_TYPE });
      // The index names manifests, not blobs: what it may lack is the referrer, put again.
      await this.client.putManifest(
        repository,
        fallback,
        referrersIndex(entries),
        INDEX_MEDIA_TYPE,
        signal,
        restoring(new Map([[referrerDigest, putReferrer]])),
      );
    }
    return this.client.putManifest(repository, artifact.tag, bytes, MANIFEST_MEDIA_TYPE, signal, restore);
  }

  /**
   * Takes `tag` off `digest`: a DELETE by digest (each tag's manifest is its own), or where
   * the registry refuses deletes (GHCR, Docker Hub: 405), the tag moved to a tombstone that
   * readers take for "no image"; the untagged version is then the registry's to clean up.
   */
  private async untag(repository: string, tag: string, digest: string, name: string, signal: AbortSignal): Promise<void> {
    if ((await this.client.deleteManifest(repository, digest, signal)) !== 'unsupported') return;
    const tombstone = removedManifest(name, tag, new Date().toISOString());
    await this.client.putManifest(repository, tag, tombstone, MANIFEST_MEDIA_TYPE, signal, () => ensureEmptyConfig(this.context(signal), repository));
  }

  /** Deletes the referrers of a manifest and their fallback tag; returns what it deleted. */
  private async removeReferrers(repository: string, manifest: string, dryRun: boolean, signal: AbortSignal): Promise<string[]> {
    const fallback = fallbackTag(manifest);
    const listed = await this.client.manifest(repository, fallback, signal);
    if (!listed) return [];
    const deleted: string[] = [];
    for (const entry of parseReferrersIndex(listed.bytes)) {
      deleted.push(`${repository}@${entry.digest}`);
      // Untagged: where the registry cannot delete, it stays for the registry's own cleanup.
      if (!dryRun) await this.client.deleteManifest(repository, entry.digest, signal);
    }
    deleted.push(`${repository}:${fallback}`);
    if (!dryRun && (await this.client.deleteManifest(repository, listed.digest, signal)) === 'unsupported') {
      await this.client.putManifest(repository, fallback, referrersIndex([]), INDEX_MEDIA_TYPE, signal);
    }
    return deleted;
  }

  /** Repositories of this store holding the same bytes in the same layout (by the index), to mount from. */
  private async mountSources(context: CatalogContext, image: ImageToPut, layers: number): Promise<string[]> {
    const { index } = await readIndex(context);
    return Object.entries(index?.images ?? {})
      .filter(([other, record]) => other !== image.name && record.sha256 === image.sha256 && record.parts.length === layers)
      .map(([other]) => repositoryOf(this.registry, other));
  }

  async remove(names: readonly string[], options: RemoveOptions): Promise<RemoveResult> {
    const context = this.context(options.signal);
    const { index } = await readIndex(context);
    const deleted: string[] = [];
    const notInStore: string[] = [];
    const indexRepo = indexRepository(this.registry);
    for (const name of names) {
      const repository = repositoryOf(this.registry, name);
      const marker = markerTag(name, this.tag);
      const [manifest, markerManifest] = await Promise.all([
        this.manifestToRemove(repository, this.tag, options.signal),
        this.manifestToRemove(indexRepo, marker, options.signal),
      ]);
      const image = manifest && !isRemoved(manifest.bytes) ? manifest : undefined;
      const registered = markerManifest && !isRemoved(markerManifest.bytes) ? markerManifest : undefined;
      if (!image && !registered) notInStore.push(name);
      // The manifest first: a reader that finds the marker without it sees an image gone, never half of one.
      if (image) {
        deleted.push(`${repository}:${this.tag}`);
        deleted.push(...(await this.removeReferrers(repository, image.digest, options.dryRun, options.signal)));
        if (!options.dryRun) await this.untag(repository, this.tag, image.digest, name, options.signal);
      }
      if (registered) {
        deleted.push(`${indexRepo}:${marker}`);
        if (!options.dryRun) await this.untag(indexRepo, marker, registered.digest, name, options.signal);
      }
    }
    const unindexed = names.filter((name) => index?.images[name] !== undefined);
    if (!options.dryRun && (deleted.length || unindexed.length)) await syncIndex(context);
    return { deleted, notInStore, unindexed };
  }

  /** A manifest as remove sees it: one too large to read is still removed, by the digest the registry names. */
  private async manifestToRemove(repository: string, reference: string, signal: AbortSignal): Promise<{ bytes: Buffer; digest: string } | undefined> {
    try {
      return await this.client.manifest(repository, reference, signal);
    } catch (error) {
      if (!isFailure(error, 'integrity')) throw error;
      const digest = await this.client.manifestDigest(repository, reference, signal).catch(() => undefined);
      if (!digest) throw error;
      return { bytes: Buffer.alloc(0), digest };
    }
  }

  async probe(name: string, signal: AbortSignal): Promise<string> {
    const digest = await this.client.manifestDigest(repositoryOf(this.registry, name), this.tag, signal);
    return digest ? `manifest ${digest}` : 'image missing';
  }

  /** Copies every image's manifest under this tag to `version` (the blobs are shared), with its marker and index. */
  readonly retag = async (version: string, options: RetagOptions): Promise<RetagResult> => {
    const source = this.context(options.signal);
    const target = this.context(options.signal, this.log, version);
    const { names } = await markedNames(source);
    const seen = await seeImages(source, names);
    const copied: string[] = [];
    for (const name of names) {
      const image = seen.get(name);
      if (image?.state !== 'complete') continue;
      markerTag(name, version);
      copied.push(name);
      if (options.dryRun) continue;
      await putMarker(target, name);
      // The copy is a manifest of its own: its provenance goes with it as its own referrer.
      const provenance = image.artifact.record.attachments?.provenance;
      const layer = provenance ? { title: provenance.name, digest: `sha256:${provenance.sha256}`, size: provenance.size } : undefined;
      await this.putManifest(target, { ...image.artifact, tag: version }, layer);
    }
    if (!options.dryRun) await syncIndex(target);
    const digest = options.dryRun ? '' : ((await this.client.manifestDigest(indexRepository(this.registry), version, options.signal)) ?? '');
    const images = `${copied.length} image${copied.length === 1 ? '' : 's'}`;
    return {
      version,
      commit: digest.replace(/^sha256:/, ''),
      note: `Copied ${images} from ${this.tag}`,
      said: {
        done: `copied ${images} of ${this.tag} to ${version}${copied.length ? ` (${copied.join(', ')})` : ''}`,
        planned: `would copy ${images} of ${this.tag} to ${version}`,
      },
    };
  };
}

/**
 * A layer's byte ranges for parallel reads: `span` bytes each while much is left, then an
 * eighth of what is left, in whole multiples of span / 8, so the last ranges are small. The reads
 * then end close together, and the SHA-256, which follows the file in order, has only
 * the last few small ranges left to read once the last byte lands, rather than whole
 * spans that finished ahead of it.
 */
export function readSpans(size: number, span: number): Array<{ start: number; end: number }> {
  const smallest = Math.max(1, Math.floor(span / 8));
  const spans: Array<{ start: number; end: number }> = [];
  for (let start = 0; start < size || spans.length === 0; ) {
    const left = size - start;
    const end = start + Math.min(left, span, Math.ceil(left / 8 / smallest) * smallest);
    spans.push({ start, end });
    start = end;
  }
  return spans;
}

/** An image's attachments as stored: what its manifest names, and how to put each back. */
interface StoredAttachments {
  readonly artifact: Pick<ImageArtifact, 'chunkIndex'>;
  readonly provenance?: ImageLayer;
  readonly restorers: BlobRestorers;
}

/** One put's layers: the image, where they go, and how to put back each blob its manifest names. */
interface LayerUpload {
  readonly image: ImageToPut;
  readonly repository: string;
  readonly parts: readonly PlannedLayer[];
  readonly restorers: Map<string, () => Promise<unknown>>;
}

export interface PlannedLayer {
  readonly title: string;
  readonly start: number;
  readonly length: number;
}

/** One layer titled `{name}.qcow2`, or parts of at most maxBlobSize titled with split(1)'s suffixes. */
export function planLayers(name: string, size: number, maxBlobSize: number): PlannedLayer[] {
  const file = imageFileName(name);
  if (size <= maxBlobSize) return [{ title: file, start: 0, length: size }];
  const layers: PlannedLayer[] = [];
  for (let start = 0, index = 0; start < size; start += maxBlobSize, index++) {
    layers.push({ title: `${file}.part${splitSuffix(index)}`, start, length: Math.min(maxBlobSize, size - start) });
  }
  return layers;
}

/** split(1)'s suffixes: aa, ab, …, zz, then zaaa, … (it widens the suffix past zy). */
function splitSuffix(index: number): string {
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  if (index < 26 * 25) return letters[Math.floor(index / 26)]! + letters[index % 26]!;
  const rest = index - 26 * 25;
  return `z${letters[Math.floor(rest / 676) % 26]!}${letters[Math.floor(rest / 26) % 26]!}${letters[rest % 26]!}`;
}

function sameLayout(record: ImageRecord, parts: readonly PlannedLayer[]): boolean {
  return (
    record.parts.length === parts.length && parts.every((part, index) => record.parts[index]?.name === part.title && record.parts[index]?.size === part.length)
  );
}

/** Each part's digest, in one read of the file. */
async function partDigests(path: string, parts: readonly PlannedLayer[], signal: AbortSignal): Promise<string[]> {
  const hashes = parts.map(() => createHash('sha256'));
  await readInOrder(path, {
    signal,
    each: (chunk, offset) => {
      let at = 0;
      while (at < chunk.length) {
        const index = parts.findIndex((part) => offset + at >= part.start && offset + at < part.start + part.length);
        if (index < 0) return;
        const part = parts[index]!;
        const take = Math.min(chunk.length - at, part.start + part.length - (offset + at));
        hashes[index]!.update(chunk.subarray(at, at + take));
        at += take;
      }
    },
  });
  return hashes.map((hash) => `sha256:${hash.digest('hex')}`);
}

/** The referrers tag schema's tag for a manifest digest: `sha256-<hex>`. */
function fallbackTag(digest: string): string {
  return digest.replace(':', '-');
}

/** An attachment's name in the record and its layer title: `{name}.qcow2.chunks`, `{name}.qcow2.sigstore.json`. */
function attachmentTitle(name: string, kind: AttachmentKind): string {
  return `${imageFileName(name)}.${kind === 'chunk-index' ? 'chunks' : 'sigstore.json'}`;
}
