// A node id is any non-empty string, and each node gets a stamp and a log named after it.
// Those names must stay one file inside their directory whatever the id holds (a "/",
// "../", a long or non-ASCII name) and fit the filesystem's 255 bytes: a 300-byte id once
// failed its node after it had run (ENAMETOOLONG on the stamp).
import test from 'ava';
import { readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { makeProject } from './support/engine-project.ts';

const outsideName = `pipeline-escape-${process.pid}-${Date.now()}`;
const IDS = {
  long: 'x'.repeat(300),
  // Two long ids the same for their first 250 characters: their names must differ.
  longTwin: `${'x'.repeat(250)}y${'x'.repeat(49)}`,
  cjk: '构建镜像'.repeat(25), // 100 characters, 300 bytes of UTF-8, 900 once %-escaped
  slash: 'build/debian-12',
  parent: `../../${outsideName}`,
  percent: 'build%2Fdebian-12', // what the slash's id escapes to: must not share its files
};

const config = `
import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  steps: {
${Object.entries(IDS)
  .map(
    ([name, id]) =>
      `    ${JSON.stringify(id)}: { outputs: ['out/${name}.txt'], command: ['sh', '-c', 'mkdir -p out && echo ${name} && echo ${name} > out/${name}.txt'] },`,
  )
  .join('\n')}
  },
  aliases: { all: ${JSON.stringify(Object.values(IDS))} },
  defaultTarget: 'all',
});
`;

test('any id gets its own stamp and log, inside their directories and short enough; the next runs find every node fresh', async (t) => {
  const project = await makeProject(t, { config });
  const first = await project.run(['--json']);
  t.is(first.code, 0, first.stderr);
  t.is(first.json?.ran, Object.keys(IDS).length, first.stderr);

  const stamps = await readdir(project.path('.pipeline/stamps'));
  const logs = await readdir(project.path('logs'), { withFileTypes: true });
  t.is(stamps.length, Object.keys(IDS).length, stamps.join('\n'));
  t.is(logs.length, Object.keys(IDS).length, logs.map((entry) => entry.name).join('\n'));
  t.true(
    logs.every((entry) => entry.isFile()),
    'one file per node, no directories made of an id',
  );
  for (const name of [...stamps, ...logs.map((entry) => entry.name)]) t.true(Buffer.byteLength(name) <= 200, `${name.length} characters: ${name}`);
  t.false(
    (await readdir(tmpdir())).some((name) => name.startsWith(outsideName)),
    'nothing written outside the project',
  );
  t.true(stamps.includes('build%2Fdebian-12.json'), 'a short id keeps the name it always had');

  const second = await project.run(['--json']);
  t.is(second.json?.fresh, Object.keys(IDS).length, second.stderr);
  // Without the stamp index, from the stamp files themselves.
  await rm(project.path('.pipeline/stamp-index.json'));
  const third = await project.run(['--json']);
  t.is(third.json?.fresh, Object.keys(IDS).length, third.stderr);
});
