// The distribution API calls the OCI store makes, over the one HTTP layer (tasks/store/http):
// blobs (HEAD, ranged GET, upload, cross-repository mount), manifests (GET, PUT, DELETE by
// digest) and tag lists. Each call authorizes itself (auth.ts: one more try after a 401
// challenge), retries resets, 5xx and 429 with backoff, fails at once on a connection
// refused or a host that does not resolve, and turns the registry's answer into a
// Failure with a kind. Credentials never reach a message: every text that passed through a
// server is scrubbed of them.
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Failure } from '../../../src/index.ts';
import { apiFetch } from '../http/api-fetch.ts';
import { downloadRange, sendRange, TransferError } from '../http/http-transfer.ts';
import { type Action, RegistryAuth, type Scope } from './auth.ts';
import { type CredentialOptions, findCredential } from './credentials.ts';
import type { RegistryLocation } from './reference.ts';

export interface RegistryClientOptions extends CredentialOptions {
  /** Milliseconds per unit of backoff (attempt n waits n^2 units). */
  readonly retryBaseMs?: number;
  /** Attempts for one request before giving up. */
  readonly attempts?: number;
}

export interface Answer {
  readonly status: number;
  readonly headers: { get(name: string): string | null };
  readonly body: Buffer;
}

interface Call {
  readonly method: string;
  /** A path under the origin (`/v2/…`), or an absolute URL the registry gave (an upload location). */
  readonly target: string;
  readonly scope: Scope;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: Buffer;
  /** Statuses that are answers for the caller rather than failures (besides 2xx). */
  readonly answers?: readonly number[];
  /** What the call does, for messages: "read the manifest of acme/images/debian-12:latest". */
  readonly what: string;
  readonly signal: AbortSignal;
}

const MANIFEST_TYPES = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

/** Largest manifest accepted (the distribution spec's registries refuse more than 4 MiB). */
const MANIFEST_LIMIT = 4 * 1024 * 1024;

export class RegistryClient {
  readonly auth: RegistryAuth;
  private readonly attempts: number;
  private readonly retryBaseMs: number;

  constructor(
    readonly location: RegistryLocation,
    options: RegistryClientOptions,
  ) {
    this.attempts = options.attempts ?? 5;
    this.retryBaseMs = options.retryBaseMs ?? 250;
    this.auth = new RegistryAuth({
      origin: location.origin,
      host: location.host,
      credentialFor: (repository) => findCredential(location.host, repository, options),
    });
  }

  private url(target: string): URL {
    return target.startsWith('/') ? new URL(`${this.location.origin}${target}`) : new URL(target, this.location.origin);
  }

  /** Authorization for a request to `url`: only ever to the registry's own origin. */
  private async authorizationFor(url: URL, scope: Scope, signal: AbortSignal): Promise<string | undefined> {
    if (url.origin !== new URL(this.location.origin).origin) return undefined;
    return this.auth.authorization(scope, signal);
  }

  /** Runs one call with its auth retry and its retries of transient failures. */
  async call(call: Call): Promise<Answer> {
    const url = this.url(call.target);
    let challenged = false;
    for (let attempt = 1; ; attempt++) {
      call.signal.throwIfAborted();
      const authorization = await this.authorizationFor(url, call.scope, call.signal);
      let answer: Answer;
      try {
        const response = await apiFetch(url, {
          method: call.method,
          headers: { 'user-agent': 'pipeline-images', ...call.headers, ...(authorization ? { authorization } : {}) },
          ...(call.body ? { body: call.body } : {}),
          signal: call.signal,
          redirect: 'follow',
        });
        answer = { status: response.status, headers: response.headers, body: Buffer.from(await response.arrayBuffer()) };
      } catch (error) {
        if (call.signal.aborted) throw error;
        const failure = this.connectionFailure(error, call.what);
        if (failure.code === 'unreachable' || attempt >= this.attempts) throw failure;
        await this.backoff(attempt, undefined, call.signal);
        continue;
      }
      if (answer.status === 401 && !challenged && this.auth.challenged(answer.headers.get('www-authenticate'), authorization)) {
        challenged = true;
        attempt--;
        continue;
      }
      if ((answer.status >= 500 || answer.status === 429) && attempt < this.attempts && !call.answers?.includes(answer.status)) {
        await this.backoff(attempt, answer.headers.get('retry-after'), call.signal);
        continue;
      }
      if ((answer.status >= 200 && answer.status < 300) || call.answers?.includes(answer.status)) return answer;
      throw await this.failure(answer.status, answer.body.toString('utf8'), call.scope, call.what);
    }
  }

