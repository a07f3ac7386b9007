// SHA-256 on a worker thread, fed from shared memory: the hasher reads a large file into
// slots of a SharedArrayBuffer and computes xxh64 on the main thread while this thread
// computes SHA-256 of the same bytes, so the two digests and the next reads overlap
// instead of taking turns (SHA-256 alone costs more than reading and xxh64 together).
import { Worker } from 'node:worker_threads';

// Evaluated in the worker: no file to find, whether the engine runs compiled from dist/
// or as TypeScript source. getBuiltinModule rather than require or import, so the code runs
// whether the worker evaluates it as a script or as a module (it inherits --input-type).
// One hash per job; each update is acknowledged so the main thread knows when a slot may
// be filled again.
const WORKER_SOURCE = `
const { parentPort } = process.getBuiltinModule('node:worker_threads');
const { createHash } = process.getBuiltinModule('node:crypto');
const jobs = new Map();
parentPort.on('message', (message) => {
  const { job, op } = message;
  if (op === 'start') {
    jobs.set(job, { hash: createHash('sha256'), bytes: new Uint8Array(message.buffer) });
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
  }
});
`;

interface Reply {
  readonly job: number;
  readonly slot?: number;
  readonly digest?: string;
}

interface JobHandlers {
  onSlot(slot: number): void;
  onDigest(digest: string): void;
  onError(error: Error): void;
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
      onDigest: resolveDigest,
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

  private finish(job: number): void {
    this.jobs.delete(job);
    if (this.jobs.size === 0) this.worker.unref();
  }
}
