// Content-defined chunks of a byte stream: a gear hash rolls over the bytes and a chunk
// ends where its bits under a mask are all zero, so an insert or a delete moves only the
// chunks around it and the rest keep their boundaries (FastCDC: cut points searched from
// the minimum size on, a stricter mask before the average size and a looser one after,
// which keeps sizes close to the average). The scan runs in WebAssembly
// (gear-chunker.wat), which also hashes each chunk (XXH64); bytes may arrive in pieces of
// any size, and the chunks come out the same.
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
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { readonly exports: unknown };
};

interface Exports {
  readonly memory: WasmMemory;
  cuts(data: number, len: number, min: number, avg: number, max: number, maskS: bigint, maskL: bigint, out: number, final: number): number;
  xxh64(data: number, len: number): bigint;
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

/** Cuts a stream into chunks: `push` bytes in order, then `end`; each chunk is reported once complete. */
export class GearChunker {
  private readonly wasm: Exports;
  private readonly maskS: bigint;
  private readonly maskL: bigint;
  /** Where the bytes handed to the scan may start (an unfinished chunk's, then new ones). */
  private readonly dataOffset: number;
  /** Where new bytes are copied to, less their source's misalignment: 8-aligned, maxSize past dataOffset. */
  private readonly landing: number;
  /** Where the unfinished chunk's bytes are (`tail` of them). */
  private tailStart: number;
  private tail = 0;
  /** Where in the stream the unfinished chunk starts. */
  private position = 0;

  constructor(readonly params: ChunkingParams) {
    const problem = chunkingProblem(params);
    if (problem) throw new Error(problem);
    compiled ??= new WebAssembly.Module(Buffer.from(WASM_BASE64, 'base64'));
    this.wasm = new WebAssembly.Instance(compiled).exports as unknown as Exports;
    const bits = Math.log2(params.avgSize);
    this.maskS = spreadMask(bits + params.normalization);
    this.maskL = spreadMask(Math.max(1, bits - params.normalization));
    // Room for the chunks one scan can find (all but the last at least minSize long).
    const outBytes = ENTRY_BYTES * (Math.ceil((SCAN_BYTES + params.maxSize) / params.minSize) + 1);
    this.dataOffset = OUT_OFFSET + outBytes;
    this.landing = (this.dataOffset + params.maxSize + 7) & ~7;
    this.tailStart = this.landing;
    const needed = this.landing + 8 + SCAN_BYTES;
    const memory = this.wasm.memory;
    if (memory.buffer.byteLength < needed) memory.grow(Math.ceil((needed - memory.buffer.byteLength) / WASM_PAGE));
    new BigUint64Array(memory.buffer, 0, 256).set(gearTable(params.gearSeed));
  }

  push(bytes: Uint8Array, each: ChunkCallback): void {
    for (let at = 0; at < bytes.length; ) {
      const take = Math.min(SCAN_BYTES, bytes.length - at);
      // The new bytes land at the same alignment mod 8 as their source: a copy between
      // misaligned views (of a SharedArrayBuffer above all, as the hasher's ring is) goes
      // byte by byte, several times slower than the scan itself. The unfinished chunk moves
      // to end where they start.
      const target = this.landing + ((bytes.byteOffset + at) & 7);
      const memory = new Uint8Array(this.wasm.memory.buffer);
      if (this.tailStart + this.tail !== target) memory.copyWithin(target - this.tail, this.tailStart, this.tailStart + this.tail);
      this.tailStart = target - this.tail;
      memory.set(bytes.subarray(at, at + take), target);
      this.tail += take;
      at += take;
      this.scan(false, each);
    }
  }

  end(each: ChunkCallback): void {
    this.scan(true, each);
  }

  private scan(final: boolean, each: ChunkCallback): void {
    if (this.tail === 0) return;
    const { minSize, avgSize, maxSize } = this.params;
    const count = this.wasm.cuts(this.tailStart, this.tail, minSize, avgSize, maxSize, this.maskS, this.maskL, OUT_OFFSET, final ? 1 : 0);
    const entries = new Uint32Array(this.wasm.memory.buffer, OUT_OFFSET, (count * ENTRY_BYTES) / 4);
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

/**
 * XXH64 of whole chunks (up to `maxSize` bytes each) as two halves, high first: what the
 * scan reports for a chunk, for checking bytes against an index.
 */
export async function chunkHasher(maxSize: number): Promise<(bytes: Uint8Array) => [number, number]> {
  compiled ??= new WebAssembly.Module(Buffer.from(WASM_BASE64, 'base64'));
  const wasm = new WebAssembly.Instance(compiled).exports as unknown as Exports;
  const at = GEAR_BYTES;
  if (wasm.memory.buffer.byteLength < at + maxSize) wasm.memory.grow(Math.ceil((at + maxSize - wasm.memory.buffer.byteLength) / WASM_PAGE));
  return (bytes) => {
    if (bytes.length > maxSize) throw new Error(`a chunk of ${bytes.length} bytes is longer than ${maxSize}`);
    new Uint8Array(wasm.memory.buffer, at, bytes.length).set(bytes);
    // An i64 reaches JavaScript as a signed bigint.
    const value = BigInt.asUintN(64, wasm.xxh64(at, bytes.length));
    return [Number(value >> 32n), Number(value & 0xffffffffn)];
  };
}
