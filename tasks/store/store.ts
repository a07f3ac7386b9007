// The image store: where built images are shared between machines. The upload node,
// `release check|remove|retag`, `images list|download` (and a remote cache) are written
// against this interface only; a backend (tasks/store/github/ is the first) keeps to
// itself how it lays bytes out, names temporaries and replaces an image in place.
//
// Every backend promises:
// - any number of processes on any number of machines may `put` at once (different images
//   or the same one) and the store converges: every image complete, the index naming each;
// - a reader never gets bytes that do not match the record's SHA-256 (getImage verifies);
// - a `put` interrupted at any point (SIGKILL included) leaves the previous image readable
//   or is finished (or undone) by the next `put` of that image from any machine.
import type { ImageSources } from './catalog.ts';
import type { ImageRecord } from './record.ts';

export type { ImageRecord } from './record.ts';

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
   * Streams bytes [from, size) into `sink`, resuming after resets itself. Throws a
   * `not-found` Failure when the piece is gone (replaced meanwhile). Calls `onRestart`
   * when it could not resume and starts again at byte 0.
   */
  read(request: PieceRead): Promise<void>;
}

export interface PieceRead {
  readonly from: number;
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
}

export interface PutOptions {
  readonly force: boolean;
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
  /** The commit the location's tag points at now (or would). */
  readonly commit: string;
  /** What the location says about it ("Points to v2025.01"). */
  readonly note: string;
}
