// The image pipeline through the real CLI, real packer (null source) and real qemu-img:
// the full chain, the no-op second run, and each cache invalidation rule of the seed.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { appendFile, readFile, rm, writeFile } from 'node:fs/promises';
import { idsWith, nodeOf } from './support/engine-project.ts';
import { IMAGES, makeImageProject, shellCacheKey, UPSTREAM_FILE, type ImageProject } from './support/image-project.ts';

async function built(t: Parameters<typeof makeImageProject>[0]): Promise<ImageProject> {
  const project = await makeImageProject(t);
  const first = await project.run(['publish', '--json']);
  t.is(first.code, 0, first.stderr);
  return project;
}

const builds = IMAGES.map((image) => `${image}:build`).sort();

test('the full chain builds, checksums and publishes every image; a second run does nothing', async (t) => {
  const project = await makeImageProject(t);
  const first = await project.run(['publish', '--json']);
  t.is(first.code, 0, first.stderr);
  t.is(first.json!.ran, 2 + 3 * 3, 'two shared base downloads, then build, checksum, publish per image');
  t.is(nodeOf(first.json, 'trixie:download').status, 'ran', 'debian-13 and pve-9 share one download');
  t.is(first.json!.nodes.filter((node) => node.id.endsWith(':download')).length, 2);

  for (const image of IMAGES) {
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', project.path(`images/${image}/${image}.qcow2`)], { encoding: 'utf8' })) as {
      format: string;
    };
    t.is(info.format, 'qcow2');
    t.regex(await project.read(`images/${image}/image-version.txt`), /^DEBIAN_VERSION=\d+\.\d+$/m);
    const check = execFileSync('sha256sum', ['-c', `${image}.qcow2.sha256`], { cwd: project.path(`images/${image}`), encoding: 'utf8' });
    t.is(check.trim(), `${image}.qcow2: OK`);
    t.true(project.exists(`publish/${image}.img`));
  }

  const second = await project.run(['publish', '--json']);
  t.is(second.code, 0, second.stderr);
  t.is(second.json!.ran, 0);
  t.is(second.json!.bytesHashed, 0, 'a no-op run reads no file content');
});

test('.cache-key equals the shell script composition, so its images are adopted', async (t) => {
  const project = await built(t);
  for (const image of IMAGES) {
    const base = image === 'debian-12' ? UPSTREAM_FILE.bookworm : UPSTREAM_FILE.trixie;
    const expected = shellCacheKey(project, image, `cache/${base}`);
    t.is(await project.read(`images/${image}/.cache-key`), `${expected}\n`);
  }
  // Images built by the shell script have a .cache-key and no engine stamp: the plan says
  // they would be adopted, and the run adopts them, building and rewriting nothing.
  await rm(project.path('.pipeline'), { recursive: true });
  const checksums = await Promise.all(IMAGES.map((image) => project.read(`images/${image}/${image}.qcow2.sha256`)));
  const dry = await project.run(['all', '--dry-run', '--json']);
  t.is(dry.code, 0, dry.stderr);
  t.deepEqual(idsWith(dry.json, 'adopted'), dry.json!.nodes.map((node) => node.id).sort(), 'every node would be adopted');
  const adopted = await project.run(['all', '--json']);
  t.is(adopted.code, 0, adopted.stderr);
  t.deepEqual(idsWith(adopted.json, 'ran'), [], 'no image rebuilds');
  t.deepEqual(idsWith(adopted.json, 'adopted'), idsWith(dry.json, 'adopted'));
  for (const image of IMAGES) {
    t.deepEqual(nodeOf(adopted.json, `${image}:build`).why, {
      code: 'adopted',
      keyFile: `images/${image}/.cache-key`,
      says: `${image}.qcow2 matches its .sha256`,
    });
  }
  t.deepEqual(nodeOf(adopted.json, 'trixie:download').why, { code: 'adopted', says: `cache/${UPSTREAM_FILE.trixie} matches upstream's SHA-512` });
  t.deepEqual(await Promise.all(IMAGES.map((image) => project.read(`images/${image}/${image}.qcow2.sha256`))), checksums);
  // Adoption is recorded: the next run is a no-op that reads no file content.
  const again = await project.run(['all', '--json']);
  t.is(again.json!.ran + again.json!.adopted, 0);
  t.is(again.json!.bytesHashed, 0);
});

