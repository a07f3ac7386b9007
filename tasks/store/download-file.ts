// The temp file an image is downloaded into, and its SHA-256, in one pass. Pieces arrive
// in parallel; each piece's chunks are copied into one of its two large buffers and
// written at their offset in positional writes, one write in flight per piece while the
// other buffer fills, so a slow disk slows the socket and memory stays at two buffers a
// piece whatever the chunk size. One SHA-256 follows the bytes in image order:
// from memory for the piece at the hash cursor, and, for bytes that arrived ahead of the
// cursor, from the page cache once the cursor reaches them. Writeback to the disk starts
// while bytes still arrive, so the final fsync has little left to do.
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';

/** Size of a piece's write buffers (two per piece being downloaded). */
const WRITE_BYTES = 512 * 1024;
/** Bytes written between two background flushes to the disk. */
const WRITEBACK_BYTES = 64 * 1024 * 1024;
/** Read size when the hash catches up from the file. */
const READ_BYTES = 512 * 1024;

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
  private readonly hash = createHash('sha256');
  /** Bytes of the image hashed, from its first byte. */
  private hashed = 0;
  /** False once a piece the hash had reached started over: the digest then reads the whole file. */
  private hashInOrder = true;
  private catchingUp: Promise<void> | undefined;
  private writeback: Promise<void> | undefined;
  private readBuffer: Buffer | undefined;
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
      file.catchUp();
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
    // At the hash cursor with nothing left to catch up: hash it now, from memory.
    if (!this.catchingUp && this.hashInOrder && piece.start + offset === this.hashed) {
      this.hash.update(chunk);
      this.hashed += chunk.length;
    }
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
    if (this.hashed >= piece.start) this.hashInOrder = false;
  }

  /** The SHA-256 of the whole file, once every piece is finished. */
  async digest(): Promise<string> {
    this.catchUp();
    while (this.catchingUp) await this.catchingUp;
    this.throwIfFailed();
    if (this.hashed === this.total) return this.hash.digest('hex');
    if (this.hashInOrder) throw new Error(`hashed ${this.hashed} of ${this.total} bytes: a piece was not finished`);
    const hash = createHash('sha256');
    const buffer = (this.readBuffer ??= Buffer.allocUnsafe(READ_BYTES));
    for (let at = 0; at < this.total; ) {
      const { bytesRead } = await this.handle.read(buffer, 0, Math.min(READ_BYTES, this.total - at), at);
      if (bytesRead === 0) throw new Error(`the download file ended at byte ${at} of ${this.total}`);
      hash.update(buffer.subarray(0, bytesRead));
      at += bytesRead;
    }
    return hash.digest('hex');
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
    while (this.catchingUp) await this.catchingUp;
    await Promise.all([...this.pieces.map((piece) => piece.write), this.writeback]);
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
    this.catchUp();
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

  /** The piece the hash cursor is in (pieces.length at the end). */
  private cursorPiece(): PieceState | undefined {
    return this.pieces.find((piece) => this.hashed < piece.start + piece.size);
  }

  /** Starts hashing, in order, bytes that arrived ahead of the cursor, unless that is under way. */
  private catchUp(): void {
    if (this.catchingUp || this.closing || !this.hashInOrder || this.failure !== undefined) return;
    const piece = this.cursorPiece();
    if (!piece) return;
    const onDisk = piece.start + piece.written;
    // Something to do: bytes on disk not hashed yet, or the cursor at the disk's end with chunks in memory after it.
    if (this.hashed < onDisk || (this.hashed === onDisk && this.hashed < piece.start + piece.received)) this.catchingUp = this.hashAhead();
  }

  private async hashAhead(): Promise<void> {
    await undefined; // catchUp() records this run before any of it happens
    const from = this.hashed;
    try {
      await this.hashFromDiskAndMemory();
    } catch (error) {
      this.failure ??= error;
    } finally {
      this.catchingUp = undefined;
    }
    // A write may have landed after the last look (a run that got nowhere would only repeat itself).
    if (this.hashed !== from) this.catchUp();
  }

  private async hashFromDiskAndMemory(): Promise<void> {
    const buffer = (this.readBuffer ??= Buffer.allocUnsafe(READ_BYTES));
    for (let piece = this.cursorPiece(); piece && this.hashInOrder; piece = this.cursorPiece()) {
      const onDisk = piece.start + piece.written;
      if (this.hashed < onDisk) {
        const { bytesRead } = await this.handle.read(buffer, 0, Math.min(READ_BYTES, onDisk - this.hashed), this.hashed);
        if (bytesRead === 0) throw new Error(`the download file ended at byte ${this.hashed}`);
        if (!this.hashInOrder) return;
        this.hash.update(buffer.subarray(0, bytesRead));
        this.hashed += bytesRead;
        continue;
      }
      // On disk and hashed: what is left of the piece is still in memory, in order.
      if (this.hashed !== onDisk) return;
      for (const bytes of [piece.writing, piece.filling?.subarray(0, piece.filled)]) {
        if (!bytes) continue;
        this.hash.update(bytes);
        this.hashed += bytes.length;
      }
      // Mid-piece: from here on the piece's chunks are hashed as they arrive.
      if (this.hashed < piece.start + piece.size) return;
    }
  }
}
