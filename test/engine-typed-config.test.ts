// Typed configs: a dependency or alias naming an undeclared step is a compile error in a
// `pipeline.config.ts` (checked with the real tsc), and the same config run untyped is a
// runtime error naming the bad reference.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { REPO, startCli } from './support/engine-project.ts';
import { heavySlot } from './support/heavy-slots.ts';

const TSC = join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
const FIXTURES = join(REPO, 'test', 'fixtures');

async function tsc(t: ExecutionContext, args: readonly string[]): Promise<{ code: number; output: string }> {
  await heavySlot(t);
  return new Promise((resolve) => {
    execFile(process.execPath, [TSC, ...args], { cwd: REPO, timeout: 90_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

test('a typed config depending on an undeclared step fails tsc, naming the bad names', async (t) => {
  const { code, output } = await tsc(t, ['--noEmit', '-p', join(FIXTURES, 'bad-config')]);
  t.not(code, 0, output);
  t.regex(output, /pipeline\.config\.ts\(\d+,\d+\): error TS\d+: Type '"biuld"' is not assignable to type '"fetch" \| "build" \| "checksum"'/);
  t.regex(output, /Type '"publsh"' is not assignable/, 'an alias naming an undeclared step is an error too');
  t.is(output.match(/error TS/g)?.length, 2, `only the two bad references are errors:\n${output}`);
});

test('a typed config whose references all exist passes tsc', async (t) => {
  const { code, output } = await tsc(t, ['--noEmit', '-p', join(FIXTURES, 'good-config')]);
  t.is(code, 0, output);
  t.is(output.trim(), '');
});

test("the repo's typecheck includes the good fixture and leaves the bad one out", async (t) => {
  const { code, output } = await tsc(t, ['--listFilesOnly', '-p', join(REPO, 'tsconfig.json')]);
  t.is(code, 0, output);
  t.true(output.includes('test/fixtures/good-config/pipeline.config.ts'));
  t.false(output.includes('test/fixtures/bad-config/'), 'tsconfig.json excludes test/fixtures/**/bad-*');
});

test('the bad config run without a typecheck is exit 2 naming the undeclared step', async (t) => {
  await heavySlot(t);
  const run = await startCli(REPO, ['--config', join(FIXTURES, 'bad-config', 'pipeline.config.ts'), 'graph']).done;
  t.is(run.code, 2);
  t.regex(run.stderr, /"checksum" depends on "biuld", which is not declared \(did you mean "build"\?\)/);
});

test('the good config loads and its graph has the declared edges', async (t) => {
  await heavySlot(t);
  const run = await startCli(REPO, ['--config', join(FIXTURES, 'good-config', 'pipeline.config.ts'), 'graph', '--format', 'dot']).done;
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, /"fetch" -> "build";/);
  t.regex(run.stdout, /"build" -> "checksum";/);
});
