// Loading configs through the compiled CLI: a TypeScript config is compiled once into
// .pipeline/config/ and reused while its content is unchanged; one that imports other
// TypeScript files loads through tsx; a syntax error names the line and column.
import test from 'ava';
import { cp, mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sourceHash } from '../scripts/source-hash.mjs';
import { makeProject, REPO } from './support/engine-project.ts';

const CONFIG = `
import { defineStepsConfig } from '@engine';
import { fileURLToPath } from 'node:url';
export default defineStepsConfig({
  steps: {
    // Where the config says it lives: its own directory, not where it was compiled to.
    where: { outputs: ['where.txt'], command: ['sh', '-c', 'echo "$0" > where.txt', fileURLToPath(new URL('.', import.meta.url))] },
  },
  defaultTarget: 'where',
});
`;

async function compiled(projectRoot: string): Promise<string[]> {
  return (await readdir(join(projectRoot, '.pipeline', 'config')).catch(() => [])).sort();
}

test('a TypeScript config is compiled once, reused while unchanged, and sees its own location', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  const first = await project.run(['--json']);
  t.is(first.code, 0, first.stderr);
  t.is((await project.read('where.txt')).trim(), `${project.root}/`);
  const files = await compiled(project.root);
  t.is(files.length, 1);
  t.regex(files[0]!, /^pipeline\.config\.ts\.[0-9a-f]{16}\.mjs$/);
  const made = await stat(join(project.root, '.pipeline', 'config', files[0]!));

  const second = await project.run(['--json']);
  t.is(second.code, 0, second.stderr);
  t.deepEqual(await compiled(project.root), files);
  t.is((await stat(join(project.root, '.pipeline', 'config', files[0]!))).mtimeMs, made.mtimeMs, 'not compiled again');

  // A changed config is compiled again under a new name; the new content takes effect.
  await project.write(
    'pipeline.config.ts',
    `${(await project.read('pipeline.config.ts')).replace("'where.txt'", "'where2.txt'").replace('> where.txt', '> where2.txt')}`,
  );
  const third = await project.run(['--json']);
  t.is(third.code, 0, third.stderr);
  t.true(project.exists('where2.txt'));
  t.is((await compiled(project.root)).length, 2, 'the older compilation stays a while for runs that still import it');
});

test('a config edited to the same size with its modification time put back is still compiled again', async (t) => {
  // A repeat run finds the compilation by the stat cache's digest of the config, without
  // reading it: the change time (which no one can set) still tells the edit apart.
  const project = await makeProject(t, { config: CONFIG });
  t.is((await project.run(['--json'])).code, 0);
  const path = project.path('pipeline.config.ts');
  const before = await stat(path);
  await project.write('pipeline.config.ts', (await project.read('pipeline.config.ts')).replaceAll('where.txt', 'here2.txt'));
  await utimes(path, before.atime, before.mtime);
  t.is((await stat(path)).size, before.size);
  const run = await project.run(['--json']);
  t.is(run.code, 0, run.stderr);
  t.true(project.exists('here2.txt'), 'the edited config took effect');
  t.is((await compiled(project.root)).length, 2);
});

test('a config importing a JavaScript helper by a relative path loads from the compiled copy', async (t) => {
  const project = await makeProject(t, {
    config: `
import { defineStepsConfig } from '@engine';
import { steps } from './helpers/steps.mjs';
export default defineStepsConfig({ steps, defaultTarget: 'hello' });
`,
    files: { 'helpers/steps.mjs': "export const steps = { hello: { outputs: ['hello.txt'], command: ['sh', '-c', 'echo hi > hello.txt'] } };\n" },
  });
  const run = await project.run(['--json']);
  t.is(run.code, 0, run.stderr);
  t.is(await project.read('hello.txt'), 'hi\n');
  t.is((await compiled(project.root)).length, 1);
});

