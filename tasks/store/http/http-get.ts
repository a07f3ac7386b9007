// One HTTP/1.1 GET on its own connection, with the response body handed to a sink as the
// socket delivers it. Not node:http: its parser copies every body chunk into a new Buffer
// (two allocations and a copy per 64 KiB, and garbage that lifts the peak RSS); here the
// socket reads into one reused buffer (`onread`): plain http straight from the kernel,
// TLS as each record is decrypted (16 KiB at most), where a 'data' event would allocate a
// Buffer per record (over TLS, about 35 MiB more peak RSS for a 512 MiB download). The
// socket pauses while the sink's promise is pending (backpressure), so the sink may keep
// using a chunk until its promise settles.
import net from 'node:net';
import tls from 'node:tls';
import { CONNECT_TIMEOUT_MS, UnreachableError } from './reach.ts';

/** The socket's read buffer (TLS fills at most a record's 16 KiB of it at a time). */
const READ_BYTES = 128 * 1024;
/** Largest response head accepted. */
const HEAD_LIMIT = 64 * 1024;

export interface GetResponse {
  readonly status: number;
  /** Lower-case names; repeated headers joined with ", ". */
  readonly headers: Readonly<Record<string, string>>;
}

export interface GetRequest {
  readonly url: URL;
  readonly headers: Readonly<Record<string, string>>;
  readonly signal: AbortSignal;
  /**
   * Called once the head has arrived: returns the sink for the body, or undefined to close
   * the connection without reading it.
   */
  readonly onResponse: (response: GetResponse) => BodySink | undefined;
}

/**
 * Takes the body's next chunk. It may keep using the chunk until the promise it returns
 * settles (the socket waits); returning nothing means it is done with it already.
 */
export type BodySink = (chunk: Buffer) => Promise<void> | void;

export interface GetResult extends GetResponse {
  /** Body bytes handed to the sink. */
  readonly received: number;
  /** Content-Length, when the response declared one. */
  readonly declared?: number;
  /** False when the body ended before its declared length or last chunk (the peer closed or reset). */
  readonly complete: boolean;
}

/** The connection failed before or during the response (refused, reset, TLS, a malformed head). */
export class ConnectionError extends Error {
  override readonly name = 'ConnectionError';
}

