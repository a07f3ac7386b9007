// Content-defined chunks of a byte stream: a gear hash rolls over the bytes and a chunk
// ends where its bits under a mask are all zero, so an insert or a delete moves only the
// chunks around it and the rest keep their boundaries (FastCDC: cut points searched from
// the minimum size on, a stricter mask before the average size and a looser one after,
// which keeps sizes close to the average). The scan runs in WebAssembly
// (gear-chunker.wat), which also hashes each chunk (XXH64); bytes may arrive in pieces of
// any size, and the chunks come out the same.
import type { WasmMemory } from '../../../src/index.ts';
import { WASM_BASE64 } from './gear-chunker-wasm.ts';

/** How a stream is cut; recorded in every chunk index, so it can change later. */
export interface ChunkingParams {
  /** No chunk is shorter, except the last. */
  readonly minSize: number;
  /** A power of two: the size the masks aim at. */
  readonly avgSize: number;
  /** No chunk is longer. */
  readonly maxSize: number;
  /** Mask bits added before the average size and removed after it (FastCDC's normalization level). */
  readonly normalization: number;
  /** Seed of the gear table (splitmix64). */
  readonly gearSeed: number;
}

/** The part of the WebAssembly API used here (the project's `lib` has no DOM, where its types live). */
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { readonly exports: unknown };
  Memory: new (descriptor: { initial: number; maximum: number; shared: boolean }) => WasmMemory;
};

interface Exports {
  cuts(data: number, len: number, min: number, avg: number, max: number, maskS: bigint, maskL: bigint, out: number, final: number): number;
  xxh64_into(data: number, len: number, out: number): void;
}

/**
 * A chunk as the scan found it: where it starts in the stream, its length, and the high
 * and low 32 bits of its XXH64 (two numbers rather than a bigint: one allocation less per
 * chunk, and what a hash table of chunks wants).
 */
export type ChunkCallback = (offset: number, length: number, hashHigh: number, hashLow: number) => void;

/** Bytes the scan writes per chunk found: length (u32), padding, XXH64 (u64). */
const ENTRY_BYTES = 16;

const GEAR_BYTES = 256 * 8;
const OUT_OFFSET = GEAR_BYTES;
/** Bytes handed to the scan at a time (besides the tail of an unfinished chunk). */
const SCAN_BYTES = 1024 * 1024;
const WASM_PAGE = 64 * 1024;

let compiled: object | undefined;

/** The scan's module, on a memory: shared, as the module imports it (the hasher's ring is). */
function instantiate(memory: WasmMemory): Exports {
  compiled ??= new WebAssembly.Module(Buffer.from(WASM_BASE64, 'base64'));
  return new WebAssembly.Instance(compiled, { env: { memory } }).exports as Exports;
}

/** A memory of the chunker's own, of at least `bytes`. */
function ownMemory(bytes: number): WasmMemory {
  const pages = Math.ceil(bytes / WASM_PAGE);
  return new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
}

/** Bytes of output area for the chunks one scan can find (all but the last at least minSize long). */
function outBytes(params: ChunkingParams): number {
  return ENTRY_BYTES * (Math.ceil((SCAN_BYTES + params.maxSize) / params.minSize) + 1);
}

/** Checks parameters a chunk index states (it comes from a store): a clear error rather than a scan that cannot work. */
export function chunkingProblem(params: ChunkingParams): string | undefined {
  const { minSize, avgSize, maxSize, normalization, gearSeed } = params;
  if (![minSize, avgSize, maxSize, normalization, gearSeed].every(Number.isSafeInteger)) return 'chunking parameters must be integers';
  if (avgSize < 64 || avgSize > 1 << 22 || (avgSize & (avgSize - 1)) !== 0) return `average chunk size ${avgSize} is not a power of two from 64 to 4 MiB`;
  if (minSize < 1 || minSize > avgSize || maxSize < avgSize || maxSize > 1 << 24)
    return `chunk sizes ${minSize}/${avgSize}/${maxSize} are not min <= avg <= max <= 16 MiB`;
  if (normalization < 0 || normalization > 4) return `normalization level ${normalization} is not 0 to 4`;
  if (gearSeed < 0) return 'the gear seed must not be negative';
  return undefined;
}

