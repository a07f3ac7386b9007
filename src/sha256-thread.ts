// SHA-256 on a worker thread, fed in one of two ways:
//
// - from shared memory: the hasher reads a large file into slots of a SharedArrayBuffer and
//   computes xxh64 on the main thread while this thread computes SHA-256 of the same
//   bytes, so the two digests and the next reads overlap instead of taking turns (SHA-256
//   alone costs more than reading and xxh64 together);
// - from an open file: a download names byte ranges of the file it writes, once they are
//   written, and this thread reads and hashes them, so the main thread, busy with the
//   sockets, does neither.
import { Worker } from 'node:worker_threads';

/** The thread's read size for file ranges. */
const FILE_READ_BYTES = 1024 * 1024;

// Evaluated in the worker: no file to find, whether the engine runs compiled from dist/
// or as TypeScript source. getBuiltinModule rather than require or import, so the code runs
// whether the worker evaluates it as a script or as a module (it inherits --input-type).
// One hash per job; each update is acknowledged so the main thread knows when a slot may
// be filled again, and each file range so it knows when the file may close. A file range
// that cannot be read fails its job; the later ranges of that job are skipped.
const WORKER_SOURCE = `
const { parentPort } = process.getBuiltinModule('node:worker_threads');
const { createHash } = process.getBuiltinModule('node:crypto');
const { readSync } = process.getBuiltinModule('node:fs');
const jobs = new Map();
let readBuffer;
function hashFileRange(state, fd, offset, length) {
  readBuffer ??= Buffer.allocUnsafe(${FILE_READ_BYTES});
  for (let at = offset, end = offset + length; at < end; ) {
    const read = readSync(fd, readBuffer, 0, Math.min(readBuffer.length, end - at), at);
    if (read === 0) throw new Error('the file ended at byte ' + at + ', before byte ' + end);
    state.hash.update(readBuffer.subarray(0, read));
    at += read;
  }
}
parentPort.on('message', (message) => {
  const { job, op } = message;
  if (op === 'start') {
    jobs.set(job, { hash: createHash('sha256'), bytes: message.buffer ? new Uint8Array(message.buffer) : undefined });
  } else if (op === 'file') {
    const state = jobs.get(job);
    if (!state || state.failed) return;
    try {
      hashFileRange(state, message.fd, message.offset, message.length);
      parentPort.postMessage({ job, hashed: message.offset + message.length });
    } catch (error) {
      state.failed = true;
      parentPort.postMessage({ job, error: error instanceof Error ? error.message : String(error) });
    }
  } else if (op === 'update') {
    const state = jobs.get(job);
    state.hash.update(state.bytes.subarray(message.offset, message.offset + message.length));
    parentPort.postMessage({ job, slot: message.slot });
  } else if (op === 'end') {
    const state = jobs.get(job);
    jobs.delete(job);
    parentPort.postMessage({ job, digest: state.hash.digest('hex') });
  } else if (op === 'drop') {
    jobs.delete(job);
    if (message.ack) parentPort.postMessage({ job, dropped: true });
  }
});
`;

interface Reply {
  readonly job: number;
  readonly slot?: number;
  readonly digest?: string;
  /** A file range is hashed, up to this byte. */
  readonly hashed?: number;
  /** A file range could not be read. */
  readonly error?: string;
  /** An acknowledged drop: the thread is done with the job. */
  readonly dropped?: boolean;
}

interface JobHandlers {
  onSlot(slot: number): void;
  onHashed(end: number): void;
  onDigest(digest: string): void;
  onDropped(): void;
  onError(error: Error): void;
}

/**
 * One SHA-256 computation over byte ranges of an open file, read on the thread in the
 * order they are asked for. The file must stay open until `digest` or `release` settles.
 */
export interface FileSha256Job {
  /** Hashes bytes [offset, offset+length) of the file open as `fd`, after the ranges asked for before. */
  hashRange(fd: number, offset: number, length: number): void;
  /** The hex digest of every range asked for. */
  digest(): Promise<string>;
  /** Forgets the job; resolves once the thread has finished with every range asked for (the file may close). */
  release(): Promise<void>;
}

/** One SHA-256 computation over bytes that arrive in slots of a shared buffer. */
export interface Sha256Job {
  /** Hashes `length` bytes at `offset` of the buffer; the job's `onSlot(slot)` fires once they are read. */
  update(slot: number, offset: number, length: number): void;
  /** The hex digest, once every update is done. */
  digest(): Promise<string>;
  /** Forgets the job (after a read error). */
  drop(): void;
}

let shared: Sha256Thread | undefined;

