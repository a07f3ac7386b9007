// Planning (src/plan.ts, src/assess.ts) in process: each test declares a few nodes, runs
// them once where it needs a record, changes one thing, and compares the plan's verdicts
// (status and reason code) with what that change must cause.
import test from 'ava';
import { Failure, isFailure, type KeyFile } from '../../src/types.ts';
import { graphOf, UnitProject, verdicts } from './support/project.ts';

/** a.txt -> upper -> count -> report, each writing one file from what it reads. */
function chain(project: UnitProject) {
  return graphOf([
    project.node('upper', { files: ['a.txt'], outputs: ['out/upper.txt'] }),
    project.node('count', { deps: ['upper'], outputs: ['out/count.txt'] }),
    project.node('report', { deps: ['count'], outputs: ['out/report.txt'] }),
  ]);
}

test('nothing built: every node is stale, never built; after a run every node is up to date', async (t) => {
  const project = UnitProject.create(t, { 'a.txt': 'one' });
  const graph = chain(project);
  t.deepEqual(verdicts(await project.plan(graph)), {
    upper: { status: 'stale', why: { code: 'never-built' } },
    count: { status: 'stale', why: { code: 'never-built' } },
    report: { status: 'stale', why: { code: 'never-built' } },
  });
  await project.run(graph);
  t.deepEqual(project.ran, ['upper', 'count', 'report']);
  for (const verdict of Object.values(verdicts(await project.plan(graph)))) t.deepEqual(verdict, { status: 'fresh', why: { code: 'up-to-date' } });
});

test('an edited input makes its node stale naming the file, and its dependents pending on it', async (t) => {
  const project = UnitProject.create(t, { 'a.txt': 'one' });
  const graph = chain(project);
  await project.run(graph);
  project.write('a.txt', 'two');
  t.deepEqual(verdicts(await project.plan(graph)), {
    upper: { status: 'stale', why: { code: 'input-changed', path: 'a.txt' } },
    count: { status: 'pending', why: { code: 'waiting-on', deps: ['upper'] } },
    report: { status: 'pending', why: { code: 'waiting-on', deps: ['count'] } },
  });
});

test('a missing or modified output makes its node stale naming it; the plan of a target leaves out what it does not need', async (t) => {
  const project = UnitProject.create(t, { 'a.txt': 'one' });
  const graph = chain(project);
  await project.run(graph);
  project.remove('out/count.txt');
  project.write('out/upper.txt', 'edited by hand');
  t.deepEqual(verdicts(await project.plan(graph, ['count'])), {
    upper: { status: 'stale', why: { code: 'output-modified', path: 'out/upper.txt' } },
    count: { status: 'stale', why: { code: 'output-missing', path: 'out/count.txt' } },
  });
});

test('inputs matched by a glob: a file added or removed is named', async (t) => {
  const project = UnitProject.create(t, { 'src/one.txt': '1', 'src/two.txt': '2' });
  const graph = graphOf([project.node('bundle', { inputs: ['src/*.txt'], outputs: ['out/bundle.txt'] })]);
  await project.run(graph);
  project.write('src/three.txt', '3');
  t.deepEqual(verdicts(await project.plan(graph)).bundle?.why, { code: 'input-added', path: 'src/three.txt' });
  await project.run(graph);
  project.remove('src/one.txt');
  t.deepEqual(verdicts(await project.plan(graph)).bundle?.why, { code: 'input-removed', path: 'src/one.txt' });
});

