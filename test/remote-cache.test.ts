// The release as a remote cache, through the real CLI: a tree builds every image (real
// packer on the demo templates, bases from a loopback mirror) and uploads them to a
// loopback GitHub release; fresh copies of it (no cache/, no images/, no state) then run
// `pipeline publish` as a new Proxmox host would. What a user sees is checked: exit codes,
// the published bytes, how many bytes of base image the mirror served, how many times
// packer built, and the lines that say why.
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli, type CliResult, type RunOptions } from './support/engine-project.ts';
import { GitHubServer } from './support/github-server.ts';
import { IMAGES, makeImageProject } from './support/image-project.ts';
import type { MirrorServer } from './support/mirror-server.ts';
import { baseBytesServed, serveUpstream } from './support/mirror-upstream.ts';
import { Trees, type Tree } from './support/runner-trees.ts';

const trees = new Trees();
const cleanups: Array<() => Promise<unknown>> = [];
test.after.always(async () => {
  await trees.cleanup();
  await Promise.all(cleanups.map((cleanup) => cleanup()));
});

interface World {
  readonly origin: Tree;
  readonly mirror: MirrorServer;
  readonly github: GitHubServer;
  readonly env: Record<string, string>;
  /** PATH entries with everything a fresh host has but packer. */
  readonly noPackerPath: string;
}

let world: Promise<World> | undefined;

/**
 * One built-and-uploaded origin tree, its mirror and its release, shared by the tests
 * (each uses copies). Its project holds one heavy-test slot until the file ends: the
 * tests are serial, so that one slot covers every CLI run of the file.
 */
function setUp(): Promise<World> {
  return (world ??= (async () => {
    const shim = { teardown: (fn: () => Promise<unknown>) => void cleanups.push(fn) } as unknown as ExecutionContext;
    const project = await makeImageProject(shim);
    // The bases come from the mirror, so its byte counter sees every base download.
    const mirror = await serveUpstream(project);
    const github = await GitHubServer.start();
    cleanups.push(
      () => mirror.close(),
      () => github.close(),
    );
    const env = {
      GITHUB_TOKEN: github.token,
      GITHUB_API_URL: github.url,
      GITHUB_REPOSITORY: `${github.owner}/${github.repo}`,
      // Split into parts, so a fetch reads several pieces in parallel.
      PIPELINE_MAX_ASSET_SIZE: '200K',
      PIPELINE_PART_SIZE: '150KiB',
    };
    const origin: Tree = { root: project.root, path: project.path, run: (args, options) => startCli(project.root, args, options).done };
    const built = await origin.run(['upload:latest'], { env, timeoutMs: 300_000 });
    if (built.code !== 0) throw new Error(`building and uploading the origin failed:\n${built.stderr}`);
    return { origin, mirror, github, env, noPackerPath: await pathWithoutPacker() };
  })());
}

/** A directory of links to every program in /usr/bin but packer (on Debian /bin is /usr/bin). */
async function pathWithoutPacker(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-nopacker-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  for (const name of await readdir('/usr/bin')) if (name !== 'packer') await symlink(join('/usr/bin', name), join(dir, name));
  return dir;
}

/** A packer that records each build in `count` before running the real one. */
async function countingPacker(dir: string): Promise<{ path: string; builds: () => Promise<string[]> }> {
  const bin = join(dir, 'fake-bin');
  const count = join(dir, 'packer-builds.log');
  await mkdir(bin, { recursive: true });
  await writeFile(
    join(bin, 'packer'),
    `#!/bin/sh\nif [ "$1" = build ]; then for last; do :; done; echo "$last" >> ${JSON.stringify(count)}; fi\nexec /usr/bin/packer "$@"\n`,
  );
  await chmod(join(bin, 'packer'), 0o755);
  return {
    path: `${bin}:${process.env.PATH ?? ''}`,
    builds: async () => (await readFile(count, 'utf8').catch(() => '')).split('\n').filter(Boolean),
  };
}

