// The chunks of an image by hash, and where local seed files hold each of them. Typed
// arrays only, no Map of objects: a 3 GiB image has about 1.3 million chunks, and the fetch
// must stay within its memory bound (13 bytes a chunk here, beside the index's 7).
import { type ChunkIndex, chunkMatcher, keptLowHash } from './chunk-index.ts';

const EMPTY = 0xffffffff;
/** Seeds a holder can name (a seed's number is kept in the low bits of its offset). */
const SEED_SLOTS = 16;

export interface SeedLocation {
  readonly seed: number;
  readonly offset: number;
}

export class ChunkTable {
  /** Open addressing over distinct hashes: the first chunk with that hash, or EMPTY. */
  private readonly slots: Uint32Array;
  /**
   * Per distinct chunk (indexed by its first occurrence): 0 when no seed holds it, else
   * `offset * SEED_SLOTS + seed + 1` (offsets stay far below 2^49, so this is exact).
   */
  private readonly holder: Float64Array;
  /** What the index keeps of a chunk hash's low half. */
  private readonly keptLow: (low: number) => number;

  constructor(readonly index: ChunkIndex) {
    // At most four fifths full: short probe runs, and 5 bytes a chunk.
    this.slots = new Uint32Array(Math.max(1024, Math.ceil(index.count * 1.25))).fill(EMPTY);
    this.keptLow = keptLowHash(index.hashBytes);
    this.matches = chunkMatcher(index);
    this.holder = new Float64Array(index.count);
    for (let chunk = 0; chunk < index.count; chunk++) {
      const slot = this.slotOf(index.hashHigh[chunk]!, index.hashLow[chunk]!, index.lengths[chunk]!);
      if (this.slots[slot] === EMPTY) this.slots[slot] = chunk;
    }
  }

  /** The slot holding this chunk content, or the empty slot where it would go. */
  private slotOf(hashHigh: number, hashLow: number, length: number): number {
    const { hashHigh: highs, hashLow: lows, lengths } = this.index;
    const capacity = this.slots.length;
    for (let slot = ((hashLow ^ Math.imul(hashHigh, 0x9e3779b1)) >>> 0) % capacity; ; slot = slot + 1 === capacity ? 0 : slot + 1) {
      const chunk = this.slots[slot]!;
      if (chunk === EMPTY || (highs[chunk] === hashHigh && lows[chunk] === hashLow && lengths[chunk] === length)) return slot;
    }
  }

  /** The first chunk of the image with the same hash and length as chunk `chunk` (itself when it is the first). */
  firstOf(chunk: number): number {
    const { hashHigh, hashLow, lengths } = this.index;
    return this.slots[this.slotOf(hashHigh[chunk]!, hashLow[chunk]!, lengths[chunk]!)]!;
  }

  /**
   * A seed chunk was found at `offset` of seed `seed`, with that length and XXH64: when the
   * image has a chunk of that length and (kept) hash that no seed holds yet, this seed holds
   * it now. Returns whether it did.
   */
  offer(seed: number, offset: number, length: number, hashHigh: number, hashLow: number): boolean {
    const chunk = this.slots[this.slotOf(hashHigh, this.keptLow(hashLow), length)]!;
    if (chunk === EMPTY || this.holder[chunk] !== 0) return false;
    this.hold(chunk, seed, offset);
    return true;
  }

  /** Whether this XXH64 is, as far as the index keeps it, the hash of chunk `chunk`. */
  readonly matches: (chunk: number, hashHigh: number, hashLow: number) => boolean;

  /** Seed `seed` holds chunk `chunk` at `offset` (found by looking next to its neighbours' copies). */
  place(chunk: number, seed: number, offset: number): void {
    this.hold(this.firstOf(chunk), seed, offset);
  }

  /** Where a seed holds chunk `chunk` of the image, if one does. */
  locate(chunk: number): SeedLocation | undefined {
    const holder = this.holder[this.firstOf(chunk)]!;
    if (holder === 0) return undefined;
    const seed = (holder % SEED_SLOTS) - 1;
    return { seed, offset: (holder - seed - 1) / SEED_SLOTS };
  }

  private hold(first: number, seed: number, offset: number): void {
    if (!Number.isInteger(seed) || seed < 0 || seed >= SEED_SLOTS - 1) throw new Error(`seed number ${seed} is not 0 to ${SEED_SLOTS - 2}`);
    this.holder[first] = offset * SEED_SLOTS + seed + 1;
  }
}