test('a declared environment variable, the kind and the parameters are inputs', async (t) => {
  const variable = `PIPELINE_UNIT_${process.pid}`;
  const project = UnitProject.create(t);
  const deploy = (kind: string, params: string) => project.node('deploy', { kind, params: { target: params }, env: [variable], outputs: ['out/deploy.txt'] });
  await project.run(graphOf([deploy('test', 'staging')]));
  process.env[variable] = 'secret';
  t.teardown(() => delete process.env[variable]);
  t.deepEqual(verdicts(await project.plan(graphOf([deploy('test', 'staging')]))).deploy?.why, { code: 'env-changed', name: variable });
  delete process.env[variable];
  t.deepEqual(verdicts(await project.plan(graphOf([deploy('test', 'production')]))).deploy?.why, { code: 'params-changed' });
  t.deepEqual(verdicts(await project.plan(graphOf([deploy('other', 'staging')]))).deploy?.why, { code: 'kind-changed', from: 'test', to: 'other' });
});

test('--force makes every node stale, but one that opts out (a download whose upstream is unchanged)', async (t) => {
  const project = UnitProject.create(t, { 'a.txt': 'one' });
  const graph = graphOf([
    project.node('download', { outputs: ['cache/base.img'], honorsForce: false }),
    project.node('build', { deps: ['download'], outputs: ['out/image.img'] }),
  ]);
  await project.run(graph);
  t.deepEqual(verdicts(await project.plan(graph, undefined, { force: true })), {
    download: { status: 'fresh', why: { code: 'up-to-date' } },
    build: { status: 'stale', why: { code: 'forced' } },
  });
});

test('a key file: missing, corrupt or not matching the inputs makes the node stale; matching outputs with no stamp are adopted', async (t) => {
  const project = UnitProject.create(t, { 'spec.txt': 'v1' });
  const key: KeyFile = {
    path: 'out/.key',
    async compute(hasher, root) {
      return `${(await hasher.hash(`${root}/spec.txt`, { sha256: true })).sha256}`;
    },
  };
  const graph = graphOf([project.node('build', { files: ['spec.txt'], outputs: ['out/image.img'], key })]);
  t.deepEqual(verdicts(await project.plan(graph)).build?.why, { code: 'key-file-missing', path: 'out/.key' });
  await project.run(graph);
  t.regex(project.read('out/.key'), /^[0-9a-f]{64}\n$/, 'the run wrote the key');
  project.write('out/.key', 'not a key');
  t.deepEqual(verdicts(await project.plan(graph)).build?.why, { code: 'key-file-corrupt', path: 'out/.key' });
  project.write('out/.key', `${'0'.repeat(64)}\n`);
  t.deepEqual(verdicts(await project.plan(graph)).build?.why, { code: 'key-file-mismatch', path: 'out/.key' });

  // Another tool built it: outputs and a matching key, no stamp of ours.
  await project.run(graph);
  const { rmSync } = await import('node:fs');
  rmSync(project.stateDir, { recursive: true });
  t.deepEqual(verdicts(await project.plan(graph)).build, { status: 'adopted', why: { code: 'adopted', keyFile: 'out/.key' } });
  project.ran.length = 0;
  await project.run(graph);
  t.deepEqual(project.ran, [], 'adopted, not run');
  t.deepEqual(verdicts(await project.plan(graph)).build?.why, { code: 'up-to-date' }, 'and recorded as ours');
});

test("outputs found with no stamp are adopted or refused by the kind's check, in its words", async (t) => {
  const project = UnitProject.create(t, { 'out/image.img': 'made elsewhere' });
  let good = true;
  const graph = graphOf([
    project.node('build', {
      outputs: ['out/image.img'],
      adopt: async () => (good ? { adopt: true, reason: 'its checksum matches' } : { adopt: false, reason: 'its checksum does not match' }),
    }),
  ]);
  t.deepEqual(verdicts(await project.plan(graph)).build, { status: 'adopted', why: { code: 'adopted', says: 'its checksum matches' } });
  good = false;
  t.deepEqual(verdicts(await project.plan(graph)).build, { status: 'stale', why: { code: 'not-adopted', says: 'its checksum does not match' } });
});