/** A mask of `bits` bits spread evenly over the hash's upper 48 bits (they depend on the most bytes). */
function spreadMask(bits: number): bigint {
  let mask = 0n;
  for (let index = 0; index < bits; index++) mask |= 1n << BigInt(63 - Math.floor((index * 48) / bits));
  return mask;
}

/** 256 pseudo-random 64-bit values from splitmix64. */
export function gearTable(seed: number): BigUint64Array {
  const table = new BigUint64Array(256);
  let state = BigInt(seed);
  const mask = (1n << 64n) - 1n;
  for (let index = 0; index < 256; index++) {
    state = (state + 0x9e3779b97f4a7c15n) & mask;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & mask;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & mask;
    table[index] = z ^ (z >> 31n);
  }
  return table;
}

/**
 * Cuts a stream into chunks: `push` bytes in order (or, made on a shared memory, `pushAt`
 * pieces where they lie in it), then `end`; each chunk is reported once complete. Both
 * ways cut the same chunks.
 */
export class GearChunker {
  private readonly wasm: Exports;
  private readonly memory: WasmMemory;
  private readonly maskS: bigint;
  private readonly maskL: bigint;
  private readonly entries: Uint32Array;
  /**
   * Pushed bytes: where new bytes are copied to, less their source's misalignment
   * (8-aligned, maxSize past where the unfinished chunk's bytes may start). In place: where
   * the unfinished chunk's bytes are kept between pieces.
   */
  private readonly landing: number;
  /** Where the unfinished chunk's bytes are (`tail` of them). */
  private tailStart: number;
  private tail = 0;
  /** Where in the stream the unfinished chunk starts. */
  private position = 0;

  /**
   * A chunker over bytes pushed to it, copied into memory of its own; or, given a shared
   * `memory`, one that scans pieces where they lie in it (`pushAt`): the memory's first
   * `ownBytes(params)` bytes are then the chunker's, and it writes up to `params.maxSize`
   * bytes just before each piece.
   */
  constructor(
    readonly params: ChunkingParams,
    private readonly inPlace?: WasmMemory,
  ) {
    const problem = chunkingProblem(params);
    if (problem) throw new Error(problem);
    const bits = Math.log2(params.avgSize);
    this.maskS = spreadMask(bits + params.normalization);
    this.maskL = spreadMask(Math.max(1, bits - params.normalization));
    const dataOffset = OUT_OFFSET + outBytes(params);
    this.landing = inPlace ? dataOffset : (dataOffset + params.maxSize + 7) & ~7;
    this.tailStart = this.landing;
    this.memory = inPlace ?? ownMemory(this.landing + 8 + SCAN_BYTES);
    this.wasm = instantiate(this.memory);
    this.entries = new Uint32Array(this.memory.buffer, OUT_OFFSET, outBytes(params) / 4);
    new BigUint64Array(this.memory.buffer, 0, 256).set(gearTable(params.gearSeed));
  }

  /**
   * Bytes at the start of a shared memory that a chunker scanning in it keeps for itself:
   * its table, the chunks a scan found, and the unfinished chunk between pieces.
   */
  static ownBytes(params: ChunkingParams): number {
    return OUT_OFFSET + outBytes(params) + params.maxSize;
  }

  push(bytes: Uint8Array, each: ChunkCallback): void {
    if (this.inPlace) throw new Error('a chunker in memory it shares takes pieces where they lie (pushAt)');
    for (let at = 0; at < bytes.length; ) {
      const take = Math.min(SCAN_BYTES, bytes.length - at);
      // The new bytes land at the same alignment mod 8 as their source: a copy between
      // misaligned views (of a SharedArrayBuffer above all, as this memory is) goes byte
      // by byte, several times slower than the scan itself. The unfinished chunk moves to
      // end where they start.
      const target = this.landing + ((bytes.byteOffset + at) & 7);
      const memory = new Uint8Array(this.memory.buffer);
      if (this.tailStart + this.tail !== target) memory.copyWithin(target - this.tail, this.tailStart, this.tailStart + this.tail);
      this.tailStart = target - this.tail;
      memory.set(bytes.subarray(at, at + take), target);
      this.tail += take;
      at += take;
      this.scan(false, each);
    }
  }

