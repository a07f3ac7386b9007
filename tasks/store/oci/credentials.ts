// Registry credentials, found where the container tools keep them, in their order:
//
// 1. REGISTRY_AUTH_FILE, else ${XDG_RUNTIME_DIR}/containers/auth.json (podman, skopeo,
//    buildah): `auths` keyed by host, or by host/namespace[/repository] for a narrower
//    login, the longest matching key winning;
// 2. DOCKER_CONFIG/config.json, else ~/.docker/config.json: a `credHelpers` entry for the
//    host, then an `auths` entry (`auth` as base64 user:password, or `identitytoken`), then
//    the `credsStore` helper; a helper runs as `docker-credential-<name> get` with the
//    server on stdin, from an argument array;
// 3. for ghcr.io, GITHUB_TOKEN or GH_TOKEN (what a GitHub Actions job has);
// 4. none: anonymous, which public repositories allow for pulls.
//
// A credential is held in a closure-free plain object that never reaches a message: errors
// say which source it came from, never what it holds.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Failure } from '../../../src/index.ts';

export type Credential =
  | { readonly kind: 'basic'; readonly username: string; readonly password: string; readonly source: string }
  /** A refresh token from `docker login` with an identity provider: traded at the token endpoint. */
  | { readonly kind: 'identity'; readonly username: string; readonly identityToken: string; readonly source: string };

/** Runs `docker-credential-<helper> get` with `server` on stdin; resolves its stdout. Tests pass their own PATH through env. */
export type HelperRunner = (helper: string, server: string, env: NodeJS.ProcessEnv) => Promise<string>;

export const runCredentialHelper: HelperRunner = (helper, server, env) =>
  new Promise((resolve, reject) => {
    const child = execFile(`docker-credential-${helper}`, ['get'], { env, timeout: 30_000, maxBuffer: 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) {
        // Helpers say "credentials not found in native keychain" for a host they do not hold.
        if (/not found/i.test(`${stdout}${stderr}`)) resolve('');
        else
          reject(
            new Failure(
              'auth',
              `credential helper docker-credential-${helper} failed (${(error as NodeJS.ErrnoException).code ?? error.message.split('\n')[0]})`,
            ),
          );
        return;
      }
      resolve(stdout);
    });
    child.stdin?.end(server);
  });

export interface CredentialOptions {
  readonly env: NodeJS.ProcessEnv;
  readonly runHelper?: HelperRunner;
}

/** The credential for `repository` on `host`, or undefined (anonymous). */
export async function findCredential(host: string, repository: string, options: CredentialOptions): Promise<Credential | undefined> {
  const { env } = options;
  const containersFile = env.REGISTRY_AUTH_FILE?.trim() || (env.XDG_RUNTIME_DIR ? join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json') : undefined);
  if (containersFile) {
    const found = await fromContainersAuth(containersFile, host, repository);
    if (found) return found;
  }
  const dockerFile = join(env.DOCKER_CONFIG?.trim() || join(env.HOME?.trim() || homedir(), '.docker'), 'config.json');
  const docker = await fromDockerConfig(dockerFile, host, options);
  if (docker) return docker;
  if (host === 'ghcr.io') {
    const token = env.GITHUB_TOKEN?.trim() || env.GH_TOKEN?.trim();
    // GHCR takes any user name with a token; the actor's name is what docker/login-action sends.
    if (token)
      return { kind: 'basic', username: env.GITHUB_ACTOR?.trim() || 'token', password: token, source: env.GITHUB_TOKEN?.trim() ? 'GITHUB_TOKEN' : 'GH_TOKEN' };
  }
  return undefined;
}

interface AuthEntry {
  readonly auth?: string;
  readonly username?: string;
  readonly password?: string;
  readonly identitytoken?: string;
}

async function readJson(path: string): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const parsed = JSON.parse(text) as unknown;
    return parsed && typeof parsed === 'object' ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    throw new Failure('setup', `${path} is not valid JSON: fix it, or log in again with podman login / docker login`);
  }
}

