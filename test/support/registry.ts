// A real OCI registry for the tests: Debian's `docker-registry` (distribution 2.8) on
// 127.0.0.1 with a temporary storage directory, in one of three auth modes:
//
// - `none`: anyone may push and pull;
// - `htpasswd`: Basic auth against an htpasswd file of bcrypt hashes (htpasswd -B);
// - `token`: the registry answers 401 with `WWW-Authenticate: Bearer realm,service,scope`
//   and accepts only JWTs signed by the key whose certificate is its `rootcertbundle`;
//   a token endpoint run here issues them, as GHCR's and Docker Hub's do: to a user with
//   a password for what they ask, and to anyone an anonymous pull token for repositories
//   marked public.
//
// The key and certificate are made by openssl for each registry. The token endpoint
// records every request it answers, so a test can see which scopes a client asked for
// and whether it came with credentials.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createPrivateKey, randomBytes, sign, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type RegistryAuth = 'none' | 'htpasswd' | 'token';

export interface RegistryOptions {
  readonly auth?: RegistryAuth;
  /** Accounts (user -> password); default one random `pusher`. */
  readonly users?: Readonly<Record<string, string>>;
  /** Token mode: repositories anyone may pull without credentials. */
  readonly publicRepositories?: (repository: string) => boolean;
  /** Token mode: seconds a token lives (default 300). */
  readonly tokenLifetimeSeconds?: number;
}

export interface TokenRequest {
  readonly account: string | undefined;
  readonly scopes: readonly string[];
  /** What the token grants, `repository:name:actions` per entry. */
  readonly granted: readonly string[];
  readonly status: number;
}

export interface RegistryServer {
  /** `http://127.0.0.1:port`: the registry itself. */
  readonly url: string;
  /** `127.0.0.1:port`, as image references name it. */
  readonly host: string;
  readonly auth: RegistryAuth;
  readonly users: Readonly<Record<string, string>>;
  /** The first user and their password, for tests that need one account. */
  readonly user: string;
  readonly password: string;
  /** Token mode: the token endpoint and what it was asked. */
  readonly tokenUrl?: string;
  readonly tokenRequests: TokenRequest[];
  /** The registry's storage directory. */
  readonly storageDir: string;
  /** A Basic `Authorization` value for `user`. */
  basic(user?: string): string;
  /** Token mode: a token granting `scopes` as `user` would get them (for requests the test makes itself). */
  tokenFor(scopes: readonly string[], user?: string): string;
  close(): Promise<void>;
}

const SERVICE = 'pipeline-test-registry';
const ISSUER = 'pipeline-test-token-issuer';

