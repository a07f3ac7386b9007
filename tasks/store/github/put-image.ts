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
import { type SettleContext, settleImage } from './settle.ts';
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
  const context: SettleContext = { reader, signal, log };
  const name = image.name;
  const parts = planParts(name, image.size, limits);
  const before = await settleImage(context, name);
  if (!options.force) {
    const held = await alreadyHeld(reader, before, image, parts, signal);
    if (held) {
      await recordHeldImage(context, image, parts, held);
      await syncIndex(context);
      return { uploaded: false };
    }
  }
  // Deciding to replace what is there: before any bytes move, and again right before the commit.
  const replaced = before.current?.doc.image;
  if (replaced && options.mayReplace) await options.mayReplace(replaced);
  const sameBytes = replaced?.sha256 === image.sha256 ? replaced : undefined;
  await commitAndSettle(context, name, (staging) => stageImage(context, image, parts, sameBytes, staging, options));
  log(`${name}: ${parts.length === 1 ? 'uploaded whole' : `uploaded in ${parts.length} parts`}, sha256 ${image.sha256}`);
  await syncIndex(context);
  log(`recorded ${name} in ${recordAssetName(name)} and ${INDEX_NAME}`);
  return { uploaded: true };
}

/** The record of `image` stored as `parts`, keeping what `held` (the record it replaces, of the same bytes) knows. */
function recordFor(image: ImageToPut, parts: readonly PlannedPart[], uploadedAt: string, held?: ImageRecord): ImageRecord {
  return recordOf(
    image,
    parts.map((part) => ({ name: part.name, size: part.length })),
    uploadedAt,
    (kind) => attachmentAssetName(image.name, kind),
    held,
  );
}

type HeldImage = NonNullable<Awaited<ReturnType<typeof alreadyHeld>>>;

/**
 * The release holds these bytes already: its record is brought up to date, when the facts
 * about them are new (or nobody recorded them), by a commit that renames nothing but the
 * attachments that changed.
 */
async function recordHeldImage(context: SettleContext, image: ImageToPut, parts: readonly PlannedPart[], held: HeldImage): Promise<void> {
  const { reader, signal, log } = context;
  const name = image.name;
  const wanted = recordFor(image, parts, held.uploadedAt ?? new Date().toISOString(), held.doc?.image);
  const holds = `${name}: ${reader.release.tag_name} already holds sha256 ${image.sha256.slice(0, 12)}…`;
  if (held.doc && sameRecord(held.doc.image, wanted)) {
    log(`${holds}; nothing to upload`);
    return;
  }
  await commitAndSettle(context, name, async (staging) => {
    const bytes = held.assets.filter((entry) => imageAssetRole(name, entry.name)?.role !== 'attachment');
    const attachments = await attachmentEntries(reader, image, wanted, held.doc, staging, signal);
    return recordDoc(name, wanted, [...bytes, ...attachments]);
  });
  log(`${holds}; updated its record`);
}

/** One writer's temporary assets: named with its run id, collected for deletion should the commit never come. */
interface Staging {
  readonly run: string;
  readonly mine: ReleaseAsset[];
}

/**
 * `stage` uploads what the new record needs under the run's temporary names and returns
 * that record; it is committed, then settled into place. Without a commit nobody will ever
 * rename what was staged, so it is deleted at once (Ctrl-C included).
 */
async function commitAndSettle(context: SettleContext, name: string, stage: (staging: Staging) => Promise<RecordDoc>): Promise<void> {
  const { reader, signal } = context;
  const staging: Staging = { run: newRunId(), mine: [] };
  let committed: number | undefined;
  try {
    committed = await commit(reader, name, await stage(staging), staging.run, signal);
  } finally {
    if (committed === undefined) {
      await Promise.allSettled(staging.mine.map((asset) => reader.api.deleteAsset(asset)));
      endRun(staging.run);
    }
  }
  try {
    await settleImage(context, name, committed);
  } finally {
    endRun(staging.run);
  }
}

/** Uploads the image's pieces, its `.sha256` and its attachments under temporary names; the record doc that names them. */
async function stageImage(
  context: SettleContext,
  image: ImageToPut,
  parts: readonly PlannedPart[],
  sameBytes: ImageRecord | undefined,
  staging: Staging,
  options: PutOptions,
): Promise<RecordDoc> {
  const { reader, signal } = context;
  const name = image.name;
  const checksumText = formatSha256Line(image.sha256, wholeAssetName(name));
  const total = image.size + Buffer.byteLength(checksumText);
  options.onProgress?.(0, total);
  const pieces = await uploadParts(context, image, parts, staging, (sent) => options.onProgress?.(sent, total));
  const checksum = await reader.api.uploadText({
    release: reader.release,
    name: tempAssetName(checksumAssetName(name), staging.run),
    text: checksumText,
    contentType: 'text/plain',
    signal,
  });
  staging.mine.push(checksum);
  const wanted = recordFor(image, parts, new Date().toISOString(), sameBytes);
  const attachments = await attachmentEntries(reader, image, wanted, undefined, staging, signal);
  options.onProgress?.(total, total);
  if (options.mayReplace) {
    const snapshot = await reader.snapshot([name], signal);
    const now = layoutOf(name, snapshot.assets, snapshot.docs).current?.doc.image;
    if (now) await options.mayReplace(now);
  }
  return recordDoc(name, wanted, [...pieces, { name: checksumAssetName(name), id: checksum.id }, ...attachments]);
}

/** Uploads each part of the image under its temporary name; the record doc's entries for them. */
async function uploadParts(
  context: SettleContext,
  image: ImageToPut,
  parts: readonly PlannedPart[],
  staging: Staging,
  onProgress: (sent: number) => void,
): Promise<RecordDoc['assets']> {
  const { reader, signal, log } = context;
  const entries: Array<RecordDoc['assets'][number]> = [];
  let done = 0;
  for (const part of parts) {
    const temp = tempAssetName(part.name, staging.run);
    log(`uploading ${part.name} (${part.length} bytes) as ${temp}`);
    const asset = await reader.api.uploadAsset({
      release: reader.release,
      name: temp,
      path: image.path,
      start: part.start,
      length: part.length,
      signal,
      onProgress: (sent) => onProgress(done + sent),
    });
    staging.mine.push(asset);
    entries.push({ name: part.name, id: asset.id });
    done += part.length;
  }
  return entries;
}

/**
 * The record doc's entries for the attachments `wanted` names: an asset `held` already
 * binds to the same bytes is kept, any other is uploaded under the run's temporary name
 * (and pushed onto `staging.mine`, for deletion should the commit never come).
 */
async function attachmentEntries(
  reader: ReleaseReader,
  image: ImageToPut,
  wanted: ImageRecord,
  held: RecordDoc | undefined,
  staging: Staging,
  signal: AbortSignal,
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
      name: tempAssetName(ref.name, staging.run),
      text: bytes,
      contentType: 'application/octet-stream',
      signal,
    });
    staging.mine.push(asset);
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
