// What the release commands, the images commands and the upload do when the store cannot
// be used, through the real CLI: one line, exit 2, no request when the input is wrong,
// and a kind in --json. Also `--publish` into a new directory, `release remove --all`
// sparing what is no image's, and Ctrl-C during a download.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import test from 'ava';
import type { CliResult } from './support/engine-project.ts';
import { GitHubServer } from './support/github-server.ts';
import { makeImageProject, makeQcow2, type ImageProject } from './support/image-project.ts';
import { schemaErrors, validateOutput } from './support/output-schema.ts';

function envFor(server: GitHubServer, extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return { GITHUB_TOKEN: server.token, GITHUB_API_URL: server.url, GITHUB_REPOSITORY: `${server.owner}/${server.repo}`, GH_TOKEN: undefined, ...extra };
}

/** Exactly one line on stderr, starting `pipeline:`, and `pattern` in it. */
function oneLine(t: import('ava').ExecutionContext, result: CliResult, pattern: RegExp): void {
  // Beside the plain reporter's timestamped progress ("12:00:00 checking 11 nodes"), one line.
  const lines = result.stderr.split('\n').filter((line) => line && !/^\d\d:\d\d:\d\d /.test(line));
  t.is(lines.length, 1, result.stderr);
  t.regex(lines[0] ?? '', /^pipeline: /);
  t.regex(lines[0] ?? '', pattern);
}

async function serverAndProject(t: import('ava').ExecutionContext, extraConfig = ''): Promise<{ server: GitHubServer; project: ImageProject }> {
  const server = await GitHubServer.start();
  t.teardown(() => server.close());
  return { server, project: await makeImageProject(t, extraConfig) };
}

/** A release holding debian-12 as a real (small) qcow2, whole, with its .sha256. */
async function releaseWithImage(server: GitHubServer, project: ImageProject, size = '16M'): Promise<Buffer> {
  const path = project.path('fixture/debian-12.qcow2');
  makeQcow2(path, size);
  const bytes = Buffer.concat([await readFile(path)]);
  server.createRelease('latest', { name: 'Latest Images', prerelease: true });
  await server.putAsset('latest', 'debian-12.qcow2', bytes);
  await server.putAsset('latest', 'debian-12.qcow2.sha256', Buffer.from(`${createHash('sha256').update(bytes).digest('hex')}  debian-12.qcow2\n`));
  return bytes;
}

test('release check: a rejected token and an unreachable API exit 2 with one line, never 1 ("stale"); --json carries the kind', async (t) => {
  const { server, project } = await serverAndProject(t);
  server.createRelease('latest');
  const bad = await project.run(['release', 'check'], { env: envFor(server, { GITHUB_TOKEN: 'ghp_wrong' }) });
  t.is(bad.code, 2);
  oneLine(t, bad, /rejected the token \(401\)/);
  const badJson = await project.run(['release', 'check', '--json'], { env: envFor(server, { GITHUB_TOKEN: 'ghp_wrong' }) });
  t.is(badJson.code, 2);
  const rejected = JSON.parse(badJson.stdout);
  t.true(validateOutput(rejected), schemaErrors(rejected));
  t.like(rejected, { command: 'release-check', ok: false, failureKind: 'auth' });

  const unreachable = await project.run(['release', 'check', '--json'], { env: envFor(server, { GITHUB_API_URL: 'http://127.0.0.1:9' }), timeoutMs: 120_000 });
  t.is(unreachable.code, 2, unreachable.stderr);
  const parsed = JSON.parse(unreachable.stdout) as { error: string; failureKind: string };
  t.true(validateOutput(parsed), schemaErrors(parsed));
  t.is(parsed.failureKind, 'network');
  t.regex(parsed.error, /cannot reach the GitHub API at http:\/\/127\.0\.0\.1:9 .*GITHUB_API_URL/);
});

