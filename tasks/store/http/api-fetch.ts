// The `fetch` octokit makes its API requests with, on node:http. Node's own fetch is
// undici, bundled in Node but loaded and compiled on first use: about 40 MiB of peak RSS
// (its HTTP parser is WebAssembly, compiled on background threads) to read a few JSON
// answers, more than a multi-gigabyte download needs for itself. Only what octokit's
// request uses is here: method, headers, a string or byte body, a signal, redirects;
// the answer's status, headers and whole body.
//
// Retries live here too (octokit's own retry plugin stays off): a reset or a 5xx is tried
// again with backoff, but a host that refuses the connection, a name that does not
// resolve, or a connection not made within CONNECT_TIMEOUT_MS fails at once, so a store
// out of reach is said in seconds rather than after a minute of backoff.
import http from 'node:http';
import https from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectDeadline, isUnreachable } from './reach.ts';

export interface ApiFetchInit {
  readonly method?: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string | Uint8Array | null;
  readonly signal?: AbortSignal | null;
  readonly redirect?: 'follow' | 'manual' | 'error';
}

/** The part of a fetch Response that octokit reads. */
export interface ApiResponse {
  readonly status: number;
  readonly statusText: string;
  readonly ok: boolean;
  readonly url: string;
  readonly redirected: boolean;
  readonly headers: ApiHeaders;
  text(): Promise<string>;
  json(): Promise<unknown>;
  arrayBuffer(): Promise<ArrayBuffer>;
}

/** Lower-case names; repeated headers joined with ", " as fetch joins them. */
export class ApiHeaders {
  private readonly map: Map<string, string>;
  constructor(entries: Iterable<[string, string]>) {
    this.map = new Map([...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }
  get(name: string): string | null {
    return this.map.get(name.toLowerCase()) ?? null;
  }
  has(name: string): boolean {
    return this.map.has(name.toLowerCase());
  }
  forEach(callback: (value: string, name: string) => void): void {
    for (const [name, value] of this.map) callback(value, name);
  }
  entries(): IterableIterator<[string, string]> {
    return this.map.entries();
  }
  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.map.entries();
  }
}

export interface RetryPolicy {
  /** Milliseconds per unit of backoff: attempt n+1 waits n^2 units (as octokit's retry plugin did). */
  readonly retryBaseMs?: number;
  /** Attempts after the first (default 3). */
  readonly retries?: number;
}

/** Statuses worth another attempt: the server's trouble, not an answer about the request. */
const RETRIED_STATUSES = new Set([500, 502, 503, 504]);

/** A fetch for octokit that retries resets and 5xx answers (rate limits are the throttling plugin's). */
export function retryingApiFetch(policy: RetryPolicy = {}): (input: string | URL, init?: ApiFetchInit) => Promise<ApiResponse> {
  const base = policy.retryBaseMs ?? 1000;
  const retries = policy.retries ?? 3;
  return async (input, init = {}) => {
    for (let attempt = 0; ; attempt++) {
      const last = attempt >= retries;
      try {
        const answer = await apiFetch(input, init);
        if (last || !RETRIED_STATUSES.has(answer.status)) return answer;
      } catch (error) {
        if (last || isUnreachable(error) || init.signal?.aborted) throw error;
      }
      await sleep((attempt + 1) ** 2 * base, undefined, init.signal ? { signal: init.signal } : {});
    }
  };
}

const MAX_REDIRECTS = 20;
/** A server that sends nothing for this long on an open request is given up on (undici's default). */
const IDLE_MS = 300_000;

export async function apiFetch(input: string | URL, init: ApiFetchInit = {}): Promise<ApiResponse> {
  let url = new URL(input);
  let method = (init.method ?? 'GET').toUpperCase();
  let body = init.body ?? undefined;
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(init.headers ?? {})) headers[name.toLowerCase()] = value;
  for (let hop = 0; ; hop++) {
    const answer = await send(url, method, headers, body, init.signal ?? undefined);
    const location = answer.headers.get('location');
    if (answer.status < 300 || answer.status >= 400 || answer.status === 304 || !location || init.redirect === 'manual') {
      return response(answer, url, hop > 0);
    }
    if (init.redirect === 'error') throw new TypeError(`redirect to ${new URL(location, url).origin} refused`);
    if (hop === MAX_REDIRECTS) throw new TypeError('too many redirects');
    const next = new URL(location, url);
    // As fetch does: credentials stay with their origin, and a 303 (or a POST's 301/302) becomes a GET.
    if (next.origin !== url.origin) delete headers.authorization;
    if (answer.status === 303 || ((answer.status === 301 || answer.status === 302) && method === 'POST')) {
      if (method !== 'HEAD') method = 'GET';
      body = undefined;
      delete headers['content-type'];
      delete headers['content-length'];
    }
    url = next;
  }
}

