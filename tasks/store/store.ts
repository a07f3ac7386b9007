// The image store: where built images are shared between machines. The upload node,
// `release check|remove|retag`, `images list|download` (and a remote cache) are written
// against this interface only; a backend (registered in backends.ts) keeps to
// itself how it lays bytes out, names temporaries and replaces an image in place.
//
// Every backend promises:
// - any number of processes on any number of machines may `put` at once (different images
//   or the same one) and the store converges: every image complete, the index naming each;
// - a reader never gets bytes that do not match the record's SHA-256 (getImage verifies);
// - a `put` interrupted at any point (SIGKILL included) leaves the previous image readable
//   or is finished (or undone) by the next `put` of that image from any machine.
import type { ImageSources } from './catalog.ts';
import type { AttachmentKind, ImageRecord, SourceCommit } from './record.ts';

export type { AttachmentKind, ImageRecord, SourceCommit } from './record.ts';

/** Small files kept with an image, by kind (each at most MAX_ATTACHMENT_BYTES, held in memory). */
export type Attachments = Readonly<Partial<Record<AttachmentKind, Uint8Array>>>;

export interface ImageStore {
  /** Where the images live, for messages: `release latest of acme/images`. */
  readonly location: string;
  /**
   * Every image the store holds, read from the per-image records (the index only for
   * images that have none). `exists: false` when the location itself (the release) does
   * not exist yet.
   */
  list(signal: AbortSignal): Promise<StoreListing>;
  /** Locates one image's record and bytes for reading; `getImage` turns this into a verified file. */
  open(name: string, signal: AbortSignal): Promise<OpenedImage>;
  /**
   * Puts a local image with its record. Skips the bytes when the store already holds this
   * SHA-256 in the same layout (unless `force`), but still brings the record up to date.
   */
  put(image: ImageToPut, options: PutOptions): Promise<PutResult>;
  /** Removes images (bytes, checksum, record, leftovers of their uploads) and their index entries. Nothing else. */
  remove(names: readonly string[], options: RemoveOptions): Promise<RemoveResult>;
  /** A short value that changes whenever what the store holds for `name` changes (the upload node's probe). */
  probe(name: string, signal: AbortSignal): Promise<string>;
  /** Only for backends whose locations are tags (GitHub releases): point this location at `version`. */
  readonly retag?: (version: string, options: RetagOptions) => Promise<RetagResult>;
  /** Only for backends whose locations have descriptions (GitHub releases): read and write them. */
  readonly descriptions?: LocationDescriptions;
}

/** The text a location of the store (a release) shows people, by tag: any tag, not only the store's own. */
export interface LocationDescriptions {
  /** Where the locations are, for messages (`acme/images`). */
  readonly where: string;
  /** The description and web page of the location `tag`; undefined when there is no such location. */
  read(tag: string, signal: AbortSignal): Promise<{ readonly text: string; readonly url?: string } | undefined>;
  /** Replaces the description of the existing location `tag`. */
  write(tag: string, text: string, signal: AbortSignal): Promise<void>;
}

export interface StoreListing {
  readonly exists: boolean;
  /** Sorted by name. */
  readonly images: readonly StoredImage[];
  /** Things the user should know (a damaged index that was ignored, …), one line each. */
  readonly notes: readonly string[];
}

export interface StoredImage {
  readonly name: string;
  /**
   * - `complete`: every piece is there; `getImage` can fetch it now
   * - `replacing`: an upload is swapping it and no complete copy can be read this moment
   * - `incomplete`: pieces are missing and no upload is underway (`detail` names them)
   * - `damaged`: its record cannot be read or is not a valid one (`detail` says which); an
   *   upload of the image replaces it, `remove` removes it
   */
  readonly state: 'complete' | 'replacing' | 'incomplete' | 'damaged';
  readonly detail?: string;
  /** From the image's own record, else from the index; undefined for bytes nobody recorded. */
  readonly record?: ImageRecord;
  /** Bytes as stored, and how many pieces they are stored as. */
  readonly size: number;
  readonly pieces: number;
}

