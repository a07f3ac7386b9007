// Bytes that follow from a number: property tests draw a salt, so the printed seed replays
// every byte of a failure (crypto's randomBytes would not).

/** A small deterministic generator (xorshift32) of numbers in [0, 1): the same salt, the same sequence. */
export function seededRandom(salt: number): () => number {
  let state = salt >>> 0 || 0x9e3779b9;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 2 ** 32;
  };
}

/** `size` bytes from `random`. */
export function seededBytes(size: number, random: () => number): Buffer {
  const words = new Uint32Array(Math.ceil(size / 4));
  for (let index = 0; index < words.length; index++) words[index] = random() * 2 ** 32;
  return Buffer.from(words.buffer, 0, size);
}
