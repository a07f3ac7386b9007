// The test registry itself (test/support/registry.ts, registry-proxy.ts), checked with
// skopeo, a client that is not ours: both auth modes accept what they should and refuse
// what they should, the token endpoint hands out anonymous pull tokens for public
// repositories only, and the proxy's faults and modes do what the backend tests rely on.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { writeOciLayout } from './support/oci-layout.ts';
import { startRegistry } from './support/registry.ts';
import { RegistryProxy } from './support/registry-proxy.ts';

const run = promisify(execFile);

async function layoutOf(t: { teardown(fn: () => Promise<void>): void }, text: string) {
  const dir = await mkdtemp(join(tmpdir(), 'oci-layout-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'debian-12.qcow2'), text);
  return { dir, layout: await writeOciLayout(join(dir, 'layout'), join(dir, 'debian-12.qcow2')) };
}

function skopeoFails(args: string[]): Promise<string> {
  return run('skopeo', args).then(
    () => 'succeeded',
    (error: { stderr?: string }) => error.stderr ?? '',
  );
}

test('htpasswd registry: skopeo pushes and reads back with the password, and is refused without it or with a wrong one', async (t) => {
  const registry = await startRegistry({ auth: 'htpasswd' });
  t.teardown(() => registry.close());
  const { dir, layout } = await layoutOf(t, 'qcow2 bytes');
  const ref = `docker://${registry.host}/acme/images/debian-12:latest`;
  await run('skopeo', ['copy', '--dest-tls-verify=false', '--dest-creds', `${registry.user}:${registry.password}`, `oci:${layout.dir}:latest`, ref]);
  const copy = join(dir, 'copy');
  await run('skopeo', ['copy', '--src-tls-verify=false', '--src-creds', `${registry.user}:${registry.password}`, ref, `dir:${copy}`]);
  t.is(await readFile(join(copy, layout.layerDigest.slice('sha256:'.length)), 'utf8'), 'qcow2 bytes');
  t.regex(await skopeoFails(['inspect', '--tls-verify=false', '--no-creds', '--raw', ref]), /authentication required/);
  t.regex(await skopeoFails(['inspect', '--tls-verify=false', '--creds', `${registry.user}:wrong`, '--raw', ref]), /authentication required/);
  const anonymous = await fetch(`${registry.url}/v2/`);
  t.is(anonymous.status, 401);
  t.regex(anonymous.headers.get('www-authenticate') ?? '', /^Basic realm=/);
});

test('token registry: pushes with a user token, anonymous pull tokens for public repositories only, a wrong password is refused by the token endpoint', async (t) => {
  const registry = await startRegistry({ auth: 'token', publicRepositories: (name) => name.startsWith('public/') });
  t.teardown(() => registry.close());
  const { layout } = await layoutOf(t, 'public bytes');
  for (const repository of ['public/images/debian-12', 'private/images/debian-12']) {
    await run('skopeo', [
      'copy',
      '--dest-tls-verify=false',
      '--dest-creds',
      `${registry.user}:${registry.password}`,
      `oci:${layout.dir}:latest`,
      `docker://${registry.host}/${repository}:latest`,
    ]);
  }
  const challenge = (await fetch(`${registry.url}/v2/`)).headers.get('www-authenticate') ?? '';
  t.regex(challenge, /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/token",service="pipeline-test-registry"/);
  const raw = await run('skopeo', ['inspect', '--tls-verify=false', '--no-creds', '--raw', `docker://${registry.host}/public/images/debian-12:latest`]);
  t.is(JSON.parse(raw.stdout).layers[0].digest, layout.layerDigest);
  t.regex(
    await skopeoFails(['inspect', '--tls-verify=false', '--no-creds', '--raw', `docker://${registry.host}/private/images/debian-12:latest`]),
    /denied|unauthorized/,
  );
  t.regex(
    await skopeoFails([
      'inspect',
      '--tls-verify=false',
      '--creds',
      `${registry.user}:wrong`,
      '--raw',
      `docker://${registry.host}/private/images/debian-12:latest`,
    ]),
    /wrong user name or password/,
  );
  const anonymousGrants = registry.tokenRequests.filter((request) => request.account === undefined).map((request) => request.granted);
  t.deepEqual(anonymousGrants[0], ['repository:public/images/debian-12:pull']);
  t.true(anonymousGrants.slice(1).every((granted) => granted.length === 0));
  // A token the registry did not sign is refused.
  const forged = registry.tokenFor(['repository:private/images/debian-12:pull']).replace(/\.[^.]+$/, '.AAAA');
  const refused = await fetch(`${registry.url}/v2/private/images/debian-12/tags/list`, { headers: { authorization: `Bearer ${forged}` } });
  t.is(refused.status, 401);
});

test('proxy: armed status faults fire once, chunk mode refuses a PUT with bytes and advertises OCI-Chunk-Min-Length', async (t) => {
  const registry = await startRegistry();
  const proxy = await RegistryProxy.start(registry.url, { requireChunks: { minLength: 1024 } });
  t.teardown(async () => {
    await proxy.close();
    await registry.close();
  });
  proxy.arm({ kind: 'status', status: 503, path: '/v2/' });
  t.is((await fetch(`${proxy.url}/v2/`)).status, 503);
  t.is((await fetch(`${proxy.url}/v2/`)).status, 200);
  const started = await fetch(`${proxy.url}/v2/acme/x/blobs/uploads/`, { method: 'POST' });
  t.is(started.status, 202);
  t.is(started.headers.get('oci-chunk-min-length'), '1024');
  const location = new URL(started.headers.get('location')!, proxy.url);
  t.is(location.host, proxy.host);
  location.searchParams.set('digest', 'sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824');
  const put = await fetch(location, { method: 'PUT', body: 'hello', headers: { 'content-type': 'application/octet-stream' } });
  t.is(put.status, 413);
  t.deepEqual(
    proxy.requests.map((request) => [request.method, request.status]),
    [
      ['GET', 503],
      ['GET', 200],
      ['POST', 202],
      ['PUT', 413],
    ],
  );
});
