// A stamp's record (recordOfStamp) is what the stamp index keeps of it, and the quick check
// settles a node as fresh when the record it would write now is the recorded one. Two
// stamps must therefore have the same record exactly when they hold the same values,
// whatever order their entries were written in and whatever characters names hold.
import test from 'ava';
import fc from 'fast-check';
import type { AssessContext } from '../../src/assess.ts';
import { canonicalJson, type Manifest } from '../../src/fingerprint.ts';
import { quickAssessor, recordOfStamp } from '../../src/quick-check.ts';
import type { Stamp } from '../../src/stamp.ts';
import { stringHasher } from '../../src/hasher.ts';
import type { FileHasher, NodeDef } from '../../src/types.ts';

const seed = Number(process.env.STAMP_RECORD_SEED ?? Date.now() % 1_000_000);

// Names and values built from the characters a framing could be confused by.
const text = fc.string({ unit: fc.constantFrom('a', '1', '0', ':', ';', '-', '+', '"', 'é', '/', ' '), maxLength: 6 });
const entries = fc.dictionary(text, text, { maxKeys: 4 });
const values = fc.record({
  kind: text,
  params: text,
  probe: fc.option(text, { nil: undefined }),
  files: entries,
  env: entries,
  deps: entries,
  outputs: entries,
});
type Values = typeof values extends fc.Arbitrary<infer T> ? T : never;

function stampOf(v: Values, order: (keys: string[]) => string[] = (keys) => keys): Stamp {
  const reordered = (record: Record<string, string>): Record<string, string> =>
    Object.fromEntries(order(Object.keys(record)).map((key) => [key, record[key]!]));
  const manifest: Manifest = { kind: v.kind, params: v.params, files: reordered(v.files), env: reordered(v.env), deps: reordered(v.deps) };
  if (v.probe !== undefined) manifest.probe = v.probe;
  return { version: 1, fingerprint: 'f'.repeat(16), manifest, outputs: reordered(v.outputs), outputDigest: 'o'.repeat(16), finishedAt: '' };
}

