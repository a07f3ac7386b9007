// Tools' temp dirs: under the project's scratch dir when a Unix socket there fits the
// kernel's path limit, else a short one in the system temp dir that the next run removes
// once its writer is gone.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { HOST_LABEL, removeAbandonedRunDirs, toolTempDir, WRITER } from '../src/debris.ts';

test('a short project path keeps the tool temp dir inside it; a deep one gets a short dir in the system temp dir', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'ttd-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const near = await toolTempDir(join(root, 'tmp'));
  t.is(near, join(root, 'tmp'));
  t.true(existsSync(near));

  const deep = join(root, 'a'.repeat(40), 'b'.repeat(40), 'tmp');
  const short = await toolTempDir(deep);
  t.teardown(() => rm(short, { recursive: true, force: true }));
  t.is(dirname(short), tmpdir());
  t.true(basename(short).startsWith(`pipeline-${WRITER}-`));
  t.true(`${short}/packer-plugin1889198678`.length <= 107, 'a plugin socket fits sun_path');
  t.false(existsSync(deep));
});

test("a dead writer's short tool temp dir is removed by the next run; a live one's is kept", async (t) => {
  const gone = spawnSync('true').pid;
  const abandoned = join(tmpdir(), `pipeline-${gone}@${HOST_LABEL}-abc123`);
  const live = join(tmpdir(), `pipeline-${process.ppid}@${HOST_LABEL}-def456`);
  await Promise.all([mkdir(abandoned), mkdir(live)]);
  t.teardown(() => Promise.all([rm(abandoned, { recursive: true, force: true }), rm(live, { recursive: true, force: true })]));
  const state = await mkdtemp(join(tmpdir(), 'ttd-state-'));
  t.teardown(() => rm(state, { recursive: true, force: true }));
  const removed = await removeAbandonedRunDirs(state);
  t.true(removed.includes(abandoned));
  t.false(existsSync(abandoned));
  t.true(existsSync(live));
});
