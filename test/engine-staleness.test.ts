// Cache and staleness, through the real CLI: what is fresh, what is stale and why, early
// cutoff, --force, declared environment, missing inputs.
import test from 'ava';
import { readFile, rm } from 'node:fs/promises';
import { idsWith, makeProject, nodeOf, type Project } from './support/engine-project.ts';

// upper <- count <- report, and an unrelated `other`. `count` and `report` append to
// runs.log (not an output) so a test can tell whether their command ran.
const CHAIN = `
import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  steps: {
    upper: { files: ['a.txt'], outputs: ['out/upper.txt'], command: ['sh', '-c', 'mkdir -p out && tr a-z A-Z < a.txt > out/upper.txt'] },
    count: { deps: ['upper'], outputs: ['out/count.txt'], command: ['sh', '-c', 'echo count >> runs.log; wc -c < out/upper.txt > out/count.txt'] },
    report: { deps: ['count'], outputs: ['out/report.txt'], command: ['sh', '-c', 'echo report >> runs.log; cat out/count.txt > out/report.txt'] },
    other: { inputs: ['b/**/*.txt'], outputs: ['out/other.txt'], command: ['sh', '-c', 'mkdir -p out && cat b/*.txt > out/other.txt'] },
  },
  aliases: { all: ['report', 'other'] },
  defaultTarget: 'all',
});
`;

async function chain(t: Parameters<typeof makeProject>[0]): Promise<Project> {
  const project = await makeProject(t, { config: CHAIN, files: { 'a.txt': 'hello\n', 'b/one.txt': 'one\n', 'b/two.txt': 'two\n' } });
  const first = await project.run(['--json']);
  t.is(first.code, 0, first.stderr);
  t.is(first.json?.ran, 4);
  return project;
}

test('a second run is all fresh and hashes nothing', async (t) => {
  const project = await chain(t);
  t.is(await project.read('out/upper.txt'), 'HELLO\n');
  const second = await project.run(['--json']);
  t.is(second.code, 0, second.stderr);
  t.is(second.json?.ok, true);
  t.is(second.json?.ran, 0);
  t.is(second.json?.fresh, 4);
  t.is(second.json?.bytesHashed, 0);
  t.deepEqual(idsWith(second.json, 'fresh'), ['count', 'other', 'report', 'upper']);
  // The plain renderer says so too, on stderr; stdout stays empty without --json.
  const plain = await project.run([]);
  t.is(plain.code, 0);
  t.is(plain.stdout, '');
  t.regex(plain.stderr, /0 ran, 4 fresh/);
});

test('editing one input makes that node stale and its dependents pending on it, naming the file', async (t) => {
  const project = await chain(t);
  await project.write('a.txt', 'hello world\n');

  const dry = await project.run(['--dry-run', '--json']);
  t.is(dry.code, 0, dry.stderr);
  t.is(dry.json?.command, 'dry-run');
  t.deepEqual(idsWith(dry.json, 'stale'), ['upper']);
  // Whether count and report run depends on what upper produces: pending, naming it.
  t.deepEqual(idsWith(dry.json, 'pending'), ['count', 'report']);
  t.deepEqual(idsWith(dry.json, 'fresh'), ['other']);
  t.deepEqual(nodeOf(dry.json, 'upper').why, { code: 'input-changed', path: 'a.txt' });
  t.deepEqual(nodeOf(dry.json, 'count').why, { code: 'waiting-on', deps: ['upper'] });
  t.deepEqual(nodeOf(dry.json, 'report').why, { code: 'waiting-on', deps: ['count'] });
  // A dry run changes nothing.
  t.is(await project.read('out/upper.txt'), 'HELLO\n');

  const run = await project.run(['--json']);
  t.is(run.code, 0, run.stderr);
  // upper's output changed, so both pending nodes turned out to run.
  t.deepEqual(idsWith(run.json, 'ran'), ['count', 'report', 'upper']);
  t.deepEqual(idsWith(run.json, 'fresh'), idsWith(dry.json, 'fresh'));
  t.deepEqual(nodeOf(run.json, 'upper').why, nodeOf(dry.json, 'upper').why);
  t.deepEqual(nodeOf(run.json, 'count').why, { code: 'dependency-changed', id: 'upper' });
  t.is(await project.read('out/upper.txt'), 'HELLO WORLD\n');
  t.is((await project.read('out/count.txt')).trim(), '12');

  // A glob input: a new matching file makes its node stale, naming the file.
  await project.write('b/three.txt', 'three\n');
  const added = await project.run(['--dry-run', '--json']);
  t.deepEqual(idsWith(added.json, 'stale'), ['other']);
  t.deepEqual(nodeOf(added.json, 'other').why, { code: 'input-added', path: 'b/three.txt' });
  const explained = await project.run(['explain', 'other']);
  t.is(explained.code, 0, explained.stderr);
  t.regex(explained.stdout, /stale: input b\/three\.txt added/);
});

