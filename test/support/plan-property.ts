// "What the plan says is what the run does", as a property over random tree states of
// the image project (demo templates, real packer and qemu-img): for each state, the nodes
// `--dry-run --json` says would run or be adopted are the nodes the real run then ran or
// adopted (a `pending` node may go either way), and a second run does nothing.
//
// One tree is built once; each state starts from a hard-linked copy of it at the same
// path (so absolute paths in the config, stat cache and publish records still hold), and
// every change a state makes replaces a file rather than writing into it, so the shared
// inodes of the built tree are never modified.
import type { ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { copyFile, readFile, rename, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { startCli, type CliResult, type NodeJson, type SummaryJson } from './engine-project.ts';
import { BASE_OF, IMAGES, makeImageProject, shellCacheKey, UPSTREAM_FILE } from './image-project.ts';

type Image = (typeof IMAGES)[number];
type Base = keyof typeof UPSTREAM_FILE;
const BASES = Object.keys(UPSTREAM_FILE) as Base[];

/** One random state of the tree and the command run on it. */
export interface TreeState {
  /** `.pipeline/` removed: no stamps, no stat cache, as the shell scripts leave a tree. */
  readonly shellLayout: boolean;
  readonly templates: ReadonlyArray<{ image: Image; change: 'edited' | 'touched' | 'reverted' }>;
  /** `shell`: the key written by the shell script's recipe, and the image's stamps removed. */
  readonly cacheKeys: ReadonlyArray<{ image: Image; change: 'deleted' | 'corrupted' | 'shell' }>;
  /** The download's stamp removed: a base in cache/ that pipeline did not record. */
  readonly unstampedBases: readonly Base[];
  /** Upstream published a new image (the byte pattern written into it) and SHA512SUMS. */
  readonly upstreamChanged: ReadonlyArray<{ base: Base; pattern: number }>;
  readonly outputs: ReadonlyArray<{ image: Image; change: 'image deleted' | 'image modified' | '.sha256 deleted' | '.sha256 modified' }>;
  readonly publishedRemoved: readonly Image[];
  readonly offline: boolean;
  /** The images whose `:publish` is targeted (all three: the `publish` alias). */
  readonly targets: readonly Image[];
  readonly force: boolean;
}

// Each kind of change is absent from most states and touches one thing when present, so
// a state costs a few seconds (every rebuild is a real packer run) while the states as a
// whole still combine them all.
/** True about one time in `n`. */
const oneIn = (n: number) => fc.integer({ min: 1, max: n }).map((value) => value === 1);
/** Usually nothing; else one or more distinct entries. */
const sometimes = <T>(entries: fc.Arbitrary<T[]>) => fc.oneof({ weight: 2, arbitrary: fc.constant<T[]>([]) }, { weight: 1, arbitrary: entries });
const perImage = <C extends string>(...changes: C[]) =>
  sometimes(
    fc.uniqueArray(fc.record({ image: fc.constantFrom(...IMAGES), change: fc.constantFrom(...changes) }), {
      selector: (entry) => entry.image,
      minLength: 1,
      maxLength: IMAGES.length,
    }),
  );

export const treeStates: fc.Arbitrary<TreeState> = fc.record({
  shellLayout: oneIn(3),
  templates: perImage('edited', 'touched', 'reverted'),
  cacheKeys: perImage('deleted', 'corrupted', 'shell'),
  unstampedBases: sometimes(fc.subarray(BASES, { minLength: 1 })),
  upstreamChanged: sometimes(
    fc.uniqueArray(fc.record({ base: fc.constantFrom(...BASES), pattern: fc.integer({ min: 0x10, max: 0xff }) }), {
      selector: (entry) => entry.base,
      minLength: 1,
      maxLength: BASES.length,
    }),
  ),
  outputs: perImage('image deleted', 'image modified', '.sha256 deleted', '.sha256 modified'),
  publishedRemoved: sometimes(fc.subarray([...IMAGES], { minLength: 1 })),
  offline: fc.boolean(),
  targets: fc.subarray([...IMAGES], { minLength: 1 }),
  force: oneIn(5),
});

export interface BuiltTree {
  /** Where every state is laid out (the path the tree was built at). */
  readonly work: string;
  /**
   * Runs one state and returns what disagreed (empty when the property holds).
   * `beforeCommand` is called before each CLI run (a test refreshes its timeout there).
   */
  check(state: TreeState, beforeCommand?: () => void): Promise<string[]>;
  /** Throws if a state wrote into the built tree through a shared inode. */
  assertUntouched(): Promise<void>;
  remove(): Promise<void>;
}

/**
 * Builds the image project once (download, build, checksum, publish), kept aside as the
 * base of every state. `beforeCommand` is called before each CLI run, one per image.
 */
export async function buildTree(beforeCommand: () => void = () => undefined): Promise<BuiltTree> {
  const cleanups: Array<() => Promise<unknown>> = [];
  // makeImageProject ties its temp dir to a test's teardown; this tree outlives one test.
  const owner = { teardown: (fn: () => Promise<unknown>) => cleanups.push(fn) } as unknown as ExecutionContext;
  const project = await makeImageProject(owner);
  const work = project.root;
  const base = `${work}.base`;
  try {
    for (const name of IMAGES) {
      beforeCommand();
      const built = await startCli(work, [`${name}:publish`], { timeoutMs: 300_000 }).done;
      if (built.code !== 0) throw new Error(`building the base tree failed:\n${built.stderr}`);
    }
    await rm(join(work, '.pipeline', 'packer_cache'), { recursive: true, force: true });
    await rename(work, base);
  } catch (error) {
    for (const cleanup of cleanups) await cleanup();
    throw error;
  }
  const digest = treeDigest(base);

  let removed = false;
  return {
    work,
    async check(state, beforeCommand = () => undefined) {
      // A property still running after its test timed out finds the tree gone: say so once per state, quickly.
      if (removed) throw new Error('the built tree was removed: the test has ended');
      await rm(work, { recursive: true, force: true });
      execFileSync('cp', ['-al', base, work]);
      const cli = (args: string[]): Promise<CliResult> => {
        beforeCommand();
        return startCli(work, args, { timeoutMs: 300_000 }).done;
      };
      try {
        await apply(work, state, cli);
        return await compare(work, state, cli);
      } finally {
        await rm(work, { recursive: true, force: true });
      }
    },
    async assertUntouched() {
      if (treeDigest(base) !== digest) throw new Error('a state changed the built tree through a hard link');
    },
    async remove() {
      removed = true;
      await rm(base, { recursive: true, force: true });
      for (const cleanup of cleanups) await cleanup();
    },
  };
}

type Cli = (args: string[]) => Promise<CliResult>;

async function apply(root: string, state: TreeState, run: Cli): Promise<void> {
  const path = (relative: string): string => join(root, relative);

  for (const { image: name, change } of state.templates) {
    const file = path(`templates/${name}/template.pkr.hcl`);
    const original = await readFile(file, 'utf8');
    if (change === 'touched') {
      await detach(file);
      const earlier = new Date(Date.now() - 60_000);
      await utimes(file, earlier, earlier);
      continue;
    }
    await replace(file, `${original}\n# edited\n`);
    if (change === 'reverted') {
      // Built from the edit, then the edit undone: the key moves back and the build runs.
      const edited = await run([`${name}:build`, '--json']);
      if (edited.code !== 0) throw new Error(`building the edited ${name} failed:\n${edited.stderr}`);
      await replace(file, original);
    }
  }
  for (const { base, pattern } of state.upstreamChanged) {
    const file = path(`upstream/${UPSTREAM_FILE[base]}`);
    await detach(file);
    execFileSync('qemu-io', ['-c', `write -P 0x${pattern.toString(16)} 0 64k`, file], { stdio: 'ignore' });
    const sums = execFileSync('sha512sum', Object.values(UPSTREAM_FILE), { cwd: path('upstream'), encoding: 'utf8' });
    await replace(path('upstream/SHA512SUMS'), sums);
  }
  if (state.shellLayout) await rm(path('.pipeline'), { recursive: true, force: true });
  const removeStamp = (id: string) => rm(path(`.pipeline/stamps/${encodeURIComponent(id)}.json`), { force: true });
  for (const base of state.unstampedBases) await removeStamp(`${base}:download`);
  for (const { image: name, change } of state.cacheKeys) {
    const key = path(`images/${name}/.cache-key`);
    if (change === 'deleted') await rm(key);
    else if (change === 'corrupted') await replace(key, 'not a key\n');
    else {
      await replace(key, `${shellCacheKey({ root }, name, `cache/${UPSTREAM_FILE[BASE_OF[name]]}`)}\n`);
      for (const step of ['build', 'checksum', 'publish']) await removeStamp(`${name}:${step}`);
    }
  }
  for (const { image: name, change } of state.outputs) {
    const file = path(`images/${name}/${name}.qcow2`);
    if (change === 'image deleted') await rm(file);
    else if (change === '.sha256 deleted') await rm(`${file}.sha256`);
    else if (change === '.sha256 modified') await replace(`${file}.sha256`, `${'0'.repeat(64)}  ${name}.qcow2\n`);
    else {
      const bytes = await readFile(file);
      const middle = bytes.length >> 1;
      bytes[middle] = bytes[middle]! ^ 0xff;
      await replace(file, bytes);
    }
  }
  for (const name of state.publishedRemoved) await rm(path(`publish/${name}.img`));
}

/** The command a state runs: its targets, `--offline`, and `--force` when asked. */
export function commandOf(state: TreeState, withForce = state.force): string[] {
  const targets = state.targets.length === IMAGES.length ? ['publish'] : state.targets.map((name) => `${name}:publish`);
  return [...targets, ...(state.offline ? ['--offline'] : []), ...(withForce ? ['--force'] : [])];
}

/** What the run did with a node, for comparison with what the plan said. */
const ALLOWED: Record<string, readonly NodeJson['status'][]> = {
  fresh: ['fresh'],
  adopted: ['adopted'],
  stale: ['ran'],
  pending: ['ran', 'fresh', 'adopted'],
};

async function compare(root: string, state: TreeState, cli: Cli): Promise<string[]> {
  const seconds: string[] = [];
  const run = async (args: string[]): Promise<CliResult> => {
    const started = Date.now();
    const result = await cli([...args, '--json']);
    seconds.push(((Date.now() - started) / 1000).toFixed(1));
    return result;
  };
  const problems: string[] = [];
  const dry = await run([...commandOf(state), '--dry-run']);
  if (dry.code !== 0 || !dry.json) return [`--dry-run exited ${dry.code}: ${dry.stderr.trim()}`];
  const real = await run(commandOf(state));
  if (real.code !== 0 || !real.json) return [`the run exited ${real.code}: ${lastLines(real.stderr)}`];
  const ran = byId(real.json);
  for (const planned of dry.json.nodes) {
    const actual = ran.get(planned.id);
    if (!actual) problems.push(`${planned.id}: planned ${planned.status}, absent from the run`);
    else if (!ALLOWED[planned.status]?.includes(actual.status)) {
      problems.push(`${planned.id}: planned ${planned.status} (${planned.reason}), run ${actual.status} (${actual.reason})`);
    }
  }
  if (ran.size !== dry.json.nodes.length) problems.push(`the plan has ${dry.json.nodes.length} nodes, the run ${ran.size}`);

  const second = await run(commandOf(state, false));
  if (process.env.PLAN_PROPERTY_TIMES)
    process.stderr.write(`state: dry run ${seconds[0]}s, run ${seconds[1]}s (${real.json.ran} ran), second run ${seconds[2]}s\n`);
  if (second.code !== 0 || !second.json) return [...problems, `the second run exited ${second.code}: ${lastLines(second.stderr)}`];
  const busy = second.json.nodes.filter((node) => node.status !== 'fresh');
  if (busy.length > 0) problems.push(`the second run did work: ${busy.map((node) => `${node.id} ${node.status} (${node.reason})`).join('; ')}`);
  if (second.json.bytesHashed !== 0) problems.push(`the second run hashed ${second.json.bytesHashed} bytes`);

  // What the run left for the targeted images agrees with their checksums (what
  // `pipeline verify` checks): no corrupt bytes were blessed.
  for (const name of state.targets) {
    const file = join(root, `images/${name}/${name}.qcow2`);
    const recorded = (await readFile(`${file}.sha256`, 'utf8')).split(' ')[0];
    if (
      recorded !==
      createHash('sha256')
        .update(await readFile(file))
        .digest('hex')
    )
      problems.push(`${name}.qcow2 does not match its .sha256 after the run`);
  }
  return problems;
}

/** Makes `path` its own inode (a copy renamed over it), so changing it in place leaves the built tree alone. */
async function detach(path: string): Promise<void> {
  await copyFile(path, `${path}.detach`);
  await rename(`${path}.detach`, path);
}

/** Replaces a file's content through a new inode. */
async function replace(path: string, content: string | Uint8Array): Promise<void> {
  await writeFile(`${path}.replace`, content);
  await rename(`${path}.replace`, path);
}

function byId(summary: SummaryJson): Map<string, NodeJson> {
  return new Map(summary.nodes.map((node) => [node.id, node] as const));
}

function lastLines(text: string): string {
  return text.trim().split('\n').slice(-8).join('\n');
}

/** Content and metadata of every file of the built tree (it is small: a few MB). */
function treeDigest(root: string): string {
  const listing = execFileSync('find', [root, '-type', 'f', '-printf', '%P %s %T@ %i\\n'], { encoding: 'utf8' }).split('\n').sort();
  const hash = createHash('sha256').update(listing.join('\n'));
  for (const line of listing) if (line) hash.update(readFileSync(join(root, line.split(' ')[0]!)));
  return hash.digest('hex');
}

/** Describes a state in one line, for a failure message. */
export function describeState(state: TreeState): string {
  return JSON.stringify(state);
}