  /**
   * The stream's next `length` bytes, at `offset` of the shared memory, with `maxSize`
   * bytes before them the chunker may write; neither is needed once the call returns.
   */
  pushAt(offset: number, length: number, each: ChunkCallback): void {
    if (!this.inPlace) throw new Error('pushAt needs a chunker made on a shared memory');
    const memory = new Uint8Array(this.memory.buffer);
    // The unfinished chunk goes just before the piece, so the scan reads one run of bytes.
    memory.copyWithin(offset - this.tail, this.tailStart, this.tailStart + this.tail);
    this.tailStart = offset - this.tail;
    const end = offset + length;
    while (this.tailStart + this.tail < end) {
      this.tail += Math.min(SCAN_BYTES, end - this.tailStart - this.tail);
      this.scan(false, each);
    }
    // The piece's bytes are read into again once this returns: keep the unfinished chunk.
    memory.copyWithin(this.landing, this.tailStart, this.tailStart + this.tail);
    this.tailStart = this.landing;
  }

  end(each: ChunkCallback): void {
    this.scan(true, each);
  }

  /**
   * After `end`: the bytes pushed next are a new stream, whose chunks are reported from
   * `position` on (a cut point of a longer stream parts of which are scanned).
   */
  restartAt(position: number): void {
    if (this.tail !== 0) throw new Error('a chunker restarts only after end');
    this.position = position;
  }

  private scan(final: boolean, each: ChunkCallback): void {
    if (this.tail === 0) return;
    const { minSize, avgSize, maxSize } = this.params;
    const count = this.wasm.cuts(this.tailStart, this.tail, minSize, avgSize, maxSize, this.maskS, this.maskL, OUT_OFFSET, final ? 1 : 0);
    const entries = this.entries;
    let start = 0;
    for (let index = 0; index < count; index++) {
      const length = entries[index * 4]!;
      each(this.position + start, length, entries[index * 4 + 3]!, entries[index * 4 + 2]!);
      start += length;
    }
    this.position += start;
    this.tailStart += start;
    this.tail -= start;
  }
}

/** Where ChunkHasher's memory holds the last hash (8 bytes), and where its bytes start. */
const HASH_OFFSET = 0;
const BYTES_OFFSET = 8;

/**
 * XXH64 of whole chunks, as the scan reports them, for checking bytes against an index.
 * The bytes are read into `bytes`, a view of the WebAssembly memory, and hashed where they
 * lie; `hash` leaves the two halves in `high` and `low`. Nothing is copied or allocated per
 * chunk: a 3 GiB image has 1.3 million, and a BigInt, an array and a view for each made
 * V8's young generation grow by 16 MiB during a seeded fetch (docs/benchmarks/notebook.md).
 */
export class ChunkHasher {
  /** Where the bytes to hash are read to. */
  readonly bytes: Buffer;
  /** The last hash's high 32 bits. */
  high = 0;
  /** The last hash's low 32 bits. */
  low = 0;
  private readonly wasm: Exports;
  private readonly result: Uint32Array;

  /** A hasher with room for `capacity` bytes. */
  constructor(capacity: number) {
    const memory = ownMemory(BYTES_OFFSET + capacity);
    this.wasm = instantiate(memory);
    this.bytes = Buffer.from(memory.buffer, BYTES_OFFSET, capacity);
    this.result = new Uint32Array(memory.buffer, HASH_OFFSET, 2);
  }

  /** Hashes bytes [start, start + length) of `bytes`. */
  hash(start: number, length: number): void {
    if (start < 0 || length < 0 || start + length > this.bytes.length)
      throw new RangeError(`bytes ${start}-${start + length} are outside the hasher's ${this.bytes.length}`);
    this.wasm.xxh64_into(BYTES_OFFSET + start, length, HASH_OFFSET);
    // Little-endian, as WebAssembly stores an i64.
    this.low = this.result[0]!;
    this.high = this.result[1]!;
  }
}