/** A fresh host: a copy of the repository with nothing built, downloaded or recorded. */
async function freshHost(w: World, label: string): Promise<Tree> {
  const host = await trees.copy(w.origin, label);
  for (const dir of ['cache', 'images', '.pipeline', 'logs']) await rm(host.path(dir), { recursive: true, force: true });
  for (const file of await readdir(host.path('publish'))) if (file.endsWith('.img')) await rm(host.path(`publish/${file}`));
  // The config names its publish directory by absolute path: this host's own.
  const config = await readFile(host.path('pipeline.config.ts'), 'utf8');
  await writeFile(host.path('pipeline.config.ts'), config.replaceAll(w.origin.root, host.root));
  return host;
}

/** Bytes of base images the mirror served while `action` ran, and the requests for them. */
async function baseBytesDuring(
  mirror: MirrorServer,
  action: () => Promise<CliResult>,
): Promise<{ result: CliResult; baseBytes: number; baseRequests: string[] }> {
  const before = baseBytesServed(mirror);
  const requestsBefore = mirror.requests.length;
  const result = await action();
  const baseRequests = mirror.requests
    .slice(requestsBefore)
    .filter((request) => request.path !== '/SHA512SUMS')
    .map((request) => request.path);
  return { result, baseBytes: baseBytesServed(mirror) - before, baseRequests };
}

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

function run(host: Tree, args: readonly string[], w: World, options: RunOptions = {}): Promise<CliResult> {
  return host.run(args, { timeoutMs: 240_000, ...options, env: { ...w.env, ...options.env } });
}

function explainFailure(result: CliResult): string {
  return `exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`;
}

test.serial('a fresh host without packer publishes every image from the release: no base bytes, no packer, same bytes', async (t) => {
  const w = await setUp();
  const host = await freshHost(w, 'pve-host');
  const { result, baseBytes, baseRequests } = await baseBytesDuring(w.mirror, () => run(host, ['publish'], w, { env: { PATH: w.noPackerPath } }));
  t.is(result.code, 0, explainFailure(result));
  t.is(baseBytes, 0, `base images fetched from the mirror: ${baseRequests.join(', ')}`);
  t.deepEqual(baseRequests, []);
  t.false(existsSync(host.path('cache')), 'no base image was downloaded');
  for (const name of IMAGES) {
    const uploaded = await readFile(w.origin.path(`images/${name}/${name}.qcow2`));
    const published = await readFile(host.path(`publish/${name}.img`));
    t.is(sha256(published), sha256(uploaded), `${name}.img is the uploaded image`);
    t.is(
      await readFile(host.path(`images/${name}/.cache-key`), 'utf8'),
      await readFile(w.origin.path(`images/${name}/.cache-key`), 'utf8'),
      `${name}: .cache-key restored`,
    );
    t.is(
      await readFile(host.path(`images/${name}/image-version.txt`), 'utf8'),
      await readFile(w.origin.path(`images/${name}/image-version.txt`), 'utf8'),
      `${name}: image-version.txt restored`,
    );
    t.is(
      await readFile(host.path(`images/${name}/${name}.qcow2.sha256`), 'utf8'),
      await readFile(w.origin.path(`images/${name}/${name}.qcow2.sha256`), 'utf8'),
      `${name}: the same .sha256 as the build host's`,
    );
  }
  t.regex(result.stderr + result.stdout, /pve-9:build/);

  // Run again: everything is fresh, still without the base images or packer.
  const again = await baseBytesDuring(w.mirror, () => run(host, ['publish', '--json'], w, { env: { PATH: w.noPackerPath } }));
  t.is(again.result.code, 0, explainFailure(again.result));
  t.is(again.baseBytes, 0);
  const ran = again.result.json?.nodes.filter((node) => node.status === 'ran').map((node) => node.id);
  t.deepEqual(ran, [], 'a second run does nothing');
  t.false(
    again.result.json?.nodes.some((node) => node.id.endsWith(':download')),
    'no base download is part of the run',
  );

  // An upload from this host (it has no base images) finds every record already right:
  // the release's records and images.json stay byte for byte what the build host wrote.
  const recordNames = ['images.json', ...IMAGES.map((name) => `${name}.qcow2.json`)];
  const recordsBefore = await Promise.all(recordNames.map((asset) => w.github.assetBytes('latest', asset)));
  const upload = await run(host, ['upload:latest', '--json'], w, { env: { PATH: w.noPackerPath } });
  t.is(upload.code, 0, explainFailure(upload));
  const recordsAfter = await Promise.all(recordNames.map((asset) => w.github.assetBytes('latest', asset)));
  for (const [index, asset] of recordNames.entries()) {
    t.deepEqual(recordsAfter[index]!.toString(), recordsBefore[index]!.toString(), `${asset} was not rewritten by a host that fetched`);
  }
  t.false(existsSync(host.path('cache')), 'the upload downloaded no base image');
});

