// An image config's references are typed: an image's base and a step's dependency must be
// declared, or `tsc` rejects the config (the real compiler, on fixture files).
import test from 'ava';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO } from './support/engine-project.ts';
import { heavySlot } from './support/heavy-slots.ts';

const run = promisify(execFile);

test('tsc rejects an undeclared base and an undeclared dependency, and accepts a declared one', async (t) => {
  await heavySlot(t);
  const tsc = join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
  const result = await run(process.execPath, [tsc, '--noEmit', '-p', join(REPO, 'test', 'fixtures', 'image-config')], { cwd: REPO }).then(
    () => ({ code: 0, stdout: '' }),
    (error: { code: number; stdout: string }) => ({ code: error.code, stdout: error.stdout }),
  );
  t.not(result.code, 0);
  const errors = result.stdout.split('\n').filter((line) => line.includes('error TS'));
  t.is(errors.length, 2, result.stdout);
  t.true(
    errors.every((line) => line.includes('bad-refs.ts')),
    'the good config compiles',
  );
  t.regex(result.stdout, /"trixe"/);
  t.regex(result.stdout, /"pve-9:publsh".*Did you mean '"pve-9:publish"'/);
});
