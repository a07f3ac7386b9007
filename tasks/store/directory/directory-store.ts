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
// it, each writer rechecking after its own writes, so concurrent writers converge.
// Unreferenced blobs are removed once they are older than any upload.
//
// Whoever can write the share can put anything there, so nothing in the store is
// followed or waited on (entries.ts): the store reads and removes only regular files
// under names it makes, and reports anything else. A damaged record is a damaged image,
// not a broken store. `dir` itself must exist: an unmounted share is an error, never a
// fresh empty store.
import { link, lutimes, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { Failure, removeAbandonedTemps, siblingTempPath, writeFileAtomic } from '../../../src/index.ts';
import { formatSha256Line } from '../../checksum.ts';
import { quoteUntrusted } from '../../untrusted-text.ts';
import { readInOrder } from '../file-reads.ts';
import { imageFileName, isValidImageName } from '../names.ts';
import {
  ATTACHMENT_KINDS,
  type AttachmentKind,
  type AttachmentRef,
  attachmentRange,
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
import { lstatOrUndefined, oddKind, readSmallBytes, readSmallFile } from './entries.ts';

/** Blobs no record names are removed when older than this: no upload takes longer. */
const UNREFERENCED_BLOB_AGE_MS = 6 * 60 * 60 * 1000;
/** A record is a few KiB; the index a few per image. Anything larger is not one. */
const RECORD_LIMIT = 1024 * 1024;
const INDEX_LIMIT = 16 * 1024 * 1024;
const IMAGE_BLOB_NAME = /^[0-9a-f]{64}\.qcow2$/;

/** The blob names this store makes: an image's bytes, or one of its attachments. */
const BLOB_NAME = new RegExp(`^[0-9a-f]{64}\\.(?:qcow2|${ATTACHMENT_KINDS.join('|')})$`);
const attachmentBlob = (kind: AttachmentKind, sha256: string): string => `${sha256}.${kind}`;

const recordFileSchema = z.object({ schemaVersion: z.literal(1), name: z.string(), image: imageRecordSchema, blob: z.string().regex(IMAGE_BLOB_NAME) });
type RecordFile = z.infer<typeof recordFileSchema>;

type RecordRead = { readonly kind: 'ok'; readonly file: RecordFile } | { readonly kind: 'missing' } | { readonly kind: 'damaged'; readonly problem: string };

/** What a look at the store's top folder found: the records, and what is wrong with the rest. */
interface Scan {
  readonly records: Map<string, RecordFile>;
  /** Image name -> why its record cannot be used. */
  readonly damaged: Map<string, string>;
  /** Entries that are not the store's, one line each. */
  readonly skipped: string[];
}

export class DirectoryStore implements ImageStore {
  readonly location: string;
  private readonly dir: string;

  constructor(
    private readonly root: string,
    tag: string,
  ) {
    this.dir = join(root, tag);
    this.location = `store ${this.dir}`;
  }

  async list(): Promise<StoreListing> {
    if (!(await this.tagDirExists())) return { exists: false, images: [], notes: [] };
    const scan = await this.scan();
    const images: StoredImage[] = [];
    for (const [name, file] of scan.records) {
      const blob = await this.blobProblem(file);
      images.push(
        blob === undefined
          ? { name, state: 'complete', record: file.image, size: file.image.size, pieces: 1 }
          : { name, state: 'incomplete', detail: `${name}'s bytes (${file.blob}) ${blob}`, record: file.image, size: file.image.size, pieces: 0 },
      );
    }
    for (const [name, problem] of scan.damaged) images.push({ name, state: 'damaged', detail: `${name}.json ${problem}`, size: 0, pieces: 0 });
    images.sort((a, b) => a.name.localeCompare(b.name));
    return { exists: true, images, notes: [...scan.skipped, ...[...scan.damaged].map(([name, problem]) => this.damagedNote(name, problem))] };
  }

  async open(name: string): Promise<OpenedImage> {
    if (!(await this.tagDirExists())) return { status: 'missing', detail: `${this.location} does not exist` };
    const found = await this.record(name);
    if (found.kind === 'missing') return { status: 'missing', detail: `${this.location} has no ${name}` };
    if (found.kind === 'damaged') return { status: 'missing', detail: this.damagedNote(name, found.problem) };
    const { file } = found;
    const path = this.blobPath(file.blob);
    const problem = await this.blobProblem(file);
    if (problem !== undefined) return { status: 'missing', detail: `${this.location}: ${name}'s bytes (${file.blob}) ${problem}` };
    const size = file.image.size;
    return {
      status: 'ready',
      name,
      sha256: file.image.sha256,
      size,
      record: file.image,
      readAttachment: (kind, signal) => this.readAttachment(file, kind, signal),
      readAttachmentRange: (kind, from, to, signal) => this.readAttachmentRange(file, kind, { from, to }, signal),
      pieces: [
        {
          id: file.blob,
          label: imageFileName(name),
          size,
          async read({ from, to, signal, sink }) {
            try {
              await readInOrder(path, { from, ...(to !== undefined ? { to } : {}), signal, regularOnly: true, each: sink });
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
    try {
      return await this.putInto(image, options);
    } catch (error) {
      // The share went away under the upload (unmounted, removed): say so, never recreate it.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' && !(await stat(this.root).catch(() => undefined))?.isDirectory()) {
        throw new Failure('setup', `release.dir ${this.root} went away during the upload of ${image.name} (an unmounted share?); mount it and upload again`, {
          cause: error,
        });
      }
      throw error;
    }
  }

  private async putInto(image: ImageToPut, options: PutOptions): Promise<PutResult> {
    if (!(await this.tagDirExists())) await mkdir(this.dir).catch(ignoreExists);
    const blobs = join(this.dir, 'blobs');
    const blobsInfo = await lstatOrUndefined(blobs);
    if (!blobsInfo) await mkdir(blobs).catch(ignoreExists);
    else if (!blobsInfo.isDirectory()) throw this.notOurs(blobs, blobsInfo);
    // What a writer of this host killed mid-put left (its temp names carry its pid): gone before this one writes.
    await removeAbandonedTemps([this.dir, blobs]);
    const blob = `${image.sha256}.qcow2`;
    const found = await this.record(image.name);
    const previous = found.kind === 'ok' ? found.file : undefined;
    if (found.kind === 'damaged') options.log(`${image.name}: replacing its damaged record (${this.damagedNote(image.name, found.problem)})`);
    const held = await lstatOrUndefined(this.blobPath(blob));
    // Only a regular file of the right size counts; anything else under that name is replaced.
    const uploaded = options.force || !(held?.isFile() && held.size === image.size);
    // Replacing another image (or the same bytes, forced) is decided now, before bytes move,
    // and again with the record found right before the new one is written.
    const replaces = (file: RecordFile | undefined): file is RecordFile => file !== undefined && (file.blob !== blob || options.force);
    if (replaces(previous) && options.mayReplace) await options.mayReplace(previous.image);
    if (uploaded) await this.copyIn(image, this.blobPath(blob), options);
    // A held blob may be an old unreferenced one: made young again, no writer's sweep removes it under this record.
    else await lutimes(this.blobPath(blob), new Date(), new Date());
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
      const again = options.mayReplace ? await this.record(image.name) : undefined;
      const now = again?.kind === 'ok' ? again.file : undefined;
      if (replaces(now) && options.mayReplace) await options.mayReplace(now.image);
      const file: RecordFile = { schemaVersion: 1, name: image.name, image: record, blob };
      const recordPath = join(this.dir, `${image.name}.json`);
      const there = await lstatOrUndefined(recordPath);
      if (there?.isDirectory()) throw this.notOurs(recordPath, there);
      await writeFileAtomic(recordPath, `${JSON.stringify(file, null, 2)}\n`);
      options.log(`${image.name}: ${uploaded ? 'stored' : 'recorded'} in ${this.location}, sha256 ${image.sha256}`);
    }
    // The image is in the store now; what follows only derives from the records, and
    // nothing someone else left in the store makes it fail.
    const notes = [...(await this.syncReadableCopy(image.name)), ...(await this.syncIndex()), ...(await this.removeUnreferencedBlobs())];
    for (const note of new Set(notes)) options.log(note);
    return { uploaded };
  }

  async remove(names: readonly string[], options: RemoveOptions): Promise<RemoveResult> {
    if (!(await this.tagDirExists())) return { deleted: [], notInStore: [...names], unindexed: [] };
    const scan = await this.scan();
    const index = await this.readIndex();
    const deleted: string[] = [];
    const notInStore: string[] = [];
    const notes: string[] = [];
    for (const name of names) {
      if (!isValidImageName(name)) {
        notInStore.push(name);
        continue;
      }
      // Damaged records too (a FIFO, a link, bad JSON): unlinking an entry never touches what it points at.
      const present: string[] = [];
      for (const file of [`${name}.json`, `${imageFileName(name)}.sha256`, imageFileName(name)]) {
        const info = await lstatOrUndefined(join(this.dir, file));
        if (!info) continue;
        if (info.isDirectory()) notes.push(this.notOurs(join(this.dir, file), info).message);
        else present.push(file);
      }
      if (!present.length) notInStore.push(name);
      deleted.push(...present);
      if (!options.dryRun) for (const file of present) await rm(join(this.dir, file), { force: true });
    }
    const unindexed = names.filter((name) => scan.records.has(name) || scan.damaged.has(name) || index?.images[name] !== undefined);
    if (!options.dryRun) notes.push(...(await this.syncIndex()));
    return { deleted, notInStore, unindexed, ...(notes.length ? { notes: [...new Set(notes)] } : {}) };
  }

  async probe(name: string): Promise<string> {
    if (!(await this.tagDirExists())) return 'image missing';
    const found = await this.record(name);
    if (found.kind === 'damaged') return `record damaged: ${found.problem}`;
    return found.kind === 'ok' ? `sha256 ${found.file.image.sha256}` : 'image missing';
  }

  private blobPath(blob: string): string {
    return join(this.dir, 'blobs', blob);
  }

  /**
   * Whether `{dir}/{tag}` is there. `dir` must be (an unmounted share is a setup error,
   * never an empty store), and the tag's folder must be a directory itself, not a link.
   */
  private async tagDirExists(): Promise<boolean> {
    if (!(await stat(this.root).catch(() => undefined))?.isDirectory()) {
      throw new Failure('setup', `release.dir ${this.root} is not a directory: create it (or mount the shared storage there)`);
    }
    const info = await lstatOrUndefined(this.dir);
    if (!info) return false;
    if (!info.isDirectory()) throw this.notOurs(this.dir, info);
    return true;
  }

  /** Attachment blobs before the record that names them; one already there is made young again, as a held image blob is. */
  private async storeAttachments(image: ImageToPut, record: ReturnType<typeof recordOf>): Promise<void> {
    for (const kind of ATTACHMENT_KINDS) {
      const ref = record.attachments?.[kind];
      const bytes = image.attachments?.[kind];
      if (!ref || !bytes) continue;
      const path = this.blobPath(ref.name);
      const there = await lstatOrUndefined(path);
      if (there?.isFile() && there.size === ref.size) await lutimes(path, new Date(), new Date());
      else if (there?.isDirectory()) throw this.notOurs(path, there);
      else await writeFileAtomic(path, bytes);
    }
  }

  private async readAttachment(file: RecordFile, kind: AttachmentKind, signal: AbortSignal): Promise<Uint8Array | undefined> {
    const found = await this.attachmentBlob(file, kind, signal);
    if (!found) return undefined;
    const { ref, where } = found;
    const read = await readSmallBytes(found.path, MAX_ATTACHMENT_BYTES);
    if (read.kind === 'missing') throw new Failure('not-found', `the ${kind} of ${where} (${ref.name}) is missing`);
    if (read.kind === 'odd') throw new Failure('integrity', `the ${kind} of ${where} (${ref.name}) ${read.problem}`);
    return verifiedAttachment(read.bytes, ref, kind, where);
  }

  private async readAttachmentRange(
    file: RecordFile,
    kind: AttachmentKind,
    span: { from: number; to: number },
    signal: AbortSignal,
  ): Promise<Uint8Array | undefined> {
    const found = await this.attachmentBlob(file, kind, signal);
    if (!found) return undefined;
    const { ref, where, path } = found;
    return attachmentRange(ref, kind, where, span, async (from, to, sink) => {
      try {
        await readInOrder(path, { from, to, signal, regularOnly: true, each: sink });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new Failure('not-found', `the ${kind} of ${where} (${ref.name}) is missing`);
        throw error;
      }
    });
  }

  /** The attachment of `kind` the record names and the path of its blob, checked as far as a name can be; undefined when it names none. */
  private async attachmentBlob(
    file: RecordFile,
    kind: AttachmentKind,
    signal: AbortSignal,
  ): Promise<{ ref: AttachmentRef; where: string; path: string } | undefined> {
    const ref = file.image.attachments?.[kind];
    if (!ref) return undefined;
    const where = `${file.name} in ${this.location}`;
    if (!BLOB_NAME.test(ref.name))
      throw new Failure('integrity', `the record of ${where} names ${JSON.stringify(ref.name)} for its ${kind}, not a blob of this store`);
    signal.throwIfAborted();
    const blobs = await lstatOrUndefined(join(this.dir, 'blobs'));
    if (blobs && !blobs.isDirectory()) throw new Failure('integrity', `the ${kind} of ${where} is in blobs/, which is ${oddKind(blobs)}`);
    return { ref, where, path: this.blobPath(ref.name) };
  }

  private notOurs(path: string, info: Parameters<typeof oddKind>[0]): Failure {
    return new Failure(
      'setup',
      `${path} is ${oddKind(info) ?? 'a file'}, which this store never makes there; it follows no link and writes through none: move it aside`,
    );
  }

  private damagedNote(name: string, problem: string): string {
    return `${this.location}: ${name}.json ${problem}; ${name} is damaged (upload it again, or release remove ${name})`;
  }

  /** Why the record's blob cannot be read as its bytes, or undefined when it can. */
  private async blobProblem(file: RecordFile): Promise<string | undefined> {
    const blobs = await lstatOrUndefined(join(this.dir, 'blobs'));
    if (blobs && !blobs.isDirectory()) return `are in blobs/, which is ${oddKind(blobs)}`;
    const info = await lstatOrUndefined(this.blobPath(file.blob));
    if (!info) return 'are missing';
    const odd = oddKind(info);
    if (odd) return `are ${odd}`;
    if (info.size !== file.image.size) return `are ${info.size} bytes, not the ${file.image.size} its record says`;
    return undefined;
  }

  /** Every record, and every entry that should be one and is not, read from the top folder without following anything. */
  private async scan(): Promise<Scan> {
    const records = new Map<string, RecordFile>();
    const damaged = new Map<string, string>();
    const skipped: string[] = [];
    const entries = await readdir(this.dir, { withFileTypes: true }).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return [];
      throw error;
    });
    for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (!entry.name.endsWith('.json') || entry.name === INDEX_NAME || entry.name.startsWith('.')) continue;
      const name = entry.name.slice(0, -'.json'.length);
      if (!isValidImageName(name)) {
        skipped.push(`${this.location}: skipped ${quoteUntrusted(entry.name)}, which is not an image's record`);
        continue;
      }
      const found = await this.record(name);
      if (found.kind === 'ok') records.set(name, found.file);
      else if (found.kind === 'damaged') damaged.set(name, found.problem);
    }
    return { records, damaged, skipped };
  }

  /** One image's record, without reading the others. */
  private async record(name: string): Promise<RecordRead> {
    if (!isValidImageName(name)) return { kind: 'missing' }; // never a path outside the store
    const read = await readSmallFile(join(this.dir, `${name}.json`), RECORD_LIMIT);
    if (read.kind === 'missing') return read;
    if (read.kind === 'odd') return { kind: 'damaged', problem: read.problem };
    let json: unknown;
    try {
      json = JSON.parse(read.text);
    } catch {
      return { kind: 'damaged', problem: 'is not valid JSON' };
    }
    const parsed = recordFileSchema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return { kind: 'damaged', problem: `is not a valid record (${issue ? `${issue.path.join('.') || 'top level'}: ${issue.message}` : 'bad shape'})` };
    }
    if (parsed.data.name !== name) return { kind: 'damaged', problem: `is the record of ${quoteUntrusted(parsed.data.name)}, not of ${name}` };
    return { kind: 'ok', file: parsed.data };
  }

  private async readIndex(): Promise<ImageIndex | undefined> {
    const read = await readSmallFile(join(this.dir, INDEX_NAME), INDEX_LIMIT);
    if (read.kind !== 'text') return undefined;
    try {
      return parseIndex(read.text, `${INDEX_NAME} in ${this.location}`);
    } catch {
      return undefined;
    }
  }

  /**
   * Points `{name}.qcow2` and `{name}.qcow2.sha256` at what the record names now. Two
   * writers of different bytes may interleave their record and link writes; each one, after
   * its own writes, brings both files back to the record, so the last to look leaves them
   * agreeing with it (as syncIndex does for the index). Returns notes on what it left alone.
   */
  private async syncReadableCopy(name: string): Promise<string[]> {
    const copy = join(this.dir, imageFileName(name));
    const checksum = `${copy}.sha256`;
    for (let round = 0; round < 20; round++) {
      const found = await this.record(name);
      if (found.kind !== 'ok') return []; // removed meanwhile: `release remove` took the copies too
      const file = found.file;
      const [blobInfo, copyInfo, checksumInfo] = await Promise.all([
        lstatOrUndefined(this.blobPath(file.blob)),
        lstatOrUndefined(copy),
        lstatOrUndefined(checksum),
      ]);
      if (!blobInfo?.isFile()) return []; // the record names missing bytes: list() says so, a new put mends it
      // A directory cannot be renamed over: someone else's, left alone.
      const blocked = [copyInfo, checksumInfo].map((info, at) => (info?.isDirectory() ? this.notOurs(at === 0 ? copy : checksum, info).message : undefined));
      const wantedChecksum = formatSha256Line(file.image.sha256, imageFileName(name));
      const linked = copyInfo?.isFile() === true && copyInfo.ino === blobInfo.ino && copyInfo.dev === blobInfo.dev;
      const checksumRight = (await readSmallText(checksum)) === wantedChecksum;
      const linkDone = linked || blocked[0] !== undefined;
      const checksumDone = checksumRight || blocked[1] !== undefined;
      if (linkDone && checksumDone) return blocked.filter((note): note is string => note !== undefined);
      if (!linkDone) await this.linkIn(this.blobPath(file.blob), copy);
      if (!checksumDone) await writeFileAtomic(checksum, wantedChecksum);
    }
    return [];
  }

  /**
   * Rewrites the index from the records until what is there is what they say (other
   * writers may rewrite it meanwhile). Returns notes on damaged records it left out, or on
   * an index it could not replace.
   */
  private async syncIndex(): Promise<string[]> {
    const path = join(this.dir, INDEX_NAME);
    for (let round = 0; round < 20; round++) {
      const scan = await this.scan();
      const notes = [...scan.skipped, ...[...scan.damaged].map(([name, problem]) => this.damagedNote(name, problem))];
      const there = await lstatOrUndefined(path);
      if (there?.isDirectory()) return [...notes, this.notOurs(path, there).message];
      const index = emptyIndex();
      for (const [name, file] of scan.records) index.images[name] = file.image;
      const wanted = serializeIndex(index);
      if ((await readSmallText(path)) === wanted) return notes;
      await writeFileAtomic(path, wanted);
    }
    return [];
  }

  /** Removes old blobs no record names: regular files under blob names only, never through a link. Returns notes on what it left alone. */
  private async removeUnreferencedBlobs(): Promise<string[]> {
    const blobs = join(this.dir, 'blobs');
    const before = await lstatOrUndefined(blobs);
    if (!before?.isDirectory()) return [];
    const referenced = new Set(
      [...(await this.scan()).records.values()].flatMap((file) => [file.blob, ...Object.values(file.image.attachments ?? {}).map((ref) => ref.name)]),
    );
    const notes: string[] = [];
    const entries = await readdir(blobs, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      if (referenced.has(entry.name) || entry.name.startsWith('.')) continue;
      const odd = oddKind(entry);
      if (!BLOB_NAME.test(entry.name) || odd) {
        notes.push(`${this.location}: left blobs/${quoteUntrusted(entry.name)} alone (${odd ?? 'not a blob name'}; the store removes only blobs it made)`);
        continue;
      }
      const info = await lstatOrUndefined(join(blobs, entry.name));
      if (!info?.isFile() || Date.now() - info.mtimeMs <= UNREFERENCED_BLOB_AGE_MS) continue;
      // blobs/ must still be the directory looked at (not swapped for a link meanwhile).
      const now = await lstatOrUndefined(blobs);
      if (!now?.isDirectory() || now.ino !== before.ino || now.dev !== before.dev) break;
      await rm(join(blobs, entry.name), { force: true });
    }
    return notes;
  }

  private async copyIn(image: ImageToPut, target: string, options: PutOptions): Promise<void> {
    const temp = siblingTempPath(target);
    try {
      // wx: a name someone placed there (a link, a FIFO) is never opened through.
      const handle = await open(temp, 'wx');
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
      const there = await lstatOrUndefined(target);
      if (there?.isDirectory()) throw this.notOurs(target, there);
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

function ignoreExists(error: NodeJS.ErrnoException): void {
  if (error.code !== 'EEXIST') throw error;
}

/** A small file's text when it is a regular file, else undefined. */
async function readSmallText(path: string): Promise<string | undefined> {
  const read = await readSmallFile(path, INDEX_LIMIT);
  return read.kind === 'text' ? read.text : undefined;
}