export type OpenedImage =
  | {
      readonly status: 'ready';
      readonly name: string;
      /** What the bytes must hash to (the record's SHA-256, or the stored `.sha256` for unrecorded images). */
      readonly sha256: string;
      readonly size: number;
      readonly record?: ImageRecord;
      /** The bytes, in order. */
      readonly pieces: readonly ImagePiece[];
      /**
       * An attachment the record names, verified against the record's size and SHA-256
       * (an `integrity` Failure when it does not match); undefined when it names none.
       */
      readAttachment(kind: AttachmentKind, signal: AbortSignal): Promise<Uint8Array | undefined>;
      /**
       * Bytes [from, to) of an attachment the record names, `to` clipped to its recorded size
       * (an empty array when from >= size); undefined when the record names none. NOT verified
       * against the record's SHA-256 (a range cannot be): only for readers that never rely on
       * what they read (the chunk index: the image's own SHA-256 decides). A name that is not
       * one this store would make, or a missing attachment, fails as readAttachment does
       * (`integrity`, `not-found` Failures); a short read is an error, never a short result.
       */
      readAttachmentRange(kind: AttachmentKind, from: number, to: number, signal: AbortSignal): Promise<Uint8Array | undefined>;
    }
  /** No complete copy can be read right now because an upload is replacing it: wait and open again. */
  | { readonly status: 'replacing'; readonly detail: string }
  /** The store does not hold it (or holds it damaged): `detail` says which. */
  | { readonly status: 'missing'; readonly detail: string };

export interface ImagePiece {
  /** Stable while these bytes stay in the store (resume state is keyed by it). */
  readonly id: string;
  /** For messages (the asset or file name). */
  readonly label: string;
  readonly size: number;
  /**
   * Streams bytes [from, to) into `sink`, resuming after resets itself. Throws a
   * `not-found` Failure when the piece is gone (replaced meanwhile). A read to the end
   * that cannot resume (the server ignores ranges) calls `onRestart` and starts again at
   * byte 0; a bounded read (`to` given) fails instead.
   */
  read(request: PieceRead): Promise<void>;
}

export interface PieceRead {
  readonly from: number;
  /** Exclusive end of the range; the piece's size when absent. */
  readonly to?: number;
  readonly signal: AbortSignal;
  /** May keep using `chunk` until the promise it returns settles; returns nothing when done with it. */
  readonly sink: (chunk: Buffer, offset: number) => Promise<void> | void;
  readonly onRestart: () => void;
}

/** A local image and what its record will say (see `readLocalImage`). */
export interface ImageToPut {
  readonly name: string;
  /** Absolute path of the `{name}.qcow2` to upload. */
  readonly path: string;
  readonly size: number;
  readonly sha256: string;
  readonly cacheKey: string;
  /** The qcow2 compression type, when known (see ImageRecord). */
  readonly compression?: ImageRecord['compression'];
  readonly versions: Readonly<Record<string, string>>;
  readonly sources: ImageSources;
  /** Stored before the record that names them, and replaced with the image. */
  readonly attachments?: Attachments;
  /** The commit the image was built from; undefined outside a git checkout. */
  readonly commit?: SourceCommit;
}

export interface PutOptions {
  readonly force: boolean;
  /**
   * Asked before an image the store holds is replaced by other bytes (or by the same bytes
   * under `force`), with the record of the image to be replaced; throws a Failure to refuse.
   * A backend asks when it decides to replace: before any bytes move, and again with what
   * it finds right before it writes the new record (another writer may have replaced the
   * image meanwhile), so a refusal leaves the store as it was. Not asked when the store
   * holds no record of the image.
   */
  readonly mayReplace?: (current: ImageRecord) => Promise<void>;
  readonly signal: AbortSignal;
  readonly log: (line: string) => void;
  readonly onProgress?: (done: number, total: number) => void;
}

export interface PutResult {
  /** True when image bytes went up; false when the store already held them. */
  readonly uploaded: boolean;
}

export interface RemoveOptions {
  readonly dryRun: boolean;
  readonly signal: AbortSignal;
}

export interface RemoveResult {
  /** What was (or would be) deleted, in order, by the backend's names. */
  readonly deleted: readonly string[];
  /** Requested names the store does not hold. */
  readonly notInStore: readonly string[];
  /** Names whose index entry was (or would be) dropped. */
  readonly unindexed: readonly string[];
  /** What was left alone and why (an entry the store did not make), one line each. */
  readonly notes?: readonly string[];
}

export interface RetagOptions {
  readonly dryRun: boolean;
  readonly signal: AbortSignal;
}

export interface RetagResult {
  readonly version: string;
  /** What the location's tag points at now (or would): a commit, a manifest digest. */
  readonly commit: string;
  /** What the location says about it ("Points to v2025.01"). */
  readonly note: string;
  /** What was done, in the backend's own words, one line: as done, and as a dry run would say it. */
  readonly said: { readonly done: string; readonly planned: string };
}
