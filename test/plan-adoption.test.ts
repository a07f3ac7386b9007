// A tree the shell build script left, through the real CLI on a host that cannot build
// (the repository's templates need packer >= 1.7 and KVM; this host's packer is a stub
// and the KVM device is absent): what checks out is adopted with no build and no setup
// check, what does not is never adopted, uploaded or re-checksummed, and a pending build
// that turns out to run is setup-checked before it starts.
import test, { type ExecutionContext } from 'ava';
import { chmod, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { idsWith, nodeOf, type CliResult } from './support/engine-project.ts';
import { GitHubServer } from './support/github-server.ts';
import { flipByte, IMAGES, makeImageProject, makeShellBuiltTree, UPSTREAM_FILE, type ImageProject } from './support/image-project.ts';

interface Host {
  readonly packer: string;
  /** What the one-line error says when a build would have to run here. */
  readonly cannotBuild: (project: ImageProject) => RegExp;
}

const HOSTS: readonly Host[] = [
  { packer: '1.6.6', cannotBuild: () => /packer 1\.6\.6 cannot build templates\/debian-12\/template\.pkr\.hcl/ },
  { packer: '1.11.2', cannotBuild: (project) => new RegExp(`${project.path('no-kvm').replaceAll('/', '\\/')} missing`) },
];

/** A shell-built tree with the production templates, and the environment of a host that cannot build them. */
async function shellBuiltOn(t: ExecutionContext, host: Host, server?: GitHubServer): Promise<{ project: ImageProject; env: Record<string, string> }> {
  const project = await makeImageProject(t, '', { templates: 'production' });
  await makeShellBuiltTree(project);
  // `packer version` answers; anything else fails, so a build that slipped through shows.
  await project.write(
    'stub-bin/packer',
    `#!/bin/sh\n[ "$1" = version ] && { echo "Packer v${host.packer}"; exit 0; }\necho "stub packer cannot $1" >&2\nexit 1\n`,
  );
  await chmod(project.path('stub-bin/packer'), 0o755);
  const env: Record<string, string> = {
    PATH: `${project.path('stub-bin')}:${process.env.PATH ?? ''}`,
    PIPELINE_KVM_DEVICE: project.path('no-kvm'),
  };
  if (server) {
    Object.assign(env, { GITHUB_TOKEN: server.token, GITHUB_API_URL: server.url, GITHUB_REPOSITORY: `${server.owner}/${server.repo}` });
  }
  return { project, env };
}

async function checksumFiles(project: ImageProject): Promise<Record<string, Buffer>> {
  const entries = await Promise.all(IMAGES.map(async (image) => [image, await readFile(project.path(`images/${image}/${image}.qcow2.sha256`))] as const));
  return Object.fromEntries(entries);
}

/** The run's one error line: exit 2 and a single `pipeline:` line on stderr. */
function oneLineError(t: ExecutionContext, result: CliResult): string {
  t.is(result.code, 2, result.stdout + result.stderr);
  const lines = result.stderr.split('\n').filter((line) => line.startsWith('pipeline:'));
  t.is(lines.length, 1, result.stderr);
  return lines[0] ?? '';
}

for (const host of HOSTS) {
  test(`packer ${host.packer}, no KVM: all --offline and upload:latest --offline adopt the shell-built tree and build nothing`, async (t) => {
    const server = await GitHubServer.start();
    t.teardown(() => server.close());
    const { project, env } = await shellBuiltOn(t, host, server);
    // Made up front: three uploads starting at once race to create it (the store's to fix).
    server.createRelease('latest', { name: 'Latest Images', prerelease: true });
    const checksums = await checksumFiles(project);

    const dry = await project.run(['all', '--offline', '--dry-run', '--json'], { env });
    t.is(dry.code, 0, dry.stderr);
    const closure = dry.json!.nodes.map((node) => node.id).sort();
    t.deepEqual(idsWith(dry.json, 'adopted'), closure, 'the plan predicts adoption, so the builds are assessed for real');
    t.deepEqual(nodeOf(dry.json, 'trixie:download').why, {
      code: 'adopted',
      says: `cache/${UPSTREAM_FILE.trixie} as cached, not verified against upstream (offline)`,
    });

    const all = await project.run(['all', '--offline', '--json'], { env });
    t.is(all.code, 0, all.stderr);
    t.deepEqual(idsWith(all.json, 'ran'), []);
    t.deepEqual(idsWith(all.json, 'adopted'), closure);

    const upload = await project.run(['upload:latest', '--offline', '--json'], { env, timeoutMs: 180_000 });
    t.is(upload.code, 0, upload.stderr);
    t.deepEqual(
      idsWith(upload.json, 'ran'),
      IMAGES.map((image) => `${image}:upload`),
      'uploads only: no build',
    );
    for (const image of IMAGES) t.deepEqual(await server.assetBytes('latest', `${image}.qcow2.sha256`), checksums[image]);
    t.deepEqual(await checksumFiles(project), checksums, 'adoption rewrote no .sha256');

    const again = await project.run(['all', '--offline', '--json'], { env });
    t.is(again.json!.ran + again.json!.adopted, 0);
    t.is(again.json!.bytesHashed, 0, 'the adoption checks were recorded: a no-op reads nothing');

    // The host really cannot build: once a build must run, the setup check says so.
    await writeFile(project.path('templates/debian-12/cleanup.sh'), `${await project.read('templates/debian-12/cleanup.sh')}\n# changed\n`);
    const line = oneLineError(t, await project.run(['all', '--offline'], { env }));
    t.regex(line, /^pipeline: debian-12:build: /);
    t.regex(line, host.cannotBuild(project));
    t.regex(line, /\(why it runs: input templates\/debian-12\/cleanup\.sh changed\)$/);
  });
}

test('a build pending on a base that comes back identical is adopted, never setup-checked', async (t) => {
  const { project, env } = await shellBuiltOn(t, HOSTS[0]!);
  await rm(project.path(`cache/${UPSTREAM_FILE.trixie}`));

  const dry = await project.run(['all', '--dry-run', '--json'], { env });
  t.is(dry.code, 0, dry.stderr);
  t.deepEqual(idsWith(dry.json, 'stale'), ['trixie:download']);
  t.deepEqual(idsWith(dry.json, 'pending'), ['debian-13:build', 'debian-13:checksum', 'pve-9:build', 'pve-9:checksum']);
  t.deepEqual(nodeOf(dry.json, 'pve-9:build').why, { code: 'waiting-on', deps: ['trixie:download'] });
  t.deepEqual(idsWith(dry.json, 'adopted'), ['bookworm:download', 'debian-12:build', 'debian-12:checksum']);
  t.deepEqual(nodeOf(dry.json, 'bookworm:download').why, { code: 'adopted', says: `cache/${UPSTREAM_FILE.bookworm} matches upstream's SHA-512` });
  const text = await project.run(['all', '--dry-run'], { env });
  t.regex(text.stdout, /^\? pve-9:build: pending: depends on what trixie:download produces$/m);
  t.regex(text.stdout, /^\+ debian-12:build: would be adopted: images\/debian-12\/\.cache-key matches, debian-12\.qcow2 matches its \.sha256$/m);
  t.regex(text.stdout, /^1 of 8 would run, 4 more depending on what their dependencies produce, 3 would be adopted \(dry run: nothing was changed\)$/m);

  // plan --json reads the same verdicts; its CI jobs cover the images that may build.
  const planned = await project.run(['plan', '--json', 'all'], { env });
  t.is(planned.code, 0, planned.stderr);
  const plan = JSON.parse(planned.stdout) as { stale: string[]; nodes: Array<{ id: string; status: string }>; jobs: { include: Array<{ image: string }> } };
  t.deepEqual(plan.stale, ['trixie:download']);
  t.deepEqual(
    plan.nodes.map((node) => [node.id, node.status]),
    dry.json!.nodes.map((node) => [node.id, node.status]),
  );
  t.deepEqual(
    plan.jobs.include.map((job) => job.image),
    ['debian-13', 'pve-9'],
  );

  const run = await project.run(['all', '--json'], { env });
  t.is(run.code, 0, run.stderr);
  t.deepEqual(idsWith(run.json, 'ran'), ['trixie:download']);
  t.deepEqual(idsWith(run.json, 'adopted'), [...idsWith(dry.json, 'adopted'), ...idsWith(dry.json, 'pending')].sort());
});

test('a build pending on a base that changes is setup-checked before it starts: exit 2 in one line, the download kept', async (t) => {
  const { project, env } = await shellBuiltOn(t, HOSTS[0]!);
  await project.changeUpstream('trixie');

  const dry = await project.run(['all', '--dry-run', '--json'], { env });
  t.is(dry.code, 0, dry.stderr);
  t.deepEqual(nodeOf(dry.json, 'trixie:download').why, { code: 'not-adopted', says: `cache/${UPSTREAM_FILE.trixie} differs from upstream's SHA-512` });
  t.is(nodeOf(dry.json, 'debian-13:build').status, 'pending');

  const run = await project.run(['all', '--json'], { env });
  const line = oneLineError(t, run);
  t.regex(line, /^pipeline: (debian-13|pve-9):build: packer 1\.6\.6 cannot build templates\/(debian-13|pve-9)\/template\.pkr\.hcl/);
  t.regex(line, /\(why it runs: images\/(debian-13|pve-9)\/\.cache-key does not match the inputs \(inputs changed\)\)$/);
  t.is(nodeOf(run.json, 'trixie:download').status, 'ran');
  t.deepEqual(await readFile(project.path(`cache/${UPSTREAM_FILE.trixie}`)), await readFile(project.path(`upstream/${UPSTREAM_FILE.trixie}`)));
  const build = nodeOf(run.json, 'debian-13:build');
  t.true(build.status === 'failed' || build.status === 'skipped', build.status);
  t.is(build.startedAt, undefined, 'no build started');
  t.is(nodeOf(run.json, 'debian-12:build').status, 'adopted');
});

test('an image whose byte was flipped is not adopted, not uploaded, its .sha256 untouched, and the plan says why', async (t) => {
  const server = await GitHubServer.start();
  t.teardown(() => server.close());
  const { project, env } = await shellBuiltOn(t, HOSTS[0]!, server);
  const image = project.path('images/debian-12/debian-12.qcow2');
  await flipByte(image, Math.floor((await stat(image)).size / 2));
  const checksums = await checksumFiles(project);
  const flipped = await readFile(image);

  const verify = await project.run(['verify', 'debian-12'], { env });
  t.is(verify.code, 1);
  t.regex(verify.stdout, /debian-12: FAILED/);

  const reason = 'images/debian-12/debian-12.qcow2 does not match its .sha256';
  const dry = await project.run(['upload:latest', '--offline', '--dry-run', '--json'], { env });
  t.is(dry.code, 0, dry.stderr);
  t.is(nodeOf(dry.json, 'debian-12:build').status, 'stale');
  t.deepEqual(nodeOf(dry.json, 'debian-12:build').why, { code: 'not-adopted', says: reason });
  t.deepEqual(nodeOf(dry.json, 'debian-12:checksum').why, { code: 'waiting-on', deps: ['debian-12:build'] });
  t.deepEqual(nodeOf(dry.json, 'debian-12:upload').why, { code: 'never-built' });
  t.is(nodeOf(dry.json, 'debian-13:build').status, 'adopted');
  const explain = await project.run(['explain', 'debian-12:build', '--offline'], { env });
  t.regex(explain.stdout, new RegExp(`status: stale: ${reason.replaceAll('.', '\\.')}`));

  const line = oneLineError(t, await project.run(['upload:latest', '--offline'], { env }));
  t.regex(line, /^pipeline: debian-12:build: packer 1\.6\.6 cannot build/);
  t.true(line.endsWith(`(why it runs: ${reason})`), line);
  t.deepEqual(server.assets('latest'), [], 'nothing was uploaded');
  t.deepEqual(await checksumFiles(project), checksums, 'the .sha256 the script wrote is untouched');
  t.deepEqual(await readFile(image), flipped);
  t.false(project.exists('.pipeline/stamps/debian-12%3Abuild.json'), 'not adopted');
});
