// Asset bodies outside octokit: octokit buffers response bodies and would resend a
// consumed request stream on retry. Here an upload body is a fresh read stream over a byte
// range each attempt (node:http), and a download's body streams from the socket to the
// sink (http-get: no per-chunk copy).
// One function = one attempt; the callers own retries (they know what to clean up first).
import { createReadStream } from 'node:fs';
import http, { type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type BodySink, type GetResponse, type GetResult, getFollowingRedirects } from './http-get.ts';
import { connectDeadline, isUnreachable } from './reach.ts';

export class TransferError extends Error {
  override readonly name = 'TransferError';
  constructor(
    message: string,
    /** HTTP status, or 0 when the connection failed before a response. */
    readonly status: number,
    readonly headers: Readonly<Record<string, string | undefined>> = {},
    readonly body = '',
  ) {
    super(message);
  }
  /** Set when nothing answered at the address (refused, no such name, no connection in time): not worth retrying. */
  unreachable = false;
  /** Network failures, 5xx and 429 are worth another attempt; other statuses are answers, and a host out of reach is one too. */
  get retryable(): boolean {
    return !this.unreachable && (this.status === 0 || this.status >= 500 || this.status === 429);
  }
}

function send(url: URL, method: string, headers: OutgoingHttpHeaders, signal: AbortSignal): http.ClientRequest {
  const transport = url.protocol === 'https:' ? https : url.protocol === 'http:' ? http : undefined;
  if (!transport) throw new TransferError(`unsupported URL scheme in ${url.origin}`, 0);
  const request = transport.request(url, { method, headers, signal });
  connectDeadline(request, url);
  return request;
}

function responseOf(request: http.ClientRequest): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    request.once('response', resolve);
    request.once('error', (error) => reject(asTransferError(error)));
  });
}

function asTransferError(error: unknown): Error {
  if (error instanceof TransferError) return error;
  if (error instanceof Error && error.name === 'AbortError') return error;
  const message = error instanceof Error ? error.message : String(error);
  const failure = new TransferError(`connection failed: ${message}`, 0);
  failure.unreachable = isUnreachable(error);
  return failure;
}

async function readText(response: IncomingMessage, limit = 64 * 1024): Promise<string> {
  let text = '';
  for await (const chunk of response) {
    if (text.length < limit) text += String(chunk);
  }
  return text.slice(0, limit);
}

function flatHeaders(response: IncomingMessage): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [key, value] of Object.entries(response.headers)) out[key] = Array.isArray(value) ? value.join(', ') : value;
  return out;
}

function declaredLength(headers: Readonly<Record<string, string>>): number | undefined {
  const value = headers['content-length'];
  return value !== undefined && /^\d+$/.test(value) ? Number(value) : undefined;
}

function failureOf(status: number, headers: Readonly<Record<string, string | undefined>>, body: string, what: string): TransferError {
  let detail = '';
  try {
    const parsed = JSON.parse(body) as { message?: unknown; errors?: Array<{ code?: unknown }> };
    detail = typeof parsed.message === 'string' ? parsed.message : '';
    const code = parsed.errors?.[0]?.code;
    if (typeof code === 'string') detail += ` (${code})`;
  } catch {
    detail = body.slice(0, 200);
  }
  return new TransferError(`${what}: HTTP ${status}${detail ? ` ${detail}` : ''}`, status, headers, body);
}

export interface UploadRangeRequest {
  readonly url: string;
  readonly authorization: string;
  readonly path: string;
  /** First byte of the range. */
  readonly start: number;
  /** Bytes in the range. */
  readonly length: number;
  readonly contentType?: string;
  readonly signal: AbortSignal;
  /** Bytes of this attempt sent so far. */
  readonly onProgress?: (sent: number) => void;
}

