// The temp file an image is downloaded into, and its SHA-256, in one pass. Pieces arrive
// in parallel; each piece's chunks are copied into one of its two large buffers and
// written at their offset in positional writes, one write in flight per piece while the
// other buffer fills, so a slow disk slows the socket and memory stays at two buffers a
// piece whatever the chunk size. One SHA-256 follows the file in image order on its own
// thread (src/sha256-thread.ts): as the written prefix grows, that thread reads it back
// from the page cache and hashes it, so the digest is of the bytes in the file, and the
// main thread, which reads every socket, spends nothing on it. Writeback to the disk
// starts while bytes still arrive, so the final fsync has little left to do.
import { open, type FileHandle } from 'node:fs/promises';
import { type FileSha256Job, Sha256Thread } from '../../src/index.ts';

/** Size of a piece's write buffers (two per piece being downloaded). */
const WRITE_BYTES = 512 * 1024;
/** Bytes written between two background flushes to the disk. */
const WRITEBACK_BYTES = 64 * 1024 * 1024;

interface PieceState {
  readonly start: number;
  readonly size: number;
  /** Bytes from the piece's start that are on disk (what a resume may start from). */
  written: number;
  /** Bytes from the piece's start taken by `accept`: written, being written, or in `filling`. */
  received: number;
  /** Bytes being written now, right after `written`. */
  writing: Buffer | undefined;
  /** That write (or the last one); it never rejects (a failure is kept in `failure`). */
  write: Promise<void>;
  writeInFlight: boolean;
  /** The buffer taking the bytes after `writing`, and how much of it they fill. */
  filling: Buffer | undefined;
  filled: number;
  /** Bumped by `restart`: a write from before it no longer counts. */
  generation: number;
}

export class DownloadFile {
  private readonly pieces: PieceState[];
  private readonly total: number;
  /** The SHA-256 of the file's written prefix, computed on the hashing thread. */
  private hash: FileSha256Job;
  /** Bytes of the image handed to the hash, from its first byte. */
  private hashing = 0;
  /** False once a piece the hash had reached started over: the digest then reads the whole file. */
  private hashInOrder = true;
  private writeback: Promise<void> | undefined;
  /**
   * Write buffers no piece is using. A piece takes one to fill and gives it back when its
   * write lands, so the file holds at most two a piece in flight, however many chunks and
   * pieces pass through it (a buffer dropped instead is garbage the size of a write).
   */
  private readonly freeBuffers: Buffer[] = [];
  private allocatedBuffers = 0;
  private closing = false;
  private writtenSinceWriteback = 0;
  /** The first write or read that failed; every later call rethrows it. */
  private failure: unknown;

  private constructor(
    private readonly handle: FileHandle,
    sizes: readonly number[],
    written: readonly number[],
    private readonly bufferBytes: number,
  ) {
    let start = 0;
    this.pieces = sizes.map((size, index) => {
      const piece: PieceState = {
        start,
        size,
        written: written[index]!,
        received: written[index]!,
        writing: undefined,
        write: Promise.resolve(),
        writeInFlight: false,
        filling: undefined,
        filled: 0,
        generation: 0,
      };
      start += size;
      return piece;
    });
    this.total = start;
    this.hash = this.startHash();
  }

