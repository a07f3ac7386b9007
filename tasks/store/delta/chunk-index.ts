// The chunk index stored with every image (attachment kind `chunk-index`): how the image
// was cut (method and parameters), and each chunk's length and hash, in order, so a host
// holding an earlier copy can tell which byte ranges it already has. Binary, compact (about
// 7 bytes a chunk: 0.3 % of the image at 2 KiB chunks), and laid out so that a host reads
// only what it needs with ranged reads: a head naming each segment (a run of
// segmentChunks chunks) by its size and a digest, then the segments' records.
//
//   "PLCHUNKS"                    8 bytes, magic
//   header length                 u32 little-endian
//   header                        JSON: format, method, params, hash, hashBytes,
//                                 segmentChunks, size, sha256, chunks, lengthBytes
//   segment table                 per segment: its bytes (u32 little-endian), then its
//                                 digest (8 bytes big-endian): XXH64 of its chunks' whole
//                                 XXH64s (8 bytes each, big-endian)
//   segment records               per segment, in order: its chunks' lengths (lengthBytes
//                                 each, little-endian), then their hashes (hashBytes each:
//                                 the first bytes of the XXH64, big-endian)
//
// A host reads the head first and looks for each segment in its local copies by the
// segment's size and digest: a run of a seed's chunks with that size whose hashes digest
// to it is that segment (its lengths and hashes are the seed's). It reads the records of
// the other segments only. A chunk's hash is short (5 bytes) because a match on it is only
// a candidate: the segment digests cover the whole 64-bit hashes, so a chance match, or a
// seed that changed after it was read, shows up when its segment is checked, and that
// segment alone is fetched again. The index comes from a store, and a host reads it in
// ranges the record's SHA-256 cannot cover, so the decoding here checks everything it says
// (sizes add up to the image's and to each segment's, parameters a chunker accepts); what
// it cannot check (that the hashes are the image's) the fetch never relies on: every byte
// is verified against the record's SHA-256.
import xxhash from 'xxhash-wasm';
import { z } from 'zod';
import { type ByteObserver, Failure, type InPlaceObserver } from '../../../src/index.ts';
import { MAX_ATTACHMENT_BYTES } from '../record.ts';
import { type ChunkingParams, chunkingProblem, GearChunker } from './gear-chunker.ts';

const MAGIC = Buffer.from('PLCHUNKS', 'latin1');
/** Format 1 (never released) kept the lengths in one compressed run, which a host had to read whole. */
export const CHUNK_INDEX_FORMAT = 2;
/** Bytes of each chunk's XXH64 kept in the index. */
const HASH_BYTES = 5;
/**
 * Chunks per segment: the unit a host matches in its seeds and reads records for. Smaller
 * segments match more of an image that changed in many places (chosen with bench/delta.ts;
 * docs/benchmarks/notebook.md) for 12 bytes of head each.
 */
const SEGMENT_CHUNKS = 32;
/** Bytes per segment in the head: its size and its digest. */
const SEGMENT_ENTRY_BYTES = 12;
/** The prefix of the header: magic and header length. */
const PREFIX_BYTES = MAGIC.length + 4;

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
  lengthBytes: z.number().int().min(1).max(4),
});

export type ChunkIndexHeader = z.infer<typeof headerSchema>;

/**
 * An image's chunks: `lengths[i]`, and the hash the index keeps of each: `hashHigh[i]`, the
 * XXH64's high half, and `hashLow[i]`, what the index keeps of its low half as
 * `keptLowHash` gives it (one byte a chunk at five bytes a hash). These are known for the
 * segments `known` marks (read from the index's records, or taken from a seed whose chunks
 * digest to the segment); a fetch makes them all known before it plans. Where a chunk
 * starts is `chunkOffset(index, i)`: a 3 GiB image has about 1.3 million chunks, and the
 * seeded fetch's memory bound leaves no room for 8 bytes more of each.
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
  /** Per segment, 1 once its chunks' lengths and hashes are known. */
  readonly known: Uint8Array;
  /** Where the segment records start in the encoded index, and the bytes of a chunk's length in them. */
  readonly recordsAt: number;
  readonly lengthBytes: number;
}

/** Where chunk `chunk` starts in the image. */
export function chunkOffset(index: ChunkIndex, chunk: number): number {
  const segment = Math.floor(chunk / index.segmentChunks);
  let offset = index.segmentOffsets[segment]!;
  for (let before = segment * index.segmentChunks; before < chunk; before++) offset += index.lengths[before]!;
  return offset;
}