test('a deleted output makes its node stale, naming the output', async (t) => {
  const project = await chain(t);
  await project.write('runs.log', '');
  await rm(project.path('out/count.txt'));

  const dry = await project.run(['--dry-run', '--json']);
  t.deepEqual(idsWith(dry.json, 'stale'), ['count']);
  t.deepEqual(idsWith(dry.json, 'pending'), ['report']);
  t.deepEqual(nodeOf(dry.json, 'count').why, { code: 'output-missing', path: 'out/count.txt' });
  t.deepEqual(nodeOf(dry.json, 'report').why, { code: 'waiting-on', deps: ['count'] });

  const run = await project.run(['--json']);
  t.is(run.code, 0, run.stderr);
  t.is(nodeOf(run.json, 'count').status, 'ran');
  t.deepEqual(nodeOf(run.json, 'count').why, { code: 'output-missing', path: 'out/count.txt' });
  t.is((await project.read('out/count.txt')).trim(), '6');
  // count rebuilt the same bytes: report is left alone (early cutoff).
  t.is(nodeOf(run.json, 'report').status, 'fresh');
  t.is(await project.read('runs.log'), 'count\n');
});

test('an altered output makes its node stale, naming the output, and is rebuilt', async (t) => {
  const project = await chain(t);
  await project.write('out/upper.txt', 'TAMPERED\n');

  const dry = await project.run(['--dry-run', '--json']);
  t.deepEqual(idsWith(dry.json, 'stale'), ['upper']);
  t.deepEqual(idsWith(dry.json, 'pending'), ['count', 'report']);
  t.deepEqual(nodeOf(dry.json, 'upper').why, { code: 'output-modified', path: 'out/upper.txt' });

  const run = await project.run(['--json']);
  t.is(run.code, 0, run.stderr);
  t.is(nodeOf(run.json, 'upper').status, 'ran');
  t.deepEqual(nodeOf(run.json, 'upper').why, { code: 'output-modified', path: 'out/upper.txt' });
  t.is(await project.read('out/upper.txt'), 'HELLO\n');
  // Restored to the bytes count last saw: count stays fresh.
  t.is(nodeOf(run.json, 'count').status, 'fresh');
});

test('early cutoff: a node rebuilt to identical output leaves its dependent fresh', async (t) => {
  const project = await makeProject(t, {
    config: `
import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  steps: {
    lower: { files: ['name.txt'], outputs: ['lower.txt'], command: ['sh', '-c', 'tr A-Z a-z < name.txt > lower.txt'] },
    greet: { deps: ['lower'], outputs: ['greet.txt'], command: ['sh', '-c', 'echo greet >> runs.log; echo "hello $(cat lower.txt)" > greet.txt'] },
  },
  defaultTarget: 'greet',
});
`,
    files: { 'name.txt': 'World\n' },
  });
  t.is((await project.run(['--json'])).json?.ran, 2);
  t.is(await project.read('greet.txt'), 'hello world\n');

  await project.write('name.txt', 'WORLD\n'); // different input, same lowercased output
  const dry = await project.run(['--dry-run', '--json']);
  t.deepEqual(nodeOf(dry.json, 'lower').why, { code: 'input-changed', path: 'name.txt' });

  const run = await project.run(['--json']);
  t.is(run.code, 0, run.stderr);
  t.is(nodeOf(run.json, 'lower').status, 'ran');
  t.is(nodeOf(run.json, 'greet').status, 'fresh');
  t.deepEqual(nodeOf(run.json, 'greet').why, { code: 'dependencies-unchanged' });
  t.is(await project.read('runs.log'), 'greet\n');

  // And a real change of the output does reach the dependent.
  await project.write('name.txt', 'Moon\n');
  const changed = await project.run(['--json']);
  t.deepEqual(idsWith(changed.json, 'ran'), ['greet', 'lower']);
  t.deepEqual(nodeOf(changed.json, 'greet').why, { code: 'dependency-changed', id: 'lower' });
  t.is(await project.read('greet.txt'), 'hello moon\n');
});

test('--force re-runs the selected targets and their closure, and nothing else', async (t) => {
  const project = await chain(t);
  const forced = await project.run(['report', '--force', '--json']);
  t.is(forced.code, 0, forced.stderr);
  t.deepEqual(idsWith(forced.json, 'ran'), ['count', 'report', 'upper']);
  t.deepEqual(
    forced.json!.nodes.map((node) => node.id),
    ['upper', 'count', 'report'],
    'other is outside the closure of report',
  );
  for (const node of forced.json!.nodes) t.deepEqual(node.why, { code: 'forced' });
  // Forcing does not leave anything stale behind.
  const after = await project.run(['--json']);
  t.is(after.json?.ran, 0);
});

