// How the OCI store cuts a layer into ranges for parallel reads: whatever the layer and
// span sizes, the ranges cover the layer in order without gaps or overlaps, none is longer
// than the span, they never grow towards the end, and the last ones are an eighth of the
// span (so the reads end together and the in-order hash has little left to read).
import test from 'ava';
import fc from 'fast-check';
import { readSpans } from '../tasks/store/oci/oci-store.ts';

test('ranges cover the layer in order, at most a span each, shrinking to an eighth of a span at the end', (t) => {
  const seed = Number(process.env.OCI_READ_SPANS_SEED ?? Date.now() % 2 ** 31);
  t.log(`seed ${seed} (replay: OCI_READ_SPANS_SEED=${seed})`);
  fc.assert(
    // Spans from twice the layer down to a thousandth of it (smaller ones only make more ranges of the same shape).
    fc.property(fc.integer({ min: 0, max: 2 ** 40 }), fc.double({ min: 0.001, max: 2, noNaN: true }), (size, fraction) => {
      const span = Math.max(1, Math.floor(size * fraction));
      const spans = readSpans(size, span);
      let at = 0;
      let previous = Number.POSITIVE_INFINITY;
      for (const [index, { start, end }] of spans.entries()) {
        if (start !== at) throw new Error(`range ${index} starts at ${start}, not ${at}`);
        const length = end - start;
        if (length > span) throw new Error(`range ${index} is ${length} bytes, more than the span ${span}`);
        if (length > previous) throw new Error(`range ${index} (${length} bytes) is longer than the one before (${previous})`);
        if (size > 0 && length === 0) throw new Error(`range ${index} is empty`);
        previous = length;
        at = end;
      }
      if (at !== size) throw new Error(`the ranges end at ${at}, not ${size}`);
      const smallest = Math.max(1, Math.floor(span / 8));
      // All but the very last range, which takes what is left, are a whole number of eighths.
      for (const { start, end } of spans.slice(0, -1))
        if ((end - start) % smallest !== 0 && end - start !== span) throw new Error('a range is not whole eighths');
      if (size >= 8 * span && spans.length > 1 && spans.at(-2)!.end - spans.at(-2)!.start !== smallest)
        throw new Error('the ranges do not shrink to an eighth of the span');
    }),
    { seed, numRuns: 300 },
  );
  t.deepEqual(readSpans(0, 1024), [{ start: 0, end: 0 }], 'an empty layer is one empty range');
  t.deepEqual(
    readSpans(1024 ** 3, 128 * 1024 ** 2).map(({ start, end }) => (end - start) / 1024 ** 2),
    [128, 112, 112, 96, 80, 64, 64, 48, 48, 48, 32, 32, 32, 16, 16, 16, 16, 16, 16, 16, 16],
  );
});
