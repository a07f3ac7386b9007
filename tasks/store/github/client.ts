// The one place that turns environment and config into a GitHub client, and GitHub's
// failures into messages a user can act on. A token is used whenever one is present, and
// needed only to write: a public release is read anonymously. The token lives only in the
// client's closures: it is never part of a message, a log line or JSON output.
import { execFile } from 'node:child_process';
import type { Octokit } from '@octokit/core';
import type { PaginateInterface } from '@octokit/plugin-paginate-rest';
import type { RequestError } from '@octokit/request-error';
import { Failure, type FailureKind, isFailure } from '../../../src/index.ts';
import type { GitHubSettings } from './settings.ts';

export const DEFAULT_API_URL = 'https://api.github.com';

/** Reads `gh auth token`; resolves undefined when gh is missing or not logged in. */
export type GhTokenReader = () => Promise<string | undefined>;

export const readGhToken: GhTokenReader = () =>
  new Promise((resolve) => {
    execFile('gh', ['auth', 'token'], { timeout: 10_000 }, (error, stdout) => {
      resolve(error ? undefined : stdout.trim() || undefined);
    });
  });

/** GITHUB_TOKEN, else GH_TOKEN, else `gh auth token`; undefined when there is none (reads then go anonymously). */
export async function findToken(env: NodeJS.ProcessEnv, readGh: GhTokenReader = readGhToken): Promise<string | undefined> {
  return env.GITHUB_TOKEN?.trim() || env.GH_TOKEN?.trim() || (await readGh());
}

const NO_TOKEN = 'no GitHub token: set GITHUB_TOKEN or GH_TOKEN, or log in with `gh auth login`';

/** The token a write needs; a `setup` Failure saying how to provide one when there is none. */
export async function resolveToken(env: NodeJS.ProcessEnv, readGh: GhTokenReader = readGhToken): Promise<string> {
  const token = await findToken(env, readGh);
  if (!token) throw new Failure('setup', NO_TOKEN);
  return token;
}

/** A GitHub account or organisation: letters, digits and single inner dashes. */
const OWNER = /^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$/;
/** A repository name: letters, digits, '.', '_' and '-', and not '.' or '..'. */
const REPO = /^[A-Za-z0-9._-]{1,100}$/;

/**
 * `owner/name` from GITHUB_REPOSITORY, else the config's release.repo, checked before any
 * request so that `../x` or `acme/../images` never reaches a URL.
 */
export function resolveRepository(settings: GitHubSettings, env: NodeJS.ProcessEnv): { owner: string; repo: string } {
  const fromEnv = env.GITHUB_REPOSITORY?.trim();
  const full = fromEnv || settings.repo;
  // A bad release.repo is caught when the config loads, where the error names the file.
  const source = fromEnv ? 'GITHUB_REPOSITORY' : 'release.repo';
  if (!full) throw new Failure('setup', 'no GitHub repository: set release.repo in the config or GITHUB_REPOSITORY');
  const [owner, repo, ...rest] = full.split('/');
  if (rest.length || !owner || !repo || !OWNER.test(owner) || !REPO.test(repo) || repo === '.' || repo === '..') {
    throw new Failure(
      fromEnv ? 'setup' : 'config',
      `${source}: ${JSON.stringify(full)} is not a GitHub repository: use owner/name (letters, digits, '-' in the owner; '.', '_', '-' also in the name)`,
    );
  }
  return { owner, repo };
}

export function resolveApiUrl(settings: GitHubSettings, env: NodeJS.ProcessEnv): string {
  return (env.GITHUB_API_URL?.trim() || settings.apiUrl || DEFAULT_API_URL).replace(/\/+$/, '');
}

export interface ClientOptions {
  /** Environment to read token, repository and URL overrides from (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
  readonly readGhToken?: GhTokenReader;
  /** Milliseconds per unit of backoff (octokit waits n^2 units on retry n); tests shrink it. */
  readonly retryBaseMs?: number;
  /** Longest rate-limit reset worth waiting for before failing with the reset time. */
  readonly maxRateLimitWaitSeconds?: number;
  /** Attempts for an asset upload or download before giving up. */
  readonly transferAttempts?: number;
}