/** A key of a docker config `auths` map, reduced to what it names: `https://index.docker.io/v1/` -> `docker.io`. */
function normalizeKey(key: string): string {
  const bare = key
    .replace(/^[a-z]+:\/\//i, '')
    .replace(/\/v[12]\/?$/, '')
    .replace(/\/+$/, '');
  return bare === 'index.docker.io' || bare === 'registry-1.docker.io' ? 'docker.io' : bare;
}

function entryCredential(entry: AuthEntry, source: string): Credential | undefined {
  let username = entry.username;
  let password = entry.password;
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw new Failure('setup', `${source}: its "auth" value is not base64 of user:password; log in again`);
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  }
  if (entry.identitytoken) return { kind: 'identity', username: username ?? '', identityToken: entry.identitytoken, source };
  if (username !== undefined && password !== undefined && (username || password)) return { kind: 'basic', username, password, source };
  return undefined;
}

async function fromContainersAuth(path: string, host: string, repository: string): Promise<Credential | undefined> {
  const config = await readJson(path);
  const auths = (config?.auths ?? {}) as Record<string, AuthEntry>;
  // host/namespace/repository beats host/namespace beats host.
  const wanted = `${host}/${repository}`;
  const keys = Object.keys(auths)
    .map((key) => ({ key, scope: normalizeKey(key) }))
    .filter(({ scope }) => scope === host || wanted === scope || wanted.startsWith(`${scope}/`))
    .sort((a, b) => b.scope.length - a.scope.length);
  for (const { key } of keys) {
    const found = entryCredential(auths[key]!, `${path} (${key})`);
    if (found) return found;
  }
  return undefined;
}

async function fromDockerConfig(path: string, host: string, options: CredentialOptions): Promise<Credential | undefined> {
  const config = await readJson(path);
  if (!config) return undefined;
  const helpers = (config.credHelpers ?? {}) as Record<string, string>;
  const helperKey = Object.keys(helpers).find((key) => normalizeKey(key) === host);
  if (helperKey) return fromHelper(helpers[helperKey]!, helperKey, options);
  const auths = (config.auths ?? {}) as Record<string, AuthEntry>;
  for (const key of Object.keys(auths)) {
    if (normalizeKey(key) !== host) continue;
    const found = entryCredential(auths[key]!, `${path} (${key})`);
    if (found) return found;
  }
  if (typeof config.credsStore === 'string' && config.credsStore) {
    return fromHelper(config.credsStore, host === 'docker.io' ? 'https://index.docker.io/v1/' : host, options);
  }
  return undefined;
}

async function fromHelper(helper: string, server: string, options: CredentialOptions): Promise<Credential | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(helper)) throw new Failure('setup', `credential helper name ${JSON.stringify(helper)} is not a program name`);
  const text = await (options.runHelper ?? runCredentialHelper)(helper, server, options.env);
  if (!text.trim()) return undefined;
  let parsed: { Username?: unknown; Secret?: unknown };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    throw new Failure('auth', `credential helper docker-credential-${helper} did not answer with JSON`);
  }
  if (typeof parsed.Secret !== 'string' || !parsed.Secret) return undefined;
  const source = `docker-credential-${helper}`;
  const username = typeof parsed.Username === 'string' ? parsed.Username : '';
  // Docker's convention: a user name of "<token>" marks the secret as an identity token.
  if (username === '<token>') return { kind: 'identity', username: '', identityToken: parsed.Secret, source };
  return { kind: 'basic', username, password: parsed.Secret, source };
}

/** Every secret a credential holds, for scrubbing text that passed through a server. */
export function secretsOf(credential: Credential | undefined): string[] {
  if (!credential) return [];
  const secrets = credential.kind === 'basic' ? [credential.password] : [credential.identityToken];
  if (credential.kind === 'basic') secrets.push(Buffer.from(`${credential.username}:${credential.password}`).toString('base64'));
  return secrets.filter((secret) => secret.length >= 4);
}
