// Ctrl-C on a real `pipeline` process: the step's processes die, nothing half-done is
// recorded, temp files go, previous outputs stay, exit 130.
import test from 'ava';
import { readdir } from 'node:fs/promises';
import { isRunning, makeProject, nodeOf, waitGone } from './support/engine-project.ts';

// `slow` writes a temp file through the task context, then runs a shell that starts a
// sleeping grandchild, records its pid and a marker, and waits. In `quick` mode it
// finishes at once. `mode.txt` is an input, so switching modes makes it stale.
const CONFIG = `
import { defineStepsConfig } from '@engine';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
export default defineStepsConfig({
  steps: {
    first: { outputs: ['out/first.txt'], command: ['sh', '-c', 'mkdir -p out; echo first > out/first.txt'] },
    slow: {
      deps: ['first'],
      files: ['mode.txt'],
      outputs: ['out/slow.txt'],
      run: async (ctx) => {
        const mode = (await readFile('mode.txt', 'utf8')).trim();
        const temp = ctx.tempPath('out/slow.txt');
        await writeFile(temp, 'partial ' + mode);
        if (mode !== 'quick') {
          await ctx.exec('sh', ['-c', 'sleep 60 & echo $! > sleeper.pid; echo $$ > shell.pid; touch started; wait']);
        }
        await ctx.beginCommit();
        await rename(temp, 'out/slow.txt');
      },
    },
    after: { deps: ['slow'], outputs: ['out/after.txt'], command: ['sh', '-c', 'cp out/slow.txt out/after.txt'] },
  },
  defaultTarget: 'after',
});
`;

async function interruptWhileSlowRuns(project: Awaited<ReturnType<typeof makeProject>>) {
  const running = project.start(['--json']);
  await project.waitFor('started');
  const sleeper = Number((await project.read('sleeper.pid')).trim());
  const shell = Number((await project.read('shell.pid')).trim());
  const sleeperWasRunning = isRunning(sleeper);
  running.child.kill('SIGINT');
  const result = await running.done;
  return { result, sleeper, shell, sleeperWasRunning };
}

test('SIGINT kills the running step and its children, records nothing for it, exits 130', async (t) => {
  const project = await makeProject(t, { config: CONFIG, files: { 'mode.txt': 'slow\n' } });
  const { result, sleeper, shell, sleeperWasRunning } = await interruptWhileSlowRuns(project);
  t.true(sleeperWasRunning, 'the grandchild was running when the signal came');

  t.is(result.code, 130, result.stderr);
  t.regex(result.stderr, /SIGINT: stopping running tasks/);
  t.true(await waitGone(sleeper, 2_000), `the sleeping grandchild ${sleeper} survived`);
  t.false(isRunning(shell), `the step's shell ${shell} survived`);

  t.is(nodeOf(result.json, 'first').status, 'ran');
  t.is(nodeOf(result.json, 'slow').status, 'cancelled');
  t.is(nodeOf(result.json, 'after').status, 'cancelled');
  t.is(result.json?.ok, false);

  t.true(project.exists(`.pipeline/stamps/${encodeURIComponent('first')}.json`));
  t.false(project.exists(`.pipeline/stamps/${encodeURIComponent('slow')}.json`), 'no stamp for the interrupted node');
  t.false(project.exists(`.pipeline/stamps/${encodeURIComponent('after')}.json`));
  t.false(project.exists('out/slow.txt'));
  t.deepEqual(await readdir(project.path('out')), ['first.txt'], 'no temp file left in out/');
  const state = await project.files('.pipeline');
  t.deepEqual(
    state.filter((file) => file.endsWith('.tmp')),
    [],
    state.join(', '),
  );
  t.false(project.exists('.pipeline/lock'), 'the lock is released');

  // The next run starts where this one stopped.
  await project.write('mode.txt', 'quick\n');
  const next = await project.run(['--json']);
  t.is(next.code, 0, next.stderr);
  t.is(nodeOf(next.json, 'first').status, 'fresh');
  t.deepEqual(nodeOf(next.json, 'slow').why, { code: 'never-built' });
  t.is(await project.read('out/after.txt'), 'partial quick');
});

test('SIGINT during a rebuild leaves the previous outputs and stamp intact', async (t) => {
  const project = await makeProject(t, { config: CONFIG, files: { 'mode.txt': 'quick\n' } });
  const built = await project.run(['--json']);
  t.is(built.code, 0, built.stderr);
  const stamp = await project.read('.pipeline/stamps/slow.json');

  await project.write('mode.txt', 'slow\n');
  const { result, sleeper } = await interruptWhileSlowRuns(project);
  t.is(result.code, 130, result.stderr);
  t.true(await waitGone(sleeper, 2_000));
  t.is(await project.read('out/slow.txt'), 'partial quick', 'the previous output is intact');
  t.is(await project.read('out/after.txt'), 'partial quick');
  t.is(await project.read('.pipeline/stamps/slow.json'), stamp, 'the old stamp still describes the old output');
  t.deepEqual((await readdir(project.path('out'))).sort(), ['after.txt', 'first.txt', 'slow.txt']);

  // The interrupted change is still pending.
  const dry = await project.run(['--dry-run', '--json']);
  t.deepEqual(nodeOf(dry.json, 'slow').why, { code: 'input-changed', path: 'mode.txt' });
});