export function httpGet(request: GetRequest): Promise<GetResult> {
  const { url, signal } = request;
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return Promise.reject(new ConnectionError(`unsupported URL scheme in ${url.origin}`));
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise((resolve, reject) => {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
    const body = new BodyParser();
    let response: GetResponse | undefined;
    let sink: BodySink | undefined;
    let settled = false;
    /** The sink's promise for the chunk it holds; the socket is paused meanwhile. */
    let pending: Promise<void> | undefined;
    /**
     * Body chunks waiting for the sink, copied out of the read buffer. A paused TLS socket
     * still hands over the rest of the records it had decrypted; they wait here, in order.
     */
    const waiting: Buffer[] = [];
    /** The connection closed while chunks were still waiting for the sink. */
    let closedEarly = false;
    /** The read buffer under the chunk the sink holds (none when it holds a copy). */
    let heldBuffer: Buffer | undefined;
    let socket: net.Socket;

    const finish = (error: unknown, complete = false) => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      const settle = () => {
        if (error !== undefined) reject(error);
        else resolve({ ...response!, received: body.received, ...(body.declared !== undefined ? { declared: body.declared } : {}), complete });
      };
      // Never answer while the sink still holds a chunk: a retry must not overtake it.
      if (pending) pending.then(settle, settle);
      else settle();
    };
    const onAbort = () => finish(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    // DNS and the TCP handshake within CONNECT_TIMEOUT_MS, or the host counts as out of reach.
    const connectTimer = setTimeout(
      () => finish(new UnreachableError(`no connection to ${url.host} within ${CONNECT_TIMEOUT_MS / 1000} s`, 'ECONNECT_TIMEOUT')),
      CONNECT_TIMEOUT_MS,
    );

    /** Takes bytes off the wire; false pauses the socket until the sink is ready again. */
    const take = (bytes: Buffer): boolean => {
      if (settled) return false;
      try {
        if (!response) {
          const head = body.head(bytes);
          if (!head) return true;
          response = head.response;
          sink = request.onResponse(response);
          if (!sink) {
            finish(undefined, true);
            return false;
          }
          bytes = head.rest;
        }
        const chunks = body.take(bytes);
        if (body.failed) throw new ConnectionError(body.failed);
        if (pending || waiting.length) {
          for (const chunk of chunks) waiting.push(Buffer.from(chunk));
          return false;
        }
        return deliver(chunks);
      } catch (error) {
        finish(error);
        return false;
      }
    };
    /**
     * Hands chunks to the sink one at a time; false when the socket must wait for it. The
     * chunk the sink holds stays untouched (reads go to the other buffer meanwhile); the
     * ones after it are copied to `waiting`.
     */
    const deliver = (chunks: readonly Buffer[]): boolean => {
      for (let at = 0; at < chunks.length; at++) {
        const held = sink!(chunks[at]!);
        if (!held) continue;
        for (const chunk of chunks.slice(at + 1)) waiting.push(Buffer.from(chunk));
        pending = held;
        heldBuffer = readBuffers.find((buffer) => buffer.buffer === chunks[at]!.buffer);
        held.then(
          () => {
            pending = undefined;
            heldBuffer = undefined;
            if (settled) return;
            try {
              if (deliver(waiting.splice(0))) socket.resume();
            } catch (error) {
              finish(error);
            }
          },
          (error: unknown) => {
            pending = undefined;
            heldBuffer = undefined;
            finish(error);
          },
        );
        return false;
      }
      if (body.done || closedEarly) {
        finish(undefined, body.endedByClose());
        return false;
      }
      return true;
    };

    // Two read buffers: a TLS socket goes on handing over the records it had decrypted after
    // it is paused, so they go into the buffer whose bytes the sink is not holding.
    const readBuffers = [Buffer.allocUnsafe(READ_BYTES), Buffer.allocUnsafe(READ_BYTES)] as const;
    const onread = {
      buffer: () => (heldBuffer === readBuffers[0] ? readBuffers[1] : readBuffers[0]),
      // Returning false pauses the socket until the sink is done with what it holds.
      callback: (length: number, into: Buffer) => take(into.subarray(0, length)),
    };
    socket =
      url.protocol === 'https:'
        ? // tls.connect documents `onread` (as net.connect's) but @types/node leaves it out.
          tls.connect({ host, port, servername: net.isIP(host) ? '' : host, ALPNProtocols: ['http/1.1'], onread } as tls.ConnectionOptions)
        : net.connect({ host, port, onread });
    socket.once('connect', () => clearTimeout(connectTimer));
    socket.once(url.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
      const lines = [
        `GET ${url.pathname}${url.search} HTTP/1.1`,
        `Host: ${url.host}`,
        ...Object.entries(request.headers).map(([name, value]) => `${name}: ${value}`),
        'Connection: close',
        '',
        '',
      ];
      socket.write(lines.join('\r\n'));
    });
    socket.on('error', (error) => finish(new ConnectionError(error.message, { cause: error })));
    socket.on('close', () => {
      if (!response) finish(new ConnectionError('connection closed before a response'));
      // What arrived before the close goes to the sink first; `deliver` finishes after it.
      else if (pending || waiting.length) closedEarly = true;
      else finish(undefined, body.endedByClose());
    });
  });
}

/** Headers that carry credentials: never sent to another origin than the one they were given for. */
const CREDENTIAL_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie']);

export interface FollowingGetRequest extends GetRequest {
  /** Redirects followed before giving up (default 10). */
  readonly maxRedirects?: number;
  /**
   * Where credential headers may follow a redirect: to the same origin (the default, as
   * fetch does), or nowhere (an API whose redirects always lead to pre-signed storage).
   */
  readonly credentialsFollow?: 'same-origin' | 'never';
}

/**
 * `httpGet`, following redirects (3xx with a Location): the request's credential headers
 * go only to the origin of the first URL, so a redirect to another host (a CDN, signed
 * storage) never carries them. `onResponse` sees the final answer; the result says where
 * it came from.
 */
export async function getFollowingRedirects(request: FollowingGetRequest): Promise<GetResult & { readonly url: URL }> {
  const origin = request.url.origin;
  let url = request.url;
  for (let hop = 0; hop <= (request.maxRedirects ?? 10); hop++) {
    const keep = hop === 0 || (url.origin === origin && request.credentialsFollow !== 'never');
    const headers = keep
      ? request.headers
      : Object.fromEntries(Object.entries(request.headers).filter(([name]) => !CREDENTIAL_HEADERS.has(name.toLowerCase())));
    let location: string | undefined;
    const result = await httpGet({
      url,
      headers,
      signal: request.signal,
      onResponse: (response) => {
        if (response.status >= 300 && response.status < 400 && response.status !== 304 && response.headers.location) {
          location = response.headers.location;
          return undefined;
        }
        return request.onResponse(response);
      },
    });
    if (location === undefined) return { ...result, url };
    url = new URL(location, url);
  }
  throw new ConnectionError(`too many redirects from ${request.url.origin}`);
}