  /**
   * Opens `path` sized for pieces of `sizes`. With `written` (bytes of each piece already
   * on disk from an earlier run) the file is reused as it is; without, it is created empty.
   * `bufferBytes` sizes the write buffers (tests make it small to cross many buffers).
   */
  static async open(path: string, sizes: readonly number[], written: readonly number[] | undefined, bufferBytes = WRITE_BYTES): Promise<DownloadFile> {
    const handle = await open(path, written ? 'r+' : 'w+');
    try {
      const total = sizes.reduce((sum, size) => sum + size, 0);
      await handle.truncate(total);
      const file = new DownloadFile(handle, sizes, written ?? sizes.map(() => 0), bufferBytes);
      file.hashWritten();
      return file;
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /** Write buffers allocated so far: never more than two a piece, however the bytes arrive. */
  get writeBuffers(): number {
    return this.allocatedBuffers;
  }

  /** Bytes of each piece that are on disk, for the resume record. */
  get written(): number[] {
    return this.pieces.map((piece) => piece.written);
  }

  /**
   * Takes the next chunk of piece `index`, which starts `offset` bytes into the piece. The
   * chunk is copied before this returns, or, when the piece must first wait for its
   * previous write (backpressure), before the returned promise settles.
   */
  accept(index: number, chunk: Buffer, offset: number): Promise<void> | void {
    this.throwIfFailed();
    const piece = this.pieces[index]!;
    if (offset + chunk.length > piece.size) throw new Error(`piece ${index + 1} got bytes past its end`);
    if (offset !== piece.received) throw new Error(`piece ${index + 1} skipped from byte ${piece.received} to ${offset}`);
    return this.copyIn(piece, chunk, 0);
  }

  private copyIn(piece: PieceState, chunk: Buffer, from: number): Promise<void> | void {
    while (from < chunk.length) {
      if (!piece.filling) {
        piece.filling = this.freeBuffers.pop() ?? this.allocateBuffer();
      }
      const copied = chunk.copy(piece.filling, piece.filled, from);
      piece.filled += copied;
      piece.received += copied;
      from += copied;
      if (piece.filled < piece.filling.length) return;
      // Full: the other buffer's write must land before this one can go.
      if (piece.writeInFlight) {
        return piece.write.then(() => {
          this.throwIfFailed();
          this.startWrite(piece);
          return this.copyIn(piece, chunk, from);
        });
      }
      this.startWrite(piece);
    }
  }

  /** Writes the rest of piece `index`; resolves when all of it is written (in the page cache). */
  async finish(index: number): Promise<void> {
    const piece = this.pieces[index]!;
    await piece.write;
    this.throwIfFailed();
    this.startWrite(piece);
    await piece.write;
    this.throwIfFailed();
  }

  /** Writes what every piece has taken so far (after a failure, so that a resume loses none of it). */
  async flush(): Promise<void> {
    for (let index = 0; index < this.pieces.length; index++) await this.finish(index);
  }

  /** Piece `index` starts over from its first byte (the server could not resume it). */
  restart(index: number): void {
    const piece = this.pieces[index]!;
    piece.generation++;
    piece.written = 0;
    piece.received = 0;
    piece.writing = undefined;
    piece.filled = 0;
    // Whatever the hash took of this piece may not be what arrives now.
    if (this.hashing > piece.start) this.hashInOrder = false;
  }

  /** The SHA-256 of the whole file, once every piece is finished. */
  async digest(): Promise<string> {
    this.throwIfFailed();
    this.hashWritten();
    if (!this.hashInOrder) {
      // A piece the hash had read started over: hash the file again, from its first byte.
      await this.hash.release();
      this.hash = this.startHash();
      this.hash.hashRange(this.handle.fd, 0, this.total);
      this.hashing = this.total;
    }
    if (this.hashing !== this.total) throw new Error(`hashed ${this.hashing} of ${this.total} bytes: a piece was not finished`);
    const digest = await this.hash.digest();
    this.throwIfFailed();
    return digest;
  }

  /**
   * Flushes what is written so far to the disk and returns how far each piece was written
   * before the flush began: bytes a resume may start from even after a kill or a crash.
   */
  async checkpoint(): Promise<number[]> {
    const written = this.written;
    this.throwIfFailed();
    await this.handle.datasync();
    return written;
  }

  /** Flushes the file to the disk. */
  async sync(): Promise<void> {
    await this.writeback;
    this.throwIfFailed();
    await this.handle.sync();
  }

  /** Waits for every write and read under way (whatever their outcome), then closes the file. */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.pieces.map((piece) => piece.write), this.writeback, this.hash.release()]);
    await this.handle.close();
  }

  private allocateBuffer(): Buffer {
    this.allocatedBuffers++;
    return Buffer.allocUnsafe(this.bufferBytes);
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private startWrite(piece: PieceState): void {
    const buffer = piece.filling;
    const bytes = piece.filled;
    if (!buffer || !bytes) return;
    const generation = piece.generation;
    piece.writing = buffer.subarray(0, bytes);
    piece.filling = undefined;
    piece.filled = 0;
    piece.writeInFlight = true;
    piece.write = this.handle
      .write(buffer, 0, bytes, piece.start + piece.written)
      .then(({ bytesWritten }) => {
        piece.writeInFlight = false;
        if (piece.generation === generation) {
          // A positional write to a regular file is whole unless it fails part way: the disk is full.
          if (bytesWritten !== bytes)
            throw Object.assign(new Error(`ENOSPC: no space left on device, write (${bytesWritten} of ${bytes} bytes)`), { code: 'ENOSPC' });
          piece.written += bytes;
          piece.writing = undefined;
        }
        // Nothing refers to the buffer now (a restart dropped `writing` already).
        this.freeBuffers.push(buffer);
        if (piece.generation === generation) this.wrote(bytes);
      })
      .catch((error: unknown) => {
        piece.writeInFlight = false;
        this.failure ??= error;
      });
  }

  private wrote(bytes: number): void {
    this.hashWritten();
    this.writtenSinceWriteback += bytes;
    if (this.writtenSinceWriteback >= WRITEBACK_BYTES && !this.writeback) {
      this.writtenSinceWriteback = 0;
      this.writeback = this.handle
        .datasync()
        .catch((error: unknown) => {
          this.failure ??= error;
        })
        .finally(() => (this.writeback = undefined));
    }
  }

  private startHash(): FileSha256Job {
    return Sha256Thread.shared().startFile(
      () => {},
      (error) => {
        this.failure ??= error;
      },
    );
  }

  /** Bytes of the image written from its first byte on (every piece before the first unfinished one). */
  private writtenPrefix(): number {
    for (const piece of this.pieces) if (piece.written < piece.size) return piece.start + piece.written;
    return this.total;
  }

  /** Hands the written bytes the hash has not had yet to the hashing thread, in order. */
  private hashWritten(): void {
    if (this.closing || !this.hashInOrder || this.failure !== undefined) return;
    const prefix = this.writtenPrefix();
    if (prefix <= this.hashing) return;
    this.hash.hashRange(this.handle.fd, this.hashing, prefix - this.hashing);
    this.hashing = prefix;
  }
}