test("a probe's value is an input: when it moves the node is stale with what the probe said; when it fails the node alone fails", async (t) => {
  const project = UnitProject.create(t);
  let upstream = 'v1';
  let failure: Error | undefined;
  const previous: (string | undefined)[] = [];
  const graph = graphOf([
    project.node('download', {
      outputs: ['cache/base.img'],
      probe: async (context) => {
        previous.push(context.previous);
        if (failure) throw failure;
        return { value: upstream, ...(upstream === 'v1' ? {} : { note: `upstream moved to ${upstream}` }) };
      },
    }),
    project.node('build', { deps: ['download'], outputs: ['out/image.img'] }),
  ]);
  await project.run(graph);
  upstream = 'v2';
  t.deepEqual(verdicts(await project.plan(graph)).download?.why, { code: 'upstream-changed', note: 'upstream moved to v2' });
  t.is(previous.at(-1), 'v1', 'the probe is told the value last recorded');

  failure = new Error('connection refused');
  const entries = await project.plan(graph);
  t.deepEqual(verdicts(entries).download?.why, { code: 'probe-failed', message: 'connection refused' });
  const results = await project.run(graph);
  t.like(results[0], { id: 'download', status: 'failed', error: 'connection refused', failureKind: 'task' });
  t.like(results[1], { id: 'build', status: 'skipped', reason: { code: 'dependency-failed', id: 'download' } });

  failure = new Failure('auth', 'no token');
  const stopped = await t.throwsAsync(project.plan(graph));
  t.true(isFailure(stopped, 'auth'), 'a setup failure of a probe stops the plan');
  t.is(stopped?.message, 'download: no token');
});

test('a remote cache hit stands in for the dependencies: they are left out of the plan, and a matching key makes the node fresh', async (t) => {
  const project = UnitProject.create(t, { 'spec.txt': 'v1' });
  const key: KeyFile = { path: 'out/.key', compute: async () => 'a'.repeat(64) };
  const fetched: string[] = [];
  const graph = graphOf([
    project.node('download', { outputs: ['cache/base.img'] }),
    project.node('build', {
      deps: ['download'],
      files: ['spec.txt'],
      outputs: ['out/image.img'],
      key,
      remoteCache: {
        lookup: async () => ({
          hit: true,
          source: 'the shared store',
          reason: 'would fetch from the shared store',
          key: 'a'.repeat(64),
          fetch: async (context) => {
            fetched.push(context.id);
            project.write('out/image.img', 'fetched');
            return { fetched: true };
          },
        }),
      },
    }),
  ]);
  const entries = await project.plan(graph, ['build']);
  t.deepEqual(verdicts(entries), {
    build: { status: 'stale', why: { code: 'remote-hit', source: 'the shared store', says: 'would fetch from the shared store' } },
  });
  await project.run(graph, ['build']);
  t.deepEqual(fetched, ['build']);
  t.deepEqual(project.ran, [], 'neither the download nor the build ran');
  t.is(project.read('out/.key'), `${'a'.repeat(64)}\n`);
  // Its dependency has still never run here, so only the remote's key vouches for it.
  t.deepEqual(verdicts(await project.plan(graph, ['build'])), {
    build: { status: 'fresh', why: { code: 'key-matches-remote', keyFile: 'out/.key', source: 'the shared store' } },
  });
});

test('a declared input file that is missing is a config error before anything, unless a node of the run makes it', async (t) => {
  const project = UnitProject.create(t);
  const missing = graphOf([project.node('use', { files: ['absent.txt'], outputs: ['out/use.txt'] })]);
  const error = await t.throwsAsync(project.plan(missing));
  t.true(isFailure(error, 'config'));
  t.is(error?.message, 'use: input file absent.txt does not exist');
  const made = graphOf([project.node('make', { outputs: ['gen.txt'] }), project.node('use', { deps: ['make'], files: ['gen.txt'], outputs: ['out/use.txt'] })]);
  t.deepEqual(verdicts(await project.plan(made)).use, { status: 'stale', why: { code: 'never-built' } });
});