/** POSTs bytes [start, start+length) of a file; resolves with the parsed JSON response. */
export async function uploadRange(request: UploadRangeRequest): Promise<unknown> {
  const answer = await sendRange({
    url: request.url,
    method: 'POST',
    headers: {
      authorization: request.authorization,
      accept: 'application/vnd.github+json',
      'content-type': request.contentType ?? 'application/octet-stream',
      'user-agent': 'pipeline-images',
    },
    path: request.path,
    start: request.start,
    length: request.length,
    signal: request.signal,
    ...(request.onProgress ? { onProgress: request.onProgress } : {}),
    bodyLimit: 1024 * 1024,
  });
  if (answer.status >= 300) {
    const name = new URL(request.url).searchParams.get('name') ?? 'asset';
    throw failureOf(answer.status, answer.headers, answer.body, `upload of ${name} failed`);
  }
  try {
    return JSON.parse(answer.body) as unknown;
  } catch {
    throw new TransferError('upload response was not JSON', answer.status);
  }
}

export interface SendRangeRequest {
  readonly url: string;
  /** PUT or PATCH (a registry's blob upload), or POST. */
  readonly method: string;
  /** Sent as they are: the caller adds Authorization only for the origin it belongs to. */
  readonly headers: Readonly<Record<string, string>>;
  readonly path: string;
  readonly start: number;
  readonly length: number;
  readonly signal: AbortSignal;
  /** Bytes of this attempt sent so far. */
  readonly onProgress?: (sent: number) => void;
  /** How much of the answer's body to keep (default 64 KiB). */
  readonly bodyLimit?: number;
}

export interface SentRange {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | undefined>>;
  /** The answer's body, at most `bodyLimit` of it (registries answer uploads with little or nothing). */
  readonly body: string;
}

/**
 * Sends bytes [start, start+length) of a file as a request body with Content-Length,
 * streamed from the disk (never held in memory), and returns the answer whatever its
 * status: the caller reads the protocol's meaning into it. Throws a TransferError with
 * status 0 when the connection fails, or when the body could not be sent whole and the
 * server gave no answer.
 */
export async function sendRange(request: SendRangeRequest): Promise<SentRange> {
  const url = new URL(request.url);
  const outgoing = send(url, request.method, { ...request.headers, 'content-length': String(request.length) }, request.signal);
  const responded = responseOf(outgoing);
  responded.catch(() => {});
  let sent = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      sent += chunk.length;
      request.onProgress?.(sent);
      callback(null, chunk);
    },
  });
  if (request.length === 0) outgoing.end();
  const body =
    request.length === 0
      ? Promise.resolve()
      : pipeline(
          createReadStream(request.path, { start: request.start, end: request.start + request.length - 1, highWaterMark: 256 * 1024 }),
          counter,
          outgoing,
        );
  const [bodyResult, response] = await Promise.allSettled([body, responded]);
  if (response.status === 'rejected') throw asTransferError(response.reason);
  const answer = response.value;
  const text = await readText(answer, request.bodyLimit).catch(() => '');
  // An answer that came before the whole body went (an error status) is still the answer.
  if (bodyResult.status === 'rejected' && (answer.statusCode ?? 0) < 300) throw asTransferError(bodyResult.reason);
  return { status: answer.statusCode ?? 0, headers: flatHeaders(answer), body: text };
}

export interface DownloadRangeRequest {
  readonly url: string;
  /** Sent to `url`'s origin only (redirect targets elsewhere are pre-signed); none for an anonymous read. */
  readonly authorization?: string;
  /** Absolute offset within the asset to start at (HTTP Range); 0 for the whole asset. */
  readonly from: number;
  /** Exclusive end of the range; the rest of the asset when absent. */
  readonly to?: number;
  /** Bytes expected from `from` to the end of the asset, when known. */
  readonly expected?: number;
  /** Accept header (default application/octet-stream). */
  readonly accept?: string;
  readonly signal: AbortSignal;
  /**
   * Receives each chunk in order; while the promise it may return is pending the socket
   * waits, so a slow disk slows the socket (backpressure). What it throws is thrown as it
   * is (never retried as a network failure).
   */
  readonly sink: BodySink;
  readonly maxRedirects?: number;
  /** Hears where the bytes came from, when a redirect led elsewhere (a pre-signed storage URL the caller may read again). */
  readonly onRedirected?: (url: URL) => void;
}