test('upstream base changed: the download and the images built on it rebuild, others stay fresh', async (t) => {
  const project = await built(t);
  await project.changeUpstream('trixie');
  const dry = await project.run(['all', '--dry-run', '--json']);
  t.is(dry.code, 0, dry.stderr);
  t.is(nodeOf(dry.json, 'trixie:download').status, 'stale');
  t.deepEqual(nodeOf(dry.json, 'trixie:download').why, { code: 'upstream-changed' });
  t.is(nodeOf(dry.json, 'debian-12:build').status, 'fresh');
  // Whether they rebuild is up to the new base's bytes.
  t.is(nodeOf(dry.json, 'debian-13:build').status, 'pending');
  t.deepEqual(nodeOf(dry.json, 'pve-9:build').why, { code: 'waiting-on', deps: ['trixie:download'] });

  const run = await project.run(['all', '--json']);
  t.is(run.code, 0, run.stderr);
  t.deepEqual(
    idsWith(run.json, 'ran').filter((id) => !id.endsWith(':checksum')),
    ['debian-13:build', 'pve-9:build', 'trixie:download'],
  );
  t.is(nodeOf(run.json, 'debian-12:build').status, 'fresh');
});

const specFiles: Array<{ file: string; stale: readonly string[] }> = [
  { file: 'templates/debian-12/template.pkr.hcl', stale: ['debian-12:build'] },
  { file: 'templates/pve-9/cleanup.sh', stale: ['pve-9:build'] },
  { file: 'shared/scripts/cleanup-common.sh', stale: builds },
  { file: 'shared/scripts/detect-versions.sh', stale: builds },
  { file: 'shared/cloud-init/user-data.pkrtpl', stale: builds },
  { file: 'shared/cloud-init/meta-data', stale: builds },
];

for (const { file, stale } of specFiles) {
  test(`changing ${file} makes exactly ${stale.length === 3 ? 'every build' : stale[0]} stale, naming the file`, async (t) => {
    const project = await built(t);
    await appendFile(project.path(file), '\n# changed\n');
    const dry = await project.run(['all', '--dry-run', '--json']);
    t.is(dry.code, 0, dry.stderr);
    t.deepEqual(
      dry
        .json!.nodes.filter((node) => node.id.endsWith(':build') && node.status === 'stale')
        .map((node) => node.id)
        .sort(),
      [...stale].sort(),
    );
    for (const id of stale) t.deepEqual(nodeOf(dry.json, id).why, { code: 'input-changed', path: file });
    const run = await project.run(['all', '--json']);
    t.is(run.code, 0, run.stderr);
    t.deepEqual(
      idsWith(run.json, 'ran').filter((id) => id.endsWith(':build')),
      [...stale].sort(),
    );
  });
}

test('--force rebuilds the images but does not re-download an unchanged base', async (t) => {
  const project = await built(t);
  const run = await project.run(['all', '--force', '--json']);
  t.is(run.code, 0, run.stderr);
  for (const id of builds) t.is(nodeOf(run.json, id).status, 'ran');
  t.is(nodeOf(run.json, 'trixie:download').status, 'fresh');
  const refresh = await project.run(['all', '--refresh-base', '--json']);
  t.is(refresh.code, 0, refresh.stderr);
  t.is(nodeOf(refresh.json, 'trixie:download').status, 'ran', '--refresh-base re-downloads');
});

test('a deleted or corrupt .cache-key makes only that image stale', async (t) => {
  const project = await built(t);
  await rm(project.path('images/debian-13/.cache-key'));
  await writeFile(project.path('images/pve-9/.cache-key'), 'not a key\n');
  const dry = await project.run(['all', '--dry-run', '--json']);
  t.deepEqual(nodeOf(dry.json, 'debian-13:build').why, { code: 'key-file-missing', path: 'images/debian-13/.cache-key' });
  t.deepEqual(nodeOf(dry.json, 'pve-9:build').why, { code: 'key-file-corrupt', path: 'images/pve-9/.cache-key' });
  t.is(nodeOf(dry.json, 'debian-12:build').status, 'fresh');
  const run = await project.run(['all', '--json']);
  t.deepEqual(
    idsWith(run.json, 'ran').filter((id) => id.endsWith(':build')),
    ['debian-13:build', 'pve-9:build'],
  );
});

