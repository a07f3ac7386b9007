// Issue 25, finding 2: two downloads of one image into one --dir, as real separate
// processes, one of them interrupted (SIGINT) or killed (SIGKILL) at a random moment,
// round after round over the same directory (so the partial files a kill leaves are met
// by the next round). Neither may ever leave a wrong file under the image's name, nor say
// "verified" of one, nor fail with a raw error; and a download killed outright resumes
// from where its last saved state says. Against the loopback GitHub server, paced so that
// a download takes long enough to be caught in the middle. Seeded: the seed is printed,
// RACE_SEED=N replays it; RACE_ROUNDS sets the rounds (npm run test:download-race: 24).
import test from 'ava';
import { createHash } from 'node:crypto';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type CliResult, type RunningCli, startCli } from './support/engine-project.ts';
import { GitHubServer } from './support/github-server.ts';
import { makeGoodQcow2 } from './support/hostile-images.ts';
import { makeImageProject } from './support/image-project.ts';
import { seededRandom } from './support/seeded-random.ts';

const ROUNDS = Number(process.env.RACE_ROUNDS) || 3;
const SEED = Number(process.env.RACE_SEED) || Math.floor(Math.random() * 2 ** 31);
/** The image and the pace: a download takes about two seconds. */
const IMAGE_BYTES = 6 * 1024 * 1024;
const BYTES_PER_SECOND = 3 * 1024 * 1024;

interface World {
  readonly server: GitHubServer;
  readonly root: string;
  readonly sha256: string;
  readonly env: Record<string, string>;
  start(args: readonly string[]): RunningCli;
}

async function setUp(t: import('ava').ExecutionContext): Promise<World> {
  const server = await GitHubServer.start({ bytesPerSecond: BYTES_PER_SECOND });
  t.teardown(() => server.close());
  const project = await makeImageProject(t, `release: { repo: '${server.owner}/${server.repo}', apiUrl: ${JSON.stringify(server.url)}, tag: 'latest' },`);
  const image = project.path('release-image.qcow2');
  makeGoodQcow2(image, IMAGE_BYTES);
  const bytes = await readFile(image);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  // An image as a release from before records held it: its bytes and its .sha256.
  await server.putAsset('latest', 'debian-12.qcow2', bytes);
  await server.putAsset('latest', 'debian-12.qcow2.sha256', Buffer.from(`${sha256}  debian-12.qcow2\n`));
  const env = { GITHUB_TOKEN: server.token, GITHUB_API_URL: server.url, GITHUB_REPOSITORY: `${server.owner}/${server.repo}` };
  return { server, root: project.root, sha256, env, start: (args) => startCli(project.root, args, { env, timeoutMs: 120_000 }) };
}

async function sha256Of(path: string): Promise<string | undefined> {
  try {
    return createHash('sha256')
      .update(await readFile(path))
      .digest('hex');
  } catch {
    return undefined;
  }
}

/** What a download's output must never hold: a raw error or a stack. */
function rawError(result: CliResult): string | undefined {
  return /(ENOENT|EEXIST|EBADF|Error:|\n\s+at )/.exec(result.stderr)?.[0];
}

