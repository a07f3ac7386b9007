// The build's one compression, through the real CLI, packer (null source) and qemu-img:
// zstd by default, zlib as a config option, a change of it rebuilds, and a qemu-img that
// cannot write the chosen type stops the run before any work with one line.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeOf } from './support/engine-project.ts';
import { makeImageProject, type ImageProject } from './support/image-project.ts';
import { compressedClusters, imageCompression } from '../tasks/qemu-img.ts';

async function setCompression(project: ImageProject, value: string): Promise<void> {
  const config = await project.read('pipeline.config.ts');
  await project.write('pipeline.config.ts', config.replace('  publishDir:', `  compression: ${JSON.stringify(value)},\n  publishDir:`));
}

test('images are built compressed with zstd by default, and published as that very file', async (t) => {
  const project = await makeImageProject(t);
  const run = await project.run(['debian-12:publish', '--json']);
  t.is(run.code, 0, run.stderr);
  const image = project.path('images/debian-12/debian-12.qcow2');
  t.is(await imageCompression(image), 'zstd');
  t.true((await compressedClusters(image)) > 0);
  t.is(
    execFileSync('sha256sum', [project.path('publish/debian-12.img')], { encoding: 'utf8' }).split(' ')[0],
    (await project.read('images/debian-12/debian-12.qcow2.sha256')).split(' ')[0],
  );
});

test("compression: 'zlib' builds zlib images, and changing the compression rebuilds", async (t) => {
  const project = await makeImageProject(t);
  const first = await project.run(['debian-12', '--json']);
  t.is(first.code, 0, first.stderr);
  const image = project.path('images/debian-12/debian-12.qcow2');
  t.is(await imageCompression(image), 'zstd');

  await setCompression(project, 'zlib');
  const dry = await project.run(['debian-12', '--dry-run', '--json']);
  t.is(dry.code, 0, dry.stderr);
  t.is(nodeOf(dry.json, 'debian-12:build').status, 'stale');
  t.deepEqual(nodeOf(dry.json, 'debian-12:build').why, { code: 'params-changed' });
  const again = await project.run(['debian-12', '--json']);
  t.is(again.code, 0, again.stderr);
  t.is(nodeOf(again.json, 'debian-12:build').status, 'ran');
  t.is(await imageCompression(image), 'zlib');
  t.true((await compressedClusters(image)) > 0);
});

/** A directory holding a `qemu-img` that behaves as QEMU 5.0 and older: no zstd. */
async function oldQemuImg(t: Parameters<typeof makeImageProject>[0]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-old-qemu-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const real = execFileSync('sh', ['-c', 'command -v qemu-img'], { encoding: 'utf8' }).trim();
  await writeFile(
    join(dir, 'qemu-img'),
    `#!/bin/sh
# qcow2 before QEMU 5.1 has no compression_type option; everything else is the real qemu-img.
for arg in "$@"; do
  case "$arg" in *compression_type=*) echo "qemu-img: Invalid parameter 'compression_type'" >&2; exit 1;; esac
done
exec ${real} "$@"
`,
  );
  await chmod(join(dir, 'qemu-img'), 0o755);
  return dir;
}

test('preflight: a qemu-img that cannot write zstd is exit 2 with one line saying what to do; zlib builds with it', async (t) => {
  const project = await makeImageProject(t);
  const env = { PATH: `${await oldQemuImg(t)}:${process.env.PATH}` };
  const run = await project.run(['debian-12:build'], { env });
  t.is(run.code, 2, run.stderr);
  // Beside the "checking N nodes" progress line, one error line.
  const lines = run.stderr.split('\n').filter((line) => line.startsWith('pipeline:'));
  t.is(lines.length, 1, run.stderr);
  t.regex(
    lines[0]!,
    /^pipeline: debian-12:build: qemu-img on this host cannot write zstd-compressed qcow2 images \(Invalid parameter 'compression_type'\): install qemu-utils from QEMU >= 5\.1, or set compression: 'zlib' in the config \(why it runs: [^)]*\)$/,
  );
  t.false(project.exists('images/debian-12/debian-12.qcow2'), 'nothing was built');

  await setCompression(project, 'zlib');
  const zlib = await project.run(['debian-12:build'], { env });
  t.is(zlib.code, 0, zlib.stderr);
  t.is(await imageCompression(project.path('images/debian-12/debian-12.qcow2')), 'zlib');
});

test('an unknown compression type in a config is exit 2 naming the key', async (t) => {
  const project = await makeImageProject(t);
  await setCompression(project, 'lz4');
  const run = await project.run(['debian-12:build']);
  t.is(run.code, 2);
  t.regex(run.stderr, /pipeline\.config\.ts: compression: "lz4" is not a compression type; use one of 'zstd', 'zlib'/);
});