/**
 * GETs an asset with `Accept: application/octet-stream`, following redirects so that the
 * Authorization header goes only to the API's origin (GitHub redirects to signed storage
 * URLs that reject it). Throws a retryable TransferError when the body ends short.
 */
export async function downloadRange(request: DownloadRangeRequest): Promise<number> {
  const headers: Record<string, string> = { accept: request.accept ?? 'application/octet-stream', 'user-agent': 'pipeline-images' };
  // Redirect targets are pre-signed storage URLs: the token goes to the API only.
  if (request.authorization) headers.authorization = request.authorization;
  const ranged = request.from > 0 || request.to !== undefined;
  if (ranged) headers.range = `bytes=${request.from}-${request.to !== undefined ? request.to - 1 : ''}`;
  const outcome: RangeOutcome = { errorText: '', sinkFailed: false };
  let result: GetResult;
  let finalUrl: URL | undefined;
  try {
    result = await getFollowingRedirects({
      url: new URL(request.url),
      headers,
      signal: request.signal,
      // A bounded range is one of many of the same origin (a seeded fetch's ranged reads, a registry's tapered ranges).
      keepAlive: request.to !== undefined,
      credentialsFollow: 'never',
      ...(request.maxRedirects !== undefined ? { maxRedirects: request.maxRedirects } : {}),
      onFinalUrl: (url) => (finalUrl = url),
      onResponse: (response) => {
        // As soon as the head is in: reads started meanwhile can go straight there too.
        if ((response.status === 200 || response.status === 206) && finalUrl && finalUrl.href !== request.url) request.onRedirected?.(finalUrl);
        return rangeResponder(request, ranged, outcome)(response);
      },
    });
  } catch (error) {
    // The sink's own failures (a full disk, bytes past the end) are not the network's.
    if (outcome.sinkFailed) throw error;
    throw asTransferError(error);
  }
  if (outcome.refusal) throw outcome.refusal;
  const { status } = result;
  if (status !== 200 && status !== 206) throw failureOf(status, result.headers, outcome.errorText, 'download failed');
  const wanted = result.declared ?? request.expected;
  if (!result.complete || (wanted !== undefined && result.received < wanted)) {
    throw new TransferError(`download ended after ${result.received} of ${wanted ?? 'more'} bytes`, 0);
  }
  return result.received;
}

/** What a ranged GET's answer came to, besides its body: a refused range, an error body, a sink that failed. */
interface RangeOutcome {
  refusal?: TransferError;
  errorText: string;
  sinkFailed: boolean;
}

/**
 * Reads the final answer's head: the body goes to the request's sink when it holds the
 * bytes asked for, to `outcome.errorText` when it is an error, and nowhere when the server
 * refused or ignored the range (`outcome.refusal`, a 416 the caller restarts from).
 */
function rangeResponder(request: DownloadRangeRequest, ranged: boolean, outcome: RangeOutcome): (response: GetResponse) => BodySink | undefined {
  return ({ status, headers }) => {
    if (status === 416) {
      outcome.refusal = new TransferError('server rejected the resume range', 416);
      return undefined;
    }
    if (status !== 200 && status !== 206) {
      // The error body (GitHub's JSON message), kept short.
      return async (chunk) => {
        if (outcome.errorText.length < 64 * 1024) outcome.errorText += chunk.toString('utf8');
      };
    }
    if (ranged && status !== 206 && !(request.from === 0 && request.to !== undefined && declaredLength(headers) === request.to)) {
      // The server ignored the range; the caller restarts the asset from its first byte.
      outcome.refusal = new TransferError('server ignored the resume range', 416);
      return undefined;
    }
    return (chunk) => {
      const marked = (error: unknown) => {
        outcome.sinkFailed = true;
        throw error;
      };
      try {
        return request.sink(chunk)?.catch(marked);
      } catch (error) {
        return marked(error);
      }
    };
  };
}
