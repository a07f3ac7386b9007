// Two `pipeline` processes on one tree: the second waits for the first (and says so), or
// with --no-wait fails with a clear message; their steps never interleave.
import test from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { makeProject, nodeOf, REPO, type Project, type RunningCli } from './support/engine-project.ts';

const execFileAsync = promisify(execFile);

// `work` logs its start and end (nanoseconds) to events.log and, between them, holds on
// until the test creates `release`, so no timing assumption decides what overlaps.
const CONFIG = `
import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  steps: {
    work: {
      outputs: ['out/work.txt'],
      command: ['sh', '-c', 'echo "start $(date +%s%N)" >> events.log; touch started; while [ ! -e release ]; do sleep 0.05; done; mkdir -p out; date > out/work.txt; echo "end $(date +%s%N)" >> events.log'],
    },
  },
  defaultTarget: 'work',
});
`;

/**
 * Starts a run whose `work` step holds the tree lock until the test creates `release`,
 * then a second run, and returns once the second says it is waiting for the first.
 */
async function secondRunWaiting(project: Project, firstArgs: string[], secondArgs: string[]): Promise<{ first: RunningCli; second: RunningCli }> {
  const first = project.start(firstArgs);
  await project.waitFor('started');
  const second = project.start(secondArgs);
  const deadline = Date.now() + 30_000;
  while (!second.stderrSoFar().includes('waiting') && Date.now() < deadline) await sleep(20);
  return { first, second };
}

test('a second run on the same tree waits for the first, says so, and does not interleave', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  const { first, second } = await secondRunWaiting(project, ['--force', '--json'], ['--force', '--json']);
  await sleep(300); // had it not waited, its step would have started by now
  t.is((await project.read('events.log')).trim().split('\n').length, 1, 'the second run did not start its step');
  await project.write('release', '');
  const [a, b] = await Promise.all([first.done, second.done]);
  t.is(a.code, 0, a.stderr);
  t.is(b.code, 0, b.stderr);
  t.regex(b.stderr, /waiting for another pipeline in this tree to finish \(pid \d+/);
  t.notRegex(a.stderr, /waiting/);

  const events = (await project.read('events.log'))
    .trim()
    .split('\n')
    .map((line) => line.split(' '));
  t.deepEqual(
    events.map(([what]) => what),
    ['start', 'end', 'start', 'end'],
  );
  t.true(BigInt(events[2]![1]!) >= BigInt(events[1]![1]!), 'the second step started after the first finished');
  t.true(nodeOf(b.json, 'work').startedAt! >= nodeOf(a.json, 'work').finishedAt!);
  t.false(project.exists('.pipeline/lock'));
});

test("a run that waited for the lock finds the first run's work fresh and does not repeat it", async (t) => {
  // The second process loads its config and stat cache while the first is still building:
  // what it plans with once it holds the lock must be what the first left.
  const project = await makeProject(t, { config: CONFIG });
  const { first, second } = await secondRunWaiting(project, ['--json'], ['--json']);
  await project.write('release', '');
  const [a, b] = await Promise.all([first.done, second.done]);
  t.is(a.code, 0, a.stderr);
  t.is(b.code, 0, b.stderr);
  t.is(nodeOf(a.json, 'work').status, 'ran');
  t.is(nodeOf(b.json, 'work').status, 'fresh', b.stderr);
  t.is((await project.read('events.log')).trim().split('\n').length, 2, 'the step ran once');
  // The index the first run made, which the second found still true, serves a third.
  const third = await project.run(['--json']);
  t.is(nodeOf(third.json, 'work').status, 'fresh', third.stderr);
});

test('a run that waited for the lock keeps the stat-cache records the first run saved meanwhile', async (t) => {
  // The second process reads the stat cache before it waits. Saving its own view then
  // dropped what the first had hashed meanwhile, so the next run read those files again.
  const config = CONFIG.replace(
    `    work: {`,
    `    other: { files: ['in/other.txt'], outputs: ['out/other.txt'], command: ['sh', '-c', 'mkdir -p out && cp in/other.txt out/other.txt'] },\n    work: {`,
  );
  const project = await makeProject(t, { config });
  await project.write('in/other.txt', 'other input\n');
  const { first, second } = await secondRunWaiting(project, ['work', '--json'], ['other', '--json']);
  await project.write('release', '');
  const [a, b] = await Promise.all([first.done, second.done]);
  t.is(a.code, 0, a.stderr);
  t.is(b.code, 0, b.stderr);
  t.is(nodeOf(b.json, 'other').status, 'ran');
  const again = await project.run(['work', 'other', '--json']);
  t.is(nodeOf(again.json, 'work').status, 'fresh', again.stderr);
  t.is(nodeOf(again.json, 'other').status, 'fresh', again.stderr);
  t.is(again.json?.bytesHashed, 0, 'what either run hashed is not read again');
});

test('with --no-wait a second run fails at once with exit 2 and a clear message', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  const first = project.start(['--json']);
  await project.waitFor('started');
  const pid = first.child.pid;
  const second = await project.run(['--no-wait', '--json'], { timeoutMs: 30_000 });
  t.is(second.code, 2);
  t.like(second.json, { command: 'run', ok: false, failureKind: 'setup' }, second.stdout);
  t.true(second.stderr.includes(`another pipeline is running in this tree (pid ${pid}`), second.stderr);
  await project.write('release', '');
  const a = await first.done;
  t.is(a.code, 0, a.stderr);
  t.is((await project.read('events.log')).trim().split('\n').length, 2, 'only the first run ran the step');

  // Once the tree is free, --no-wait runs normally.
  const later = await project.run(['--no-wait', '--json']);
  t.is(later.code, 0, later.stderr);
  t.is(nodeOf(later.json, 'work').status, 'fresh');
});

