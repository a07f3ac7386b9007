// The settle planner (tasks/store/github/layout.ts) against a model of a release, under
// every interleaving fast-check can think of: up to three writers replace one image at
// once, each may be killed after any request, requests of different writers interleave
// one by one, and a last writer settles what is left. Checked after every single request:
// a reader finds a complete copy (once there was one); at the end: exactly the newest
// committed version in place, consistent, and nothing left behind.
// The real-process version of this is github-fanout and github-swap-kill; this one covers
// the interleavings processes rarely hit.
import test from 'ava';
import fc from 'fast-check';
import { checksumAssetName, partAssetName, recordAssetName, tempAssetName, wholeAssetName } from '../tasks/store/github/asset-names.ts';
import { layoutOf, settlePlan, type Action, type Asset } from '../tasks/store/github/layout.ts';
import type { RecordDoc } from '../tasks/store/github/record-asset.ts';

const IMAGE = 'debian-12';

interface ModelAsset extends Asset {
  readonly content: string;
}

/** A release: atomic requests with GitHub's answers to conflicts. */
class Release {
  private readonly assets = new Map<number, ModelAsset>();
  private nextId = 1;
  requests = 0;

  upload(name: string, content: string, size: number): number | 'taken' {
    this.requests++;
    if ([...this.assets.values()].some((asset) => asset.name === name)) return 'taken';
    const id = this.nextId++;
    this.assets.set(id, { id, name, size, state: 'uploaded', content });
    return id;
  }
  delete(id: number): 'deleted' | 'gone' {
    this.requests++;
    return this.assets.delete(id) ? 'deleted' : 'gone';
  }
  rename(id: number, name: string): 'renamed' | 'taken' | 'gone' {
    this.requests++;
    const asset = this.assets.get(id);
    if (!asset) return 'gone';
    if ([...this.assets.values()].some((other) => other.id !== id && other.name === name)) return 'taken';
    this.assets.set(id, { ...asset, name });
    return 'renamed';
  }
  exists(id: number): boolean {
    this.requests++;
    return this.assets.has(id);
  }
  list(): ModelAsset[] {
    return [...this.assets.values()];
  }
  docs(): Map<number, RecordDoc | undefined> {
    const docs = new Map<number, RecordDoc | undefined>();
    for (const asset of this.assets.values()) if (asset.content.startsWith('{')) docs.set(asset.id, JSON.parse(asset.content) as RecordDoc);
    return docs;
  }
}

interface Version {
  readonly label: string;
  readonly pieces: number;
}

function pieceNames(version: Version): string[] {
  return version.pieces === 1 ? [wholeAssetName(IMAGE)] : Array.from({ length: version.pieces }, (_, index) => partAssetName(IMAGE, index));
}

function doc(version: Version, assets: RecordDoc['assets']): RecordDoc {
  const sha256 = version.label.padEnd(64, '0').slice(0, 64);
  const parts = pieceNames(version).map((name) => ({ name, size: 10 }));
  return { schemaVersion: 1, name: IMAGE, image: { size: parts.length * 10, sha256, parts, versions: {} }, assets };
}

type Step = Generator<void, void, void>;

/** The executor of settle.ts, one request per step. */
function* settle(release: Release, over: (run: string) => boolean): Step {
  for (let round = 0; round < 50; round++) {
    const layout = layoutOf(IMAGE, release.list(), release.docs());
    const phases = settlePlan(layout, (run) => over(run));
    yield;
    if (!phases.length) return;
    let raced = false;
    for (const phase of phases) {
      for (const action of phase) {
        const outcome = yield* perform(release, action);
        if (outcome === 'raced') raced = true;
      }
      if (raced) break;
    }
  }
  throw new Error('settle did not converge in 50 rounds');
}

function* perform(release: Release, action: Action): Generator<void, 'done' | 'raced', void> {
  switch (action.kind) {
    case 'rename': {
      const result = release.rename(action.asset.id, action.to);
      yield;
      return result === 'renamed' ? 'done' : 'raced';
    }
    case 'replace': {
      release.delete(action.old.id);
      yield;
      const result = release.rename(action.asset.id, action.to);
      yield;
      return result === 'renamed' ? 'done' : 'raced';
    }
    case 'delete':
      release.delete(action.asset.id);
      yield;
      return 'done';
    case 'undo':
      for (const id of action.missing) {
        const exists = release.exists(id);
        yield;
        if (exists) return 'raced';
      }
      release.delete(action.commit.id);
      yield;
      return 'done';
  }
}

/** put-image.ts: temporaries, the commit, then settle. */
function* put(release: Release, version: Version, run: string, over: (run: string) => boolean, commits: Map<number, Version>): Step {
  const assets: RecordDoc['assets'] = [];
  for (const name of [...pieceNames(version), checksumAssetName(IMAGE)]) {
    const id = release.upload(tempAssetName(name, run), `${version.label}:${name}`, 10);
    yield;
    if (id === 'taken') throw new Error('temporary names are unique');
    assets.push({ name, id });
  }
  const commit = release.upload(tempAssetName(recordAssetName(IMAGE), run), JSON.stringify(doc(version, assets)), 100);
  if (commit === 'taken') throw new Error('commit names are unique');
  commits.set(commit, version);
  yield;
  yield* settle(release, over);
}

