// Errors in the graph or on the command line: exit 2, one clear message, nothing run.
import test from 'ava';
import { makeProject } from './support/engine-project.ts';

const SIMPLE = `
import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  steps: {
    upper: { outputs: ['upper.txt'], command: ['sh', '-c', 'echo UP > upper.txt'] },
    count: { deps: ['upper'], outputs: ['count.txt'], command: ['sh', '-c', 'wc -c < upper.txt > count.txt'] },
  },
  aliases: { all: ['count'] },
  defaultTarget: 'all',
});
`;

test('a dependency cycle is exit 2 and the message names the cycle path', async (t) => {
  const project = await makeProject(t, {
    config: `
import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  steps: {
    fetch: { deps: ['link'], command: ['sh', '-c', 'touch ran-fetch'] },
    compile: { deps: ['fetch'], command: ['sh', '-c', 'touch ran-compile'] },
    link: { deps: ['compile'], command: ['sh', '-c', 'touch ran-link'] },
    standalone: { command: ['sh', '-c', 'touch ran-standalone'] },
  },
  defaultTarget: 'standalone',
});
`,
  });
  for (const args of [['standalone'], ['--dry-run'], ['graph'], ['plan', '--json']]) {
    const run = await project.run(args);
    t.is(run.code, 2, `pipeline ${args.join(' ')}`);
    if (args.includes('--json')) t.like(run.json, { command: 'plan', ok: false, failureKind: 'config' }, run.stdout);
    else t.is(run.stdout, '');
    const match = /dependency cycle: ((?:[a-z]+ -> )+[a-z]+)/.exec(run.stderr);
    t.truthy(match, run.stderr);
    const path = match![1]!.split(' -> ');
    t.is(path[0], path[path.length - 1], 'the path closes on itself');
    t.deepEqual([...new Set(path)].sort(), ['compile', 'fetch', 'link']);
    // Each step of the path is a real edge: a -> b means a depends on b.
    const deps: Record<string, string> = { fetch: 'link', compile: 'fetch', link: 'compile' };
    for (let i = 0; i + 1 < path.length; i++) t.is(deps[path[i]!], path[i + 1], run.stderr);
  }
  t.false(project.exists('ran-standalone'), 'a config with a cycle runs nothing');
});

test('an unknown target is exit 2, lists the valid targets and suggests the nearest', async (t) => {
  const project = await makeProject(t, { config: SIMPLE });
  const run = await project.run(['cuont']);
  t.is(run.code, 2);
  t.regex(run.stderr, /unknown target "cuont"/);
  t.regex(run.stderr, /did you mean "count"\?/);
  t.regex(run.stderr, /valid targets: all, count, upper/);
  t.false(project.exists('upper.txt'));

  const far = await project.run(['--dry-run', 'zzzzzzzzzz']);
  t.is(far.code, 2);
  t.notRegex(far.stderr, /did you mean/, 'no suggestion when nothing is close');
  t.regex(far.stderr, /valid targets: all, count, upper/);

  const explain = await project.run(['explain', 'uper']);
  t.is(explain.code, 2);
  t.regex(explain.stderr, /did you mean "upper"\?/);
});

const PLAIN_JS_BAD_DEP = `
import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  steps: {
    build: { outputs: ['image.qcow2'], command: ['sh', '-c', 'echo img > image.qcow2'] },
    checksum: { deps: ['biuld'], command: ['sh', '-c', 'sha256sum image.qcow2'] },
  },
  defaultTarget: 'checksum',
});
`;

test('an unknown dependency in a plain-JS config is exit 2 naming the missing name', async (t) => {
  const project = await makeProject(t, { config: PLAIN_JS_BAD_DEP, configName: 'pipeline.config.mjs' });
  const run = await project.run(['--json']);
  t.is(run.code, 2);
  t.like(run.json, { command: 'run', ok: false, failureKind: 'config' }, 'under --json, the error is the JSON on stdout');
  t.regex(run.json!.error!, /"checksum" depends on "biuld", which is not declared/);
  t.regex(run.stderr, /"checksum" depends on "biuld", which is not declared/);
  t.regex(run.stderr, /did you mean "build"\?/);
  t.notRegex(run.stderr, /\n\s+at /, 'no stack trace');
  t.false(project.exists('image.qcow2'));
});

// Regression: graph validation errors (raised after the config loaded) once lacked the file name.
test('an unknown dependency in a plain-JS config names the config file', async (t) => {
  const project = await makeProject(t, { config: PLAIN_JS_BAD_DEP, configName: 'pipeline.config.mjs' });
  const run = await project.run([]);
  t.is(run.code, 2);
  t.true(run.stderr.includes('pipeline.config.mjs'), run.stderr);
});

test('an unknown alias member is exit 2 naming alias and name', async (t) => {
  const project = await makeProject(t, {
    configName: 'pipeline.config.mjs',
    config: `
import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  steps: { build: { command: ['true'] } },
  aliases: { all: ['build', 'publish'] },
});
`,
  });
  const run = await project.run(['build']);
  t.is(run.code, 2);
  t.regex(run.stderr, /alias "all" names "publish", which is not declared/);
});

test('a bad flag or a bad --jobs is exit 2 with a one-line reason', async (t) => {
  const project = await makeProject(t, { config: SIMPLE });
  const bogus = await project.run(['--bogus']);
  t.is(bogus.code, 2);
  t.regex(bogus.stderr, /--bogus/);
  t.regex(bogus.stderr, /pipeline --help/);

  for (const jobs of ['0', '-3', 'two', '1.5']) {
    const run = await project.run([`--jobs=${jobs}`]);
    t.is(run.code, 2, `--jobs ${jobs}: ${run.stderr}`);
    t.true(run.stderr.includes(`--jobs must be a positive integer, not "${jobs}"`), run.stderr);
  }
  const missingValue = await project.run(['all', '--jobs']);
  t.is(missingValue.code, 2, missingValue.stderr);
  const ambiguous = await project.run(['--jobs', '-3']);
  t.is(ambiguous.code, 2, ambiguous.stderr);

  const format = await project.run(['graph', '--format', 'svg']);
  t.is(format.code, 2);
  t.regex(format.stderr, /--format must be mermaid or dot/);

  const missingConfig = await project.run(['--config', 'nope.config.ts']);
  t.is(missingConfig.code, 2);
  t.regex(missingConfig.stderr, /nope\.config\.ts not found/);

  t.false(project.exists('upper.txt'), 'no usage error ran anything');
  t.false(project.exists('.pipeline/stamps'), 'no usage error touched the state');
});

test('graph prints the edges in mermaid and dot', async (t) => {
  const project = await makeProject(t, { config: SIMPLE });
  const mermaid = await project.run(['graph']);
  t.is(mermaid.code, 0, mermaid.stderr);
  t.regex(mermaid.stdout, /^flowchart LR/);
  t.regex(mermaid.stdout, /n0\["upper"\]/);
  t.regex(mermaid.stdout, /n0 --> n1/);
  const dot = await project.run(['graph', '--format', 'dot']);
  t.is(dot.code, 0, dot.stderr);
  t.regex(dot.stdout, /"upper" -> "count";/);
});

// Regression: with no package.json next to it, a `pipeline.config.ts` was compiled to
// CommonJS, whose require() of the engine's ES modules failed ("... in a cycle").
test('a pipeline.config.ts loads in a directory without a package.json', async (t) => {
  const project = await makeProject(t, { config: SIMPLE, packageJson: false });
  const run = await project.run(['--json']);
  t.is(run.code, 0, run.stderr);
  t.is(run.json?.ran, 2);
});
