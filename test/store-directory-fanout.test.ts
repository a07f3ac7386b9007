// The shared-directory store under a fan-out, through the real CLI: separate copies of a
// built tree (separate machines mounting one directory) run `pipeline {image}:upload` at
// once, round after round, each starting at a random offset. After every round the
// directory must be consistent: each image's record names a complete blob holding one of
// the uploaded versions, `{name}.qcow2` and its `.sha256` agree with the record,
// images.json lists exactly the records, and no temporary file is left anywhere.
//
// DIR_FANOUT_ROUNDS sets the rounds of each scenario (default 6; `npm run test:release-long` runs 60).
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'ava';
import { startCli, type CliResult } from './support/engine-project.ts';
import { imageVersion, type ImageVersion } from './support/release-state.ts';
import { directoryProblems } from './support/store-contract.ts';
import { Trees, type Tree } from './support/runner-trees.ts';

const ROUNDS = process.env.DIR_FANOUT_ROUNDS ? Number(process.env.DIR_FANOUT_ROUNDS) : 6;
const trees = new Trees();
let shared: string | undefined;
let runners: Promise<{ a: Tree; b: Tree; c: Tree; different: Tree }> | undefined;

function setupRunners() {
  runners ??= (async () => {
    shared = await mkdtemp(join(tmpdir(), 'pipeline-shared-fanout-'));
    const built = await trees.built(`release: { dir: ${JSON.stringify(shared)}, tag: 'latest' },`);
    const [a, b, c, different] = await Promise.all(['dir-runner-a', 'dir-runner-b', 'dir-runner-c', 'dir-runner-d'].map((label) => trees.copy(built, label)));
    await trees.rebuildDifferently(different!, 'debian-12');
    return { a: a!, b: b!, c: c!, different: different! };
  })();
  return runners;
}

test.after.always(async () => {
  await trees.cleanup();
  if (shared) await rm(shared, { recursive: true, force: true });
});

interface Job {
  readonly tree: Tree;
  readonly target: string;
}

async function versionsOf(jobs: readonly Job[]): Promise<Map<string, ImageVersion[]>> {
  const versions = new Map<string, ImageVersion[]>();
  for (const job of jobs) {
    const name = job.target.replace(/:upload$/, '');
    const version = await imageVersion(name, job.tree.path(`images/${name}/${name}.qcow2`));
    const known = versions.get(name) ?? [];
    if (!known.some((candidate) => candidate.sha256 === version.sha256)) known.push(version);
    versions.set(name, known);
  }
  return versions;
}

async function runRounds(t: import('ava').ExecutionContext, label: string, jobs: readonly Job[]): Promise<void> {
  const versions = await versionsOf(jobs);
  const dir = join(shared!, 'latest');
  const winners = new Map<string, number>();
  for (let round = 1; round <= ROUNDS; round++) {
    await rm(dir, { recursive: true, force: true });
    // Every other round the starts are nearly together, so the writers' file operations overlap.
    const spread = round % 2 === 0 ? 20 : 300;
    const offsets = jobs.map(() => Math.floor(Math.random() * spread));
    const results: CliResult[] = await Promise.all(
      jobs.map(async (job, index) => {
        await sleep(offsets[index]!);
        return startCli(job.tree.root, [job.target], { timeoutMs: 120_000 }).done;
      }),
    );
    const where = `${label} round ${round} of ${ROUNDS} (start offsets ${offsets.join('/')} ms)`;
    for (const [index, result] of results.entries()) t.is(result.code, 0, `${where}: ${jobs[index]!.target} exited ${result.code}\n${result.stderr}`);
    t.deepEqual(await directoryProblems(dir, versions), [], where);
    const record = JSON.parse(await readFile(join(dir, 'debian-12.json'), 'utf8')) as { image: { sha256: string } };
    winners.set(record.image.sha256, (winners.get(record.image.sha256) ?? 0) + 1);
  }
  t.log(`${label}: ${ROUNDS} rounds; debian-12 versions that ended in the store: ${[...winners.values()].join(' / ')}`);
}

test.serial('three runners upload three images into one shared directory at random offsets, and it stays consistent', async (t) => {
  const { a, b, c } = await setupRunners();
  await runRounds(t, 'three images', [
    { tree: a, target: 'debian-12:upload' },
    { tree: b, target: 'debian-13:upload' },
    { tree: c, target: 'pve-9:upload' },
  ]);
});

test.serial('two runners upload different bytes of one image while a third uploads another, and the copies agree with the record', async (t) => {
  const { a, c, different } = await setupRunners();
  await runRounds(t, 'same image twice', [
    { tree: a, target: 'debian-12:upload' },
    { tree: different, target: 'debian-12:upload' },
    { tree: c, target: 'pve-9:upload' },
  ]);
});

test.serial('two runners upload the same bytes of one image while a third uploads another, and no temporary name is left', async (t) => {
  const { a, b, c } = await setupRunners();
  await runRounds(t, 'same bytes twice', [
    { tree: a, target: 'debian-12:upload' },
    { tree: b, target: 'debian-12:upload' },
    { tree: c, target: 'pve-9:upload' },
  ]);
});