const versionArb = fc.record({ label: fc.constantFrom('a', 'b', 'c', 'd'), pieces: fc.integer({ min: 1, max: 3 }) });
const scenarioArb = fc.record({
  initial: fc.option(versionArb, { nil: undefined }),
  writers: fc.array(fc.record({ version: versionArb, killAfter: fc.option(fc.integer({ min: 0, max: 40 }), { nil: undefined }) }), {
    minLength: 1,
    maxLength: 3,
  }),
  schedule: fc.array(fc.nat(), { maxLength: 300 }),
});

/** SETTLE_RUNS runs in tests of at most 1000, each with its own seed (SETTLE_SEED fixes the first). */
const RUNS = Number(process.env.SETTLE_RUNS ?? 400);
const FIRST_SEED = Number(process.env.SETTLE_SEED ?? Date.now() % 2 ** 31);
for (let first = 0, part = 0; first < RUNS; first += 1000, part++) {
  const seed = (FIRST_SEED + part) % 2 ** 31;
  const runs = Math.min(1000, RUNS - first);
  test(`settling converges on the newest commit under any interleaving and any kills, and a complete copy is always readable (${runs} runs, seed ${seed})`, (t) => {
    t.log(`fast-check seed ${seed} (SETTLE_SEED=${seed} SETTLE_RUNS=${runs} repeats it)`);
    check(seed, runs);
    t.pass();
  });
}

function check(seed: number, numRuns: number): void {
  fc.assert(
    fc.property(scenarioArb, ({ initial, writers, schedule }) => {
      const release = new Release();
      const commits = new Map<number, Version>();
      const running = new Set<string>();
      const over = (run: string) => !running.has(run);
      if (initial) {
        const setup = put(release, { ...initial, label: `initial-${initial.label}` }, 'init', over, commits);
        running.add('init');
        while (!setup.next().done);
        running.delete('init');
      }
      const readable = () => layoutOf(IMAGE, release.list(), release.docs()).current !== undefined;
      let everReadable = readable();
      const live = writers.map((writer, index) => {
        const run = `w${index}`;
        running.add(run);
        return {
          run,
          steps: put(release, { ...writer.version, label: `${writer.version.label}${index}` }, run, over, commits),
          left: writer.killAfter,
          done: false,
        };
      });
      let turn = 0;
      while (live.some((writer) => !writer.done)) {
        const candidates = live.filter((writer) => !writer.done);
        const writer = candidates[(schedule[turn] ?? turn) % candidates.length]!;
        turn++;
        if (writer.left !== undefined && writer.left-- <= 0) {
          writer.done = true; // killed: never takes another step; its run is over
          running.delete(writer.run);
          continue;
        }
        if (writer.steps.next().done) {
          writer.done = true;
          running.delete(writer.run);
        }
        if (everReadable && !readable())
          throw new Error(
            `no complete copy readable after request ${release.requests}: ${release
              .list()
              .map((asset) => asset.name)
              .join(', ')}`,
          );
        everReadable ||= readable();
      }
      // The next upload, from another machine, settles whatever is left.
      const last = settle(release, over);
      while (!last.next().done) if (everReadable && !readable()) throw new Error('no complete copy readable during the last settle');

      const assets = release.list();
      if (commits.size === 0) return;
      // A commit is complete when uploaded (its pieces went first) and only a newer one may replace it.
      const newest = Math.max(...commits.keys());
      const layout = layoutOf(IMAGE, assets, release.docs());
      if (!layout.current) {
        // Possible only if every commit lost its bytes before anyone settled it, which kills cannot cause.
        throw new Error(`nothing in place at the end: ${assets.map((asset) => asset.name).join(', ')}`);
      }
      if (layout.current.pending) throw new Error('the last settle left the image pending');
      const names = assets.map((asset) => asset.name).sort();
      const version = commits.get(layout.current.asset.id)!;
      const wanted = [...pieceNames(version), checksumAssetName(IMAGE), recordAssetName(IMAGE)].sort();
      if (JSON.stringify(names) !== JSON.stringify(wanted)) throw new Error(`left ${names.join(', ')}, wanted ${wanted.join(', ')}`);
      for (const asset of assets) {
        if (asset.name !== recordAssetName(IMAGE) && asset.content !== `${version.label}:${asset.name}`)
          throw new Error(`${asset.name} holds ${asset.content}, not version ${version.label}`);
      }
      if (layout.current.asset.id !== newest) throw new Error(`commit ${layout.current.asset.id} is in place, not the newest (${newest})`);
    }),
    { seed, numRuns },
  );
}
