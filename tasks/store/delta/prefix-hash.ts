// The SHA-256 of a file assembled out of order, computed from its first byte on as the
// bytes before its first gap are in place: a batch at a time, between turns of the event
// loop, so that the check after the last byte has only the last few MiB left to read. On
// this thread, not the hashing thread: a worker's own V8 isolate costs about 10 MiB, which
// a 3 GiB seeded fetch's 128 MiB bound has no room for, and the fetch leaves this thread
// idle most of the time, waiting on the network.
import { createHash } from 'node:crypto';
import { readSync } from 'node:fs';

/** Bytes in place ahead of the hash before it reads on (fewer wait for the next batch or the end). */
const BATCH_BYTES = 4 * 1024 * 1024;
const READ_BYTES = 1024 * 1024;
/** Hashing goes on for this long before the event loop takes a turn. */
const TURN_MS = 5;

export class PrefixHash {
  private readonly sha = createHash('sha256');
  private readonly buffer = Buffer.allocUnsafe(READ_BYTES);
  /** Bytes [0, hashed) are in the hash. */
  private hashed = 0;
  /** Bytes [0, inPlace) are written and will not change. */
  private inPlace = 0;
  private pumping: Promise<void> | undefined;
  /** A read failed (the file is read again for its digest, where the failure shows), or the hash was stopped. */
  private broken = false;

  constructor(
    private readonly fd: number,
    private readonly size: number,
  ) {}

  /** Bytes [0, end) of the file are written and will not change. */
  advance(end: number): void {
    this.inPlace = Math.max(this.inPlace, Math.min(end, this.size));
    if (this.pumping || this.broken || this.inPlace - this.hashed < BATCH_BYTES) return;
    this.pumping = this.pump().finally(() => (this.pumping = undefined));
  }

  /** The file's SHA-256, when every byte was in place and read; undefined otherwise (the caller reads the file itself). */
  async digest(): Promise<string | undefined> {
    await this.pumping;
    if (this.broken || this.inPlace < this.size) return undefined;
    try {
      while (this.hashed < this.size) this.step();
    } catch {
      return undefined;
    }
    return this.sha.digest('hex');
  }

  /** Reads no more of the file (it is about to close); resolves once the hash is done with it. */
  async stop(): Promise<void> {
    this.broken = true;
    await this.pumping;
  }

  private async pump(): Promise<void> {
    let turnStarted = performance.now();
    try {
      while (this.hashed < this.inPlace && !this.broken) {
        this.step();
        if (performance.now() - turnStarted >= TURN_MS) {
          await new Promise((resolve) => setImmediate(resolve));
          turnStarted = performance.now();
        }
      }
    } catch {
      this.broken = true;
    }
  }

  /** Hashes the next read's worth of bytes in place. */
  private step(): void {
    const length = Math.min(READ_BYTES, this.inPlace - this.hashed);
    const read = readSync(this.fd, this.buffer, 0, length, this.hashed);
    if (read === 0) throw new Error(`the file ended at byte ${this.hashed}`);
    this.sha.update(this.buffer.subarray(0, read));
    this.hashed += read;
  }
}
