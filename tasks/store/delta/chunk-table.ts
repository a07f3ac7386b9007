// The chunks of an image by hash, and where local seed files hold each of them. Typed
// arrays only, no Map of objects: a 3 GiB image has about 700,000 chunks, and the fetch
// must stay within its memory bound (about 30 bytes a chunk here).
import { type ChunkIndex, lowHashMask } from './chunk-index.ts';

/** No seed holds the chunk. */
const NOWHERE = -1;
const EMPTY = 0xffffffff;

export interface SeedLocation {
  readonly seed: number;
  readonly offset: number;
}

export class ChunkTable {
  /** Open addressing over distinct hashes: the first chunk with that hash, or EMPTY. */
  private readonly slots: Uint32Array;
  private readonly mask: number;
  /** Per chunk: the first chunk of the image with the same hash and length (itself when it is the first). */
  readonly firstOfHash: Uint32Array;
  /** Per distinct chunk (indexed by its first occurrence): which seed holds it, and where. */
  private readonly seedOf: Int16Array;
  private readonly seedOffset: Float64Array;
  /** The bits of a chunk hash's low half the index keeps. */
  private readonly lowMask: number;

  constructor(readonly index: ChunkIndex) {
    let capacity = 1024;
    // At most three quarters full: short probe runs, and 4 bytes a slot.
    while (capacity * 3 < index.count * 4) capacity *= 2;
    this.slots = new Uint32Array(capacity).fill(EMPTY);
    this.mask = capacity - 1;
    this.lowMask = lowHashMask(index.hashBytes);
    this.firstOfHash = new Uint32Array(index.count);
    this.seedOf = new Int16Array(index.count).fill(NOWHERE);
    this.seedOffset = new Float64Array(index.count);
    for (let chunk = 0; chunk < index.count; chunk++) {
      const slot = this.slotOf(index.hashHigh[chunk]!, index.hashLow[chunk]!, index.lengths[chunk]!);
      if (this.slots[slot] === EMPTY) this.slots[slot] = chunk;
      this.firstOfHash[chunk] = this.slots[slot]!;
    }
  }

  /** The slot holding this chunk content, or the empty slot where it would go. */
  private slotOf(hashHigh: number, hashLow: number, length: number): number {
    const { hashHigh: highs, hashLow: lows, lengths } = this.index;
    for (let slot = (hashLow ^ Math.imul(hashHigh, 0x9e3779b1)) & this.mask; ; slot = (slot + 1) & this.mask) {
      const chunk = this.slots[slot]!;
      if (chunk === EMPTY || (highs[chunk] === hashHigh && lows[chunk] === hashLow && lengths[chunk] === length)) return slot;
    }
  }

  /**
   * A seed chunk was found at `offset` of seed `seed`, with that length and XXH64: when the
   * image has a chunk of that length and (kept) hash that no seed holds yet, this seed holds
   * it now. Returns whether it did.
   */
  offer(seed: number, offset: number, length: number, hashHigh: number, hashLow: number): boolean {
    const chunk = this.slots[this.slotOf(hashHigh, (hashLow & this.lowMask) >>> 0, length)]!;
    if (chunk === EMPTY || this.seedOf[chunk] !== NOWHERE) return false;
    this.seedOf[chunk] = seed;
    this.seedOffset[chunk] = offset;
    return true;
  }

  /** Whether this XXH64 is, as far as the index keeps it, the hash of chunk `chunk`. */
  matches(chunk: number, hashHigh: number, hashLow: number): boolean {
    return this.index.hashHigh[chunk] === hashHigh && this.index.hashLow[chunk] === (hashLow & this.lowMask) >>> 0;
  }

  /** Seed `seed` holds chunk `chunk` at `offset` (found by looking next to its neighbours' copies). */
  place(chunk: number, seed: number, offset: number): void {
    const first = this.firstOfHash[chunk]!;
    this.seedOf[first] = seed;
    this.seedOffset[first] = offset;
  }

  /** Where a seed holds chunk `chunk` of the image, if one does. */
  locate(chunk: number): SeedLocation | undefined {
    const first = this.firstOfHash[chunk]!;
    const seed = this.seedOf[first]!;
    return seed === NOWHERE ? undefined : { seed, offset: this.seedOffset[first]! };
  }

  /** Forgets that seed `seed` holds anything (it changed under the fetch): its chunks are fetched instead. */
  dropSeed(seed: number): void {
    for (let chunk = 0; chunk < this.seedOf.length; chunk++) if (this.seedOf[chunk] === seed) this.seedOf[chunk] = NOWHERE;
  }
}
