// resolveUnder is path.resolve, made cheaper for the plain relative paths configs name:
// for any root and path, the two agree.
import test from 'ava';
import fc from 'fast-check';
import { resolve } from 'node:path';
import { resolveUnder } from '../../src/under-root.ts';

const segment = fc.constantFrom('a', 'b.txt', '.', '..', '', '.hidden', 'x..y', '...', 'out', 'c d');
const pathOf = fc.array(segment, { minLength: 0, maxLength: 6 }).map((segments) => segments.join('/'));
const rootOf = fc.oneof(
  fc.constantFrom('/', '/tmp/tree', '/tmp/tree/', '/tmp//tree', '/tmp/./tree', 'relative/tree'),
  pathOf.map((path) => `/${path}`),
);

test('resolveUnder(root, path) is resolve(root, path) for any root and path', (t) => {
  const seed = Number(process.env.UNDER_ROOT_SEED ?? Date.now() % 1_000_000);
  t.log(`seed ${seed} (replay: UNDER_ROOT_SEED=${seed})`);
  fc.assert(
    fc.property(
      rootOf,
      fc.oneof(
        pathOf,
        pathOf.map((path) => `/${path}`),
      ),
      (root, path) => resolveUnder(root, path) === resolve(root, path),
    ),
    { seed, numRuns: 5_000 },
  );
  t.is(resolveUnder('/tmp/tree', 'out/a.txt'), '/tmp/tree/out/a.txt');
  t.is(resolveUnder('/', 'a'), '/a');
});