test('a config importing another TypeScript file loads through tsx', async (t) => {
  const project = await makeProject(t, {
    config: `
import { defineStepsConfig } from '@engine';
import { steps } from './helpers/steps.ts';
export default defineStepsConfig({ steps, defaultTarget: 'hello' });
`,
    files: {
      'helpers/steps.ts':
        "const command: [string, ...string[]] = ['sh', '-c', 'echo typed > hello.txt'];\nexport const steps = { hello: { outputs: ['hello.txt'], command } };\n",
    },
  });
  for (let round = 0; round < 2; round++) {
    const run = await project.run(['--json']);
    t.is(run.code, 0, run.stderr);
    t.is(await project.read('hello.txt'), 'typed\n');
  }
  const files = await compiled(project.root);
  t.is(files.length, 1, 'the decision is cached too');
  t.regex(files[0]!, /^pipeline\.config\.ts\.[0-9a-f]{16}\.needs-loader$/);
});

test('a syntax error in a TypeScript config is exit 2, one line with the line and column', async (t) => {
  const project = await makeProject(t, {
    config: `import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  steps: { a: { command: ['true'] } ,, },
});
`,
  });
  const run = await project.run(['--json']);
  t.is(run.code, 2);
  t.is(run.stderr.trim().split('\n').length, 1, run.stderr);
  t.regex(run.stderr, /^pipeline: \S+\/pipeline\.config\.ts:3:\d+: Expected/);
});

test('a config whose default export has the wrong shape is exit 2 naming the key', async (t) => {
  const project = await makeProject(t, {
    configName: 'pipeline.config.mjs',
    config: "export default { nodes: [{ id: 'a', kind: 'command', deps: 'b', run: async () => {} }] };\n",
  });
  const run = await project.run(['a']);
  t.is(run.code, 2);
  t.regex(run.stderr, /pipeline\.config\.mjs: nodes\.0\.deps: expected an array of node ids, not "b"$/m);
});

test('what defineStepsConfig returns is checked once: its node list cannot be added to, and a copy with a bad node is checked again', async (t) => {
  const pushed = await makeProject(t, {
    config: `import { defineStepsConfig } from '@engine';
const config = defineStepsConfig({ steps: { a: { command: ['true'] } } });
config.nodes.push({ id: 'b', kind: 'command', deps: 'a', run: async () => {} });
export default config;
`,
  });
  const push = await pushed.run(['a']);
  t.is(push.code, 2);
  t.regex(push.stderr, /^pipeline: \S+pipeline\.config\.ts: cannot load: .*not extensible/m);

  const copied = await makeProject(t, {
    config: `import { defineStepsConfig } from '@engine';
const config = defineStepsConfig({ steps: { a: { command: ['true'] } } });
export default { ...config, nodes: [...config.nodes, { id: 'b', kind: 'command', deps: 'a', run: async () => {} }] };
`,
  });
  const copy = await copied.run(['a']);
  t.is(copy.code, 2);
  t.regex(copy.stderr, /pipeline\.config\.ts: nodes\.1\.deps: expected an array of node ids, not "a"$/m);
});

test('the build stamp changes with any source the build compiles', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'pipeline-source-hash-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  for (const file of ['index.ts', 'tsconfig.json', 'tsconfig.build.json', 'scripts/build.mjs']) await cp(join(REPO, file), join(root, file));
  await mkdir(join(root, 'src'));
  await mkdir(join(root, 'tasks', 'deep'), { recursive: true });
  await writeFile(join(root, 'src', 'a.ts'), 'export const a = 1;\n');
  await writeFile(join(root, 'tasks', 'deep', 'b.ts'), 'export const b = 1;\n');
  const before = sourceHash(root);
  t.is(sourceHash(root), before, 'stable');
  await writeFile(join(root, 'tasks', 'deep', 'b.ts'), 'export const b = 2;\n');
  const edited = sourceHash(root);
  t.not(edited, before);
  await writeFile(join(root, 'src', 'c.ts'), 'export const c = 1;\n');
  const added = sourceHash(root);
  t.not(added, edited, 'a new file counts');
  await writeFile(join(root, 'src', 'notes.md'), 'not compiled\n');
  t.is(sourceHash(root), added, 'a file the build does not compile does not count');
  await writeFile(join(root, 'scripts', 'build.mjs'), '// another recipe\n', { flag: 'a' });
  t.not(sourceHash(root), added, 'the build recipe counts');
});