/** What node:http rejects with on abort: an AbortError whose cause is the signal's reason. */
function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error('The operation was aborted'), { name: 'AbortError', code: 'ABORT_ERR', cause: signal.reason });
}

/** The response head, then the body by Content-Length, chunked encoding, or until the close. */
class BodyParser {
  received = 0;
  declared: number | undefined;
  done = false;
  failed: string | undefined;
  private headBytes = Buffer.alloc(0);
  private mode: 'length' | 'chunked' | 'close' = 'close';
  private left = 0;
  /** Chunked: 'size' reads a size line, 'data' a chunk's bytes, 'crlf' the line end after them, 'trailer' trailer lines. */
  private chunkState: 'size' | 'data' | 'crlf' | 'trailer' = 'size';
  private line = '';

  head(bytes: Buffer): { response: GetResponse; rest: Buffer } | undefined {
    // Copied: the read buffer is reused for the next read.
    this.headBytes = Buffer.concat([this.headBytes, bytes]);
    const end = this.headBytes.indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.headBytes.length > HEAD_LIMIT) throw new ConnectionError('response head too large');
      return undefined;
    }
    const [statusLine = '', ...lines] = this.headBytes.subarray(0, end).toString('latin1').split('\r\n');
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
    if (!status) throw new ConnectionError(`not an HTTP/1.1 response: ${JSON.stringify(statusLine.slice(0, 40))}`);
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
    }
    const code = Number(status[1]);
    if (code === 204 || code === 304) {
      this.mode = 'length';
      this.left = 0;
    } else if (/\bchunked\b/i.test(headers['transfer-encoding'] ?? '')) {
      this.mode = 'chunked';
    } else if (headers['content-length'] !== undefined) {
      this.mode = 'length';
      this.left = Number(headers['content-length']);
      if (!Number.isSafeInteger(this.left) || this.left < 0) throw new ConnectionError(`bad Content-Length ${headers['content-length']}`);
      this.declared = this.left;
    }
    this.done = this.mode === 'length' && this.left === 0;
    const rest = Buffer.from(this.headBytes.subarray(end + 4));
    this.headBytes = Buffer.alloc(0);
    return { response: { status: code, headers }, rest };
  }

  /** Body bytes in `bytes` (views of it, no copy). */
  take(bytes: Buffer): Buffer[] {
    if (this.done || !bytes.length) return [];
    if (this.mode === 'close') return this.count([bytes]);
    if (this.mode === 'length') {
      const piece = bytes.length > this.left ? bytes.subarray(0, this.left) : bytes;
      this.left -= piece.length;
      if (this.left === 0) this.done = true;
      return this.count([piece]);
    }
    return this.count(this.dechunk(bytes));
  }

  /** Whether a close at this point ends the body completely. */
  endedByClose(): boolean {
    return this.done || this.mode === 'close';
  }

  private count(chunks: Buffer[]): Buffer[] {
    for (const chunk of chunks) this.received += chunk.length;
    return chunks;
  }

  private dechunk(bytes: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let at = 0;
    while (at < bytes.length && !this.done && !this.failed) {
      if (this.chunkState === 'data') {
        const piece = bytes.subarray(at, at + this.left);
        out.push(piece);
        at += piece.length;
        this.left -= piece.length;
        if (this.left === 0) this.chunkState = 'crlf';
        continue;
      }
      const newline = bytes.indexOf(10, at);
      const end = newline < 0 ? bytes.length : newline + 1;
      this.line += bytes.subarray(at, end).toString('latin1');
      at = end;
      if (newline < 0) {
        if (this.line.length > 4096) this.failed = 'chunk size line too long';
        continue;
      }
      const line = this.line.trim();
      this.line = '';
      if (this.chunkState === 'crlf') {
        if (line) this.failed = 'malformed chunked body';
        this.chunkState = 'size';
      } else if (this.chunkState === 'size') {
        const size = Number.parseInt(line.split(';')[0]!, 16);
        if (!/^[0-9a-f]+$/i.test(line.split(';')[0]!.trim()) || !Number.isSafeInteger(size))
          this.failed = `bad chunk size ${JSON.stringify(line.slice(0, 20))}`;
        else if (size === 0) this.chunkState = 'trailer';
        else {
          this.left = size;
          this.chunkState = 'data';
        }
      } else if (!line) {
        this.done = true;
      }
    }
    return out;
  }
}
