// Registry authorization as the distribution spec and the token spec describe it: the
// registry answers 401 with a challenge, `Basic realm=…` or `Bearer realm=…,service=…,
// scope=…`. Basic sends the stored user and password with each request. Bearer trades them
// (or nothing, for an anonymous pull token) at the realm for a short-lived token covering
// the scopes a request needs (`repository:acme/images/debian-12:pull,push`), cached per
// scope set until shortly before it expires.
//
// Credentials go only to the registry's own origin and to the realm it names; a realm on
// plain http is refused for a registry on https (a token endpoint reached in the clear
// would see the password).
import { Failure } from '../../../src/index.ts';
import { apiFetch } from '../http/api-fetch.ts';
import { type Credential, secretsOf } from './credentials.ts';

export interface Challenge {
  readonly scheme: 'basic' | 'bearer';
  readonly params: Readonly<Record<string, string>>;
}

/** Parses `Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull"`. */
export function parseChallenge(header: string | null | undefined): Challenge | undefined {
  if (!header) return undefined;
  const match = /^\s*(Basic|Bearer)\b\s*(.*)$/i.exec(header);
  if (!match) return undefined;
  const params: Record<string, string> = {};
  const pattern = /([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?/g;
  for (let found = pattern.exec(match[2]!); found; found = pattern.exec(match[2]!)) {
    params[found[1]!.toLowerCase()] = found[2] !== undefined ? found[2].replace(/\\(.)/g, '$1') : (found[3] ?? '');
  }
  return { scheme: match[1]!.toLowerCase() as 'basic' | 'bearer', params };
}

export type Action = 'pull' | 'push' | 'delete';

/** What a request needs: actions on its own repository, and pull on another (a cross-repository mount). */
export interface Scope {
  readonly repository: string;
  readonly actions: readonly Action[];
  readonly mountFrom?: string;
}

function scopeStrings(scope: Scope): string[] {
  const strings = [`repository:${scope.repository}:${[...scope.actions].sort().join(',')}`];
  if (scope.mountFrom) strings.push(`repository:${scope.mountFrom}:pull`);
  return strings;
}

/** Spec default when the token endpoint gives no expires_in. */
const DEFAULT_TOKEN_SECONDS = 60;
/** A token this close to expiring is not used for a new request. */
const EXPIRY_MARGIN_MS = 20_000;

export interface AuthOptions {
  readonly origin: string;
  readonly host: string;
  /** The credential for a repository (found lazily: a public pull may never need one). */
  readonly credentialFor: (repository: string) => Promise<Credential | undefined>;
  readonly signal?: AbortSignal;
}

export class RegistryAuth {
  /** What the registry asked for the last time it challenged us. */
  private challenge: Challenge | undefined;
  private readonly tokens = new Map<string, { token: string; expiresAt: number } | Promise<{ token: string; expiresAt: number }>>();
  private readonly credentials = new Map<string, Promise<Credential | undefined>>();
  /** Secrets seen so far, to scrub from any text that leaves this module. */
  private readonly secrets = new Set<string>();

  constructor(private readonly options: AuthOptions) {}

  private credential(repository: string): Promise<Credential | undefined> {
    let found = this.credentials.get(repository);
    if (!found) {
      found = this.options.credentialFor(repository).then((credential) => {
        for (const secret of secretsOf(credential)) this.secrets.add(secret);
        return credential;
      });
      this.credentials.set(repository, found);
    }
    return found;
  }

  /** Removes every credential and token this client holds from `text`. */
  redact(text: string): string {
    let out = text;
    for (const secret of this.secrets) out = out.split(secret).join('***');
    for (const entry of this.tokens.values()) if (!(entry instanceof Promise)) out = out.split(entry.token).join('***');
    return out;
  }

  /** The Authorization value for a request needing `scope`, or undefined before the registry asked for any. */
  async authorization(scope: Scope, signal: AbortSignal): Promise<string | undefined> {
    const challenge = this.challenge;
    if (!challenge) return undefined;
    const credential = await this.credential(scope.repository);
    if (challenge.scheme === 'basic') {
      if (credential?.kind !== 'basic') return undefined;
      return `Basic ${Buffer.from(`${credential.username}:${credential.password}`).toString('base64')}`;
    }
    return `Bearer ${await this.token(challenge, scope, credential, signal)}`;
  }

  /**
   * Takes a 401's challenge and forgets the token that was refused (expired, or lacking a
   * scope). The caller tries once more; a second 401 is final.
   */
  challenged(header: string | null | undefined, sentAuthorization: string | undefined): boolean {
    const challenge = parseChallenge(header);
    if (!challenge) return false;
    this.challenge = challenge;
    for (const [key, entry] of this.tokens) if (!(entry instanceof Promise) && `Bearer ${entry.token}` === sentAuthorization) this.tokens.delete(key);
    return true;
  }

  /** Why the registry still says 401: one line naming where the credential came from (never what it is). */
  async refusal(scope: Scope, action: string): Promise<Failure> {
    const credential = await this.credential(scope.repository);
    const where = `${this.options.host}/${scope.repository}`;
    if (!credential) {
      const hint =
        this.options.host === 'ghcr.io'
          ? 'set GITHUB_TOKEN (with packages: write to push) or log in with docker login ghcr.io'
          : `log in with podman login ${this.options.host} or docker login ${this.options.host}`;
      return new Failure('auth', `${where} needs credentials to ${action} and none were found: ${hint}`, { code: 401 });
    }
    return new Failure('auth', `${where} refused the credentials from ${credential.source} to ${action}: check the login and its access to this repository`, {
      code: 401,
    });
  }

  private async token(challenge: Challenge, scope: Scope, credential: Credential | undefined, signal: AbortSignal): Promise<string> {
    const scopes = scopeStrings(scope);
    const key = scopes.join(' ');
    const cached = this.tokens.get(key);
    if (cached && !(cached instanceof Promise) && cached.expiresAt - Date.now() > EXPIRY_MARGIN_MS) return cached.token;
    if (cached instanceof Promise) return (await cached).token;
    const pending = this.fetchToken(challenge, scopes, credential, signal);
    this.tokens.set(key, pending);
    try {
      const got = await pending;
      this.tokens.set(key, got);
      return got.token;
    } catch (error) {
      this.tokens.delete(key);
      throw error;
    }
  }

  private async fetchToken(
    challenge: Challenge,
    scopes: readonly string[],
    credential: Credential | undefined,
    signal: AbortSignal,
  ): Promise<{ token: string; expiresAt: number }> {
    const url = this.tokenRealm(challenge);
    const started = Date.now();
    const response = await this.requestToken(url, challenge.params.service, scopes, credential, signal);
    if (response.status === 401 || response.status === 403) {
      throw new Failure(
        'auth',
        `${this.options.host}'s token endpoint refused the credentials from ${credential?.source ?? '(none: anonymous)'} (HTTP ${response.status})`,
        {
          code: response.status,
        },
      );
    }
    if (!response.ok) throw new Failure('network', `${this.options.host}'s token endpoint answered HTTP ${response.status}`, { code: response.status });
    const { token, seconds } = await this.tokenOf(response);
    return { token, expiresAt: started + seconds * 1000 };
  }

  /** The challenge's token endpoint: a URL, on https unless the registry itself is plain http (credentials go there). */
  private tokenRealm(challenge: Challenge): URL {
    const realm = challenge.params.realm;
    if (!realm) throw new Failure('auth', `${this.options.host} asked for a bearer token without naming where to get one (no realm)`);
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new Failure('auth', `${this.options.host} named a token realm that is not a URL`);
    }
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && this.options.origin.startsWith('http:'))) {
      throw new Failure(
        'auth',
        `${this.options.host} sends clients to a token endpoint on ${url.protocol}//${url.host}, not https: refusing to send credentials there`,
      );
    }
    return url;
  }

  /**
   * Asks the token endpoint for `scopes`: an identity token by the OAuth2 refresh-token
   * grant (as docker does), a username and password by Basic auth, or nothing (anonymous).
   * Redirects are refused, so credentials go to the realm only.
   */
  private async requestToken(
    realm: URL,
    service: string | undefined,
    scopes: readonly string[],
    credential: Credential | undefined,
    signal: AbortSignal,
  ): Promise<Awaited<ReturnType<typeof apiFetch>>> {
    const url = new URL(realm);
    const headers: Record<string, string> = { 'user-agent': 'pipeline-images', accept: 'application/json' };
    try {
      if (credential?.kind === 'identity') {
        const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: credential.identityToken, client_id: 'pipeline' });
        if (service) form.set('service', service);
        for (const scope of scopes) form.append('scope', scope);
        return await apiFetch(url, {
          method: 'POST',
          headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' },
          body: form.toString(),
          signal,
          redirect: 'error',
        });
      }
      if (service) url.searchParams.set('service', service);
      for (const scope of scopes) url.searchParams.append('scope', scope);
      if (credential) {
        url.searchParams.set('account', credential.username);
        headers.authorization = `Basic ${Buffer.from(`${credential.username}:${credential.password}`).toString('base64')}`;
      }
      return await apiFetch(url, { headers, signal, redirect: 'error' });
    } catch (error) {
      if (signal.aborted) throw error;
      throw new Failure(
        'network',
        `could not reach ${this.options.host}'s token endpoint ${url.origin}: ${this.redact(error instanceof Error ? error.message : String(error))}`,
      );
    }
  }

  /** The token in the endpoint's JSON answer (`token`, or OAuth2's `access_token`) and its lifetime in seconds. */
  private async tokenOf(response: Awaited<ReturnType<typeof apiFetch>>): Promise<{ token: string; seconds: number }> {
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(await response.text()) as typeof body;
    } catch {
      throw new Failure('auth', `${this.options.host}'s token endpoint did not answer with JSON`);
    }
    const token = typeof body.token === 'string' && body.token ? body.token : typeof body.access_token === 'string' ? body.access_token : '';
    if (!token) throw new Failure('auth', `${this.options.host}'s token endpoint answered without a token`);
    const seconds = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_SECONDS;
    return { token, seconds };
  }
}
