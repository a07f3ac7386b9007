// Puts one image on a release without ever taking it off while bytes move, safe against
// any number of other writers and against being killed at any request:
//
// 1. settle what is there (finish or undo a replacement another run left half done);
// 2. upload the new pieces and the `.sha256` under temporary names;
// 3. commit: upload the new record under a temporary name, naming the ids of those assets
//    (from here on any writer, on any machine, can finish the swap);
// 4. settle: rename into place (free names first, then delete-and-rename back to back),
//    the record last, then delete what the old image left;
// 5. bring images.json up to date with every image's record.
import { ATTACHMENT_KINDS, INDEX_NAME, recordOf, sameRecord, type ImageRecord } from '../record.ts';
import type { ImageToPut, PutOptions, PutResult } from '../store.ts';
import { attachmentAssetName, checksumAssetName, imageAssetRole, partAssetName, recordAssetName, tempAssetName, wholeAssetName } from './asset-names.ts';
import { syncIndex } from './index-sync.ts';
import { bindByName, layoutOf, type Candidate, type ImageLayout } from './layout.ts';
import { recordDoc, serializeRecordDoc, type RecordDoc } from './record-asset.ts';
import type { ReleaseAsset } from './release-api.ts';
import { endRun, newRunId } from './runs.ts';
import { settleImage } from './settle.ts';
import type { TransferLimits } from './sizes.ts';
import type { ReleaseReader } from './snapshot.ts';
import { formatSha256Line } from '../../checksum.ts';
import { checksumOf } from '../record.ts';

export interface PlannedPart {
  readonly name: string;
  readonly start: number;
  readonly length: number;
}

/** The assets an image of `size` bytes becomes: one whole file, or split(1)-named parts. */
export function planParts(image: string, size: number, limits: TransferLimits): PlannedPart[] {
  if (size <= limits.maxAssetSize) return [{ name: wholeAssetName(image), start: 0, length: size }];
  const parts: PlannedPart[] = [];
  for (let start = 0, index = 0; start < size; start += limits.partSize, index++) {
    parts.push({ name: partAssetName(image, index), start, length: Math.min(limits.partSize, size - start) });
  }
  return parts;
}

export async function putImage(reader: ReleaseReader, image: ImageToPut, limits: TransferLimits, options: PutOptions): Promise<PutResult> {
  const { signal, log } = options;
  const context = { reader, signal, log };
  const name = image.name;
  const parts = planParts(name, image.size, limits);
  const record = (uploadedAt: string, held?: ImageRecord): ImageRecord =>
    recordOf(
      image,
      parts.map((part) => ({ name: part.name, size: part.length })),
      uploadedAt,
      (kind) => attachmentAssetName(name, kind),
      held,
    );

  const before = await settleImage(context, name);
  if (!options.force) {
    const held = await alreadyHeld(reader, before, image, parts, signal);
    if (held) {
      const wanted = record(held.uploadedAt ?? new Date().toISOString(), held.doc?.image);
      if (held.doc && sameRecord(held.doc.image, wanted)) {
        log(`${name}: ${reader.release.tag_name} already holds sha256 ${image.sha256.slice(0, 12)}…; nothing to upload`);
      } else {
        // Same bytes, new facts about them (or bytes nobody recorded): a commit that renames
        // nothing but attachments that changed.
        const run = newRunId();
        const mine: ReleaseAsset[] = [];
        let committed: number | undefined;
        try {
          const bytes = held.assets.filter((entry) => imageAssetRole(name, entry.name)?.role !== 'attachment');
          const attachments = await attachmentEntries(reader, image, wanted, held.doc, run, signal, mine);
          committed = await commit(reader, name, recordDoc(name, wanted, [...bytes, ...attachments]), run, signal);
        } finally {
          if (committed === undefined) {
            await Promise.allSettled(mine.map((asset) => reader.api.deleteAsset(asset)));
            endRun(run);
          }
        }
        try {
          await settleImage(context, name, committed);
        } finally {
          endRun(run);
        }
        log(`${name}: ${reader.release.tag_name} already holds sha256 ${image.sha256.slice(0, 12)}…; updated its record`);
      }
      await syncIndex(context);
      return { uploaded: false };
    }
  }

  // Deciding to replace what is there: before any bytes move, and again right before the commit.
  const replaced = before.current?.doc.image;
  if (replaced && options.mayReplace) await options.mayReplace(replaced);
  const sameBytes = replaced?.sha256 === image.sha256 ? replaced : undefined;
  const run = newRunId();
  const checksumText = formatSha256Line(image.sha256, wholeAssetName(name));
  const total = image.size + Buffer.byteLength(checksumText);
  const mine: ReleaseAsset[] = [];
  let committed: number | undefined;
  try {
    let done = 0;
    options.onProgress?.(0, total);
    for (const part of parts) {
      log(`uploading ${part.name} (${part.length} bytes) as ${tempAssetName(part.name, run)}`);
      const asset = await reader.api.uploadAsset({
        release: reader.release,
        name: tempAssetName(part.name, run),
        path: image.path,
        start: part.start,
        length: part.length,
        signal,
        onProgress: (sent) => options.onProgress?.(done + sent, total),
      });
      mine.push(asset);
      done += part.length;
    }
    mine.push(
      await reader.api.uploadText({
        release: reader.release,
        name: tempAssetName(checksumAssetName(name), run),
        text: checksumText,
        contentType: 'text/plain',
        signal,
      }),
    );
    const checksumId = mine.at(-1)!.id;
    const wanted = record(new Date().toISOString(), sameBytes);
    const attachments = await attachmentEntries(reader, image, wanted, undefined, run, signal, mine);
    options.onProgress?.(total, total);
    const assets = [
      ...parts.map((part, index) => ({ name: part.name, id: mine[index]!.id })),
      { name: checksumAssetName(name), id: checksumId },
      ...attachments,
    ];
    if (options.mayReplace) {
      const snapshot = await reader.snapshot([name], signal);
      const now = layoutOf(name, snapshot.assets, snapshot.docs).current?.doc.image;
      if (now) await options.mayReplace(now);
    }
    committed = await commit(reader, name, recordDoc(name, wanted, assets), run, signal);
  } finally {
    // Not committed: nobody will ever rename these, so they go now (Ctrl-C included).
    if (committed === undefined) await Promise.allSettled(mine.map((asset) => reader.api.deleteAsset(asset)));
    if (committed === undefined) endRun(run);
  }
  try {
    await settleImage(context, name, committed);
  } finally {
    endRun(run);
  }
  log(`${name}: ${parts.length === 1 ? 'uploaded whole' : `uploaded in ${parts.length} parts`}, sha256 ${image.sha256}`);
  await syncIndex(context);
  log(`recorded ${name} in ${recordAssetName(name)} and ${INDEX_NAME}`);
  return { uploaded: true };
}