export class Sha256Thread {
  private readonly worker: Worker;
  private readonly jobs = new Map<number, JobHandlers>();
  private nextJob = 0;

  private constructor() {
    this.worker = new Worker(WORKER_SOURCE, { eval: true });
    this.worker.unref(); // an idle hashing thread never keeps the process alive
    this.worker.on('message', (reply: Reply) => {
      const handlers = this.jobs.get(reply.job);
      if (!handlers) return;
      if (reply.digest !== undefined) {
        this.finish(reply.job);
        handlers.onDigest(reply.digest);
      } else if (reply.slot !== undefined) {
        handlers.onSlot(reply.slot);
      } else if (reply.hashed !== undefined) {
        handlers.onHashed(reply.hashed);
      } else if (reply.dropped) {
        this.finish(reply.job);
        handlers.onDropped();
      } else if (reply.error !== undefined) {
        handlers.onError(new Error(reply.error));
      }
    });
    const fail = (error: Error): void => {
      if (shared === this) shared = undefined;
      for (const [job, handlers] of this.jobs) {
        this.finish(job);
        handlers.onError(error);
      }
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`the SHA-256 thread exited (code ${code})`)));
  }

  /** The process's hashing thread, started on first use. */
  static shared(): Sha256Thread {
    shared ??= new Sha256Thread();
    return shared;
  }

  /** `onSlot` hears each slot the thread is done with; `onError` that the thread died. */
  start(buffer: SharedArrayBuffer, onSlot: (slot: number) => void, onError: (error: Error) => void): Sha256Job {
    const job = this.nextJob++;
    let resolveDigest!: (digest: string) => void;
    let rejectDigest!: (error: Error) => void;
    const digest = new Promise<string>((resolve, reject) => {
      resolveDigest = resolve;
      rejectDigest = reject;
    });
    digest.catch(() => {}); // observed by `digest()`; a dropped job's rejection is not news
    let failure: Error | undefined;
    if (this.jobs.size === 0) this.worker.ref(); // work in flight keeps the process alive
    this.jobs.set(job, {
      onSlot,
      onHashed: () => {},
      onDigest: resolveDigest,
      onDropped: () => {},
      onError: (error) => {
        failure = error;
        rejectDigest(error);
        onError(error);
      },
    });
    this.worker.postMessage({ job, op: 'start', buffer });
    return {
      update: (slot, offset, length) => {
        if (failure) throw failure;
        this.worker.postMessage({ job, op: 'update', slot, offset, length });
      },
      digest: () => {
        if (!failure) this.worker.postMessage({ job, op: 'end' });
        return digest;
      },
      drop: () => {
        if (!this.jobs.has(job)) return;
        this.finish(job);
        this.worker.postMessage({ job, op: 'drop' });
      },
    };
  }

  /**
   * A hash of file ranges read on this thread; `onHashed(end)` hears each range done,
   * `onError` a range that could not be read or the thread's death (the job is then failed).
   */
  startFile(onHashed: (end: number) => void, onError: (error: Error) => void): FileSha256Job {
    const job = this.nextJob++;
    let failure: Error | undefined;
    let settleDigest: { resolve: (digest: string) => void; reject: (error: Error) => void } | undefined;
    let released: Promise<void> | undefined;
    let onReleased = (): void => {};
    if (this.jobs.size === 0) this.worker.ref();
    this.jobs.set(job, {
      onSlot: () => {},
      onHashed,
      // After its digest the thread holds nothing of the job: a release waiting for that is done.
      onDigest: (digest) => {
        settleDigest?.resolve(digest);
        onReleased();
      },
      onDropped: () => onReleased(),
      onError: (error) => {
        failure ??= error;
        settleDigest?.reject(error);
        onError(error);
        // A dead thread reads nothing more: the file may close.
        if (!this.jobs.has(job)) onReleased();
      },
    });
    this.worker.postMessage({ job, op: 'start' });
    return {
      hashRange: (fd, offset, length) => {
        if (failure) throw failure;
        this.worker.postMessage({ job, op: 'file', fd, offset, length });
      },
      digest: () => {
        if (failure) return Promise.reject(failure);
        return new Promise<string>((resolve, reject) => {
          settleDigest = { resolve, reject };
          this.worker.postMessage({ job, op: 'end' });
        });
      },
      release: () => {
        released ??= this.jobs.has(job)
          ? new Promise<void>((resolve) => {
              onReleased = resolve;
              this.worker.postMessage({ job, op: 'drop', ack: true });
            })
          : Promise.resolve();
        return released;
      },
    };
  }

  private finish(job: number): void {
    this.jobs.delete(job);
    if (this.jobs.size === 0) this.worker.unref();
  }
}