test('a repository the token cannot see, and repository or tag names that are no names, exit 2 with one line', async (t) => {
  const { server, project } = await serverAndProject(t);
  server.createRelease('latest');
  const unseen = await project.run(['release', 'check'], { env: envFor(server, { GITHUB_REPOSITORY: 'acme/secret' }) });
  t.is(unseen.code, 2);
  oneLine(t, unseen, /repository acme\/secret not found, or the token cannot see it/);

  const before = server.requests.length;
  for (const repository of ['../x', 'acme/../images', 'acme/images/extra', 'acme/..']) {
    for (const args of [['release', 'check'], ['images', 'list'], ['upload:latest']]) {
      const result = await project.run(args, { env: envFor(server, { GITHUB_REPOSITORY: repository }) });
      t.is(result.code, 2, `${args.join(' ')} with GITHUB_REPOSITORY=${repository}: ${result.stderr}`);
      oneLine(t, result, /GITHUB_REPOSITORY: .* is not a GitHub repository/);
    }
  }
  for (const args of [
    ['release', 'check', '--tag', 'my tag'],
    ['release', 'remove', 'debian-12', '--tag', '../x'],
    ['images', 'list', '--version', 'a..b'],
    ['images', 'download', 'all', '--version', 'my tag'],
    ['release', 'retag', 'v1 x'],
    ['upload:my tag'],
  ]) {
    const result = await project.run(args, { env: envFor(server) });
    t.is(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    oneLine(t, result, /is not a valid release tag/);
  }
  t.is(server.requests.length, before, 'nothing reached the server');

  const badConfig = await makeImageProject(t, "release: { repo: 'acme/../images', tag: 'my tag' },");
  const configTag = await badConfig.run(['release', 'check'], { env: { ...envFor(server), GITHUB_REPOSITORY: undefined } });
  t.is(configTag.code, 2);
  oneLine(t, configTag, /pipeline\.config\.ts: release\.tag: "my tag" is not a valid release tag/);
  const configRepo = await makeImageProject(t, "release: { repo: 'acme/../images' },");
  const repoResult = await configRepo.run(['release', 'check'], { env: { ...envFor(server), GITHUB_REPOSITORY: undefined } });
  t.is(repoResult.code, 2);
  oneLine(t, repoResult, /pipeline\.config\.ts: release\.repo: "acme\/\.\.\/images" is not a GitHub repository/);
  t.is(server.requests.length, before, 'nothing reached the server');
});

test('upload: an unreachable API and an unseen repository exit 2 with one line', async (t) => {
  const { server, project } = await serverAndProject(t);
  const unseen = await project.run(['upload:latest'], { env: envFor(server, { GITHUB_REPOSITORY: 'acme/secret' }) });
  t.is(unseen.code, 2, unseen.stderr);
  oneLine(t, unseen, /acme\/secret not found, or the token cannot see it/);
  const unreachable = await project.run(['upload:latest'], { env: envFor(server, { GITHUB_API_URL: 'http://127.0.0.1:9' }), timeoutMs: 120_000 });
  t.is(unreachable.code, 2, unreachable.stderr);
  oneLine(t, unreachable, /cannot reach the GitHub API at http:\/\/127\.0\.0\.1:9/);
});

test('release remove --all removes the images and their index entries, and nothing else', async (t) => {
  const { server, project } = await serverAndProject(t);
  await releaseWithImage(server, project, '1M');
  await server.putAsset('latest', 'unrelated-000.txt', Buffer.from('release notes'));
  await server.putAsset('latest', 'pve-9.qcow2.partaa', randomBytes(100));
  const dry = await project.run(['release', 'remove', '--all', '--dry-run'], { env: envFor(server) });
  t.is(dry.code, 0, dry.stderr);
  t.deepEqual(dry.stdout.trim().split('\n').sort(), ['would delete debian-12.qcow2', 'would delete debian-12.qcow2.sha256', 'would delete pve-9.qcow2.partaa']);
  const real = await project.run(['release', 'remove', '--all'], { env: envFor(server) });
  t.is(real.code, 0, real.stderr);
  t.deepEqual(
    server
      .assets('latest')
      .map((asset) => asset.name)
      .sort(),
    ['images.json', 'unrelated-000.txt'],
  );
});

test('images download --publish creates the publish directory when its parent exists, and says what to do when not', async (t) => {
  const { server, project } = await serverAndProject(t);
  const bytes = await releaseWithImage(server, project);
  const publishDir = project.path('storage/iso');
  await writeFile(project.path('storage-parent-marker'), '');
  const { mkdir } = await import('node:fs/promises');
  await mkdir(project.path('storage'));
  const result = await project.run(['images', 'download', 'debian-12', '--dir', project.path('downloads'), '--publish'], {
    env: envFor(server, { PIPELINE_PUBLISH_DIR: publishDir }),
    timeoutMs: 120_000,
  });
  t.is(result.code, 0, result.stderr);
  t.deepEqual(await readFile(project.path('downloads/debian-12.qcow2')), bytes);
  t.true(existsSync(`${publishDir}/debian-12.img`));

  const orphan = await project.run(['images', 'download', 'debian-12', '--dir', project.path('downloads'), '--publish'], {
    env: envFor(server, { PIPELINE_PUBLISH_DIR: project.path('nowhere/iso') }),
  });
  t.is(orphan.code, 2);
  oneLine(t, orphan, /publish directory .*nowhere\/iso does not exist/);
});

test('Ctrl-C during images download reports cancelled, not failed, and exits 130', async (t) => {
  const { server, project } = await serverAndProject(t);
  await releaseWithImage(server, project);
  // The image's bytes (not its .sha256) trickle in, so the download is under way when Ctrl-C comes.
  const data = `/storage/${server.assets('latest').find((asset) => asset.name === 'debian-12.qcow2')!.id}/`;
  for (const json of [false, true]) {
    server.arm({ kind: 'slow', path: data, delayMs: 50, chunkBytes: 4096 });
    const dir = project.path(json ? 'downloads-json' : 'downloads');
    const running = project.start(['images', 'download', 'all', '--dir', dir, ...(json ? ['--json'] : [])], { env: envFor(server) });
    let interrupted = false;
    server.hook = (request) => {
      // One Ctrl-C (a second one quits at once, by design).
      if (request.path.startsWith(data) && !interrupted) {
        interrupted = true;
        setTimeout(() => running.child.kill('SIGINT'), 200);
      }
      return 'handle';
    };
    const result = await running.done;
    server.hook = undefined;
    t.true(interrupted);
    t.is(result.code, 130, result.stderr);
    t.notRegex(result.stderr + result.stdout, /failed/);
    if (json) {
      const output = JSON.parse(result.stdout) as { command: string; ok: boolean; images: Array<{ status: string }> };
      t.true(validateOutput(output), schemaErrors(output));
      t.like(output, { command: 'images-download', ok: false });
      t.deepEqual(
        output.images.map((image) => image.status),
        ['cancelled'],
      );
    } else t.regex(result.stderr, /debian-12: cancelled/);
    t.false(existsSync(`${dir}/debian-12.qcow2`), 'nothing half-made is taken for the image');
  }
});