/**
 * The record doc's entries for the attachments `wanted` names: an asset `held` already
 * binds to the same bytes is kept, any other is uploaded under the run's temporary name
 * (and pushed onto `mine`, for the caller to delete if the commit never comes).
 */
async function attachmentEntries(
  reader: ReleaseReader,
  image: ImageToPut,
  wanted: ImageRecord,
  held: RecordDoc | undefined,
  run: string,
  signal: AbortSignal,
  mine: ReleaseAsset[],
): Promise<RecordDoc['assets']> {
  const entries: Array<RecordDoc['assets'][number]> = [];
  for (const kind of ATTACHMENT_KINDS) {
    const ref = wanted.attachments?.[kind];
    const bytes = image.attachments?.[kind];
    if (!ref || !bytes) continue;
    const heldRef = held?.image.attachments?.[kind];
    const heldEntry = heldRef?.sha256 === ref.sha256 && heldRef.name === ref.name ? held?.assets.find((entry) => entry.name === ref.name) : undefined;
    if (heldEntry) {
      entries.push(heldEntry);
      continue;
    }
    const asset = await reader.api.uploadText({
      release: reader.release,
      name: tempAssetName(ref.name, run),
      text: bytes,
      contentType: 'application/octet-stream',
      signal,
    });
    mine.push(asset);
    entries.push({ name: ref.name, id: asset.id });
  }
  return entries;
}

/** Uploads the record under the run's temporary name: the moment the replacement is decided. Returns its id. */
async function commit(reader: ReleaseReader, name: string, doc: RecordDoc, run: string, signal: AbortSignal): Promise<number> {
  const asset = await reader.api.uploadText({
    release: reader.release,
    name: tempAssetName(recordAssetName(name), run),
    text: serializeRecordDoc(doc),
    contentType: 'application/json',
    signal,
  });
  return asset.id;
}

/**
 * The assets already holding exactly these bytes in this layout: the current record's, or
 * (for an image uploaded before records existed) those found by name with a matching `.sha256`.
 */
async function alreadyHeld(
  reader: ReleaseReader,
  layout: ImageLayout,
  image: ImageToPut,
  parts: readonly PlannedPart[],
  signal: AbortSignal,
): Promise<{ doc?: RecordDoc; assets: RecordDoc['assets']; uploadedAt?: string } | undefined> {
  const sameLayout = (pieces: ReadonlyArray<{ name: string; size: number }>) =>
    pieces.length === parts.length && parts.every((part, index) => pieces[index]?.name === part.name && pieces[index]?.size === part.length);
  const current: Candidate | undefined = layout.current;
  if (current) {
    if (current.doc.image.sha256 !== image.sha256 || !sameLayout(current.doc.image.parts)) return undefined;
    const assets = current.doc.assets.map((entry) => ({ name: entry.name, id: current.bound.get(entry.name)!.id }));
    return { doc: current.doc, assets, ...(current.doc.image.uploadedAt ? { uploadedAt: current.doc.image.uploadedAt } : {}) };
  }
  if (layout.finalRecord || layout.commits.length) return undefined;
  const found = bindByName(image.name, layout.assets);
  if (!('data' in found) || !sameLayout(found.data)) return undefined;
  const text = await reader.text(found.checksum, signal).catch(() => '');
  let sha256: string | undefined;
  try {
    sha256 = checksumOf(text, image.name, found.checksum.name);
  } catch {
    return undefined;
  }
  if (sha256 !== image.sha256) return undefined;
  return { assets: [...found.data.map((asset) => ({ name: asset.name, id: asset.id })), { name: found.checksum.name, id: found.checksum.id }] };
}
