// Two `pipeline` processes on one tree: the second waits for the first (and says so), or
// with --no-wait fails with a clear message; their steps never interleave.
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeProject, nodeOf } from './support/engine-project.ts';

// `work` logs its start and end (nanoseconds) to events.log and, between them, holds on
// until the test creates `release`, so no timing assumption decides what overlaps.
const CONFIG = `
import { defineConfig } from '@engine';
export default defineConfig({
  steps: {
    work: {
      outputs: ['out/work.txt'],
      command: ['sh', '-c', 'echo "start $(date +%s%N)" >> events.log; touch started; while [ ! -e release ]; do sleep 0.05; done; mkdir -p out; date > out/work.txt; echo "end $(date +%s%N)" >> events.log'],
    },
  },
  defaultTarget: 'work',
});
`;

test('a second run on the same tree waits for the first, says so, and does not interleave', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  const first = project.start(['--force', '--json']);
  await project.waitFor('started');
  const second = project.start(['--force', '--json']);
  const deadline = Date.now() + 30_000;
  while (!second.stderrSoFar().includes('waiting') && Date.now() < deadline) await sleep(20);
  await sleep(300); // had it not waited, its step would have started by now
  t.is((await project.read('events.log')).trim().split('\n').length, 1, 'the second run did not start its step');
  await project.write('release', '');
  const [a, b] = await Promise.all([first.done, second.done]);
  t.is(a.code, 0, a.stderr);
  t.is(b.code, 0, b.stderr);
  t.regex(b.stderr, /waiting for another pipeline in this tree to finish \(pid \d+/);
  t.notRegex(a.stderr, /waiting/);

  const events = (await project.read('events.log')).trim().split('\n').map((line) => line.split(' '));
  t.deepEqual(events.map(([what]) => what), ['start', 'end', 'start', 'end']);
  t.true(BigInt(events[2]![1]!) >= BigInt(events[1]![1]!), 'the second step started after the first finished');
  t.true(nodeOf(b.json, 'work').startedAt! >= nodeOf(a.json, 'work').finishedAt!);
  t.false(project.exists('.pipeline/lock'));
});

test('with --no-wait a second run fails at once with exit 2 and a clear message', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  const first = project.start(['--json']);
  await project.waitFor('started');
  const pid = first.child.pid;
  const second = await project.run(['--no-wait', '--json'], { timeoutMs: 30_000 });
  t.is(second.code, 2);
  t.is(second.stdout, '');
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