test('a failing packer build keeps the previous image and key byte-identical and prints the log tail', async (t) => {
  const project = await built(t);
  const image = await readFile(project.path('images/debian-12/debian-12.qcow2'));
  const key = await readFile(project.path('images/debian-12/.cache-key'));
  const template = await project.read('templates/debian-12/template.pkr.hcl');
  await writeFile(project.path('templates/debian-12/template.pkr.hcl'), template.replace('"set -eu",', '"set -eu", "echo provisioning broke >&2", "exit 7",'));
  const run = await project.run(['debian-12']);
  t.is(run.code, 1);
  t.regex(run.stderr, /debian-12:build failed/);
  t.regex(run.stderr, /provisioning broke/);
  t.regex(run.stderr, /logs\/debian-12\.\d{8}-\d{6}\.log/);
  t.deepEqual(await readFile(project.path('images/debian-12/debian-12.qcow2')), image);
  t.deepEqual(await readFile(project.path('images/debian-12/.cache-key')), key);
  t.deepEqual(
    (await project.files('images/debian-12')).filter((name) => name.includes('staging')),
    [],
  );
});

test('an interrupted build leaves the previous image and key, and exits 130', async (t) => {
  const project = await built(t);
  const image = await readFile(project.path('images/pve-9/pve-9.qcow2'));
  const key = await readFile(project.path('images/pve-9/.cache-key'));
  const template = await project.read('templates/pve-9/template.pkr.hcl');
  await writeFile(
    project.path('templates/pve-9/template.pkr.hcl'),
    template.replace('"set -eu",', '"set -eu", "touch \\"$(dirname \\"$OUTPUT_DIRECTORY\\")/started\\"", "sleep 60",'),
  );
  const running = project.start(['pve-9']);
  await project.waitFor('images/pve-9/started', 60_000);
  running.child.kill('SIGINT');
  const result = await running.done;
  t.is(result.code, 130, result.stderr);
  t.deepEqual(await readFile(project.path('images/pve-9/pve-9.qcow2')), image);
  t.deepEqual(await readFile(project.path('images/pve-9/.cache-key')), key);
  t.deepEqual(
    (await project.files('images/pve-9')).filter((name) => name.includes('staging') || name.endsWith('.tmp')),
    [],
  );
});

test('publish is skipped when unchanged and redone when the image changed', async (t) => {
  const project = await built(t);
  const again = await project.run(['publish', '--json']);
  t.deepEqual(idsWith(again.json, 'ran'), []);
  await appendFile(project.path('templates/debian-12/template.pkr.hcl'), '\n# new content\n');
  // The demo build is deterministic; make its output differ as a real rebuild's would.
  const template = await project.read('templates/debian-12/template.pkr.hcl');
  await writeFile(project.path('templates/debian-12/template.pkr.hcl'), template.replace('write -P 0x2a 0 256k', 'write -P 0x2b 0 256k'));
  const run = await project.run(['publish', '--json']);
  t.is(run.code, 0, run.stderr);
  t.deepEqual(idsWith(run.json, 'ran'), ['debian-12:build', 'debian-12:checksum', 'debian-12:publish']);
});

test('inputs edited while a build runs leave it stale: .cache-key records the inputs it started from', async (t) => {
  const project = await built(t);
  const template = await project.read('templates/debian-12/template.pkr.hcl');
  // The build itself edits its cleanup.sh half-way, as a person might while it runs.
  await writeFile(
    project.path('templates/debian-12/template.pkr.hcl'),
    template.replace('"set -eu",', '"set -eu", "echo \'# edited during the build\' >> \\"$TEMPLATE_DIR/cleanup.sh\\"",'),
  );
  const run = await project.run(['debian-12:build', '--json']);
  t.is(run.code, 0, run.stderr);
  t.not((await project.read('images/debian-12/.cache-key')).trim(), shellCacheKey(project, 'debian-12', `cache/${UPSTREAM_FILE.bookworm}`));
  // Even without the engine's stamps (the shell-script adoption path) the key says stale.
  await rm(project.path('.pipeline'), { recursive: true });
  const dry = await project.run(['debian-12:build', '--dry-run', '--json']);
  t.is(nodeOf(dry.json, 'debian-12:build').status, 'stale');
});

test('explain says why a node is stale and what the pve-9 key cannot see', async (t) => {
  const project = await built(t);
  await appendFile(project.path('templates/pve-9/cleanup.sh'), '\n# changed\n');
  const result = await project.run(['explain', 'pve-9:build']);
  t.is(result.code, 0, result.stderr);
  t.regex(result.stdout, /status: stale: input templates\/pve-9\/cleanup\.sh changed/);
  t.regex(result.stdout, /key file: images\/pve-9\/\.cache-key/);
  t.regex(result.stdout, /PVE repository state/);
});