test('a lock left by a process that no longer exists is taken over', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  // A pid far above any pid_max default: no such process.
  await project.write('.pipeline/lock', '999999999 2020-01-01T00:00:00.000Z work\n');
  await project.write('release', '');
  const run = await project.run(['--no-wait', '--json']);
  t.is(run.code, 0, run.stderr);
  t.is(nodeOf(run.json, 'work').status, 'ran');
  t.false(project.exists('.pipeline/lock'));
});

// ---------------------------------------------------------------------------------------
// Locks that never wedge: what a crash, a full disk or an old version can leave behind.

const deadLock = (nonce = randomBytes(8).toString('hex')) =>
  `${JSON.stringify({ pid: 999999999, host: hostname(), startedAt: '2020-01-01T00:00:00.000Z', command: 'all', nonce })}\n`;

test('an empty or garbage lock file is reported with what to do, then taken over once clearly old', async (t) => {
  for (const content of ['', 'garbage \u0000\n']) {
    const project = await makeProject(t, { config: CONFIG });
    await project.write('release', '');
    await project.write('.pipeline/lock', content);
    // Written "just now" however slowly the CLI starts on a loaded machine.
    const soon = new Date(Date.now() + 3_600_000);
    await utimes(project.path('.pipeline/lock'), soon, soon);
    const refused = await project.run(['--no-wait', '--json']);
    t.is(refused.code, 2);
    t.regex(refused.stderr, /^pipeline: the lock .*\.pipeline\/lock is unreadable \(written \d+ s ago\); if no other pipeline runs in this tree, remove it/m);
    t.is(refused.stderr.trim().split('\n').length, 1, refused.stderr);

    const old = new Date(Date.now() - 60_000);
    await utimes(project.path('.pipeline/lock'), old, old);
    const waited = await project.run(['--json']);
    t.is(waited.code, 0, waited.stderr);
    t.regex(waited.stderr, /took over an? (empty|unreadable) lock file/);
    t.is(nodeOf(waited.json, 'work').status, 'ran');
    t.false(project.exists('.pipeline/lock'));
  }
});

test('a lock whose pid now belongs to another process is taken over', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  await project.write('release', '');
  // pid 1 runs, but it is not the process that wrote the lock: its start time differs.
  const reused = { pid: 1, host: hostname(), processStart: '1', startedAt: '2020-01-01T00:00:00.000Z', command: 'all', nonce: randomBytes(8).toString('hex') };
  await project.write('.pipeline/lock', `${JSON.stringify(reused)}\n`);
  const run = await project.run(['--no-wait', '--json']);
  t.is(run.code, 0, run.stderr);
  t.regex(run.stderr, /took over a lock of pid 1, .*whose pid now belongs to another process/);
});

test('a live holder is never taken over, and the lock it writes is whole JSON naming it', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  const first = project.start(['--json']);
  await project.waitFor('started');
  const holder = JSON.parse(await project.read('.pipeline/lock')) as { pid: number; host: string; startedAt: string; nonce: string };
  t.is(holder.pid, first.child.pid!);
  t.is(holder.host, hostname());
  t.regex(holder.startedAt, /^\d{4}-\d\d-\d\dT/);
  // Unique to the process: the boot id, its pid and its start time (Linux), in hex.
  t.regex(holder.nonce, /^[0-9a-f]{16,64}$/);
  t.true(holder.nonce.includes(holder.pid.toString(16)), holder.nonce);
  const second = await project.run(['--no-wait', '--json']);
  t.is(second.code, 2);
  await project.write('release', '');
  t.is((await first.done).code, 0);
});

test('processes racing to take over one dead lock: exactly one takes it over, none overlap', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-lock-race-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (let round = 0; round < 4; round++) {
    const lock = join(dir, `lock-${round}`);
    const log = join(dir, `log-${round}`);
    // Round 2 leaves a claim by a dead claimant too: it must be superseded, not waited on.
    const nonce = randomBytes(8).toString('hex');
    await writeFile(lock, deadLock(nonce));
    if (round === 2) await writeFile(`${lock}.claim.${nonce}.0`, deadLock());
    if (round === 3) await writeFile(lock, '');
    const racers = Array.from({ length: 4 }, () =>
      execFileAsync(process.execPath, ['--import=tsx', join(REPO, 'test/support/lock-holder.ts'), lock, log, '50'], { cwd: REPO }),
    );
    await Promise.all(racers);
    const lines = (await readFile(log, 'utf8')).trim().split('\n');
    t.is(lines.length, 8, `round ${round}: every racer got the lock once`);
    for (let i = 0; i < lines.length; i += 2) {
      t.regex(lines[i]!, /^enter /, `round ${round}: no two holders overlap`);
      t.is(lines[i]!.split(' ')[1], lines[i + 1]!.split(' ')[1]);
      t.regex(lines[i + 1]!, /^exit /);
    }
    t.is(lines.filter((line) => line.includes('took-over')).length, 1, `round ${round}: one takeover`);
    t.false(existsSync(lock));
    t.deepEqual(
      (await readdir(dir)).filter((name) => name.startsWith(`lock-${round}`)),
      [],
      'no claim or temp file left',
    );
  }
});