test('a change of a declared environment variable makes the node stale; its value is never stored', async (t) => {
  const secret = 'hunter2-secret-value-6f1d';
  const rotated = 'rotated-secret-value-93ac';
  const project = await makeProject(t, {
    config: `
import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  steps: {
    deploy: { env: ['DEPLOY_TOKEN'], outputs: ['deployed.txt'], command: ['sh', '-c', 'test -n "$DEPLOY_TOKEN" && echo ok > deployed.txt'] },
    after: { deps: ['deploy'], outputs: ['after.txt'], command: ['sh', '-c', 'cp deployed.txt after.txt'] },
  },
  defaultTarget: 'after',
});
`,
  });
  const first = await project.run(['--json'], { env: { DEPLOY_TOKEN: secret } });
  t.is(first.code, 0, first.stderr);
  t.is(first.json?.ran, 2);

  const same = await project.run(['--json'], { env: { DEPLOY_TOKEN: secret } });
  t.is(same.json?.ran, 0);

  const dry = await project.run(['--dry-run', '--json'], { env: { DEPLOY_TOKEN: rotated } });
  t.is(nodeOf(dry.json, 'deploy').status, 'stale');
  t.deepEqual(nodeOf(dry.json, 'deploy').why, { code: 'env-changed', name: 'DEPLOY_TOKEN' });

  const changed = await project.run(['--json'], { env: { DEPLOY_TOKEN: rotated } });
  t.is(changed.code, 0, changed.stderr);
  t.is(nodeOf(changed.json, 'deploy').status, 'ran');
  t.deepEqual(nodeOf(changed.json, 'deploy').why, { code: 'env-changed', name: 'DEPLOY_TOKEN' });
  t.is(nodeOf(changed.json, 'after').status, 'fresh', 'same output: early cutoff');

  const unset = await project.run(['--dry-run', '--json'], { env: { DEPLOY_TOKEN: undefined } });
  t.deepEqual(nodeOf(unset.json, 'deploy').why, { code: 'env-changed', name: 'DEPLOY_TOKEN' });

  const stateFiles = await project.files('.pipeline');
  t.true(
    stateFiles.some((file) => file.startsWith('stamps/')),
    stateFiles.join(', '),
  );
  for (const file of stateFiles) {
    const content = await readFile(project.path(`.pipeline/${file}`), 'utf8');
    t.false(content.includes(secret), `.pipeline/${file} holds the secret`);
    t.false(content.includes(rotated), `.pipeline/${file} holds the secret`);
  }
});

const MISSING_INPUT = (deps: string) => `
import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  steps: {
    ok: { outputs: ['ok.txt'], command: ['sh', '-c', 'echo ok > ok.txt'] },
    needs: { deps: [${deps}], files: ['present.txt', 'config/missing.conf'], outputs: ['needs.txt'], command: ['sh', '-c', 'echo ran > needs.txt'] },
  },
  aliases: { all: ['ok', 'needs'] },
  defaultTarget: 'all',
});
`;

test('a missing `files` input is exit 2 naming the node and the file, before anything runs', async (t) => {
  const project = await makeProject(t, { config: MISSING_INPUT(''), files: { 'present.txt': 'here\n' } });
  const run = await project.run(['--json']);
  t.is(run.code, 2, run.stdout);
  t.regex(run.stderr, /needs: input file config\/missing\.conf does not exist/);
  t.notRegex(run.stderr, /\n\s+at /, 'a usage error, not a stack trace');
  t.false(project.exists('ok.txt'), 'nothing runs before the error');
  t.false(project.exists('needs.txt'));

  const dry = await project.run(['--dry-run']);
  t.is(dry.code, 2);
  t.regex(dry.stderr, /needs: input file config\/missing\.conf does not exist/);
});

// Regression: a node waiting on a stale dependency was not checked for missing `files`, so
// the error surfaced mid-run as a failed node (exit 1) after the dependency had run.
test('a missing `files` input of a node whose dependency is stale is still exit 2 before anything runs', async (t) => {
  const project = await makeProject(t, { config: MISSING_INPUT("'ok'"), files: { 'present.txt': 'here\n' } });
  const dry = await project.run(['--dry-run', '--json']);
  t.is(dry.code, 2, `dry run said: ${dry.stdout}`);
  const run = await project.run(['--json']);
  t.is(run.code, 2, run.stdout);
  t.regex(run.stderr, /needs: input file config\/missing\.conf does not exist/);
  t.false(project.exists('ok.txt'), 'nothing runs before the error');
});