export interface GitHubClient {
  /** @octokit/core with pagination, retries and rate-limit handling (REST calls by route). */
  readonly octokit: Octokit & { paginate: PaginateInterface };
  readonly owner: string;
  readonly repo: string;
  readonly apiUrl: string;
  /** True when no token was found: reads only, asset bytes through the public download URLs. */
  readonly anonymous: boolean;
  /** `Authorization` header value for requests made outside octokit (streamed bodies); undefined when anonymous. */
  authorization(): string | undefined;
  /** Throws the one-line `setup` Failure of a missing token when the client is anonymous; `what` names the write. */
  requireToken(what: string): void;
  /** Removes the token from text that may have passed through a server or library. */
  redact(text: string): string;
  readonly retryBaseMs: number;
  readonly transferAttempts: number;
}

/**
 * A stand-in for octokit's Bottleneck groups that adds no delay between writes. By default
 * octokit spaces mutating requests 1 s apart (3 s for creating a release), which would
 * stretch the few milliseconds between deleting an old asset and renaming its replacement
 * into seconds with the image missing. Rate limits (primary and secondary) are still
 * honoured: those are answers, retried by onRateLimit / onSecondaryRateLimit below.
 */
const unthrottledGroup = {
  key: () => ({ schedule: (_options: unknown, task: (...args: unknown[]) => unknown, ...args: unknown[]) => task(...args) }),
};

export async function createGitHubClient(settings: GitHubSettings, options: ClientOptions = {}): Promise<GitHubClient> {
  const env = options.env ?? process.env;
  const { owner, repo } = resolveRepository(settings, env);
  const apiUrl = resolveApiUrl(settings, env);
  const token = await findToken(env, options.readGhToken);
  const retryBaseMs = options.retryBaseMs ?? 1000;
  const maxWait = options.maxRateLimitWaitSeconds ?? 120;
  const waitOnce = (retryAfter: number, _options: unknown, _octokit: unknown, retryCount: number): boolean => retryCount < 2 && retryAfter <= maxWait;
  const throttle = {
    onRateLimit: waitOnce,
    onSecondaryRateLimit: waitOnce,
    retryAfterBaseValue: retryBaseMs,
    write: unthrottledGroup as never,
    notifications: unthrottledGroup as never,
  };
  // Loaded when a release is actually touched: a local build run never pays for octokit.
  const [{ Octokit }, { paginateRest }, { throttling }, { retryingApiFetch }] = await Promise.all([
    import('@octokit/core'),
    import('@octokit/plugin-paginate-rest'),
    import('@octokit/plugin-throttling'),
    import('../http/api-fetch.ts'),
  ]);
  const octokit = new (Octokit.plugin(paginateRest, throttling))({
    ...(token ? { auth: token } : {}),
    baseUrl: apiUrl,
    userAgent: 'pipeline-images',
    // Retries are the fetch's (the one HTTP layer's, so no retry plugin): it fails at once
    // on a host out of reach. Rate limits are the throttling plugin's.
    throttle,
    // node:http rather than Node's fetch, whose loading alone costs more memory than a download.
    request: { fetch: retryingApiFetch({ retryBaseMs }) as unknown as typeof fetch },
    // Octokit's default logger prints warnings to the console; the caller reports instead.
    log: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
  });
  const redact = (text: string): string => (token ? text.split(token).join('***') : text);
  return {
    octokit,
    owner,
    repo,
    apiUrl,
    anonymous: !token,
    authorization: () => (token ? `Bearer ${token}` : undefined),
    requireToken: (what) => {
      if (!token) throw new Failure('setup', `${NO_TOKEN} (needed to ${what})`);
    },
    redact,
    retryBaseMs,
    transferAttempts: options.transferAttempts ?? 5,
  };
}

/** A GitHub failure with the facts a caller may branch on; its kind follows from the status. */
export class GitHubFailure extends Failure {
  constructor(
    message: string,
    readonly status?: number,
    readonly rateLimitReset?: Date,
  ) {
    super(kindOfStatus(status, rateLimitReset !== undefined), message, status === undefined ? {} : { code: status });
  }
}

