// A GitHub Actions fan-out, through the real CLI: three separate copies of a built tree
// (three runners) run `pipeline {image}:upload` at the same moment against one loopback
// release, round after round, with random start offsets and a server that delays each
// request by a random, seeded time (so the processes interleave differently every round)
// and sometimes pages its lists a few items at a time. After every round: one release,
// every image complete and consistent, images.json listing each with the right SHA-256,
// nothing left behind.
//
// FANOUT_ROUNDS sets the rounds of every scenario (default: 20 for the first, 6 for the
// others, to keep `npm test` short; `npm run test:release-long` runs 100 of each).
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCli, type CliResult } from './support/engine-project.ts';
import { GitHubServer } from './support/github-server.ts';
import { IMAGES } from './support/image-project.ts';
import { imageVersion, releaseProblems, type ImageVersion } from './support/release-state.ts';
import { Trees, type Tree } from './support/runner-trees.ts';

const ROUNDS = process.env.FANOUT_ROUNDS ? Number(process.env.FANOUT_ROUNDS) : undefined;
const NEW_RELEASE_ROUNDS = ROUNDS ?? 20;
const OTHER_ROUNDS = ROUNDS ?? 6;
const trees = new Trees();
let runners: Promise<{ a: Tree; b: Tree; c: Tree; different: Tree }> | undefined;

/** Three identical runners, and a fourth whose debian-12 was built to different bytes. */
function setupRunners() {
  runners ??= (async () => {
    const built = await trees.built();
    const [a, b, c, different] = await Promise.all(['runner-a', 'runner-b', 'runner-c', 'runner-d'].map((label) => trees.copy(built, label)));
    await trees.rebuildDifferently(different!, 'debian-12');
    return { a: a!, b: b!, c: c!, different: different! };
  })();
  return runners;
}

test.after.always(() => trees.cleanup());

interface Job {
  readonly tree: Tree;
  readonly target: string;
}

interface RoundOptions {
  /** Make the release (sometimes with a garbage images.json and an unrelated asset) before the writers start. */
  readonly releaseExists: boolean;
}

interface Scenario {
  readonly jobs: readonly Job[];
  /** For each image, the versions some writer uploads. */
  readonly versions: ReadonlyMap<string, readonly ImageVersion[]>;
}

async function versionsOf(pairs: ReadonlyArray<[string, Tree]>): Promise<Map<string, ImageVersion[]>> {
  const versions = new Map<string, ImageVersion[]>();
  for (const [name, tree] of pairs) {
    const version = await imageVersion(name, tree.path(`images/${name}/${name}.qcow2`));
    const known = versions.get(name) ?? [];
    if (!known.some((candidate) => candidate.sha256 === version.sha256)) known.push(version);
    versions.set(name, known);
  }
  return versions;
}

