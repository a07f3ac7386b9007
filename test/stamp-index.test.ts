// The stamp index (src/stamp-index.ts): one file holding what the quick check needs of
// every stamp, which a plan reads instead of a file per node. It is a cache of the stamps directory: these tests change
// that directory every way a stamp is changed (removed, replaced, added, the directory
// replaced) and check the index is then not believed, and that a run remakes it.
import test from 'ava';
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { recordOfStamp } from '../src/quick-check.ts';
import { readStamp } from '../src/stamp.ts';
import { readStampIndex, refreshStampIndex, stampIndexPath } from '../src/stamp-index.ts';
import { idsWith, makeProject, type Project } from './support/engine-project.ts';

const CONFIG = `
import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  steps: {
    first: { files: ['a.txt'], outputs: ['out/first.txt'], command: ['sh', '-c', 'mkdir -p out && cat a.txt > out/first.txt'] },
    second: { deps: ['first'], outputs: ['out/second.txt'], command: ['sh', '-c', 'echo second >> runs.log; cat out/first.txt out/first.txt > out/second.txt'] },
    third: { deps: ['second'], outputs: ['out/third.txt'], command: ['sh', '-c', 'echo third >> runs.log; wc -c < out/second.txt > out/third.txt'] },
  },
  aliases: { all: ['third'] },
  defaultTarget: 'all',
});
`;

async function built(t: Parameters<typeof makeProject>[0]): Promise<Project> {
  const project = await makeProject(t, { config: CONFIG, files: { 'a.txt': 'a\n' } });
  const run = await project.run(['--json']);
  t.is(run.code, 0, run.stderr);
  t.is(run.json?.ran, 3);
  return project;
}

const stateDir = (project: Project): string => project.path('.pipeline');

interface IndexJson {
  dir: { mtimeNs: string };
  madeNs: string;
  records: Record<string, unknown>;
}

const indexOf = async (dir: string): Promise<IndexJson> => JSON.parse(await readFile(stampIndexPath(dir), 'utf8')) as IndexJson;

test('a run leaves an index holding exactly the stamp files, made after the racy window', async (t) => {
  const project = await built(t);
  const snapshot = readStampIndex(stateDir(project));
  if (!snapshot) return t.fail('no usable index after a run');
  const index = await indexOf(stateDir(project));
  t.deepEqual(Object.keys(index.records).sort(), ['first', 'second', 'third']);
  for (const id of ['first', 'second', 'third']) {
    const stamp = readStamp(stateDir(project), id);
    if (!stamp) return t.fail(`no stamp for ${id}`);
    t.deepEqual(snapshot.recorded.get(id), { fingerprint: stamp.fingerprint, outputDigest: stamp.outputDigest, record: recordOfStamp(stamp) }, id);
  }
  t.true(BigInt(index.madeNs) - BigInt(index.dir.mtimeNs) >= 50_000_000n, 'made at least 50 ms after the last stamp was written');

  const again = await project.run(['--json']);
  t.is(again.json?.fresh, 3, again.stderr);
  t.deepEqual(await project.files('.pipeline/stamps'), ['first.json', 'second.json', 'third.json']);
});

test('a stamp removed after the index was made is seen: the index is not believed, the node runs', async (t) => {
  const project = await built(t);
  await rm(project.path('.pipeline/stamps/second.json'));
  t.is(readStampIndex(stateDir(project)), undefined);
  const run = await project.run(['--json']);
  t.is(run.code, 0, run.stderr);
  t.deepEqual(idsWith(run.json, 'ran'), ['second']);
  t.deepEqual(idsWith(run.json, 'fresh'), ['first', 'third'], 'early cutoff: same bytes, so third stays fresh');
  t.truthy(readStampIndex(stateDir(project)), 'the run made the index again');
});

test('a stamp replaced (written aside, renamed over) or added is seen', async (t) => {
  const project = await built(t);
  const stamps = project.path('.pipeline/stamps');
  // As a run with other parameters would have recorded it.
  const recorded = JSON.parse(await project.read('.pipeline/stamps/third.json')) as { fingerprint: string; manifest: { params: string } };
  recorded.manifest.params = '0000000000000000';
  recorded.fingerprint = '0000000000000000';
  await writeFile(join(stamps, '.third.json.tmp'), JSON.stringify(recorded));
  await rename(join(stamps, '.third.json.tmp'), join(stamps, 'third.json'));
  t.is(readStampIndex(stateDir(project)), undefined, 'replaced');
  const replaced = await project.run(['--json']);
  t.deepEqual(idsWith(replaced.json, 'ran'), ['third'], replaced.stderr);

  t.truthy(readStampIndex(stateDir(project)));
  await writeFile(join(stamps, 'newcomer.json'), '{}');
  t.is(readStampIndex(stateDir(project)), undefined, 'added');
});

