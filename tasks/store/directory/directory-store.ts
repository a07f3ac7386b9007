// The image store in a shared directory (an NFS or CIFS mount several hosts see), the
// second backend behind the interface: `{dir}/{tag}/` holds
//
//   blobs/{sha256}.qcow2      an image's bytes, named by their SHA-256 (so two writers of
//                             the same bytes write the same file, and nothing is replaced)
//   blobs/{sha256}.{kind}     its attachments (chunk index, provenance), named the same way
//   {name}.json               its record (images.json's entry plus the blob's name)
//   {name}.qcow2, .sha256     hard links for people and scripts, like a release's assets
//   images.json               the index, rebuilt from the records
//
// Every file is written under a temporary name in its directory, fsynced and renamed, and
// rename replaces atomically: a record always names a complete blob, so there is no swap
// to be caught in. The record is written first; the readable copies and the index follow
// it, each writer rechecking after its own writes, so concurrent writers converge. Unreferenced blobs are removed once they are older than any upload.
import { link, mkdir, open, readdir, readFile, rename, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { Failure, removeAbandonedTemps, siblingTempPath, writeFileAtomic } from '../../../src/index.ts';
import { formatSha256Line } from '../../checksum.ts';
import { readInOrder } from '../file-reads.ts';
import { imageFileName, isValidImageName } from '../names.ts';
import {
  ATTACHMENT_KINDS,
  type AttachmentKind,
  emptyIndex,
  imageRecordSchema,
  INDEX_NAME,
  MAX_ATTACHMENT_BYTES,
  parseIndex,
  recordOf,
  sameRecord,
  serializeIndex,
  verifiedAttachment,
  type ImageIndex,
} from '../record.ts';
import type { ImageStore, ImageToPut, OpenedImage, PutOptions, PutResult, RemoveOptions, RemoveResult, StoredImage, StoreListing } from '../store.ts';

/** Blobs no record names are removed when older than this: no upload takes longer. */
const UNREFERENCED_BLOB_AGE_MS = 6 * 60 * 60 * 1000;

/** The blob names this store makes: an image's bytes, or one of its attachments. */
const BLOB_NAME = new RegExp(`^[0-9a-f]{64}\\.(?:qcow2|${ATTACHMENT_KINDS.join('|')})$`);
const attachmentBlob = (kind: AttachmentKind, sha256: string): string => `${sha256}.${kind}`;

const recordFileSchema = z.object({ schemaVersion: z.literal(1), name: z.string(), image: imageRecordSchema, blob: z.string().regex(/^[0-9a-f]{64}\.qcow2$/) });
type RecordFile = z.infer<typeof recordFileSchema>;

export class DirectoryStore implements ImageStore {
  readonly location: string;
  private readonly dir: string;

  constructor(root: string, tag: string) {
    this.dir = join(root, tag);
    this.location = `store ${this.dir}`;
  }

  async list(): Promise<StoreListing> {
    if (!(await stat(this.dir).catch(() => undefined))) return { exists: false, images: [], notes: [] };
    const records = await this.records();
    const images: StoredImage[] = [];
    for (const [name, file] of [...records].sort(([a], [b]) => a.localeCompare(b))) {
      const blob = await stat(this.blobPath(file.blob)).catch(() => undefined);
      images.push(
        blob?.size === file.image.size
          ? { name, state: 'complete', record: file.image, size: file.image.size, pieces: 1 }
          : { name, state: 'incomplete', detail: `${name}'s bytes (${file.blob}) are missing`, record: file.image, size: file.image.size, pieces: 0 },
      );
    }
    return { exists: true, images, notes: [] };
  }

  async open(name: string): Promise<OpenedImage> {
    const file = await this.record(name);
    if (!file) return { status: 'missing', detail: `${this.location} has no ${name}` };
    const path = this.blobPath(file.blob);
    const size = (await stat(path).catch(() => undefined))?.size;
    if (size !== file.image.size) return { status: 'missing', detail: `${this.location}: ${name}'s bytes (${file.blob}) are missing` };
    return {
      status: 'ready',
      name,
      sha256: file.image.sha256,
      size,
      record: file.image,
      readAttachment: (kind, signal) => this.readAttachment(file, kind, signal),
      pieces: [
        {
          id: file.blob,
          label: imageFileName(name),
          size,
          async read({ from, to, signal, sink }) {
            try {
              await readInOrder(path, { from, ...(to !== undefined ? { to } : {}), signal, each: sink });
            } catch (error) {
              if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new Failure('not-found', `${path} is gone`);
              throw error;
            }
          },
        },
      ],
    };
  }

  async put(image: ImageToPut, options: PutOptions): Promise<PutResult> {
    await mkdir(join(this.dir, 'blobs'), { recursive: true });
    // What a writer of this host killed mid-put left (its temp names carry its pid): gone before this one writes.
    await removeAbandonedTemps([this.dir, join(this.dir, 'blobs')]);
    const blob = `${image.sha256}.qcow2`;
    const previous = await this.record(image.name);
    const held = (await stat(this.blobPath(blob)).catch(() => undefined))?.size === image.size;
    const uploaded = options.force || !held;
    // Replacing another image (or the same bytes, forced) is decided now, before bytes move,
    // and again with the record found right before the new one is written.
    const replaces = (file: RecordFile | undefined): file is RecordFile => file !== undefined && (file.blob !== blob || options.force);
    if (replaces(previous) && options.mayReplace) await options.mayReplace(previous.image);
    if (uploaded) await this.copyIn(image, this.blobPath(blob), options);
    // A held blob may be an old unreferenced one: made young again, no writer's sweep removes it under this record.
    else await utimes(this.blobPath(blob), new Date(), new Date());
    const record = recordOf(
      image,
      [{ name: imageFileName(image.name), size: image.size }],
      new Date().toISOString(),
      attachmentBlob,
      previous?.blob === blob ? previous.image : undefined,
    );
    await this.storeAttachments(image, record);
    if (!uploaded && previous?.blob === blob && sameRecord(previous.image, record)) {
      options.log(`${image.name}: ${this.location} already holds sha256 ${image.sha256.slice(0, 12)}…; nothing to upload`);
    } else {
      const now = options.mayReplace ? await this.record(image.name) : undefined;
      if (replaces(now) && options.mayReplace) await options.mayReplace(now.image);
      const file: RecordFile = { schemaVersion: 1, name: image.name, image: record, blob };
      await writeFileAtomic(join(this.dir, `${image.name}.json`), `${JSON.stringify(file, null, 2)}\n`);
      options.log(`${image.name}: ${uploaded ? 'stored' : 'recorded'} in ${this.location}, sha256 ${image.sha256}`);
    }
    await this.syncReadableCopy(image.name);
    await this.syncIndex();
    await this.removeUnreferencedBlobs();
    return { uploaded };
  }

  async remove(names: readonly string[], options: RemoveOptions): Promise<RemoveResult> {
    const records = await this.records();
    const index = await this.readIndex();
    const deleted: string[] = [];
    const notInStore: string[] = [];
    for (const name of names) {
      const files = [`${name}.json`, `${imageFileName(name)}.sha256`, imageFileName(name)];
      const present = (await Promise.all(files.map(async (file) => ((await stat(join(this.dir, file)).catch(() => undefined)) ? file : undefined)))).filter(
        (file): file is string => file !== undefined,
      );
      if (!present.length) notInStore.push(name);
      deleted.push(...present);
      if (!options.dryRun) for (const file of present) await rm(join(this.dir, file), { force: true });
    }
    const unindexed = names.filter((name) => records.has(name) || index?.images[name] !== undefined);
    if (!options.dryRun) await this.syncIndex();
    return { deleted, notInStore, unindexed };
  }

  async probe(name: string): Promise<string> {
    const file = await this.record(name);
    return file ? `sha256 ${file.image.sha256}` : 'image missing';
  }

  private blobPath(blob: string): string {
    return join(this.dir, 'blobs', blob);
  }

  /** Attachment blobs before the record that names them; one already there is made young again, as a held image blob is. */
  private async storeAttachments(image: ImageToPut, record: ReturnType<typeof recordOf>): Promise<void> {
    for (const kind of ATTACHMENT_KINDS) {
      const ref = record.attachments?.[kind];
      const bytes = image.attachments?.[kind];
      if (!ref || !bytes) continue;
      const path = this.blobPath(ref.name);
      if ((await stat(path).catch(() => undefined))?.size === ref.size) await utimes(path, new Date(), new Date());
      else await writeFileAtomic(path, bytes);
    }
  }

  private async readAttachment(file: RecordFile, kind: AttachmentKind, signal: AbortSignal): Promise<Uint8Array | undefined> {
    const ref = file.image.attachments?.[kind];
    if (!ref) return undefined;
    const where = `${file.name} in ${this.location}`;
    if (!BLOB_NAME.test(ref.name))
      throw new Failure('integrity', `the record of ${where} names ${JSON.stringify(ref.name)} for its ${kind}, not a blob of this store`);
    signal.throwIfAborted();
    const path = this.blobPath(ref.name);
    const size = (await stat(path).catch(() => undefined))?.size;
    if (size === undefined) throw new Failure('not-found', `the ${kind} of ${where} (${ref.name}) is missing`);
    if (size > MAX_ATTACHMENT_BYTES) throw new Failure('integrity', `the ${kind} of ${where} is ${size} bytes, more than any attachment`);
    return verifiedAttachment(await readFile(path, { signal }), ref, kind, where);
  }

  private async records(): Promise<Map<string, RecordFile>> {
    const records = new Map<string, RecordFile>();
    const names = await readdir(this.dir).catch(() => [] as string[]);
    for (const entry of names) {
      const name = entry.endsWith('.json') ? entry.slice(0, -'.json'.length) : '';
      if (!isValidImageName(name) || entry === INDEX_NAME) continue;
      const file = await this.record(name);
      if (file) records.set(name, file);
    }
    return records;
  }

  /** One image's record, without reading the others. */
  private async record(name: string): Promise<RecordFile | undefined> {
    if (!isValidImageName(name)) return undefined; // never a path outside the store
    const parsed = recordFileSchema.safeParse(JSON.parse(await readFile(join(this.dir, `${name}.json`), 'utf8').catch(() => 'null')));
    return parsed.success && parsed.data.name === name ? parsed.data : undefined;
  }

  private async readIndex(): Promise<ImageIndex | undefined> {
    const text = await readFile(join(this.dir, INDEX_NAME), 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    try {
      return parseIndex(text, `${INDEX_NAME} in ${this.location}`);
    } catch {
      return undefined;
    }
  }

  /**
   * Points `{name}.qcow2` and `{name}.qcow2.sha256` at what the record names now. Two
   * writers of different bytes may interleave their record and link writes; each one, after
   * its own writes, brings both files back to the record, so the last to look leaves them
   * agreeing with it (as syncIndex does for the index).
   */
  private async syncReadableCopy(name: string): Promise<void> {
    const copy = join(this.dir, imageFileName(name));
    const checksum = `${copy}.sha256`;
    for (let round = 0; round < 20; round++) {
      const file = await this.record(name);
      if (!file) return; // removed meanwhile: `release remove` took the copies too
      const [blobInfo, copyInfo] = await Promise.all([stat(this.blobPath(file.blob)).catch(() => undefined), stat(copy).catch(() => undefined)]);
      if (!blobInfo) return; // the record names missing bytes: list() says so, a new put mends it
      const wantedChecksum = formatSha256Line(file.image.sha256, imageFileName(name));
      const linked = copyInfo?.ino === blobInfo.ino && copyInfo.dev === blobInfo.dev;
      const checksumRight = (await readFile(checksum, 'utf8').catch(() => undefined)) === wantedChecksum;
      if (linked && checksumRight) return;
      if (!linked) await this.linkIn(this.blobPath(file.blob), copy);
      if (!checksumRight) await writeFileAtomic(checksum, wantedChecksum);
    }
  }

  /** Rewrites the index from the records until what is there is what they say (other writers may rewrite it meanwhile). */
  private async syncIndex(): Promise<void> {
    for (let round = 0; round < 20; round++) {
      const index = emptyIndex();
      for (const [name, file] of await this.records()) index.images[name] = file.image;
      const wanted = serializeIndex(index);
      if ((await readFile(join(this.dir, INDEX_NAME), 'utf8').catch(() => undefined)) === wanted) return;
      await writeFileAtomic(join(this.dir, INDEX_NAME), wanted);
    }
  }

  private async removeUnreferencedBlobs(): Promise<void> {
    const referenced = new Set(
      [...(await this.records()).values()].flatMap((file) => [file.blob, ...Object.values(file.image.attachments ?? {}).map((ref) => ref.name)]),
    );
    for (const blob of await readdir(join(this.dir, 'blobs')).catch(() => [] as string[])) {
      if (referenced.has(blob)) continue;
      const info = await stat(this.blobPath(blob)).catch(() => undefined);
      if (info && Date.now() - info.mtimeMs > UNREFERENCED_BLOB_AGE_MS) await rm(this.blobPath(blob), { force: true });
    }
  }

  private async copyIn(image: ImageToPut, target: string, options: PutOptions): Promise<void> {
    const temp = siblingTempPath(target);
    try {
      const handle = await open(temp, 'w');
      try {
        await readInOrder(image.path, {
          signal: options.signal,
          each: async (chunk, offset) => {
            await handle.write(chunk);
            options.onProgress?.(offset + chunk.length, image.size);
          },
        });
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, target);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
  }

  private async linkIn(source: string, target: string): Promise<void> {
    const temp = siblingTempPath(target);
    try {
      await link(source, temp);
      await rename(temp, target);
    } finally {
      // rename(2) does nothing, and succeeds, when both names are already links to one file:
      // another writer linked the same blob here first. The temporary name is then still there.
      await rm(temp, { force: true });
    }
  }
}