async function runRounds(
  t: import('ava').ExecutionContext,
  label: string,
  rounds: readonly number[],
  scenario: Scenario,
  options: RoundOptions,
): Promise<void> {
  const walls: number[] = [];
  const winners = new Map<string, number>();
  for (const round of rounds) {
    const seed = Math.floor(Math.random() * 2 ** 31);
    const delayMs = round % 4 === 0 ? 0 : 5 + (seed % 30);
    const maxPerPage = round % 3 === 0 ? 4 : 100;
    const server = await GitHubServer.start({ repo: `images-${label}-${round}`, delayMs, seed, maxPerPage });
    try {
      if (options.releaseExists) {
        server.createRelease('latest', { name: 'Latest Images', prerelease: true });
        await server.putAsset('latest', 'unrelated-notes.txt', Buffer.from('not an image'));
        if (round % 2 === 0) await server.putAsset('latest', 'images.json', Buffer.from('{"schemaVersion": 1, "images": {"oops": ['));
      }
      const env = {
        GITHUB_TOKEN: server.token,
        GITHUB_API_URL: server.url,
        GITHUB_REPOSITORY: `${server.owner}/${server.repo}`,
        PIPELINE_MAX_ASSET_SIZE: '200K',
        PIPELINE_PART_SIZE: '150KiB',
      };
      const offsets = scenario.jobs.map(() => Math.floor(Math.random() * 400));
      const started = Date.now();
      const results: CliResult[] = await Promise.all(
        scenario.jobs.map(async (job, index) => {
          await sleep(offsets[index]!);
          return startCli(job.tree.root, [job.target], { env, timeoutMs: 120_000 }).done;
        }),
      );
      walls.push(Date.now() - started);
      const where = `${label} round ${round} (server seed ${seed}, delay ≤${delayMs} ms, ${maxPerPage} per page, start offsets ${offsets.join('/')} ms)`;
      results.forEach((result, index) => {
        t.is(result.code, 0, `${where}: ${scenario.jobs[index]!.target} exited ${result.code}\n${result.stderr}`);
      });
      const problems = await releaseProblems(server, 'latest', scenario.versions);
      t.deepEqual(problems, [], where);
      if (options.releaseExists)
        t.true(
          server.assets('latest').some((asset) => asset.name === 'unrelated-notes.txt'),
          `${where}: the unrelated asset survived`,
        );
      const record = JSON.parse((await server.assetBytes('latest', 'debian-12.qcow2.json')).toString()) as { image: { sha256: string } };
      winners.set(record.image.sha256, (winners.get(record.image.sha256) ?? 0) + 1);
    } finally {
      await server.close();
    }
  }
  const sorted = [...walls].sort((x, y) => x - y);
  t.log(
    `${label}: rounds ${rounds[0]}-${rounds.at(-1)}, wall per round median ${sorted[Math.floor(sorted.length / 2)]} ms, max ${sorted.at(-1)} ms; debian-12 versions that ended on the release: ${[...winners.values()].join(' / ')}`,
  );
}

/** Rounds in batches, one test each: a batch stays well inside ava's timeout on a busy machine. */
function declare(title: string, label: string, rounds: number, scenario: () => Promise<Scenario>, options: RoundOptions): void {
  const BATCH = 2;
  for (let first = 1; first <= rounds; first += BATCH) {
    const batch = Array.from({ length: Math.min(BATCH, rounds - first + 1) }, (_, index) => first + index);
    test.serial(`${title} (rounds ${batch[0]}-${batch.at(-1)} of ${rounds})`, async (t) => runRounds(t, label, batch, await scenario(), options));
  }
}

async function threeImages(): Promise<Scenario> {
  const { a, b, c } = await setupRunners();
  const jobs = [
    { tree: a, target: 'debian-12:upload' },
    { tree: b, target: 'debian-13:upload' },
    { tree: c, target: 'pve-9:upload' },
  ];
  return { jobs, versions: await versionsOf(IMAGES.map((name, index) => [name, jobs[index]!.tree])) };
}

async function sameImageTwice(): Promise<Scenario> {
  const { a, c, different } = await setupRunners();
  const jobs = [
    { tree: a, target: 'debian-12:upload' },
    { tree: different, target: 'debian-12:upload' },
    { tree: c, target: 'pve-9:upload' },
  ];
  const versions = await versionsOf([
    ['debian-12', a],
    ['debian-12', different],
    ['pve-9', c],
  ]);
  if (versions.get('debian-12')!.length !== 2) throw new Error('the two runners should hold different debian-12 bytes');
  return { jobs, versions };
}

declare('three runners upload three images at once to a release that does not exist yet', 'new', NEW_RELEASE_ROUNDS, threeImages, { releaseExists: false });
declare('three runners upload three images at once to a release that exists, at times with a garbage images.json', 'existing', OTHER_ROUNDS, threeImages, {
  releaseExists: true,
});
declare('two runners upload the same image (built to different bytes) while a third uploads another', 'same', OTHER_ROUNDS, sameImageTwice, {
  releaseExists: false,
});
