// How tasks start programs (src/exec.ts): every argument reaches the program exactly as
// given, whatever characters it holds; no shell startup file runs first, however the
// pipeline itself was started; and an abort stops the program, checks included.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import fc from 'fast-check';
import { execFile } from '../src/exec.ts';
import { qemuImgAvailable } from '../tasks/qemu-img.ts';
import { neverAborted } from './support/signals.ts';

const SEED = Number(process.env.EXEC_PROPERTY_SEED ?? Math.floor(Math.random() * 2 ** 31));

test('every argument reaches the program byte for byte: quotes, spaces, newlines, $, globs, empty', async (t) => {
  t.log(`seed ${SEED} (replay: EXEC_PROPERTY_SEED=${SEED})`);
  // Any text but NUL, which no argument can hold; weighted towards what shells treat specially.
  const special = fc.constantFrom(
    "'",
    '"',
    '\\',
    '$',
    '`',
    '*',
    '?',
    '[',
    ']',
    '~',
    ' ',
    '\n',
    '\t',
    ';',
    '&',
    '|',
    '<',
    '>',
    '(',
    ')',
    '{',
    '}',
    '#',
    '!',
    '=',
    '%',
    '-',
  );
  const argument = fc
    .array(fc.oneof(special, fc.string({ unit: 'grapheme', minLength: 1, maxLength: 3 })), { maxLength: 12 })
    .map((parts) => parts.join('').replaceAll('\0', ''));
  await fc.assert(
    fc.asyncProperty(fc.array(argument, { minLength: 1, maxLength: 6 }), async (args) => {
      const result = await execFile('printf', ['%s\\0', ...args], neverAborted());
      t.is(result.exitCode, 0);
      return JSON.stringify(result.stdout.split('\0').slice(0, -1)) === JSON.stringify(args);
    }),
    { seed: SEED, numRuns: 60 },
  );
});

test('no shell startup file runs before a program, even with SHLVL unset and a ~/.bashrc that would', async (t) => {
  const home = await mkdtemp(join(tmpdir(), 'pipeline-exec-home-'));
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const marker = join(home, 'bashrc-ran');
  await writeFile(join(home, '.bashrc'), `touch ${marker}\n`);
  await writeFile(join(home, '.profile'), `touch ${marker}\n`);
  const env = { HOME: home, SHLVL: '', ENV: join(home, '.bashrc'), BASH_ENV: '' };
  const result = await execFile('sh', ['-c', `test -e ${marker} && echo ran || echo clean`], neverAborted(), { env });
  t.is(result.stdout.trim(), 'clean');
});

test('an aborted setup check stops the program it runs and says so, at once', async (t) => {
  // A qemu-img that hangs, first on PATH, as one under a loaded machine's slow start might.
  const bin = await mkdtemp(join(tmpdir(), 'pipeline-exec-bin-'));
  t.teardown(() => rm(bin, { recursive: true, force: true }));
  await writeFile(join(bin, 'qemu-img'), '#!/bin/sh\nsleep 60\n');
  await chmod(join(bin, 'qemu-img'), 0o755);
  const path = process.env.PATH;
  process.env.PATH = `${bin}:${path ?? ''}`;
  t.teardown(() => {
    process.env.PATH = path;
  });
  const interrupt = new AbortController();
  const started = Date.now();
  const check = qemuImgAvailable(interrupt.signal);
  setTimeout(() => interrupt.abort(new Error('interrupted')), 300);
  await t.throwsAsync(check, { message: 'interrupted' });
  t.true(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
});
