// The chunk index stored with every image (attachment kind `chunk-index`): how the image
// was cut (method and parameters), and each chunk's length and hash, in order, so a host
// holding an earlier copy can tell which byte ranges it already has. Binary and compact
// (under 7 bytes a chunk: 0.27 % of the image at 2 KiB chunks):
//
//   "PLCHUNKS"                    8 bytes, magic
//   header length                 u32 little-endian
//   header                        JSON: format, method, params, hash, hashBytes,
//                                 segmentChunks, size, sha256, chunks, lengthsBytes
//   lengths                       Brotli of one unsigned LEB128 varint per chunk
//                                 (lengthsBytes long; a quarter smaller than the varints)
//   hashes                        hashBytes per chunk: the first bytes of its XXH64, big-endian
//   segment digests               8 bytes per segment of segmentChunks chunks: XXH64 of the
//                                 segment's chunks' whole XXH64s (8 bytes each, big-endian)
//
// A chunk's hash is short (5 bytes) because a match on it is only a candidate: the
// segment digests cover the whole 64-bit hashes, so a chance match, or a seed that changed
// after it was read, shows up when its segment is checked, and that segment alone is
// fetched again. It comes from a store, so `decodeChunkIndex` checks everything it says
// (sizes add up to the image's, parameters a chunker accepts); what it cannot check (that
// the hashes are the image's) the fetch never relies on: every byte is verified against
// the record's SHA-256.
import { brotliCompressSync, brotliDecompressSync, constants as zlib } from 'node:zlib';
import xxhash from 'xxhash-wasm';
import { z } from 'zod';
import { type ByteObserver, Failure, type InPlaceObserver } from '../../../src/index.ts';
import { type ChunkingParams, chunkingProblem, GearChunker } from './gear-chunker.ts';

const MAGIC = Buffer.from('PLCHUNKS', 'latin1');
export const CHUNK_INDEX_FORMAT = 1;
/** Bytes of each chunk's XXH64 kept in the index. */
const HASH_BYTES = 5;
/** Chunks per segment digest. */
const SEGMENT_CHUNKS = 256;

/** The chunking of every index this version writes (chosen by bench/delta.ts; see BENCHMARKS.md). */
export const DEFAULT_CHUNKING: ChunkingParams = { minSize: 1024, avgSize: 2048, maxSize: 4096, normalization: 2, gearSeed: 0x5eed };

const headerSchema = z.object({
  format: z.literal(CHUNK_INDEX_FORMAT),
  method: z.literal('gear-cdc'),
  params: z.object({
    minSize: z.number().int(),
    avgSize: z.number().int(),
    maxSize: z.number().int(),
    normalization: z.number().int(),
    gearSeed: z.number().int(),
  }),
  hash: z.literal('xxh64'),
  hashBytes: z.number().int().min(4).max(8),
  segmentChunks: z.number().int().min(1).max(65536),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  chunks: z.number().int().nonnegative(),
  lengthsBytes: z.number().int().nonnegative(),
});

export type ChunkIndexHeader = z.infer<typeof headerSchema>;

/**
 * An image's chunks: `lengths[i]`, and the hash the index keeps of each: `hashHigh[i]`, the
 * XXH64's high half, and `hashLow[i]`, what the index keeps of its low half as
 * `keptLowHash` gives it (one byte a chunk at five bytes a hash). Where a
 * chunk starts is `chunkOffset(index, i)`: a 3 GiB image has about 1.3 million chunks, and
 * the seeded fetch's memory bound leaves no room for 8 bytes more of each.
 */
export interface ChunkIndex {
  readonly params: ChunkingParams;
  /** The image's size and SHA-256, as the index was made for. */
  readonly size: number;
  readonly sha256: string;
  readonly count: number;
  /** Two bytes a chunk when the maximum size allows. */
  readonly lengths: Uint16Array | Uint32Array;
  /** Where each segment's first chunk starts. */
  readonly segmentOffsets: Float64Array;
  readonly hashHigh: Uint32Array;
  readonly hashLow: Uint8Array | Uint32Array;
  readonly hashBytes: number;
  readonly segmentChunks: number;
  /** Per segment, the XXH64 of its chunks' whole XXH64s as two halves. */
  readonly segmentHigh: Uint32Array;
  readonly segmentLow: Uint32Array;
}