test('a stamps directory replaced by a copy with the same times is not the one the index describes', async (t) => {
  const project = await built(t);
  const stamps = project.path('.pipeline/stamps');
  const before = await stat(stamps);
  await rename(stamps, `${stamps}.old`);
  await mkdir(stamps);
  for (const name of await readdir(`${stamps}.old`)) await rename(join(`${stamps}.old`, name), join(stamps, name));
  await utimes(stamps, before.atime, before.mtime);
  t.is(readStampIndex(stateDir(project)), undefined);
  const run = await project.run(['--json']);
  t.is(run.json?.fresh, 3, run.stderr);
});

test('an index that is garbage, of another version, or made within the racy window is not believed', async (t) => {
  const project = await built(t);
  const path = stampIndexPath(stateDir(project));
  const good = JSON.parse(await project.read('.pipeline/stamp-index.json')) as { version: number; dir: { mtimeNs: string }; madeNs: string };
  const cases: Array<[string, string]> = [
    ['garbage', '{ not json'],
    ['truncated', JSON.stringify(good).slice(0, 100)],
    ['another version', JSON.stringify({ ...good, version: good.version + 1 })],
    ['racy', JSON.stringify({ ...good, madeNs: (BigInt(good.dir.mtimeNs) + 1_000_000n).toString() })],
  ];
  for (const [name, content] of cases) {
    await writeFile(path, content);
    t.is(readStampIndex(stateDir(project)), undefined, name);
  }
  // The run reads the stamp files instead, and makes a good index again.
  const run = await project.run(['--json']);
  t.is(run.json?.fresh, 3, run.stderr);
  t.truthy(readStampIndex(stateDir(project)));
});

test('the index is read in place of the files: it is a cache that trusts stamps are never edited in place', async (t) => {
  // Stamps are only created, renamed over or removed, each of which changes the
  // directory's time. A stamp edited in place (same file, same directory time) is not
  // seen while the index holds: this shows the plan really reads the index.
  const project = await built(t);
  await writeFile(project.path('.pipeline/stamps/third.json'), '{ "edited in place": true }');
  const run = await project.run(['--json']);
  t.is(run.json?.fresh, 3, run.stderr);
  await rm(stampIndexPath(stateDir(project)));
  const withoutIndex = await project.run(['--json']);
  t.deepEqual(idsWith(withoutIndex.json, 'ran'), ['third'], 'read from its file, the edited stamp is no stamp');
});

test('refreshing waits out the racy window after a stamp write, and does nothing when the index still holds', async (t) => {
  const project = await built(t);
  const dir = stateDir(project);
  await rm(stampIndexPath(dir));
  const first = readStamp(dir, 'first');
  await writeFile(join(dir, 'stamps', 'extra.json'), JSON.stringify({ ...first, id: 'extra' }));
  // A stamp copied under another node's name records the node it was written for: it is not that node's.
  await writeFile(join(dir, 'stamps', 'copied.json'), JSON.stringify(first));
  const written = (await stat(join(dir, 'stamps'), { bigint: true })).mtimeNs;
  await refreshStampIndex(dir, undefined);
  // However long the machine took to get here, the index was made only once the write
  // was 50 ms old: a later change cannot leave the directory with the time it records.
  const index = await indexOf(dir);
  t.is(index.dir.mtimeNs, written.toString());
  t.true(BigInt(index.madeNs) - written >= 50_000_000n, `made ${(BigInt(index.madeNs) - written) / 1_000_000n} ms after the write`);
  t.deepEqual(Object.keys(index.records).sort(), ['extra', 'first', 'second', 'third']);
  const snapshot = readStampIndex(dir);
  t.truthy(snapshot?.recorded.get('extra'));

  const made = (await stat(stampIndexPath(dir))).mtimeMs;
  await refreshStampIndex(dir, snapshot);
  t.is((await stat(stampIndexPath(dir))).mtimeMs, made, 'not written again');
});

test('a temp file a killed run left among the stamps is swept, though the stamps themselves are unchanged', async (t) => {
  const project = await built(t);
  t.true(readStampIndex(stateDir(project))?.clean, 'made from a directory of stamps only');
  const abandoned = '.second.json.999999999.deadbeef.tmp'; // pid 999999999 is no process
  await writeFile(project.path(`.pipeline/stamps/${abandoned}`), '{ "half": ');
  t.is(readStampIndex(stateDir(project)), undefined);
  const run = await project.run(['--json']);
  t.is(run.json?.fresh, 3, run.stderr);
  t.deepEqual(await project.files('.pipeline/stamps'), ['first.json', 'second.json', 'third.json']);
  t.true(readStampIndex(stateDir(project))?.clean);
});
