// The CLI with `release: { registry }` against a real registry behind the test's token
// endpoint: upload, `images list`, `release check`, `images download`, and the remote
// cache of a fresh project, with the password, its base64 and the tokens never in
// stdout, stderr, --json, the logs or a --profile trace; a wrong password fails in one
// line naming where the credential came from.
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { makeImageProject } from './support/image-project.ts';
import { type RegistryServer, startRegistry } from './support/registry.ts';

async function projectFor(t: ExecutionContext, registry: RegistryServer, password = registry.password) {
  const project = await makeImageProject(t, `release: { registry: '${registry.host}/acme/images', plainHttp: true },`);
  const authFile = project.path('auth.json');
  await writeFile(authFile, JSON.stringify({ auths: { [registry.host]: { auth: Buffer.from(`${registry.user}:${password}`).toString('base64') } } }));
  return { project, env: { REGISTRY_AUTH_FILE: authFile, DOCKER_CONFIG: project.path('no-docker'), XDG_RUNTIME_DIR: '' } };
}

async function everythingWritten(root: string): Promise<string> {
  let text = '';
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || entry.name === 'auth.json' || entry.name.endsWith('.qcow2') || entry.name.endsWith('.img')) continue;
    text += await readFile(join(entry.parentPath, entry.name), 'utf8').catch(() => '');
  }
  return text;
}

function secretsOf(registry: RegistryServer): string[] {
  const tokens = registry.tokenRequests.length ? [registry.tokenFor([`repository:acme/images/debian-12:pull`]).split('.')[2]!] : [];
  return [registry.password, Buffer.from(`${registry.user}:${registry.password}`).toString('base64'), ...tokens];
}

test('upload, list, check, download and the remote cache through the CLI; no credential in any output, log or trace', async (t) => {
  const registry = await startRegistry({ auth: 'token' });
  t.teardown(() => registry.close());
  const { project, env } = await projectFor(t, registry);
  const upload = await project.run(['debian-12:upload', '--json', '--profile', 'trace.json'], { env, timeoutMs: 120_000 });
  t.is(upload.code, 0, upload.stderr);
  const list = await project.run(['images', 'list', '--json'], { env });
  t.is(list.code, 0, list.stderr);
  t.regex(list.stdout, /debian-12/);
  const check = await project.run(['release', 'check'], { env });
  t.regex(check.stdout, /debian-12/);
  const download = await project.run(['images', 'download', 'debian-12', '--dir', project.path('fetched')], { env });
  t.is(download.code, 0, download.stderr);
  t.true(project.exists('fetched/debian-12.qcow2'));

  // The same tree as a fresh host (no images, no base, no state) fetches debian-12 instead of building it.
  const logs = await everythingWritten(project.root);
  for (const dir of ['images', 'cache', '.pipeline', 'logs']) await rm(project.path(dir), { recursive: true, force: true });
  const cached = await project.run(['debian-12', '--json'], { env, timeoutMs: 120_000 });
  t.is(cached.code, 0, cached.stderr);
  t.true(project.exists('images/debian-12/debian-12.qcow2'));
  const build = cached.json?.nodes.find((node) => node.id === 'debian-12:build');
  t.regex(build?.reason ?? '', /would fetch/, 'the build fetched from the registry instead of running packer');
  t.false(project.exists('cache/debian-12-generic-amd64.qcow2'), 'no base download');

  const written =
    [upload, list, check, download, cached].map((result) => result.stdout + result.stderr).join('\n') + logs + (await everythingWritten(project.root));
  for (const secret of secretsOf(registry)) t.false(written.includes(secret), 'a credential reached the output, a log or the trace');
  t.true(registry.tokenRequests.some((request) => request.account === registry.user && request.status === 200));
});

test('a wrong password fails the upload in one line naming the credential source, without the password', async (t) => {
  const registry = await startRegistry({ auth: 'htpasswd' });
  t.teardown(() => registry.close());
  const { project, env } = await projectFor(t, registry, 'not-the-password');
  const upload = await project.run(['debian-12:upload', '--json'], { env, timeoutMs: 120_000 });
  t.not(upload.code, 0);
  const all = upload.stdout + upload.stderr;
  t.regex(all, /refused the credentials from .*auth\.json/);
  t.false(all.includes('not-the-password'));
  t.false(all.includes(Buffer.from(`${registry.user}:not-the-password`).toString('base64')));
});
