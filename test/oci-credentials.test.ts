// Where the OCI store finds registry credentials, as the container tools keep them: the
// containers auth file (REGISTRY_AUTH_FILE or XDG_RUNTIME_DIR), docker's config (auths,
// credHelpers and credsStore run as real docker-credential-* programs), GITHUB_TOKEN for
// ghcr.io, else none. And the challenge parser the Bearer flow starts from.
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { parseChallenge } from '../tasks/store/oci/auth.ts';
import { findCredential } from '../tasks/store/oci/credentials.ts';
import { parseRegistry } from '../tasks/store/oci/reference.ts';

async function home(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'oci-credentials-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const basic = (user: string, password: string) => Buffer.from(`${user}:${password}`).toString('base64');

/** A docker-credential-<name> program that answers `get` for `host` and records what it was asked. */
async function helper(dir: string, name: string, host: string, answer: Record<string, string>): Promise<void> {
  const bin = join(dir, 'bin');
  await mkdir(bin, { recursive: true });
  const script = `#!/bin/sh
[ "$1" = get ] || exit 3
read -r server
echo "$server" >> ${JSON.stringify(join(dir, `${name}.asked`))}
if [ "$server" = ${JSON.stringify(host)} ]; then printf '%s' ${JSON.stringify(JSON.stringify(answer))}; exit 0; fi
echo "credentials not found in native keychain"; exit 1
`;
  await writeFile(join(bin, `docker-credential-${name}`), script);
  await chmod(join(bin, `docker-credential-${name}`), 0o755);
}

test('the containers auth file comes first, and a repository-scoped entry beats the host entry', async (t) => {
  const dir = await home(t);
  await writeFile(
    join(dir, 'auth.json'),
    JSON.stringify({ auths: { 'ghcr.io': { auth: basic('host-user', 'host-pw') }, 'ghcr.io/acme/images': { auth: basic('repo-user', 'repo-pw') } } }),
  );
  await mkdir(join(dir, '.docker'));
  await writeFile(join(dir, '.docker', 'config.json'), JSON.stringify({ auths: { 'ghcr.io': { auth: basic('docker-user', 'docker-pw') } } }));
  const env = { REGISTRY_AUTH_FILE: join(dir, 'auth.json'), HOME: dir, GITHUB_TOKEN: 'gh-token' };
  t.like(await findCredential('ghcr.io', 'acme/images/debian-12', { env }), { kind: 'basic', username: 'repo-user', password: 'repo-pw' });
  t.like(await findCredential('ghcr.io', 'other/thing', { env }), { kind: 'basic', username: 'host-user', password: 'host-pw' });
  // Without the auth file: docker's config, then the GitHub token.
  t.like(await findCredential('ghcr.io', 'other/thing', { env: { HOME: dir, GITHUB_TOKEN: 'gh-token' } }), { username: 'docker-user' });
  t.like(await findCredential('ghcr.io', 'x/y', { env: { HOME: join(dir, 'nowhere'), GITHUB_TOKEN: 'gh-token', GITHUB_ACTOR: 'octo' } }), {
    kind: 'basic',
    username: 'octo',
    password: 'gh-token',
    source: 'GITHUB_TOKEN',
  });
  t.is(await findCredential('registry.example', 'x/y', { env: { HOME: join(dir, 'nowhere'), GITHUB_TOKEN: 'gh-token' } }), undefined);
});

test('XDG_RUNTIME_DIR/containers/auth.json is read when REGISTRY_AUTH_FILE is unset; docker keys with a scheme and /v1/ match the host', async (t) => {
  const dir = await home(t);
  await mkdir(join(dir, 'run', 'containers'), { recursive: true });
  await writeFile(join(dir, 'run', 'containers', 'auth.json'), JSON.stringify({ auths: { 'registry.example:5000': { auth: basic('podman', 'p') } } }));
  t.like(await findCredential('registry.example:5000', 'a/b', { env: { XDG_RUNTIME_DIR: join(dir, 'run'), HOME: dir } }), { username: 'podman' });
  await writeFile(
    join(dir, 'config.json'),
    JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: basic('hub', 'h') }, 'https://quay.example': { identitytoken: 'refresh-me' } } }),
  );
  const env = { DOCKER_CONFIG: dir, HOME: dir };
  t.like(await findCredential(parseRegistry('docker.io/acme/images', false).host, 'acme/images/x', { env }), { username: 'hub' });
  t.like(await findCredential('quay.example', 'a/b', { env }), { kind: 'identity', identityToken: 'refresh-me' });
});

test('credential helpers run as docker-credential-<name> get with the server on stdin: credHelpers for the host, else credsStore', async (t) => {
  const dir = await home(t);
  await helper(dir, 'perhost', 'ghcr.io', { ServerURL: 'ghcr.io', Username: 'helped', Secret: 'from-helper' });
  await helper(dir, 'store', 'registry.example', { ServerURL: 'registry.example', Username: '<token>', Secret: 'identity-from-store' });
  await writeFile(join(dir, 'config.json'), JSON.stringify({ credHelpers: { 'ghcr.io': 'perhost' }, credsStore: 'store' }));
  const env = { DOCKER_CONFIG: dir, HOME: dir, PATH: `${join(dir, 'bin')}:${process.env.PATH}` };
  t.like(await findCredential('ghcr.io', 'acme/images/x', { env }), {
    kind: 'basic',
    username: 'helped',
    password: 'from-helper',
    source: 'docker-credential-perhost',
  });
  t.like(await findCredential('registry.example', 'a/b', { env }), { kind: 'identity', identityToken: 'identity-from-store' });
  // The store does not hold this host: anonymous, not a failure.
  t.is(await findCredential('other.example', 'a/b', { env }), undefined);
  const failing = await t.throwsAsync(findCredential('ghcr.io', 'a/b', { env: { ...env, PATH: join(dir, 'empty') } }));
  t.regex(failing.message, /credential helper docker-credential-perhost failed/);
});

test('challenges: Bearer with realm, service and scope; Basic; quoted commas', (t) => {
  t.deepEqual(parseChallenge('Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:acme/images/debian-12:pull"'), {
    scheme: 'bearer',
    params: { realm: 'https://ghcr.io/token', service: 'ghcr.io', scope: 'repository:acme/images/debian-12:pull' },
  });
  t.deepEqual(
    parseChallenge('Bearer realm="https://auth.example/token",service="r",scope="repository:a/b:pull,push"')?.params.scope,
    'repository:a/b:pull,push',
  );
  t.deepEqual(parseChallenge('Basic realm="pipeline-test"'), { scheme: 'basic', params: { realm: 'pipeline-test' } });
  t.is(parseChallenge('Negotiate abc'), undefined);
});

test('registry locations: host and namespace, docker.io spelled out, schemes and bad components refused in one line', (t) => {
  t.like(parseRegistry('ghcr.io/homestak-dev/images', false), { host: 'ghcr.io', origin: 'https://ghcr.io', namespace: 'homestak-dev/images' });
  t.like(parseRegistry('127.0.0.1:5000/acme', true), { host: '127.0.0.1:5000', origin: 'http://127.0.0.1:5000', namespace: 'acme' });
  t.like(parseRegistry('docker.io/acme/images', false), { host: 'docker.io', origin: 'https://registry-1.docker.io' });
  t.throws(() => parseRegistry('https://ghcr.io/acme', false), { message: /leave out the scheme/ });
  t.throws(() => parseRegistry('ghcr.io/Acme/images', false), { message: /"Acme" is not a valid repository path component/ });
  t.throws(() => parseRegistry('acme/images', false), { message: /"acme" is not a registry host/ });
});