/** Equal as values: the same entries, in any order. */
function sameValues(a: Values, b: Values): boolean {
  const sorted = (record: Record<string, string>): string => JSON.stringify(Object.entries(record).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
  return a.kind === b.kind && a.params === b.params && a.probe === b.probe && LISTS.every((list) => sorted(a[list]) === sorted(b[list]));
}

const LISTS = ['files', 'env', 'deps', 'outputs'] as const;

/**
 * Values next to `v` where a careless encoding would give the same text: one character
 * moved across the boundary between two neighbouring strings (a name and its value, a
 * value and the next name, kind and params), an entry moved to the next list, or a probe
 * of '' for none.
 */
function nearMiss(v: Values, mutation: number, position: number): Values {
  if (mutation === 0) return { ...v, probe: v.probe === undefined ? '' : undefined };
  if (mutation === 1) {
    const from = position % (LISTS.length - 1);
    const [first] = Object.entries(v[LISTS[from]!]);
    if (!first) return v;
    const moved = { ...v, [LISTS[from]!]: Object.fromEntries(Object.entries(v[LISTS[from]!]).slice(1)) };
    return { ...moved, [LISTS[from + 1]!]: Object.fromEntries([first, ...Object.entries(v[LISTS[from + 1]!])]) };
  }
  // Every string in the order an encoding would write them.
  const slots = [v.kind, v.params, ...(v.probe === undefined ? [] : [v.probe]), ...LISTS.flatMap((list) => Object.entries(v[list]).flat())];
  const at = position % (slots.length - 1);
  const text = slots[at]!;
  if (text.length === 0) return v;
  slots[at] = text.slice(0, -1);
  slots[at + 1] = text.slice(-1) + slots[at + 1]!;
  const next = (): string => slots.shift()!;
  const rebuilt = { kind: next(), params: next(), probe: v.probe === undefined ? undefined : next() };
  const lists = Object.fromEntries(LISTS.map((list) => [list, Object.fromEntries(Object.keys(v[list]).map(() => [next(), next()]))]));
  return { ...rebuilt, ...lists } as Values;
}

test('two stamps have the same record exactly when they hold the same values, in any order', (t) => {
  t.log(`seed ${seed} (replay: STAMP_RECORD_SEED=${seed})`);
  t.notThrows(() =>
    fc.assert(
      fc.property(values, values, fc.nat(3), fc.nat(), (a, b, pick, position) => {
        const record = recordOfStamp(stampOf(a));
        if (record === undefined) return false;
        if (recordOfStamp(stampOf(a, (keys) => [...keys].reverse())) !== record) return false;
        // The same values, a near miss or other values: equality is exercised as often as difference.
        const other = pick === 0 ? a : pick === 1 ? b : nearMiss(a, pick - 2 + (position % 2), position >> 1);
        return (recordOfStamp(stampOf(other)) === record) === sameValues(a, other);
      }),
      { seed, numRuns: 3_000 },
    ),
  );
});

test('a stamp with what this version does not write has no record', (t) => {
  const good = stampOf({ kind: 'command', params: 'p', probe: undefined, files: {}, env: {}, deps: {}, outputs: {} });
  t.is(typeof recordOfStamp(good), 'string');
  t.is(recordOfStamp({ ...good, manifest: { ...good.manifest, extra: 'x' } as Manifest }), undefined, 'an unknown manifest key');
  t.is(recordOfStamp({ ...good, outputs: { 'a.txt': 1 } as unknown as Record<string, string> }), undefined, 'a digest that is not a string');
  t.is(recordOfStamp({ ...good, manifest: { ...good.manifest, files: null } as unknown as Manifest }), undefined, 'a list that is not a record');
});

test('the quick check settles a node exactly when its record now is the recorded one', async (t) => {
  t.log(`seed ${seed} (replay: STAMP_RECORD_SEED=${seed})`);
  const hashText = await stringHasher();
  const quick = await quickAssessor();
  const root = '/project';
  // A node whose every value the test controls: files and outputs by their digests in a
  // stat cache stand-in, dependencies by their output digests, no environment variables
  // (an unset one is recorded as "unset").
  const contextFor = (v: Values, recorded: Stamp): AssessContext => {
    const known = new Map([...Object.entries(v.files), ...Object.entries(v.outputs)].map(([path, digest]) => [`${root}/${path}`, digest]));
    const hasher: FileHasher = {
      hash: () => Promise.reject(new Error('the quick check never reads a file')),
      known: (path) => (known.has(path) ? { size: 0, xxh: known.get(path)! } : undefined),
    };
    const record = recordOfStamp(recorded);
    return {
      root,
      stateDir: `${root}/.pipeline`,
      hasher,
      depOutputs: new Map(Object.entries(v.deps)),
      recorded: {
        get: (id) => (id === 'node' && record !== undefined ? { fingerprint: recorded.fingerprint, outputDigest: recorded.outputDigest, record } : undefined),
      },
      forced: false,
      probe: v.probe === undefined ? undefined : { value: v.probe },
      flags: {},
      signal: new AbortController().signal,
      account: { bytes: 0 },
    };
  };
  // Paths a stat cache can look up: plain names under the root, each its own file.
  const path = fc.stringMatching(/^[a-z0-9]{1,4}$/);
  const files = fc.dictionary(path, fc.stringMatching(/^[0-9a-f]{16}$/), { maxKeys: 3 });
  const current = fc.record({
    kind: text,
    params: text,
    probe: fc.option(text, { nil: undefined }),
    files,
    env: fc.constant({}),
    deps: entries,
    outputs: files,
  });
  t.notThrows(() =>
    fc.assert(
      fc.property(current, fc.option(current, { nil: undefined }), (now, before) => {
        // The stamp records `before` (or `now`, half the time); the tree holds `now`.
        const was = before ?? now;
        const stamp = stampOf({ ...was, params: hashText(canonicalJson(was.params)) });
        const node: NodeDef = {
          id: 'node',
          kind: now.kind,
          deps: Object.keys(now.deps),
          params: now.params,
          files: Object.keys(now.files),
          outputs: Object.keys(now.outputs),
          run: () => Promise.resolve(),
        };
        // Output paths are also input paths only when both lists name them with the same digest.
        const clash = Object.keys(now.files).some((file) => file in now.outputs && now.outputs[file] !== now.files[file]);
        if (clash) return true;
        const verdict = quick(node, contextFor(now, stamp));
        const expected = sameValues(was, now);
        return expected ? verdict?.fresh === true && verdict.fingerprint === stamp.fingerprint : verdict === undefined;
      }),
      { seed, numRuns: 1_000 },
    ),
  );
});