/** Where chunk `chunk` starts in the image. */
export function chunkOffset(index: ChunkIndex, chunk: number): number {
  const segment = Math.floor(chunk / index.segmentChunks);
  let offset = index.segmentOffsets[segment]!;
  for (let before = segment * index.segmentChunks; before < chunk; before++) offset += index.lengths[before]!;
  return offset;
}

/** The mask of the bits of a chunk hash's low half that an index of `hashBytes` keeps (the high half is always kept whole). */
function lowHashMask(hashBytes: number): number {
  return hashBytes >= 8 ? 0xffffffff : hashBytes <= 4 ? 0 : (0xffffffff << (8 * (8 - hashBytes))) >>> 0;
}

/**
 * What an index of `hashBytes` keeps of a chunk hash's low half, as `ChunkIndex.hashLow`
 * holds it: its kept bits, shifted down into a byte when only a byte is kept.
 */
export function keptLowHash(hashBytes: number): (low: number) => number {
  const mask = lowHashMask(hashBytes);
  const shift = hashBytes <= 5 ? 24 : 0;
  return (low) => (low & mask) >>> shift;
}

/**
 * Collects chunks as a chunker reports them (the hasher's read of the image feeds it: a
 * large image's bytes scanned in place in the hasher's ring, a small one's pushed).
 */
export class ChunkIndexBuilder implements ByteObserver {
  private count = 0;
  private lengths = new Uint32Array(1024);
  /** Whole XXH64s, two u32s a chunk. */
  private hashes = new Uint32Array(2048);
  /** Made with the first bytes: pushed ones need memory of its own, the ring's do not. */
  private chunker: GearChunker | undefined;
  private size = 0;
  readonly inPlace: InPlaceObserver;

  constructor(readonly params: ChunkingParams = DEFAULT_CHUNKING) {
    const problem = chunkingProblem(params);
    if (problem) throw new Error(problem);
    this.inPlace = {
      ownBytes: GearChunker.ownBytes(params),
      gapBytes: params.maxSize,
      attach: (memory) => {
        if (this.chunker) throw new Error('a chunk index takes an image either pushed or in place, not both');
        this.chunker = new GearChunker(params, memory);
      },
      updateAt: (offset, length) => {
        this.size += length;
        this.chunker!.pushAt(offset, length, this.add);
      },
    };
  }

  private readonly add = (_offset: number, length: number, hashHigh: number, hashLow: number): void => {
    if (this.count === this.lengths.length) {
      const lengths = new Uint32Array(this.lengths.length * 2);
      lengths.set(this.lengths);
      this.lengths = lengths;
      const hashes = new Uint32Array(this.hashes.length * 2);
      hashes.set(this.hashes);
      this.hashes = hashes;
    }
    this.lengths[this.count] = length;
    this.hashes[2 * this.count] = hashHigh;
    this.hashes[2 * this.count + 1] = hashLow;
    this.count++;
  };

  /** The next bytes of the image, in order. */
  update(bytes: Uint8Array): void {
    this.size += bytes.length;
    this.chunker ??= new GearChunker(this.params);
    this.chunker.push(bytes, this.add);
  }

