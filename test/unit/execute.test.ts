// Execution (src/execute.ts) in process: what runs, in what order and how many at once,
// what a failure, an interrupt or a setup check does to the rest, and what is recorded.
import test from 'ava';
import { setupFailureOf } from '../../src/preflight.ts';
import { reasonText } from '../../src/report/reason-text.ts';
import { Failure, isFailure, type TaskContext } from '../../src/types.ts';
import { graphOf, outcomes, UnitProject, verdicts } from './support/project.ts';

test('a dependency rebuilt to the same output leaves its dependents fresh (early cutoff); a changed one runs them', async (t) => {
  const project = UnitProject.create(t, { 'name.txt': 'World' });
  const graph = graphOf([
    project.node('lower', { files: ['name.txt'], outputs: ['out/lower.txt'], make: (read) => read.toLowerCase() }),
    project.node('greet', { deps: ['lower'], outputs: ['out/greet.txt'] }),
  ]);
  await project.run(graph);
  project.write('name.txt', 'WORLD');
  project.ran.length = 0;
  t.deepEqual(outcomes(await project.run(graph)), {
    lower: { status: 'ran', why: { code: 'input-changed', path: 'name.txt' } },
    greet: { status: 'fresh', why: { code: 'dependencies-unchanged' } },
  });
  t.deepEqual(project.ran, ['lower']);
  project.write('name.txt', 'Moon');
  t.deepEqual(outcomes(await project.run(graph)).greet, { status: 'ran', why: { code: 'dependency-changed', id: 'lower' } });
});

test('a failure stops what has not started and skips its dependents; --keep-going runs what does not depend on it', async (t) => {
  const project = UnitProject.create(t);
  const failing = (context: TaskContext): Promise<void> => {
    context.log('about to fail');
    return Promise.reject(new Error('exited with code 3'));
  };
  const nodes = () => [
    project.node('bad', { outputs: ['out/bad.txt'], run: failing }),
    project.node('after', { deps: ['bad'], outputs: ['out/after.txt'] }),
    project.node('later', { deps: ['slow'], outputs: ['out/later.txt'] }),
    project.node('slow', {
      outputs: ['out/slow.txt'],
      run: async () => {
        await new Promise((resolve) => setTimeout(resolve, 100));
        project.write('out/slow.txt', 'slow');
      },
    }),
  ];
  const stopped = await project.run(graphOf(nodes()), undefined, { jobs: 2 });
  t.like(outcomes(stopped), {
    bad: { status: 'failed', why: { code: 'never-built' } },
    after: { status: 'skipped', why: { code: 'dependency-failed', id: 'bad' } },
  });
  const bad = stopped.find((result) => result.id === 'bad')!;
  t.like(bad, { error: 'exited with code 3', failureKind: 'task', logTail: ['about to fail'] });
  t.deepEqual(outcomes(stopped).later, { status: 'skipped', why: { code: 'earlier-failure' } });

  const kept = await project.run(graphOf(nodes()), undefined, { jobs: 2, keepGoing: true });
  t.deepEqual(outcomes(kept).later, { status: 'ran', why: { code: 'never-built' } });
  t.deepEqual(outcomes(kept).after, { status: 'skipped', why: { code: 'dependency-failed', id: 'bad' } });
});

test('--jobs bounds all work and a pool bounds its kind, whatever --jobs allows', async (t) => {
  const project = UnitProject.create(t);
  let running = 0;
  let packerRunning = 0;
  const most = { all: 0, packer: 0 };
  const work = (pool?: string) => async () => {
    running++;
    if (pool) packerRunning++;
    most.all = Math.max(most.all, running);
    most.packer = Math.max(most.packer, packerRunning);
    await new Promise((resolve) => setTimeout(resolve, 20));
    running--;
    if (pool) packerRunning--;
  };
  const nodes = [
    ...['a', 'b', 'c', 'd'].map((id) => project.node(`build-${id}`, { pool: 'packer', run: work('packer') })),
    ...['a', 'b', 'c', 'd'].map((id) => project.node(`fetch-${id}`, { run: work() })),
  ];
  await project.run(graphOf(nodes), undefined, { jobs: 3, pools: { packer: 1 } });
  t.is(project.ran.length, 8);
  t.is(most.packer, 1);
  t.is(most.all, 3);
});