export function segmentCount(index: Pick<ChunkIndex, 'count' | 'segmentChunks'>): number {
  return Math.ceil(index.count / index.segmentChunks);
}

/** Segment `segment`'s chunks, [first, end). */
export function segmentChunkRange(index: ChunkIndex, segment: number): { first: number; end: number } {
  const first = segment * index.segmentChunks;
  return { first, end: Math.min(index.count, first + index.segmentChunks) };
}

/** Segment `segment`'s bytes of the image, [start, end). */
export function segmentByteRange(index: ChunkIndex, segment: number): { start: number; end: number } {
  const end = segment + 1 < index.segmentOffsets.length ? index.segmentOffsets[segment + 1]! : index.size;
  return { start: index.segmentOffsets[segment]!, end };
}

/** Bytes [from, to) of the encoded index that hold the records of segments [first, end). */
export function recordSpan(index: ChunkIndex, first: number, end: number): { from: number; to: number } {
  const perChunk = index.lengthBytes + index.hashBytes;
  return {
    from: index.recordsAt + first * index.segmentChunks * perChunk,
    to: index.recordsAt + Math.min(index.count, end * index.segmentChunks) * perChunk,
  };
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

/** Whether an XXH64 (its halves) is, as far as the index keeps it, the hash of a chunk. */
export function chunkMatcher(index: ChunkIndex): (chunk: number, hashHigh: number, hashLow: number) => boolean {
  const keptLow = keptLowHash(index.hashBytes);
  return (chunk, hashHigh, hashLow) => index.hashHigh[chunk] === hashHigh && index.hashLow[chunk] === keptLow(hashLow);
}

/** Bytes a chunk length takes in the records, for chunks of at most `maxSize`. */
function lengthBytesFor(maxSize: number): number {
  return maxSize < 2 ** 16 ? 2 : maxSize < 2 ** 24 ? 3 : 4;
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
    const lengthBytes = lengthBytesFor(this.params.maxSize);
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
      lengthBytes,
    };
    const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
    const segments = Math.ceil(this.count / SEGMENT_CHUNKS);
    const recordsAt = PREFIX_BYTES + headerBytes.length + segments * SEGMENT_ENTRY_BYTES;
    const out = Buffer.alloc(recordsAt + this.count * (lengthBytes + HASH_BYTES));
    let at = MAGIC.copy(out, 0);
    at = out.writeUInt32LE(headerBytes.length, at);
    at += headerBytes.copy(out, at);
    // The whole hashes as 8-byte big-endian values, in order: what the segment digests hash, and each chunk's first bytes.
    const whole = Buffer.from(this.hashes.slice(0, 2 * this.count).buffer).swap32();
    const { h64Raw } = await xxhash();
    let record = recordsAt;
    for (let segment = 0; segment < segments; segment++) {
      const first = segment * SEGMENT_CHUNKS;
      const end = Math.min(this.count, first + SEGMENT_CHUNKS);
      let bytes = 0;
      for (let chunk = first; chunk < end; chunk++) {
        bytes += this.lengths[chunk]!;
        record = out.writeUIntLE(this.lengths[chunk]!, record, lengthBytes);
      }
      for (let chunk = first; chunk < end; chunk++) {
        for (let byte = 0; byte < HASH_BYTES; byte++) out[record++] = whole[8 * chunk + byte]!;
      }
      at = out.writeUInt32LE(bytes, at);
      at = out.writeBigUInt64BE(h64Raw(whole.subarray(8 * first, 8 * end)), at);
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
  if (buffer.length < PREFIX_BYTES || !buffer.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  const length = buffer.readUInt32LE(MAGIC.length);
  try {
    const parsed = headerSchema.safeParse(JSON.parse(buffer.subarray(PREFIX_BYTES, PREFIX_BYTES + length).toString('utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

type Bad = (why: string) => never;

function badFor(source: string): Bad {
  return (why) => {
    throw new Failure('integrity', `${source} is not a usable chunk index (${why})`);
  };
}

/** Reads bytes [from, to) of an encoded index (`to` clipped to its size); undefined when there is none. */
export type IndexReader = (from: number, to: number) => Promise<Uint8Array | undefined>;

/** Bytes read first, beside the head this version's index of an image that size has: the header, and some records. */
const FIRST_READ_BYTES = 4096;

/**
 * The head an index this version writes has for an image of `imageSize` bytes, a little
 * over, so that the first read usually brings all of it (a round trip less).
 */
export function expectedHeadBytes(imageSize: number): number {
  const segments = imageSize / (DEFAULT_CHUNKING.avgSize * SEGMENT_CHUNKS);
  return Math.ceil(segments * 1.1) * SEGMENT_ENTRY_BYTES;
}

/**
 * An index's head, read with `read` (the header and `headGuess` bytes more first, then the rest of the segment table), decoded
 * with no segment known, except those whose records came with the head's reads;
 * undefined when there is no index. A
 * Failure of kind `integrity` names `source` and what is wrong, in one line.
 */
export async function readChunkIndexHead(read: IndexReader, source: string, headGuess = 0): Promise<ChunkIndex | undefined> {
  const bad = badFor(source);
  const first = await read(0, FIRST_READ_BYTES + headGuess);
  if (!first) return undefined;
  let bytes = Buffer.from(first);
  const { header, at } = decodeHeader(bytes, bad);
  const headLength = at + Math.ceil(header.chunks / header.segmentChunks) * SEGMENT_ENTRY_BYTES;
  if (headLength > bytes.length) bytes = Buffer.concat([bytes, (await read(bytes.length, headLength)) ?? bad('it is gone')]);
  const index = decodeHead(bytes, header, at, bad);
  // Whole segments' records that came with the first read.
  let whole = 0;
  while (whole < segmentCount(index) && recordSpan(index, 0, whole + 1).to <= bytes.length) whole++;
  if (whole > 0) loadSegmentRecords(index, 0, bytes.subarray(index.recordsAt, recordSpan(index, 0, whole).to), source);
  return index;
}

/** A whole encoded index, every segment known. */
export function decodeChunkIndex(bytes: Uint8Array, source: string): ChunkIndex {
  const bad = badFor(source);
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { header, at } = decodeHeader(buffer, bad);
  const index = decodeHead(buffer, header, at, bad);
  const { to } = recordSpan(index, 0, segmentCount(index));
  if (buffer.length !== to) bad(`${buffer.length} bytes where its ${index.count} chunks take ${to}`);
  loadSegmentRecords(index, 0, buffer.subarray(index.recordsAt), source);
  return index;
}

/** The header, checked, and where the bytes after it start. */
function decodeHeader(buffer: Buffer, bad: Bad): { header: ChunkIndexHeader; at: number } {
  if (buffer.length < PREFIX_BYTES || !buffer.subarray(0, MAGIC.length).equals(MAGIC)) bad('no PLCHUNKS header');
  const headerLength = buffer.readUInt32LE(MAGIC.length);
  if (headerLength > buffer.length - PREFIX_BYTES) bad('its header runs past its end');
  let json: unknown;
  try {
    json = JSON.parse(buffer.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength).toString('utf8'));
  } catch {
    bad('its header is not JSON');
  }
  const format = (json as { format?: unknown } | null)?.format;
  if (typeof format === 'number' && format !== CHUNK_INDEX_FORMAT) bad(`format ${format}; this version reads format ${CHUNK_INDEX_FORMAT}`);
  const parsed = headerSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return bad(`${issue ? `${issue.path.join('.') || 'header'}: ${issue.message}` : 'bad header'}`);
  }
  const header = parsed.data;
  const problem = chunkingProblem(header.params);
  if (problem) bad(problem);
  if (header.lengthBytes !== lengthBytesFor(header.params.maxSize))
    bad(`${header.lengthBytes}-byte lengths for chunks of up to ${header.params.maxSize} bytes`);
  // Checked before anything is allocated for them: the counts come from a store.
  const { chunks, size, params } = header;
  if (chunks > Math.floor(size / params.minSize) + 1 || chunks < Math.ceil(size / params.maxSize))
    bad(`${chunks} chunks cannot cut ${size} bytes into ${params.minSize}..${params.maxSize}-byte pieces`);
  if (chunks * (header.lengthBytes + header.hashBytes) > MAX_ATTACHMENT_BYTES) bad(`${chunks} chunks do not fit in an attachment`);
  if (header.segmentChunks * params.maxSize >= 2 ** 32) bad(`segments of ${header.segmentChunks} chunks of up to ${params.maxSize} bytes`);
  return { header, at: PREFIX_BYTES + headerLength };
}

/** The segment table (`buffer` holds it after `at`): each segment's offset and digest, nothing known yet. */
function decodeHead(buffer: Buffer, header: ChunkIndexHeader, at: number, bad: Bad): ChunkIndex {
  const { chunks: count, segmentChunks, params } = header;
  const segments = Math.ceil(count / segmentChunks);
  if (buffer.length < at + segments * SEGMENT_ENTRY_BYTES) bad(`its segment table is cut short`);
  const segmentOffsets = new Float64Array(segments);
  const segmentHigh = new Uint32Array(segments);
  const segmentLow = new Uint32Array(segments);
  let offset = 0;
  for (let segment = 0; segment < segments; segment++) {
    const bytes = buffer.readUInt32LE(at);
    const chunks = Math.min(segmentChunks, count - segment * segmentChunks);
    if (bytes < chunks || bytes > chunks * params.maxSize) bad(`segment ${segment} is ${bytes} bytes for ${chunks} chunks`);
    segmentOffsets[segment] = offset;
    segmentHigh[segment] = buffer.readUInt32BE(at + 4);
    segmentLow[segment] = buffer.readUInt32BE(at + 8);
    offset += bytes;
    at += SEGMENT_ENTRY_BYTES;
  }
  if (offset !== header.size) bad(`its segments add up to ${offset} bytes, not ${header.size}`);
  return {
    params,
    size: header.size,
    sha256: header.sha256,
    count,
    lengths: params.maxSize < 2 ** 16 ? new Uint16Array(count) : new Uint32Array(count),
    segmentOffsets,
    hashHigh: new Uint32Array(count),
    hashLow: header.hashBytes <= 5 ? new Uint8Array(count) : new Uint32Array(count),
    hashBytes: header.hashBytes,
    segmentChunks,
    segmentHigh,
    segmentLow,
    known: new Uint8Array(segments),
    recordsAt: at,
    lengthBytes: header.lengthBytes,
  };
}

/**
 * Decodes the records of segments first, first + 1, … (`bytes` holds whole segments'
 * records, as `recordSpan` names them) into the index, marking them known. A record whose
 * lengths are out of bounds or do not add up to its segment's size is refused.
 */
export function loadSegmentRecords(index: ChunkIndex, first: number, bytes: Uint8Array, source: string): void {
  const bad = badFor(source);
  const { lengthBytes, hashBytes, lengths, hashHigh, hashLow, params } = index;
  const kept = keptLowHash(hashBytes);
  let at = 0;
  for (let segment = first; at < bytes.length; segment++) {
    if (segment >= segmentCount(index)) bad(`records past its last segment`);
    const { first: firstChunk, end } = segmentChunkRange(index, segment);
    const { start, end: segmentEnd } = segmentByteRange(index, segment);
    if (bytes.length - at < (end - firstChunk) * (lengthBytes + hashBytes)) bad(`the records of segment ${segment} are cut short`);
    let total = 0;
    // Byte by byte: a million chunks, where a Buffer call per chunk would cost more than the arithmetic.
    for (let chunk = firstChunk; chunk < end; chunk++) {
      let value = 0;
      for (let byte = 0; byte < lengthBytes; byte++) value += bytes[at++]! * 2 ** (8 * byte);
      if (value === 0 || value > params.maxSize) bad(`chunk ${chunk} is ${value} bytes, outside 1..${params.maxSize}`);
      lengths[chunk] = value;
      total += value;
    }
    if (total !== segmentEnd - start) bad(`the chunks of segment ${segment} add up to ${total} bytes, not ${segmentEnd - start}`);
    for (let chunk = firstChunk; chunk < end; chunk++) {
      hashHigh[chunk] = ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
      let low = 0;
      for (let byte = 4; byte < hashBytes; byte++) low |= bytes[at + byte]! << (8 * (7 - byte));
      hashLow[chunk] = kept(low >>> 0);
      at += hashBytes;
    }
    index.known[segment] = 1;
  }
}

/**
 * Segment `segment` is the seed chunks given (their lengths, and whole XXH64s as two u32s
 * a chunk, in order), which the caller found digest to it: they become its chunks.
 */
export function takeSegment(index: ChunkIndex, segment: number, lengths: ArrayLike<number>, hashes: ArrayLike<number>): void {
  const { first, end } = segmentChunkRange(index, segment);
  const kept = keptLowHash(index.hashBytes);
  for (let chunk = first; chunk < end; chunk++) {
    index.lengths[chunk] = lengths[chunk - first]!;
    index.hashHigh[chunk] = hashes[2 * (chunk - first)]!;
    index.hashLow[chunk] = kept(hashes[2 * (chunk - first) + 1]!);
  }
  index.known[segment] = 1;
}