  /** The encoded index, once every byte went through `update`. */
  async finish(sha256: string): Promise<Uint8Array> {
    this.chunker?.end(this.add);
    const header: ChunkIndexHeader = {
      format: CHUNK_INDEX_FORMAT,
      method: 'gear-cdc',
      params: { ...this.params },
      hash: 'xxh64',
      hashBytes: HASH_BYTES,
      segmentChunks: SEGMENT_CHUNKS,
      size: this.size,
      sha256,
      chunks: this.count,
      lengthsBytes: 0,
    };
    // One unsigned LEB128 varint per length (at most 4 bytes each: chunks are at most 16 MiB).
    const varints = Buffer.allocUnsafe(this.count * 4);
    let at = 0;
    for (let index = 0; index < this.count; index++) {
      let value = this.lengths[index]!;
      while (value >= 128) {
        varints[at++] = (value & 0x7f) | 0x80;
        value >>>= 7;
      }
      varints[at++] = value;
    }
    const lengths = brotliCompressSync(varints.subarray(0, at), {
      params: { [zlib.BROTLI_PARAM_QUALITY]: 6, [zlib.BROTLI_PARAM_LGWIN]: 24, [zlib.BROTLI_PARAM_SIZE_HINT]: at },
    });
    header.lengthsBytes = lengths.length;
    const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
    const segments = Math.ceil(this.count / SEGMENT_CHUNKS);
    const out = Buffer.alloc(MAGIC.length + 4 + headerBytes.length + lengths.length + this.count * HASH_BYTES + segments * 8);
    at = MAGIC.copy(out, 0);
    at = out.writeUInt32LE(headerBytes.length, at);
    at += headerBytes.copy(out, at);
    at += lengths.copy(out, at);
    // The whole hashes as 8-byte big-endian values, in order: each chunk's first bytes,
    // and what the segment digests hash.
    const whole = Buffer.from(this.hashes.slice(0, 2 * this.count).buffer).swap32();
    for (let index = 0; index < this.count; index++) {
      for (let byte = 0; byte < HASH_BYTES; byte++) out[at++] = whole[8 * index + byte]!;
    }
    const { h64Raw } = await xxhash();
    for (let segment = 0; segment < segments; segment++) {
      const first = segment * SEGMENT_CHUNKS;
      const value = h64Raw(whole.subarray(8 * first, 8 * Math.min(this.count, first + SEGMENT_CHUNKS)));
      at = out.writeBigUInt64BE(value, at);
    }
    return out;
  }
}

/**
 * The digest of a segment from its chunks' whole XXH64s (two u32s a chunk, high first):
 * XXH64 of them as 8-byte big-endian values, as two halves.
 */
export async function segmentDigester(): Promise<(hashes: Uint32Array) => [number, number]> {
  const { h64Raw } = await xxhash();
  let scratch = Buffer.alloc(SEGMENT_CHUNKS * 8);
  return (hashes) => {
    if (scratch.length < hashes.length * 4) scratch = Buffer.alloc(hashes.length * 4);
    for (let index = 0; index < hashes.length; index++) scratch.writeUInt32BE(hashes[index]!, index * 4);
    const value = h64Raw(scratch.subarray(0, hashes.length * 4));
    return [Number(value >> 32n), Number(value & 0xffffffffn)];
  };
}

