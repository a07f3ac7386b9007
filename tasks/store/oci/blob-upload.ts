// Puts one blob (a byte range of a file) into a repository, sending as few bytes as the
// registry allows: none when it holds the blob (HEAD), none when another repository of the
// registry holds it (a cross-repository mount), else the range streamed from the disk:
//
// - monolithic by default: POST opens a session, one PUT ?digest= carries every byte with
//   its Content-Length;
// - in PATCH chunks when the registry asks for them: an `OCI-Chunk-Min-Length` on the
//   session, or a 413 (too large) or 416 answer to the monolithic PUT; each chunk says its
//   Content-Range, and a chunk the registry did not take whole is resent from where the
//   session's Range says it stopped; a PUT ?digest= with no body closes the session.
//
// The registry checks the digest when the session closes, so a blob is either whole under
// its digest or not there at all; an abandoned session is the registry's to expire.
import { setTimeout as sleep } from 'node:timers/promises';
import { Failure } from '../../../src/index.ts';
import { TransferError } from '../http/http-transfer.ts';
import { digestOf, type RegistryClient } from './registry-client.ts';

/** Chunk size when the registry asks for chunks and names no larger minimum. */
export const DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024;

export interface BlobToPush {
  readonly repository: string;
  readonly digest: string;
  readonly path: string;
  readonly start: number;
  readonly length: number;
  /** Other repositories of this registry that may hold the blob (tried as mount sources). */
  readonly mountFrom?: readonly string[];
  readonly signal: AbortSignal;
  readonly onProgress?: (sent: number) => void;
}

export interface UploadTuning {
  /** Bytes per PATCH when chunks are needed. */
  readonly chunkBytes?: number;
  /** Attempts at a blob (each a new session, or a resumed one) before giving up. */
  readonly attempts?: number;
  readonly retryBaseMs?: number;
}

export type PushOutcome = 'present' | 'mounted' | 'uploaded';

export async function pushBlob(client: RegistryClient, blob: BlobToPush, tuning: UploadTuning = {}): Promise<PushOutcome> {
  const { repository, digest, signal } = blob;
  if ((await client.blobSize(repository, digest, signal)) === blob.length) return 'present';
  for (const from of blob.mountFrom ?? []) {
    if (from !== repository && (await client.mountBlob(repository, digest, from, signal).catch(() => false))) return 'mounted';
  }
  const attempts = tuning.attempts ?? 5;
  let chunked = false;
  let lastError: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    signal.throwIfAborted();
    try {
      const session = await client.startUpload(repository, signal);
      if (session.minChunk !== undefined) chunked = true;
      if (!chunked) {
        const outcome = await putWhole(client, blob, session.location);
        if (outcome === 'done') return 'uploaded';
        chunked = true; // 413/416: this registry wants chunks; a new session sends them
        attempt--;
        continue;
      }
      const chunkBytes = Math.max(session.minChunk ?? 0, tuning.chunkBytes ?? DEFAULT_CHUNK_BYTES);
      await putChunked(client, blob, session.location, chunkBytes);
      return 'uploaded';
    } catch (error) {
      if (!isRetryable(error) || attempt === attempts) throw asFailure(client, error, blob);
      lastError = error;
      blob.onProgress?.(0);
      // The previous session may have finished just before its answer was lost.
      if ((await client.blobSize(repository, digest, signal).catch(() => undefined)) === blob.length) return 'uploaded';
      await sleep(attempt * attempt * (tuning.retryBaseMs ?? 250), undefined, { signal });
    }
  }
  throw asFailure(client, lastError, blob);
}

function closingUrl(location: string, digest: string): string {
  const url = new URL(location);
  url.searchParams.set('digest', digest);
  return url.href;
}

/** One PUT with every byte; 'chunks' when the registry refused it for its size. */
async function putWhole(client: RegistryClient, blob: BlobToPush, location: string): Promise<'done' | 'chunks'> {
  const answer = await client.sendUploadRange({
    repository: blob.repository,
    method: 'PUT',
    location: closingUrl(location, blob.digest),
    headers: {},
    path: blob.path,
    start: blob.start,
    length: blob.length,
    signal: blob.signal,
    ...(blob.onProgress ? { onProgress: blob.onProgress } : {}),
  });
  if (answer.status === 201) return checkDigest(blob, answer.headers['docker-content-digest']);
  if (answer.status === 413 || answer.status === 416) return 'chunks';
  throw new TransferError(`upload of blob ${blob.digest.slice(0, 19)} answered HTTP ${answer.status}`, answer.status, answer.headers, answer.body);
}