function kindOfStatus(status: number | undefined, rateLimited: boolean): FailureKind {
  if (status === undefined) return 'task';
  if (rateLimited || status === 0 || status === 429 || status >= 500) return 'network';
  if (status === 401 || status === 403) return 'auth';
  if (status === 404) return 'not-found';
  return 'task';
}

export interface FailureFacts {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | number | undefined>>;
  readonly detail: string;
}

export function rateLimitMessage(headers: FailureFacts['headers']): { message: string; reset?: Date } | undefined {
  const remaining = headers['x-ratelimit-remaining'];
  if (remaining === undefined || String(remaining) !== '0') return undefined;
  const resetSeconds = Number(headers['x-ratelimit-reset']);
  if (!Number.isFinite(resetSeconds) || resetSeconds <= 0) return { message: 'GitHub API rate limit exceeded' };
  const reset = new Date(resetSeconds * 1000);
  const minutes = Math.max(0, Math.ceil((reset.getTime() - Date.now()) / 60_000));
  return { message: `GitHub API rate limit exceeded; it resets at ${reset.toISOString()} (in ${minutes} min)`, reset };
}

/** One message per status a user handles differently: credentials, permissions, missing things. */
export function describeFailure(facts: FailureFacts, what: string, client: Pick<GitHubClient, 'owner' | 'repo' | 'apiUrl'>): GitHubFailure {
  const repo = `${client.owner}/${client.repo}`;
  const detail = facts.detail ? `: ${facts.detail}` : '';
  switch (facts.status) {
    case 0:
      return new GitHubFailure(
        `cannot reach the GitHub API at ${client.apiUrl}${facts.detail ? ` (${facts.detail})` : ''} while trying to ${what}; check GITHUB_API_URL (or release.apiUrl) and the network`,
        0,
      );
    case 401:
      return new GitHubFailure(`GitHub rejected the token (401) while trying to ${what}; check GITHUB_TOKEN / GH_TOKEN`, 401);
    case 403: {
      const limited = rateLimitMessage(facts.headers);
      if (limited) return new GitHubFailure(`${limited.message} (while trying to ${what})`, 403, limited.reset);
      return new GitHubFailure(`GitHub refused to ${what} in ${repo} (403)${detail}; the token needs contents: write on the repository`, 403);
    }
    case 429: {
      const limited = rateLimitMessage(facts.headers);
      return new GitHubFailure(`${limited?.message ?? 'GitHub API rate limit exceeded'} (while trying to ${what})`, 429, limited?.reset);
    }
    case 404:
      return new GitHubFailure(`not found (404) while trying to ${what} in ${repo}${detail}`, 404);
    default:
      return new GitHubFailure(`GitHub request failed (${facts.status || 'no response'}) while trying to ${what} in ${repo}${detail}`, facts.status);
  }
}

/** octokit's RequestError, recognised without loading octokit (its name is "HttpError"). */
function isRequestError(error: unknown): error is RequestError {
  return error instanceof Error && error.name === 'HttpError' && typeof (error as { status?: unknown }).status === 'number';
}

/** Turns whatever octokit threw into a GitHubFailure; the token never survives into the message. */
export function toGitHubFailure(error: unknown, what: string, client: Pick<GitHubClient, 'owner' | 'repo' | 'apiUrl' | 'redact'>): Error {
  if (isFailure(error)) return error;
  if (error instanceof Error && error.name === 'AbortError') return error;
  if (isRequestError(error)) {
    const data = error.response?.data as { message?: unknown } | undefined;
    const detail = typeof data?.message === 'string' ? data.message : error.status === 500 && !error.response ? error.message : '';
    const failure = describeFailure(
      { status: error.response ? error.status : 0, headers: error.response?.headers ?? {}, detail: client.redact(detail) },
      what,
      client,
    );
    return failure;
  }
  const message = error instanceof Error ? error.message : String(error);
  return new GitHubFailure(client.redact(`failed to ${what}: ${message}`));
}