interface RawAnswer {
  readonly status: number;
  readonly statusText: string;
  readonly headers: ApiHeaders;
  readonly body: Buffer;
}

function send(
  url: URL,
  method: string,
  headers: Record<string, string>,
  body: string | Uint8Array | undefined,
  signal: AbortSignal | undefined,
): Promise<RawAnswer> {
  const transport = url.protocol === 'https:' ? https : url.protocol === 'http:' ? http : undefined;
  if (!transport) return Promise.reject(new TypeError(`unsupported URL scheme in ${url.origin}`));
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    // As fetch does, an abort rejects with the signal's reason (an AbortError, or a TimeoutError).
    const onAbort = () => outgoing.destroy(signal!.reason);
    const fail = (error: unknown) => {
      stopDeadline();
      signal?.removeEventListener('abort', onAbort);
      reject(signal?.aborted ? signal.reason : error);
    };
    const outgoing = transport.request(url, { method, headers }, (incoming) => {
      stopDeadline();
      const chunks: Buffer[] = [];
      incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
      const cutShort = (cause?: Error) => fail(new Error(`the answer from ${url.origin} was cut short${cause ? ` (${cause.message})` : ''}`));
      incoming.on('error', cutShort);
      incoming.on('close', () => {
        if (!incoming.complete) cutShort();
      });
      incoming.on('end', () => {
        signal?.removeEventListener('abort', onAbort);
        const merged = new Map<string, string>();
        for (let at = 0; at < incoming.rawHeaders.length; at += 2) {
          const name = incoming.rawHeaders[at]!.toLowerCase();
          const value = incoming.rawHeaders[at + 1]!;
          const seen = merged.get(name);
          merged.set(name, seen === undefined ? value : `${seen}, ${value}`);
        }
        resolve({ status: incoming.statusCode ?? 0, statusText: incoming.statusMessage ?? '', headers: new ApiHeaders(merged), body: Buffer.concat(chunks) });
      });
    });
    signal?.addEventListener('abort', onAbort, { once: true });
    const stopDeadline = connectDeadline(outgoing, url);
    outgoing.setTimeout(IDLE_MS, () => outgoing.destroy(new Error(`no answer from ${url.origin} in ${IDLE_MS / 1000} s`)));
    outgoing.on('error', fail);
    outgoing.end(body);
  });
}

function response(answer: RawAnswer, url: URL, redirected: boolean): ApiResponse {
  const text = () => Promise.resolve(answer.body.toString('utf8'));
  return {
    status: answer.status,
    statusText: answer.statusText,
    ok: answer.status >= 200 && answer.status < 300,
    url: url.href,
    redirected,
    headers: answer.headers,
    text,
    json: async () => JSON.parse(await text()) as unknown,
    arrayBuffer: () => Promise.resolve(answer.body.buffer.slice(answer.body.byteOffset, answer.body.byteOffset + answer.body.byteLength) as ArrayBuffer),
  };
}