test.serial(
  'a fresh host with no token at all reads a public release: publish, images download, release check, the plan of an upload; an upload is refused',
  async (t) => {
    const w = await setUp();
    const host = await freshHost(w, 'anonymous-host');
    // No token in the environment, and no `gh` on the PATH to ask for one.
    const anonymous = { GITHUB_TOKEN: '', GH_TOKEN: '', PATH: w.noPackerPath };
    const from = w.github.requests.length;
    const published = await run(host, ['publish'], w, { env: anonymous });
    t.is(published.code, 0, explainFailure(published));
    for (const name of IMAGES) {
      t.is(sha256(await readFile(host.path(`publish/${name}.img`))), sha256(await readFile(w.origin.path(`images/${name}/${name}.qcow2`))));
    }
    const dir = join(host.root, 'downloads');
    const downloaded = await run(host, ['images', 'download', 'all', '--dir', dir], w, { env: anonymous });
    t.is(downloaded.code, 0, explainFailure(downloaded));
    t.deepEqual((await readdir(dir)).sort(), IMAGES.map((name) => `${name}.qcow2`).sort());
    const check = await run(host, ['release', 'check'], w, { env: anonymous });
    t.is(check.code, 0, explainFailure(check));
    t.false(
      w.github.requests.slice(from).some((request) => request.authorization !== undefined),
      'no credential was ever sent',
    );

    const plan = await run(host, ['upload:latest', '--dry-run'], w, { env: anonymous });
    t.is(plan.code, 0, explainFailure(plan));
    await writeFile(host.path('templates/pve-9/cleanup.sh'), `${await readFile(host.path('templates/pve-9/cleanup.sh'), 'utf8')}\n# changed here\n`);
    const upload = await run(host, ['pve-9:upload'], w, { env: { ...anonymous, PATH: process.env.PATH ?? '' } });
    t.is(upload.code, 2, explainFailure(upload));
    t.regex(upload.stderr, /no GitHub token: set GITHUB_TOKEN or GH_TOKEN, or log in with `gh auth login`/);
  },
);

test.serial('changing one template file builds exactly that image; the others are fetched', async (t) => {
  const w = await setUp();
  const host = await freshHost(w, 'changed');
  const packer = await countingPacker(host.root);
  await writeFile(host.path('templates/debian-12/cleanup.sh'), `${await readFile(host.path('templates/debian-12/cleanup.sh'), 'utf8')}\n# changed here\n`);
  const { result, baseRequests } = await baseBytesDuring(w.mirror, () => run(host, ['publish', '--json'], w, { env: { PATH: packer.path } }));
  t.is(result.code, 0, explainFailure(result));
  const builds = await packer.builds();
  t.is(builds.length, 1, `packer builds: ${builds.join(', ')}`);
  t.regex(builds[0] ?? '', /debian-12/);
  t.deepEqual(
    baseRequests.filter((path) => path.includes('debian-13')),
    [],
    'the trixie base is not downloaded',
  );
  t.true(
    baseRequests.some((path) => path.includes('debian-12')),
    'the bookworm base is downloaded for the build',
  );
  for (const name of ['debian-13', 'pve-9']) {
    t.is(sha256(await readFile(host.path(`publish/${name}.img`))), sha256(await readFile(w.origin.path(`images/${name}/${name}.qcow2`))), `${name} fetched`);
  }
  const build12 = result.json?.nodes.find((node) => node.id === 'debian-12:build') as { status: string; note?: string } | undefined;
  t.is(build12?.status, 'ran');
  t.regex(build12?.note ?? '', /not fetched from release latest.*template file templates\/debian-12\/cleanup\.sh changed/);
});