async function putChunked(client: RegistryClient, blob: BlobToPush, firstLocation: string, chunkBytes: number): Promise<void> {
  let location = firstLocation;
  let offset = 0;
  let resyncs = 0;
  while (offset < blob.length) {
    const length = Math.min(chunkBytes, blob.length - offset);
    const base = offset;
    const answer = await client.sendUploadRange({
      repository: blob.repository,
      method: 'PATCH',
      location,
      headers: { 'content-range': `${offset}-${offset + length - 1}` },
      path: blob.path,
      start: blob.start + offset,
      length,
      signal: blob.signal,
      onProgress: (sent) => blob.onProgress?.(base + sent),
    });
    if (answer.headers.location) location = client.resolve(answer.headers.location);
    if (answer.status === 202) {
      offset = rangeEnd(answer.headers.range) ?? offset + length;
      continue;
    }
    if (answer.status === 416 && resyncs++ < 3) {
      // The session holds a different amount than we thought: go on from what it holds.
      offset = await sessionOffset(client, blob, location);
      continue;
    }
    throw new TransferError(
      `chunk ${offset}-${offset + length - 1} of blob ${blob.digest.slice(0, 19)} answered HTTP ${answer.status}`,
      answer.status,
      answer.headers,
      answer.body,
    );
  }
  const closed = await client.sendUploadRange({
    repository: blob.repository,
    method: 'PUT',
    location: closingUrl(location, blob.digest),
    headers: {},
    path: blob.path,
    start: 0,
    length: 0,
    signal: blob.signal,
  });
  if (closed.status !== 201) {
    throw new TransferError(
      `closing the upload of blob ${blob.digest.slice(0, 19)} answered HTTP ${closed.status}`,
      closed.status,
      closed.headers,
      closed.body,
    );
  }
  checkDigest(blob, closed.headers['docker-content-digest']);
}

/** `Range: 0-1023` -> 1024 (bytes the session holds). */
function rangeEnd(range: string | undefined): number | undefined {
  const match = /^(?:bytes=)?0-(\d+)$/.exec(range?.trim() ?? '');
  return match ? Number(match[1]) + 1 : undefined;
}

async function sessionOffset(client: RegistryClient, blob: BlobToPush, location: string): Promise<number> {
  const answer = await client.call({
    method: 'GET',
    target: location,
    scope: { repository: blob.repository, actions: ['pull', 'push'] },
    what: `read the state of an upload to ${blob.repository}`,
    signal: blob.signal,
  });
  return rangeEnd(answer.headers.get('range') ?? undefined) ?? 0;
}

function checkDigest(blob: BlobToPush, answered: string | undefined): 'done' {
  if (answered && answered !== blob.digest) {
    throw new Failure('integrity', `${blob.repository} stored blob ${answered} for ${blob.digest}: the bytes changed while they were sent`);
  }
  return 'done';
}

function isRetryable(error: unknown): boolean {
  if (error instanceof TransferError) return error.retryable;
  return error instanceof Failure && error.kind === 'network' && error.code !== 'unreachable';
}

function asFailure(client: RegistryClient, error: unknown, blob: BlobToPush): unknown {
  if (!(error instanceof TransferError)) return error;
  const what = `upload blob ${blob.digest.slice(0, 19)} to ${blob.repository}`;
  if (error.status === 0) return client.connectionFailure(error, what);
  return new Failure('network', client.auth.redact(`${what} failed: ${error.message}`), { code: error.status });
}

/** How to put each blob of a manifest back, by digest (see RegistryClient.putManifest). */
export type BlobRestorers = ReadonlyMap<string, () => Promise<unknown>>;

/**
 * A manifest PUT's `restoreBlobs`: puts back the blobs the registry named (every blob of
 * the manifest when it named none it knows), one after another. Each restorer looks first
 * (HEAD), so a blob that is there costs one request and sends nothing.
 */
export function restoring(restorers: BlobRestorers): (digests: readonly string[]) => Promise<void> {
  return async (digests) => {
    const named = digests.filter((digest) => restorers.has(digest));
    for (const digest of named.length ? named : [...restorers.keys()]) await restorers.get(digest)!();
  };
}

/** Puts a small blob held in memory (images.json, an attachment); returns its digest. */
export async function pushBytes(client: RegistryClient, repository: string, bytes: Buffer, signal: AbortSignal): Promise<string> {
  const digest = digestOf(bytes);
  if ((await client.blobSize(repository, digest, signal)) === bytes.length) return digest;
  const session = await client.startUpload(repository, signal);
  const scope = { repository, actions: ['pull', 'push'] as const };
  const what = `upload blob ${digest.slice(0, 19)} to ${repository}`;
  let location = session.location;
  if (session.minChunk === undefined) {
    const whole = await client.call({
      method: 'PUT',
      target: closingUrl(location, digest),
      scope: { ...scope, actions: [...scope.actions] },
      headers: { 'content-type': 'application/octet-stream' },
      body: bytes,
      answers: [413, 416],
      what,
      signal,
    });
    if (whole.status === 201) return digest;
    location = (await client.startUpload(repository, signal)).location;
  }
  // The only chunk is the last one, which may be smaller than the registry's minimum.
  const chunk = await client.call({
    method: 'PATCH',
    target: location,
    scope: { ...scope, actions: [...scope.actions] },
    headers: { 'content-type': 'application/octet-stream', 'content-range': `0-${bytes.length - 1}` },
    body: bytes,
    what,
    signal,
  });
  await client.call({
    method: 'PUT',
    target: closingUrl(client.resolve(chunk.headers.get('location') ?? location), digest),
    scope: { ...scope, actions: [...scope.actions] },
    headers: { 'content-length': '0' },
    what,
    signal,
  });
  return digest;
}
