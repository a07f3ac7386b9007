// The chunk index stored with every image (attachment kind `chunk-index`): how the image
// was cut (method and parameters), and each chunk's length and hash, in order, so a host
// holding an earlier copy can tell which byte ranges it already has. Binary and compact
// (about 10 bytes a chunk: 0.2 % of the image at 4 KiB chunks):
//
//   "PLCHUNKS"                    8 bytes, magic
//   header length                 u32 little-endian
//   header                        JSON: format, method, params, hash, size, sha256, chunks
//   lengths                       one unsigned LEB128 varint per chunk
//   hashes                        8 bytes per chunk: XXH64, big-endian
//
// It comes from a store, so `decodeChunkIndex` checks everything it says (sizes add up to
// the image's, parameters a chunker accepts); what it cannot check (that the hashes are the
// image's) the fetch never relies on: every byte is verified against the record's SHA-256.
import { z } from 'zod';
import { Failure } from '../../../src/index.ts';
import { type ChunkingParams, chunkingProblem, GearChunker } from './gear-chunker.ts';

const MAGIC = Buffer.from('PLCHUNKS', 'latin1');
export const CHUNK_INDEX_FORMAT = 1;
export const CHUNK_HASH_BYTES = 8;

/** The chunking of every index this version writes (chosen by bench/delta.ts; see BENCHMARKS.md). */
export const DEFAULT_CHUNKING: ChunkingParams = { minSize: 1024, avgSize: 4096, maxSize: 32768, normalization: 2, gearSeed: 0x5eed };

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
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  chunks: z.number().int().nonnegative(),
});

export type ChunkIndexHeader = z.infer<typeof headerSchema>;

/** An image's chunks: `offsets[i]` and `lengths[i]`, and hash halves `hashHigh[i]`/`hashLow[i]`. */
export interface ChunkIndex {
  readonly params: ChunkingParams;
  /** The image's size and SHA-256, as the index was made for. */
  readonly size: number;
  readonly sha256: string;
  readonly count: number;
  readonly offsets: Float64Array;
  readonly lengths: Uint32Array;
  readonly hashHigh: Uint32Array;
  readonly hashLow: Uint32Array;
}

/** Collects chunks as a chunker reports them (the hasher's read of the image feeds it). */
export class ChunkIndexBuilder {
  private count = 0;
  private lengths = new Uint32Array(1024);
  private hashes = new Uint32Array(2048);
  private readonly chunker: GearChunker;
  private size = 0;

  constructor(readonly params: ChunkingParams = DEFAULT_CHUNKING) {
    this.chunker = new GearChunker(params);
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
    this.chunker.push(bytes, this.add);
  }

  /** The encoded index, once every byte went through `update`. */
  finish(sha256: string): Uint8Array {
    this.chunker.end(this.add);
    const header: ChunkIndexHeader = {
      format: CHUNK_INDEX_FORMAT,
      method: 'gear-cdc',
      params: { ...this.params },
      hash: 'xxh64',
      size: this.size,
      sha256,
      chunks: this.count,
    };
    const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
    let varintBytes = 0;
    for (let index = 0; index < this.count; index++) varintBytes += varintLength(this.lengths[index]!);
    const out = Buffer.alloc(MAGIC.length + 4 + headerBytes.length + varintBytes + this.count * CHUNK_HASH_BYTES);
    let at = MAGIC.copy(out, 0);
    at = out.writeUInt32LE(headerBytes.length, at);
    at += headerBytes.copy(out, at);
    for (let index = 0; index < this.count; index++) {
      for (let value = this.lengths[index]!; ; value = Math.floor(value / 128)) {
        if (value < 128) {
          out[at++] = value;
          break;
        }
        out[at++] = (value & 0x7f) | 0x80;
      }
    }
    for (let index = 0; index < this.count; index++) {
      at = out.writeUInt32BE(this.hashes[2 * index]!, at);
      at = out.writeUInt32BE(this.hashes[2 * index + 1]!, at);
    }
    return out;
  }
}

function varintLength(value: number): number {
  let bytes = 1;
  while (value >= 128) {
    value = Math.floor(value / 128);
    bytes++;
  }
  return bytes;
}

/** Reads an index; a Failure of kind `integrity` names `source` and what is wrong, in one line. */
export function decodeChunkIndex(bytes: Uint8Array, source: string): ChunkIndex {
  const bad = (why: string): never => {
    throw new Failure('integrity', `${source} is not a usable chunk index (${why})`);
  };
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buffer.length < MAGIC.length + 4 || !buffer.subarray(0, MAGIC.length).equals(MAGIC)) bad('no PLCHUNKS header');
  const headerLength = buffer.readUInt32LE(MAGIC.length);
  let at = MAGIC.length + 4;
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
  const header = parsed.data;
  const problem = chunkingProblem(header.params);
  if (problem) bad(problem);
  at += headerLength;
  const count = header.chunks;
  // At least one byte of length and the hash per chunk: a count the bytes cannot hold is a lie, not an allocation to make.
  if (count * (1 + CHUNK_HASH_BYTES) > buffer.length - at) bad(`${count} chunks do not fit in ${buffer.length} bytes`);
  const offsets = new Float64Array(count);
  const lengths = new Uint32Array(count);
  let offset = 0;
  for (let index = 0; index < count; index++) {
    let value = 0;
    for (let scale = 1; ; scale *= 128) {
      if (at >= buffer.length || scale > 2 ** 28) bad('a chunk length is cut short');
      const byte = buffer[at++]!;
      value += (byte & 0x7f) * scale;
      if (byte < 128) break;
    }
    if (value === 0 || value > header.params.maxSize) bad(`chunk ${index} is ${value} bytes, outside 1..${header.params.maxSize}`);
    offsets[index] = offset;
    lengths[index] = value;
    offset += value;
  }
  if (offset !== header.size) bad(`its chunks add up to ${offset} bytes, not ${header.size}`);
  if (buffer.length - at !== count * CHUNK_HASH_BYTES) bad(`${buffer.length - at} bytes of hashes for ${count} chunks`);
  const hashHigh = new Uint32Array(count);
  const hashLow = new Uint32Array(count);
  for (let index = 0; index < count; index++) {
    hashHigh[index] = buffer.readUInt32BE(at);
    hashLow[index] = buffer.readUInt32BE(at + 4);
    at += CHUNK_HASH_BYTES;
  }
  return { params: header.params, size: header.size, sha256: header.sha256, count, offsets, lengths, hashHigh, hashLow };
}
