// canonicalJson is what a node's parameters are hashed from, so its text must never
// change: a different text would make every stamp written before it stale. Here it is held,
// on random values (holes, undefined, nested objects, unicode keys), to the first version.
import test from 'ava';
import fc from 'fast-check';
import { canonicalJson } from '../../src/fingerprint.ts';
import type { Json } from '../../src/types.ts';

/** The implementation stamps were first written with, kept as the reference. */
function firstCanonicalJson(value: Json): string {
  if (Array.isArray(value)) return `[${value.map(firstCanonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((key) => `${JSON.stringify(key)}:${firstCanonicalJson(value[key] as Json)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

test('canonicalJson writes exactly what the first version wrote, for any value', (t) => {
  const seed = Number(process.env.CANONICAL_JSON_SEED ?? Date.now() % 1_000_000);
  t.log(`seed ${seed} (replay: CANONICAL_JSON_SEED=${seed})`);
  const value = fc.anything({ withSparseArray: true, withNullPrototype: true, withObjectString: false, maxDepth: 4 });
  fc.assert(
    fc.property(value, (any) => canonicalJson(any as Json) === firstCanonicalJson(any as Json)),
    { seed, numRuns: 3_000 },
  );
  t.is(canonicalJson({ command: ['sh', '-c', 'echo "hi"'], b: 1, a: null }), '{"a":null,"b":1,"command":["sh","-c","echo \\"hi\\""]}');
});