test('an interrupt cancels the running node through its signal and what has not started; the previous output stays', async (t) => {
  const project = UnitProject.create(t, { 'out/slow.txt': 'previous' });
  const controller = new AbortController();
  const graph = graphOf([
    project.node('slow', {
      outputs: ['out/slow.txt'],
      run: (context) =>
        new Promise((_, reject) => {
          context.signal.addEventListener('abort', () => reject(context.signal.reason));
          controller.abort(new Failure('cancelled', 'interrupted (SIGINT)'));
        }),
    }),
    project.node('next', { deps: ['slow'], outputs: ['out/next.txt'] }),
  ]);
  const results = await project.run(graph, undefined, { signal: controller.signal });
  t.like(outcomes(results), {
    slow: { status: 'cancelled', why: { code: 'interrupted' } },
    next: { status: 'cancelled', why: { code: 'dependency-cancelled', id: 'slow' } },
  });
  t.is(project.read('out/slow.txt'), 'previous');
});

test("a pending node's setup check runs only once it turns out to run, and its failure ends the run as a setup failure", async (t) => {
  const project = UnitProject.create(t, { 'name.txt': 'World' });
  const checked: string[] = [];
  let ready = true;
  const graph = graphOf([
    project.node('lower', { files: ['name.txt'], outputs: ['out/lower.txt'], make: (read) => read.toLowerCase() }),
    project.node('build', {
      deps: ['lower'],
      outputs: ['out/build.txt'],
      preflight: async () => {
        checked.push('build');
        if (!ready) throw new Failure('setup', 'packer is not installed');
      },
    }),
  ]);
  await project.run(graph);
  t.deepEqual(checked, ['build'], 'checked before the first run');
  ready = false;
  project.write('name.txt', 'WORLD');
  t.deepEqual(verdicts(await project.plan(graph)).build?.status, 'pending');
  t.deepEqual(outcomes(await project.run(graph)).build, { status: 'fresh', why: { code: 'dependencies-unchanged' } });
  t.deepEqual(checked, ['build'], 'not checked: it did not run');

  project.write('name.txt', 'Moon');
  const results = await project.run(graph);
  t.like(results[1], { status: 'failed', failureKind: 'setup', error: 'packer is not installed (why it runs: dependency lower changed its output)' });
  const failure = setupFailureOf(results);
  t.true(isFailure(failure, 'setup'));
  t.is(failure?.message, 'build: packer is not installed (why it runs: dependency lower changed its output)');
});

test('a run that fails after it began replacing its outputs leaves no stamp: the next plan runs it again', async (t) => {
  const project = UnitProject.create(t, { 'a.txt': 'one' });
  let fail = false;
  const graph = graphOf([
    project.node('write', {
      files: ['a.txt'],
      outputs: ['out/write.txt'],
      run: async (context) => {
        await context.beginCommit();
        project.write('out/write.txt', project.read('a.txt'));
        if (fail) throw new Error('disk full');
      },
    }),
  ]);
  await project.run(graph);
  t.deepEqual(verdicts(await project.plan(graph)).write?.why, { code: 'up-to-date' });
  fail = true;
  project.write('a.txt', 'two');
  t.like((await project.run(graph))[0], { status: 'failed', error: 'disk full' });
  t.deepEqual(verdicts(await project.plan(graph)).write?.why, { code: 'never-built' }, 'its record went before its outputs changed');
});

test('a no-op run with the stamp index settles every node from stats alone: nothing hashed, nothing run', async (t) => {
  const project = UnitProject.create(t, { 'a.txt': 'one', 'b.txt': 'two' });
  const graph = graphOf([
    project.node('first', { files: ['a.txt'], outputs: ['out/first.txt'] }),
    project.node('second', { deps: ['first'], files: ['b.txt'], outputs: ['out/second.txt'] }),
  ]);
  await project.run(graph);
  await project.run(graph); // makes the index once the racy window has passed
  project.ran.length = 0;
  const phases: string[] = [];
  const results = await project.run(graph, undefined, { observer: { nodePhase: (id, phase) => phases.push(`${id} ${phase}`) } });
  t.deepEqual(project.ran, []);
  t.deepEqual(phases, [], 'no manifest built, no stamp file read: the quick check settled them');
  t.deepEqual(
    results.map((result) => [result.id, result.status, result.bytesHashed]),
    [
      ['first', 'fresh', 0],
      ['second', 'fresh', 0],
    ],
  );
});

test('observers hear each node queued, started and finished with its reason as a value', async (t) => {
  const project = UnitProject.create(t, { 'a.txt': 'one' });
  const heard: string[] = [];
  const graph = graphOf([project.node('only', { files: ['a.txt'], outputs: ['out/only.txt'] })]);
  await project.run(graph, undefined, {
    observer: {
      nodeQueued: (id, reason) => heard.push(`queued ${id}: ${reason.code}`),
      nodeStarted: (id, reason) => heard.push(`started ${id}: ${reasonText(reason)}`),
      nodeFinished: (result) => heard.push(`finished ${result.id}: ${result.status}`),
    },
  });
  t.deepEqual(heard, ['queued only: never-built', 'started only: never built', 'finished only: ran']);
});