test(`two downloads of one image into one --dir, one interrupted or killed at a random moment, never leave a wrong file (${ROUNDS} rounds)`, async (t) => {
  t.timeout(ROUNDS * 60_000 + 60_000);
  t.log(`seed ${SEED} (replay: RACE_SEED=${SEED} RACE_ROUNDS=${ROUNDS})`);
  const world = await setUp(t);
  const random = seededRandom(SEED);
  const dir = join(world.root, 'downloads');
  const final = join(dir, 'debian-12.qcow2');
  const counts = { SIGINT: 0, SIGKILL: 0, none: 0, wrong: 0, resumed: 0 };
  for (let round = 1; round <= ROUNDS; round++) {
    await rm(final, { force: true });
    const signal = random() < 0.4 ? 'SIGINT' : random() < 0.85 ? 'SIGKILL' : undefined;
    counts[signal ?? 'none']++;
    const victim = random() < 0.5 ? 0 : 1;
    const staggerMs = Math.floor(random() * 1500);
    const killAtMs = 300 + Math.floor(random() * 2500);
    const first = world.start(['images', 'download', 'debian-12', '--dir', dir]);
    await sleep(staggerMs);
    const second = world.start(['images', 'download', 'debian-12', '--dir', dir]);
    const runs = [first, second];
    if (signal) {
      await sleep(killAtMs);
      runs[victim]!.child.kill(signal);
    }
    const results = await Promise.all(runs.map((run) => run.done));
    const what = `round ${round} (seed ${SEED}): ${signal ?? 'no signal'} to #${victim + 1} at ${killAtMs} ms, #2 ${staggerMs} ms after #1`;
    const onDisk = await sha256Of(final);
    if (onDisk !== undefined && onDisk !== world.sha256) counts.wrong++;
    t.true(onDisk === undefined || onDisk === world.sha256, `${what}: a wrong file under the image's name`);
    for (const [index, result] of results.entries()) {
      const killed = signal !== undefined && index === victim;
      t.is(rawError(result), undefined, `${what}: #${index + 1} printed a raw error:\n${result.stderr}`);
      if (/checksum verified/.test(result.stdout)) t.is(onDisk, world.sha256, `${what}: #${index + 1} said verified`);
      if (/resuming at [1-9]/.test(result.stderr)) counts.resumed++;
      if (!killed) t.is(result.code, 0, `${what}: #${index + 1} (not signalled) exit ${result.code}\n${result.stderr}`);
      // Before the CLI handles signals (Node starting), SIGINT ends it outright: the shell sees 130 either way.
      else if (signal === 'SIGINT')
        t.true(result.code === 130 || result.code === 0 || result.signal === 'SIGINT', `${what}: SIGINT'd #${index + 1} exit ${result.code}`);
    }
    t.log(
      `${what}: exits ${results.map((result) => result.code ?? result.signal).join(', ')}; file ${onDisk === undefined ? 'absent' : onDisk === world.sha256 ? 'right' : 'WRONG'}`,
    );
    // Whatever the round left, the next download finishes it.
    const settle = await world.start(['images', 'download', 'debian-12', '--dir', dir]).done;
    t.is(settle.code, 0, `${what}: the download after it: ${settle.stderr}`);
    t.is(await sha256Of(final), world.sha256, `${what}: the file after it`);
  }
  t.log(
    `${ROUNDS} rounds: ${counts.SIGINT} SIGINT, ${counts.SIGKILL} SIGKILL, ${counts.none} unsignalled; ${counts.resumed} downloads resumed; ${counts.wrong} wrong files`,
  );
  t.deepEqual(
    (await readdir(dir)).filter((name) => name !== 'debian-12.qcow2'),
    [],
    'nothing left beside the image: no partial, state or lock',
  );
});

test('a download killed with SIGKILL resumes from the state it saved while it ran', async (t) => {
  const world = await setUp(t);
  const dir = join(world.root, 'downloads');
  const state = join(dir, '.debian-12.qcow2.partial.json');
  const run = world.start(['images', 'download', 'debian-12', '--dir', dir]);
  // The state is saved every couple of seconds while bytes arrive: wait for one that counts some.
  let saved = 0;
  for (const deadline = Date.now() + 60_000; saved === 0 && Date.now() < deadline; await sleep(50)) {
    try {
      saved = (JSON.parse(await readFile(state, 'utf8')) as { done: number[] }).done.reduce((a, b) => a + b, 0);
    } catch {
      // not written yet
    }
  }
  run.child.kill('SIGKILL');
  const killed = await run.done;
  t.is(killed.signal, 'SIGKILL');
  t.true(saved > 0 && saved < IMAGE_BYTES, `saved ${saved} of ${IMAGE_BYTES}`);
  const requestsBefore = world.server.requests.length;
  const again = await world.start(['images', 'download', 'debian-12', '--dir', dir]).done;
  t.is(again.code, 0, again.stderr);
  const resumedAt = Number(/resuming at (\d+) of/.exec(again.stderr)?.[1]);
  t.true(resumedAt >= saved, `resumed at ${resumedAt}, saved ${saved}:\n${again.stderr}`);
  t.true(
    world.server.requests.slice(requestsBefore).some((request) => request.range === `bytes=${resumedAt}-`),
    'the bytes are asked for from there on',
  );
  t.is(await sha256Of(join(dir, 'debian-12.qcow2')), world.sha256);
});