test.serial('a corrupted asset on the release is refused and that image is built instead, with a note', async (t) => {
  const w = await setUp();
  // A release like the origin's, except that one part of debian-13 has a byte flipped.
  const corrupt = await GitHubServer.start();
  t.teardown(() => corrupt.close());
  const state = await w.github.exportState();
  const part = state.releases[0]!.assets.find((asset) => /^debian-13\.qcow2(\.partaa)?$/.test(asset.api.name))!;
  part.bytes[100] = part.bytes[100]! ^ 0xff;
  await corrupt.importState(state);
  const host = await freshHost(w, 'corrupt');
  const packer = await countingPacker(host.root);
  const env = { PATH: packer.path, GITHUB_API_URL: corrupt.url, GITHUB_TOKEN: corrupt.token, GITHUB_REPOSITORY: `${corrupt.owner}/${corrupt.repo}` };
  const result = await run(host, ['publish'], w, { env });
  t.is(result.code, 0, explainFailure(result));
  const builds = await packer.builds();
  t.is(builds.length, 1, `packer builds: ${builds.join(', ')}`);
  t.regex(builds[0] ?? '', /debian-13/);
  t.regex(result.stdout + result.stderr, /debian-13:build: refused the copy on release latest .*checksum mismatch.*built debian-13 here instead/);
  t.true(existsSync(host.path('publish/debian-13.img')));
  t.is(sha256(await readFile(host.path('publish/pve-9.img'))), sha256(await readFile(w.origin.path('images/pve-9/pve-9.qcow2'))), 'pve-9 fetched');
  // The build that replaced the refused copy is keyed like any local build: the next run is a no-op.
  const again = await run(host, ['publish', '--json'], w, { env });
  t.is(again.code, 0, explainFailure(again));
  t.deepEqual(
    again.json?.nodes.filter((node) => node.status === 'ran').map((node) => node.id),
    [],
  );
});

test.serial('--no-remote-cache and release.remoteCache: false build; --force builds', async (t) => {
  const w = await setUp();
  const host = await freshHost(w, 'no-remote');
  const packer = await countingPacker(host.root);
  const env = { PATH: packer.path };
  const off = await run(host, ['debian-12', '--no-remote-cache'], w, { env });
  t.is(off.code, 0, explainFailure(off));
  t.is((await packer.builds()).length, 1, '--no-remote-cache built');

  // Upstream publishes a new bookworm: the image built here from the old one is not taken
  // as current because the release holds the same key; the base is downloaded, the image rebuilt.
  const bookworm = 'debian-12-generic-amd64.qcow2';
  const before = Buffer.from(await readFile(host.path(`cache/${bookworm}`)));
  const moved = Buffer.concat([before, Buffer.alloc(512, 7)]);
  w.mirror.setFile(bookworm, moved);
  try {
    const dry = await run(host, ['debian-12', '--dry-run'], w, { env });
    t.regex(dry.stdout, /▶ bookworm:download: stale/);
    t.regex(dry.stdout, /note: not fetched from release latest of acme\/images: upstream base image changed/);
    t.notRegex(dry.stdout, /debian-12:build: fresh/);
    // release check judges by what a run here would build from, as the plan does.
    const listFetches = (): number => w.mirror.requests.filter((request) => request.path === '/SHA512SUMS').length;
    const listsBefore = listFetches();
    const check = await run(host, ['release', 'check'], w, { env });
    t.is(check.code, 1, explainFailure(check));
    t.is(listFetches() - listsBefore, 1, 'the bases share one SHA512SUMS: fetched once for all three images');
    t.regex(check.stdout, /^debian-12: stale: upstream base image changed \(cache\/debian-12-generic-amd64\.qcow2\)$/m);
  } finally {
    w.mirror.setFile(bookworm, before);
  }

  const forced = await run(host, ['debian-13', '--force'], w, { env });
  t.is(forced.code, 0, explainFailure(forced));
  t.is((await packer.builds()).length, 2, '--force built');

  const config = await readFile(host.path('pipeline.config.ts'), 'utf8');
  await writeFile(host.path('pipeline.config.ts'), config.replace('publishDir:', 'release: { remoteCache: false },\n  publishDir:'));
  const configured = await run(host, ['pve-9', '--dry-run'], w, { env });
  t.is(configured.code, 0, explainFailure(configured));
  t.notRegex(configured.stdout, /would fetch/);
  t.regex(configured.stdout, /pve-9:build: stale/);
  t.regex(configured.stdout, /trixie:download/);

  await writeFile(host.path('pipeline.config.ts'), config.replace('publishDir:', "release: { remoteCache: 'no' },\n  publishDir:"));
  const bad = await run(host, ['pve-9', '--dry-run'], w, { env });
  t.is(bad.code, 2, explainFailure(bad));
  t.regex(bad.stderr, /release\.remoteCache: "no" is not a boolean/);
});

