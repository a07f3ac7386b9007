// kill -9 of the pipeline at the worst moments, through the real CLI with real packer
// (null source) and qemu-img: nothing of the killed run survives it, neither processes nor
// keys nor temp files, once the next run has started.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MARK_VARIABLE, markedProcesses, newMark, privateKeysUnder, tempDebris, waitNoMarkedProcesses, walk } from './support/chaos.ts';
import { makeImageProject, type ImageProject } from './support/image-project.ts';

/** Adds a last provisioner step to an image's demo template. */
async function appendStep(project: ImageProject, image: string, step: string): Promise<string> {
  const file = project.path(`templates/${image}/template.pkr.hcl`);
  const original = await readFile(file, 'utf8');
  const text = original.trimEnd();
  await writeFile(file, `${text.slice(0, -1)}  provisioner "shell-local" {\n    inline = [${step}]\n  }\n}\n`);
  return original;
}

async function waitForOutput(read: () => string, pattern: RegExp, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(read())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}; stderr so far:\n${read()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test('kill -9 during a packer build: no descendant survives, no key or temp stays, the next run builds', async (t) => {
  const project = await makeImageProject(t);
  const tmp = project.path('tmp');
  await mkdir(tmp);
  const mark = newMark();
  const env = { TMPDIR: tmp, [MARK_VARIABLE]: mark };
  // A long step, with a child of its own in the background as provisioners often have.
  const original = await appendStep(project, 'debian-12', '"sleep 300 &", "echo long step starts", "sleep 300"');

  const running = project.start(['debian-12:build', '--verbose'], { env });
  await waitForOutput(running.stderrSoFar, /long step starts/, 60_000);
  const during = await markedProcesses(mark);
  t.true(
    during.some((process) => /packer/.test(process.command)),
    JSON.stringify(during),
  );
  // The key of the build lives in the run's scratch dir under .pipeline/, nowhere else.
  const runDirs = await readdir(project.path('.pipeline/run'));
  t.is(runDirs.length, 1);
  t.regex(runDirs[0]!, new RegExp(`^${running.child.pid}@`));
  t.is((await privateKeysUnder(project.path('.pipeline/run'))).length, 1);
  t.deepEqual(await walk(tmp), [], 'packer writes its temp files in the scratch dir too');

  running.child.kill('SIGKILL');
  const result = await running.done;
  t.is(result.signal, 'SIGKILL');
  const started = Date.now();
  const left = await waitNoMarkedProcesses(mark, 5_000);
  t.deepEqual(left, [], 'every process of the killed run is gone');
  t.log(`descendants gone ${Date.now() - started} ms after the kill`);
  t.deepEqual(await walk(tmp), []);
  t.true((await tempDebris(project.path('images'))).length > 0, 'the killed build left its staging dir, for the next run to remove');

  // The next run removes the dead run's scratch dir (and its key) and temps, and builds.
  await writeFile(project.path('templates/debian-12/template.pkr.hcl'), original);
  const again = await project.run(['debian-12:build'], { env });
  t.is(again.code, 0, again.stderr);
  t.deepEqual(await tempDebris(project.root), []);
  t.deepEqual(await privateKeysUnder(project.root), []);
  t.deepEqual(await walk(project.path('.pipeline/run')), []);
  t.deepEqual(await walk(tmp), []);
  t.deepEqual(await waitNoMarkedProcesses(mark, 5_000), []);
  execFileSync('qemu-img', ['check', '-q', project.path('images/debian-12/debian-12.qcow2')]);
});

test('kill -9 during a publish copy: the next run removes the temp from the publish directory', async (t) => {
  const project = await makeImageProject(t);
  const built = await project.run(['debian-12:checksum']);
  t.is(built.code, 0, built.stderr);
  // A temp as a killed publish leaves it: named by a writer that no longer exists.
  const dead = execFileSync('sh', ['-c', 'sh -c "echo \\$\\$"'], { encoding: 'utf8' }).trim();
  const host = execFileSync('hostname', { encoding: 'utf8' })
    .trim()
    .split('.')[0]!
    .replace(/[^A-Za-z0-9-]/g, '');
  const abandoned = `.debian-12.img.${dead}@${host}.0123abcd.tmp`;
  await writeFile(join(project.publishDir, abandoned), 'half an image');
  // One of a live writer (this test) stays: it may be another tree's publish in progress.
  const live = `.debian-13.img.${process.pid}@${host}.89abcdef.tmp`;
  await writeFile(join(project.publishDir, live), 'being written');

  const published = await project.run(['debian-12:publish']);
  t.is(published.code, 0, published.stderr);
  const files = await readdir(project.publishDir);
  t.false(files.includes(abandoned));
  t.true(files.includes(live));
  t.true(files.includes('debian-12.img'));
});