  private async backoff(attempt: number, retryAfter: string | null | undefined, signal: AbortSignal): Promise<void> {
    const asked = retryAfter && /^\d+$/.test(retryAfter) ? Math.min(Number(retryAfter), 60) * 1000 : 0;
    await sleep(Math.max(asked, attempt * attempt * this.retryBaseMs), undefined, { signal });
  }

  /** A failed connection: `unreachable` (refused, no such host) is final at once, anything else is worth retrying. */
  connectionFailure(error: unknown, what: string): Failure {
    const code = (error as NodeJS.ErrnoException | undefined)?.code ?? (error as { cause?: NodeJS.ErrnoException } | undefined)?.cause?.code;
    const message = this.auth.redact(error instanceof Error ? error.message : String(error));
    if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EAI_AGAIN' || /ECONNREFUSED|ENOTFOUND|EAI_AGAIN/.test(message)) {
      return new Failure('network', `cannot reach registry ${this.location.host} to ${what} (${code ?? message}): check release.registry and the network`, {
        code: 'unreachable',
      });
    }
    return new Failure('network', `${what} on ${this.location.host} failed: ${message}`);
  }

  /** The registry's error answer as a Failure: 401/403 `auth`, 404 `not-found`, others `network`. */
  async failure(status: number, body: string, scope: Scope, what: string): Promise<Failure> {
    if (status === 401) return this.auth.refusal(scope, what);
    const detail = this.auth.redact(registryErrors(body));
    if (status === 403) {
      return new Failure(
        'auth',
        `${this.location.host} denied the request to ${what}${detail ? ` (${detail})` : ''}: the login lacks access to ${scope.repository}`,
        {
          code: 403,
        },
      );
    }
    if (status === 404) return new Failure('not-found', `${what}: not found on ${this.location.host}${detail ? ` (${detail})` : ''}`, { code: 404 });
    return new Failure('network', `${what} on ${this.location.host} failed: HTTP ${status}${detail ? ` ${detail}` : ''}`, { code: status });
  }

  // Blobs.

  /** The blob's size when `repository` holds it, else undefined. */
  async blobSize(repository: string, digest: string, signal: AbortSignal): Promise<number | undefined> {
    const answer = await this.call({
      method: 'HEAD',
      target: `/v2/${repository}/blobs/${digest}`,
      scope: { repository, actions: ['pull'] },
      answers: [404],
      what: `look for blob ${digest.slice(0, 19)} in ${repository}`,
      signal,
    });
    if (answer.status === 404) return undefined;
    const length = Number(answer.headers.get('content-length'));
    return Number.isSafeInteger(length) ? length : undefined;
  }

  /** A small blob, verified against its digest (unless the caller verifies it, to say what it is). */
  async blob(repository: string, digest: string, limit: number, signal: AbortSignal, verify = true): Promise<Buffer> {
    const answer = await this.call({
      method: 'GET',
      target: `/v2/${repository}/blobs/${digest}`,
      scope: { repository, actions: ['pull'] },
      what: `read blob ${digest.slice(0, 19)} of ${repository}`,
      signal,
    });
    if (answer.body.length > limit) throw new Failure('integrity', `blob ${digest} of ${repository} is ${answer.body.length} bytes, more than ${limit}`);
    if (verify && digestOf(answer.body) !== digest) throw new Failure('integrity', `blob ${digest} of ${repository} does not match its digest`);
    return answer.body;
  }

  /**
   * Streams bytes [from, to) of a blob into `sink` (one attempt: the caller resumes). The
   * registry may redirect to blob storage; the redirect is followed without credentials.
   */
  async readBlobRange(options: {
    repository: string;
    digest: string;
    from: number;
    to: number;
    size: number;
    signal: AbortSignal;
    sink: (chunk: Buffer) => Promise<void> | void;
  }): Promise<void> {
    const { repository, digest, signal } = options;
    const scope: Scope = { repository, actions: ['pull'] };
    const url = this.url(`/v2/${repository}/blobs/${digest}`);
    for (let challenged = false; ; challenged = true) {
      const authorization = await this.authorizationFor(url, scope, signal);
      try {
        await downloadRange({
          url: url.href,
          authorization: authorization ?? '',
          from: options.from,
          ...(options.to < options.size ? { to: options.to } : {}),
          expected: options.to - options.from,
          signal,
          sink: options.sink,
        });
        return;
      } catch (error) {
        if (error instanceof TransferError && error.status === 401 && !challenged && this.auth.challenged(error.headers['www-authenticate'], authorization))
          continue;
        throw error;
      }
    }
  }

  /**
   * Mounts a blob from another repository of this registry. True when mounted; false when
   * the registry would not (it opened an upload session instead, which is left to expire).
   */
  async mountBlob(repository: string, digest: string, from: string, signal: AbortSignal): Promise<boolean> {
    const answer = await this.call({
      method: 'POST',
      target: `/v2/${repository}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`,
      scope: { repository, actions: ['pull', 'push'], mountFrom: from },
      headers: { 'content-length': '0' },
      answers: [202],
      what: `mount blob ${digest.slice(0, 19)} from ${from} into ${repository}`,
      signal,
    });
    return answer.status === 201;
  }

  /** Opens an upload session: its location, and the smallest chunk the registry takes, if it says. */
  async startUpload(repository: string, signal: AbortSignal): Promise<{ location: string; minChunk?: number }> {
    const answer = await this.call({
      method: 'POST',
      target: `/v2/${repository}/blobs/uploads/`,
      scope: { repository, actions: ['pull', 'push'] },
      headers: { 'content-length': '0' },
      what: `start an upload to ${repository}`,
      signal,
    });
    const location = answer.headers.get('location');
    if (!location) throw new Failure('network', `${this.location.host} opened an upload to ${repository} without a Location`);
    const min = Number(answer.headers.get('oci-chunk-min-length'));
    return { location: this.url(location).href, ...(Number.isSafeInteger(min) && min > 0 ? { minChunk: min } : {}) };
  }

  /**
   * One request of an upload session with a file range as its body (PUT or PATCH). Returns
   * the answer whatever its status; a connection failure throws a TransferError.
   */
  async sendUploadRange(options: {
    repository: string;
    method: 'PUT' | 'PATCH';
    location: string;
    headers: Readonly<Record<string, string>>;
    path: string;
    start: number;
    length: number;
    signal: AbortSignal;
    onProgress?: (sent: number) => void;
  }): Promise<{ status: number; headers: Readonly<Record<string, string | undefined>>; body: string }> {
    const url = new URL(options.location);
    const scope: Scope = { repository: options.repository, actions: ['pull', 'push'] };
    const authorization = await this.authorizationFor(url, scope, options.signal);
    return sendRange({
      url: url.href,
      method: options.method,
      headers: { 'user-agent': 'pipeline-images', 'content-type': 'application/octet-stream', ...options.headers, ...(authorization ? { authorization } : {}) },
      path: options.path,
      start: options.start,
      length: options.length,
      signal: options.signal,
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
  }

  /** Resolves a relative Location an upload answer gave. */
  resolve(location: string): string {
    return this.url(location).href;
  }

  // Manifests.

  async manifest(repository: string, reference: string, signal: AbortSignal): Promise<{ bytes: Buffer; digest: string; mediaType: string } | undefined> {
    const answer = await this.call({
      method: 'GET',
      target: `/v2/${repository}/manifests/${reference}`,
      scope: { repository, actions: ['pull'] },
      headers: { accept: MANIFEST_TYPES },
      answers: [404],
      what: `read manifest ${repository}:${reference}`,
      signal,
    });
    if (answer.status === 404) return undefined;
    if (answer.body.length > MANIFEST_LIMIT) throw new Failure('integrity', `manifest ${repository}:${reference} is larger than ${MANIFEST_LIMIT} bytes`);
    const digest = digestOf(answer.body);
    // A registry names the digest it served; by digest it must be that one.
    if (reference.startsWith('sha256:') && digest !== reference)
      throw new Failure('integrity', `manifest ${repository}@${reference} does not match its digest`);
    return { bytes: answer.body, digest, mediaType: answer.headers.get('content-type')?.split(';')[0]?.trim() ?? '' };
  }

  /** The digest a tag points at, without the body (HEAD), or undefined. */
  async manifestDigest(repository: string, reference: string, signal: AbortSignal): Promise<string | undefined> {
    const answer = await this.call({
      method: 'HEAD',
      target: `/v2/${repository}/manifests/${reference}`,
      scope: { repository, actions: ['pull'] },
      headers: { accept: MANIFEST_TYPES },
      answers: [404],
      what: `look for manifest ${repository}:${reference}`,
      signal,
    });
    if (answer.status === 404) return undefined;
    return answer.headers.get('docker-content-digest') ?? (await this.manifest(repository, reference, signal))?.digest;
  }

  /**
   * Writes a manifest; returns its digest.
   *
   * The registry refuses a manifest that names a blob it cannot find (MANIFEST_BLOB_UNKNOWN),
   * and that refusal is not final. Distribution 2.8 on a filesystem rewrites a repository's
   * link to a blob in place (truncated, then written) at every upload or mount of that blob,
   * even one it already holds, so a manifest checked while another writer commits one of its
   * blobs finds the link empty and is refused (DIGEST_INVALID beside MANIFEST_BLOB_UNKNOWN)
   * although the blob is there. A blob may also truly go between its HEAD and this PUT (the
   * registry's garbage collection). So such a refusal calls `restoreBlobs` with the digests
   * the registry named (it looks for them and puts back what is missing), and the PUT is
   * tried again after a backoff, up to the client's attempts.
   */
  async putManifest(
    repository: string,
    reference: string,
    bytes: Buffer,
    mediaType: string,
    signal: AbortSignal,
    restoreBlobs?: (digests: readonly string[]) => Promise<void>,
  ): Promise<string> {
    const scope: Scope = { repository, actions: ['pull', 'push'] };
    const what = `write manifest ${repository}:${reference}`;
    for (let attempt = 1; ; attempt++) {
      const answer = await this.call({
        method: 'PUT',
        target: `/v2/${repository}/manifests/${reference}`,
        scope,
        headers: { 'content-type': mediaType },
        body: bytes,
        answers: [400, 404],
        what,
        signal,
      });
      if (answer.status >= 200 && answer.status < 300) return digestOf(bytes);
      const unknown = unknownBlobs(answer.body.toString('utf8'));
      if (!unknown || attempt >= this.attempts) throw await this.failure(answer.status, answer.body.toString('utf8'), scope, what);
      await this.backoff(attempt, undefined, signal);
      await restoreBlobs?.(unknown);
    }
  }

  /**
   * Deletes a manifest by digest (and with it every tag pointing at it); `gone` when it was
   * not there; `unsupported` when the registry refuses deletes through its API (405: GHCR,
   * Docker Hub, a distribution without storage.delete.enabled).
   */
  async deleteManifest(repository: string, digest: string, signal: AbortSignal): Promise<'deleted' | 'gone' | 'unsupported'> {
    const answer = await this.call({
      method: 'DELETE',
      target: `/v2/${repository}/manifests/${digest}`,
      scope: { repository, actions: ['pull', 'push', 'delete'] as Action[] },
      answers: [404, 405],
      what: `delete manifest ${repository}@${digest.slice(0, 19)}`,
      signal,
    });
    if (answer.status === 405) return 'unsupported';
    return answer.status === 404 ? 'gone' : 'deleted';
  }

  /** Every tag of a repository (following the Link pages); empty when the repository does not exist. */
  async tags(repository: string, signal: AbortSignal): Promise<string[]> {
    const tags: string[] = [];
    let target: string | undefined = `/v2/${repository}/tags/list?n=1000`;
    for (let page = 0; target && page < 1000; page++) {
      const answer = await this.call({
        method: 'GET',
        target,
        scope: { repository, actions: ['pull'] },
        answers: [404],
        what: `list the tags of ${repository}`,
        signal,
      });
      if (answer.status === 404) return tags;
      let parsed: { tags?: unknown };
      try {
        parsed = JSON.parse(answer.body.toString('utf8')) as typeof parsed;
      } catch {
        throw new Failure('network', `${this.location.host} answered the tag list of ${repository} with something that is not JSON`);
      }
      if (Array.isArray(parsed.tags)) for (const tag of parsed.tags) if (typeof tag === 'string') tags.push(tag);
      const next = /<([^>]+)>\s*;\s*rel="?next"?/.exec(answer.headers.get('link') ?? '');
      target = next ? this.url(next[1]!).href : undefined;
      if (target && new URL(target).origin !== new URL(this.location.origin).origin) target = undefined;
    }
    return tags;
  }
}

export function digestOf(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/**
 * The digests of the blobs a refused manifest PUT names as unknown (`MANIFEST_BLOB_UNKNOWN`,
 * or `BLOB_UNKNOWN` from older registries; the digest is the error's detail, empty when it
 * names none), or undefined when the refusal is for something else.
 */
function unknownBlobs(body: string): string[] | undefined {
  let errors: Array<{ code?: unknown; detail?: unknown }>;
  try {
    errors = (JSON.parse(body) as { errors?: typeof errors }).errors ?? [];
  } catch {
    return undefined;
  }
  if (!Array.isArray(errors)) return undefined;
  const unknown = errors.filter((error) => error?.code === 'MANIFEST_BLOB_UNKNOWN' || error?.code === 'BLOB_UNKNOWN');
  if (!unknown.length) return undefined;
  const digests = unknown.map(({ detail }) => (typeof detail === 'string' ? detail : (detail as { digest?: unknown } | undefined)?.digest));
  return [...new Set(digests.filter((digest): digest is string => typeof digest === 'string' && /^sha256:[0-9a-f]{64}$/.test(digest)))];
}

/** `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"…"}]}` -> `MANIFEST_UNKNOWN: …`, short. */
function registryErrors(body: string): string {
  try {
    const parsed = JSON.parse(body) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    return (parsed.errors ?? [])
      .slice(0, 3)
      .map((error) => [error.code, error.message].filter((part) => typeof part === 'string' && part).join(': '))
      .filter(Boolean)
      .join('; ')
      .slice(0, 300);
  } catch {
    return body.trim().slice(0, 120);
  }
}