export async function startRegistry(options: RegistryOptions = {}): Promise<RegistryServer> {
  const auth = options.auth ?? 'none';
  const users = options.users ?? { pusher: randomBytes(9).toString('base64url') };
  const [user, password] = Object.entries(users)[0] ?? ['', ''];
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-registry-'));
  const storageDir = join(dir, 'storage');
  const tokenRequests: TokenRequest[] = [];
  let tokens: TokenEndpoint | undefined;
  let child: ChildProcess | undefined;
  try {
    const authConfig: string[] = [];
    if (auth === 'htpasswd') {
      const lines = Object.entries(users).map(([name, secret]) =>
        // -B: bcrypt, the only hash distribution's htpasswd accepts; the password on stdin (-i).
        execFileSync('htpasswd', ['-niB', '-C', '4', name], { input: secret, encoding: 'utf8' }).trim(),
      );
      await writeFile(join(dir, 'htpasswd'), `${lines.join('\n')}\n`);
      authConfig.push('auth:', '  htpasswd:', '    realm: pipeline-test', `    path: ${join(dir, 'htpasswd')}`);
    } else if (auth === 'token') {
      tokens = await startTokenEndpoint(dir, users, options, tokenRequests);
      authConfig.push(
        'auth:',
        '  token:',
        `    realm: ${tokens.url}/token`,
        `    service: ${SERVICE}`,
        `    issuer: ${ISSUER}`,
        `    rootcertbundle: ${tokens.certFile}`,
      );
    }
    const config = [
      'version: 0.1',
      'log:',
      '  level: info',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storageDir}`,
      '  delete:',
      '    enabled: true',
      '  maintenance:',
      '    uploadpurging:',
      '      enabled: false',
      'http:',
      '  addr: 127.0.0.1:0',
      `  secret: ${randomBytes(16).toString('hex')}`,
      ...authConfig,
      '',
    ].join('\n');
    await writeFile(join(dir, 'config.yml'), config);
    const started = await spawnRegistry(join(dir, 'config.yml'));
    child = started.child;
    const host = `127.0.0.1:${started.port}`;
    const registryChild = child;
    const tokenEndpoint = tokens;
    return {
      url: `http://${host}`,
      host,
      auth,
      users,
      user,
      password,
      ...(tokenEndpoint ? { tokenUrl: `${tokenEndpoint.url}/token` } : {}),
      tokenRequests,
      storageDir,
      basic: (name = user) => `Basic ${Buffer.from(`${name}:${users[name] ?? ''}`).toString('base64')}`,
      tokenFor: (scopes, name = user) => {
        if (!tokenEndpoint) throw new Error('tokenFor: the registry does not use token auth');
        return tokenEndpoint.issue(name, scopes).token;
      },
      async close() {
        await stopChild(registryChild);
        await tokenEndpoint?.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    if (child) await stopChild(child);
    await tokens?.close();
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** Starts the registry and waits for the port it bound (`addr: 127.0.0.1:0`), read from its log. */
function spawnRegistry(configFile: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn('docker-registry', ['serve', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  // A test process that dies takes its registries with it.
  const onExit = () => child.kill('SIGKILL');
  process.once('exit', onExit);
  child.once('exit', () => process.removeListener('exit', onExit));
  return new Promise((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => fail(new Error(`docker-registry did not start in 20 s:\n${log.slice(-2000)}`)), 20_000);
    const fail = (error: Error) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(error);
    };
    child.once('error', (error) => fail(new Error(`docker-registry could not start (${error.message}): install Debian's docker-registry package`)));
    child.once('exit', (code) => fail(new Error(`docker-registry exited with ${code}:\n${log.slice(-2000)}`)));
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (text: string) => {
      if (log.length < 64 * 1024) log += text;
      const match = /listening on 127\.0\.0\.1:(\d+)/.exec(log);
      if (!match) return;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      child.once('exit', () => process.removeListener('exit', onExit));
      // Keep draining its log so the pipe never fills and blocks it.
      child.stderr!.removeAllListeners('data');
      child.stderr!.resume();
      resolve({ child, port: Number(match[1]) });
    });
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

interface TokenEndpoint {
  readonly url: string;
  readonly certFile: string;
  issue(account: string | undefined, scopes: readonly string[]): { token: string; granted: string[] };
  close(): Promise<void>;
}

/**
 * The token endpoint: GET /token?service=…&scope=… (scope repeated or space-separated),
 * Basic credentials optional; POST /token with an OAuth2 password or refresh-token form,
 * as containers/image sends for identity tokens. Tokens are ES256 JWTs with the signing
 * certificate in `x5c`, which the registry checks against its rootcertbundle.
 */
async function startTokenEndpoint(dir: string, users: Readonly<Record<string, string>>, options: RegistryOptions, log: TokenRequest[]): Promise<TokenEndpoint> {
  const keyFile = join(dir, 'token-key.pem');
  const certFile = join(dir, 'token-cert.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-days',
      '2',
      '-subj',
      `/CN=${ISSUER}`,
    ],
    { stdio: 'ignore' },
  );
  const key = createPrivateKey(await readFile(keyFile));
  const certificateDer = new X509Certificate(await readFile(certFile)).raw.toString('base64');
  const lifetime = options.tokenLifetimeSeconds ?? 300;
  const isPublic = options.publicRepositories ?? (() => false);

  const issue = (account: string | undefined, scopes: readonly string[]) => {
    const access: Array<{ type: string; name: string; actions: string[] }> = [];
    for (const scope of scopes) {
      const parsed = parseScope(scope);
      if (!parsed) continue;
      const actions = account ? parsed.actions.filter((action) => ['pull', 'push', 'delete', '*'].includes(action)) : isPublic(parsed.name) ? ['pull'] : [];
      const allowed = parsed.actions.includes('*') && account ? ['pull', 'push', 'delete'] : actions.filter((action) => parsed.actions.includes(action));
      if (allowed.length) access.push({ type: parsed.type, name: parsed.name, actions: allowed });
    }
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'ES256', x5c: [certificateDer] };
    const claims = {
      iss: ISSUER,
      sub: account ?? '',
      aud: SERVICE,
      exp: now + lifetime,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(12).toString('hex'),
      access,
    };
    const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    const signature = sign('sha256', Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' });
    return {
      token: `${signingInput}.${signature.toString('base64url')}`,
      granted: access.map((entry) => `${entry.type}:${entry.name}:${entry.actions.join(',')}`),
    };
  };

  const server = http.createServer((request, response) => {
    let body = '';
    request.setEncoding('utf8');
    request.on('data', (chunk: string) => {
      if (body.length < 64 * 1024) body += chunk;
    });
    request.on('end', () => {
      const url = new URL(request.url ?? '/', 'http://token');
      if (url.pathname !== '/token') return answer(response, 404, { errors: [{ code: 'NOT_FOUND' }] });
      let account: string | undefined;
      let secret: string | undefined;
      let scopes: string[];
      if (request.method === 'POST') {
        const form = new URLSearchParams(body);
        scopes = form.getAll('scope').flatMap((scope) => scope.split(' '));
        if (form.get('grant_type') === 'password') {
          account = form.get('username') ?? undefined;
          secret = form.get('password') ?? undefined;
        } else if (form.get('grant_type') === 'refresh_token') {
          [account, secret] = (form.get('refresh_token') ?? '').split(':');
        }
      } else {
        scopes = url.searchParams.getAll('scope').flatMap((scope) => scope.split(' '));
        const basic = /^Basic (.+)$/i.exec(request.headers.authorization ?? '');
        if (basic) {
          const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
          const colon = decoded.indexOf(':');
          account = decoded.slice(0, colon);
          secret = decoded.slice(colon + 1);
        }
      }
      scopes = scopes.filter(Boolean);
      if (account !== undefined && (users[account] === undefined || users[account] !== secret)) {
        log.push({ account, scopes, granted: [], status: 401 });
        return answer(
          response,
          401,
          { errors: [{ code: 'UNAUTHORIZED', message: 'wrong user name or password' }] },
          { 'www-authenticate': 'Basic realm="token"' },
        );
      }
      const { token, granted } = issue(account, scopes);
      log.push({ account, scopes, granted, status: 200 });
      answer(response, 200, { token, access_token: token, expires_in: lifetime, issued_at: new Date().toISOString() });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    certFile,
    issue,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** `repository:acme/images/debian-12:pull,push` -> its parts (the name may hold ':' only in a registry host, which scopes never carry). */
function parseScope(scope: string): { type: string; name: string; actions: string[] } | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last <= first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope
      .slice(last + 1)
      .split(',')
      .filter(Boolean),
  };
}

function base64url(text: string): string {
  return Buffer.from(text).toString('base64url');
}

function answer(response: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  response.end(text);
}