/** The header of an encoded index, or undefined when the bytes do not start as one. */
export function readChunkIndexHeader(bytes: Uint8Array): ChunkIndexHeader | undefined {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buffer.length < MAGIC.length + 4 || !buffer.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  const length = buffer.readUInt32LE(MAGIC.length);
  try {
    const parsed = headerSchema.safeParse(JSON.parse(buffer.subarray(MAGIC.length + 4, MAGIC.length + 4 + length).toString('utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Reads an index; a Failure of kind `integrity` names `source` and what is wrong, in one line. */
export function decodeChunkIndex(bytes: Uint8Array, source: string): ChunkIndex {
  const bad = (why: string): never => {
    throw new Failure('integrity', `${source} is not a usable chunk index (${why})`);
  };
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { header, at: lengthsAt } = decodeHeader(buffer, bad);
  const count = header.chunks;
  // The hash per chunk: a count the bytes cannot hold is a lie, not an allocation to make.
  if (count * header.hashBytes + header.lengthsBytes > buffer.length - lengthsAt) bad(`${count} chunks do not fit in ${buffer.length} bytes`);
  const { segmentOffsets, lengths } = decodeLengths(buffer.subarray(lengthsAt, lengthsAt + header.lengthsBytes), header, bad);
  const hashes = decodeHashes(buffer.subarray(lengthsAt + header.lengthsBytes), header, bad);
  return { params: header.params, size: header.size, sha256: header.sha256, count, lengths, segmentOffsets, ...hashes };
}

type Bad = (why: string) => never;

/** The header, checked, and where the bytes after it start. */
function decodeHeader(buffer: Buffer, bad: Bad): { header: ChunkIndexHeader; at: number } {
  if (buffer.length < MAGIC.length + 4 || !buffer.subarray(0, MAGIC.length).equals(MAGIC)) bad('no PLCHUNKS header');
  const headerLength = buffer.readUInt32LE(MAGIC.length);
  const at = MAGIC.length + 4;
  if (headerLength > buffer.length - at) bad('its header runs past its end');
  let json: unknown;
  try {
    json = JSON.parse(buffer.subarray(at, at + headerLength).toString('utf8'));
  } catch {
    bad('its header is not JSON');
  }
  const parsed = headerSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return bad(`${issue ? `${issue.path.join('.') || 'header'}: ${issue.message}` : 'bad header'}`);
  }
  const problem = chunkingProblem(parsed.data.params);
  if (problem) bad(problem);
  return { header: parsed.data, at: at + headerLength };
}

/** Each chunk's length, and where each segment starts, from the Brotli-compressed varints; they must add up to the image's size. */
function decodeLengths(compressed: Buffer, header: ChunkIndexHeader, bad: Bad): { segmentOffsets: Float64Array; lengths: Uint16Array | Uint32Array } {
  const count = header.chunks;
  let varints: Buffer;
  try {
    // A varint per chunk, at most 4 bytes each (chunks are at most 16 MiB): more is not a length list.
    varints = brotliDecompressSync(compressed, { maxOutputLength: Math.max(1, count * 4) });
  } catch {
    return bad('its chunk lengths do not decompress');
  }
  const segmentOffsets = new Float64Array(Math.ceil(count / header.segmentChunks));
  const lengths = header.params.maxSize < 2 ** 16 ? new Uint16Array(count) : new Uint32Array(count);
  let offset = 0;
  let read = 0;
  for (let index = 0; index < count; index++) {
    let value = 0;
    for (let scale = 1; ; scale *= 128) {
      if (read >= varints.length || scale > 2 ** 28) bad('a chunk length is cut short');
      const byte = varints[read++]!;
      value += (byte & 0x7f) * scale;
      if (byte < 128) break;
    }
    if (value === 0 || value > header.params.maxSize) bad(`chunk ${index} is ${value} bytes, outside 1..${header.params.maxSize}`);
    if (index % header.segmentChunks === 0) segmentOffsets[index / header.segmentChunks] = offset;
    lengths[index] = value;
    offset += value;
  }
  if (read !== varints.length) bad(`${varints.length - read} bytes after the last chunk length`);
  if (offset !== header.size) bad(`its chunks add up to ${offset} bytes, not ${header.size}`);
  return { segmentOffsets, lengths };
}

/** The chunks' kept hashes and the segment digests: the rest of the index, exactly. */
function decodeHashes(
  rest: Buffer,
  header: ChunkIndexHeader,
  bad: Bad,
): Pick<ChunkIndex, 'hashHigh' | 'hashLow' | 'hashBytes' | 'segmentChunks' | 'segmentHigh' | 'segmentLow'> {
  const { chunks: count, hashBytes, segmentChunks } = header;
  const segments = Math.ceil(count / segmentChunks);
  if (rest.length !== count * hashBytes + segments * 8) bad(`${rest.length} bytes of hashes for ${count} chunks`);
  const hashHigh = new Uint32Array(count);
  const hashLow = hashBytes <= 5 ? new Uint8Array(count) : new Uint32Array(count);
  const kept = keptLowHash(hashBytes);
  let at = 0;
  // Byte by byte, big-endian: a million chunks, where a Buffer call per chunk would cost more than the arithmetic.
  for (let index = 0; index < count; index++) {
    hashHigh[index] = ((rest[at]! << 24) | (rest[at + 1]! << 16) | (rest[at + 2]! << 8) | rest[at + 3]!) >>> 0;
    let low = 0;
    for (let byte = 4; byte < hashBytes; byte++) low |= rest[at + byte]! << (8 * (7 - byte));
    hashLow[index] = kept(low >>> 0);
    at += hashBytes;
  }
  const segmentHigh = new Uint32Array(segments);
  const segmentLow = new Uint32Array(segments);
  for (let segment = 0; segment < segments; segment++) {
    segmentHigh[segment] = rest.readUInt32BE(at);
    segmentLow[segment] = rest.readUInt32BE(at + 4);
    at += 8;
  }
  return { hashHigh, hashLow, hashBytes, segmentChunks, segmentHigh, segmentLow };
}