test.serial('--dry-run, explain and plan --json say "would fetch", or why not; an unreadable release is one note', async (t) => {
  const w = await setUp();
  const host = await freshHost(w, 'dry-run');
  const env = { PATH: w.noPackerPath };
  const dry = await run(host, ['publish', '--dry-run'], w, { env });
  t.is(dry.code, 0, explainFailure(dry));
  for (const name of IMAGES) t.regex(dry.stdout, new RegExp(`▶ ${name}:build: stale: would fetch from release latest of acme/images \\(cache key matches\\)`));
  t.notRegex(dry.stdout, /:download/, 'no base download in the plan');
  t.notRegex(dry.stdout, /would packer build/);

  const explained = await run(host, ['explain', 'pve-9:build'], w, { env });
  t.is(explained.code, 0, explainFailure(explained));
  t.regex(explained.stdout, /status: stale: would fetch from release latest/);

  const plan = await run(host, ['plan', '--json', 'publish'], w, { env });
  t.is(plan.code, 0, explainFailure(plan));
  const nodes = (JSON.parse(plan.stdout) as { nodes: Array<{ id: string; why: { code: string; source?: string } }> }).nodes;
  t.like(nodes.find((node) => node.id === 'debian-12:build')?.why, { code: 'remote-hit' });
  t.regex(nodes.find((node) => node.id === 'debian-12:build')?.why.source ?? '', /^release latest/);

  // Why not: a changed template is named.
  await writeFile(host.path('templates/pve-9/template.pkr.hcl'), `${await readFile(host.path('templates/pve-9/template.pkr.hcl'), 'utf8')}\n# local change\n`);
  const changed = await run(host, ['pve-9', '--dry-run'], w, { env });
  t.regex(changed.stdout, /note: not fetched from release latest of acme\/images: template file templates\/pve-9\/template\.pkr\.hcl changed/);

  // A release that cannot be read is no remote cache, said once, not once per image.
  const unreachable = await run(host, ['publish', '--dry-run'], w, { env: { ...env, GITHUB_API_URL: 'http://127.0.0.1:1' } });
  t.is(unreachable.code, 0, explainFailure(unreachable));
  const notes = unreachable.stdout.split('\n').filter((line) => line.includes('no remote cache'));
  t.is(notes.length, 1, unreachable.stdout);
  t.regex(notes[0] ?? '', /release latest of acme\/images cannot be read \(cannot reach the GitHub API at http:\/\/127\.0\.0\.1:1/);
  t.notRegex(unreachable.stdout, /ghp_/);

  // So are a repository the token cannot see (404) and a release that does not exist yet.
  const notes404 = async (extra: Record<string, string>): Promise<string[]> => {
    const result = await run(host, ['publish', '--dry-run'], w, { env: { ...env, ...extra } });
    t.is(result.code, 0, explainFailure(result));
    return result.stdout
      .split('\n')
      .filter((line) => line.includes('no remote cache'))
      .map((line) => line.trim());
  };
  const noRepo = await notes404({ GITHUB_REPOSITORY: 'acme/no-such-images' });
  t.is(noRepo.length, 1);
  t.regex(noRepo[0] ?? '', /^note: no remote cache: release latest of acme\/no-such-images cannot be read \(GitHub repository acme\/no-such-images not found/);
  const empty = await GitHubServer.start();
  t.teardown(() => empty.close());
  t.deepEqual(await notes404({ GITHUB_API_URL: empty.url, GITHUB_TOKEN: empty.token }), [
    'note: no remote cache: release latest of acme/images does not exist yet',
  ]);
});
