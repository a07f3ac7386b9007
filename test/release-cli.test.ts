// The release half through the real CLI: `upload:latest` from a built tree to a loopback
// GitHub, `release check`, and a fresh host's `images download all --publish`.
import test from 'ava';
import { appendFile, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { idsWith } from './support/engine-project.ts';
import { GitHubServer } from './support/github-server.ts';
import { IMAGES, makeImageProject } from './support/image-project.ts';

test('upload:latest, release check and images download --publish work end to end and never print the token', async (t) => {
  const server = await GitHubServer.start();
  t.teardown(() => server.close());
  const project = await makeImageProject(t);
  const env = {
    GITHUB_TOKEN: server.token,
    GITHUB_API_URL: server.url,
    GITHUB_REPOSITORY: `${server.owner}/${server.repo}`,
    PIPELINE_MAX_ASSET_SIZE: '200K',
    PIPELINE_PART_SIZE: '150KiB',
  };
  const outputs: string[] = [];
  const run = async (args: string[]) => {
    const result = await project.run(args, { env, timeoutMs: 180_000 });
    outputs.push(result.stdout, result.stderr);
    return result;
  };

  const upload = await run(['upload:latest', '--json']);
  t.is(upload.code, 0, upload.stderr);
  t.deepEqual(
    idsWith(upload.json, 'ran').filter((id) => id.endsWith(':upload')),
    IMAGES.map((image) => `${image}:upload`),
  );
  const names = server.assets('latest').map((asset) => asset.name);
  for (const image of IMAGES) {
    t.true(names.includes(`${image}.qcow2.sha256`));
    t.true(names.includes(`${image}.qcow2.partaa`) && names.includes(`${image}.qcow2.partab`), `${image} is split`);
    t.false(names.includes(`${image}.qcow2`));
  }
  t.true(names.includes('images.json'));
  // The manifest tells a consumer which QEMU can read each image: the build wrote zstd.
  const manifest = JSON.parse((await server.assetBytes('latest', 'images.json')).toString());
  for (const image of IMAGES) t.is(manifest.images[image].compression, 'zstd', image);

  const again = await run(['upload:latest', '--json']);
  t.is(again.code, 0, again.stderr);
  t.deepEqual(idsWith(again.json, 'ran'), [], 'nothing is uploaded twice');

  const current = await run(['release', 'check']);
  t.is(current.code, 0, current.stderr);
  t.regex(current.stdout, /pve-9: current/);

  // A fresh checkout with nothing built or downloaded compares the base by upstream's
  // SHA-512: the release is the shared store that says what is already built.
  const fresh = await makeImageProject(t);
  const freshCheck = await fresh.run(['release', 'check', '--json'], { env, timeoutMs: 60_000 });
  t.is(freshCheck.code, 0, freshCheck.stdout + freshCheck.stderr);
  t.false(fresh.exists('cache'), 'nothing was downloaded to decide');

  await appendFile(project.path('templates/pve-9/template.pkr.hcl'), '\n# changed\n');
  const stale = await run(['release', 'check']);
  t.is(stale.code, 1);
  t.regex(stale.stdout, /pve-9: stale.*templates\/pve-9\/template\.pkr\.hcl/);
  t.regex(stale.stdout, /debian-12: current/);

  const host = join(project.root, 'fresh-host');
  await mkdir(join(host, 'iso'), { recursive: true });
  const download = await project.run(['images', 'download', 'all', '--dir', join(host, 'images'), '--publish'], {
    env: { ...env, PIPELINE_PUBLISH_DIR: join(host, 'iso') },
    timeoutMs: 180_000,
  });
  outputs.push(download.stdout, download.stderr);
  t.is(download.code, 0, download.stderr);
  t.deepEqual(
    (await readdir(join(host, 'iso'))).filter((name) => !name.startsWith('.')).sort(),
    IMAGES.map((image) => `${image}.img`),
  );

  for (const text of outputs) t.false(text.includes(server.token), 'the token never appears in output');
});

test('upload without a token is a one-line setup error with exit 2', async (t) => {
  const server = await GitHubServer.start();
  t.teardown(() => server.close());
  const project = await makeImageProject(t);
  const built = await project.run(['all']);
  t.is(built.code, 0, built.stderr);
  const result = await project.run(['upload:latest'], {
    env: { GITHUB_TOKEN: undefined, GH_TOKEN: undefined, PATH: '/usr/bin:/bin', GITHUB_API_URL: server.url, GITHUB_REPOSITORY: 'acme/images' },
  });
  t.is(result.code, 2, result.stderr);
  t.regex(result.stderr, /GITHUB_TOKEN/);
  t.is(
    result.stderr
      .trim()
      .split('\n')
      .filter((line) => line.startsWith('pipeline:')).length,
    1,
  );
});
