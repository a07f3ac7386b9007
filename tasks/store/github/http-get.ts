// One HTTP/1.1 GET on its own connection, with the response body handed to a sink as the
// socket delivers it. Not node:http: its parser copies every body chunk into a new Buffer
// (two allocations and a copy per 64 KiB, and garbage that lifts the peak RSS); here a
// plain-http socket reads into one reused buffer (`onread`), and a TLS socket's chunks go
// to the sink as they are. The socket pauses while the sink's promise is pending
// (backpressure), so the sink may keep using a chunk until its promise settles.
import net from 'node:net';
import tls from 'node:tls';

/** Read buffer of a plain-http socket. */
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
    let socket: net.Socket;

    const finish = (error: unknown, complete = false) => {
      if (settled) return;
      settled = true;
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
        return deliver(chunks, 0);
      } catch (error) {
        finish(error);
        return false;
      }
    };
    /** Hands chunks to the sink one at a time; false when the socket must wait for it. */
    const deliver = (chunks: Buffer[], from: number): boolean => {
      for (; from < chunks.length; from++) {
        // The chunk (a view of the read buffer, for plain http) stays untouched until the sink is done with it.
        const held = sink!(chunks[from]!);
        if (!held) continue;
        pending = held;
        const next = from + 1;
        held.then(
          () => {
            pending = undefined;
            if (settled) return;
            try {
              if (deliver(chunks, next)) socket.resume();
            } catch (error) {
              finish(error);
            }
          },
          (error: unknown) => {
            pending = undefined;
            finish(error);
          },
        );
        return false;
      }
      if (body.done) {
        finish(undefined, true);
        return false;
      }
      return true;
    };

    if (url.protocol === 'https:') {
      socket = tls.connect({ host, port, servername: net.isIP(host) ? '' : host, ALPNProtocols: ['http/1.1'] });
      socket.on('data', (chunk: Buffer) => {
        if (!take(chunk)) socket.pause();
      });
    } else {
      const buffer = Buffer.allocUnsafe(READ_BYTES);
      socket = net.connect({ host, port, onread: { buffer, callback: (length: number) => take(buffer.subarray(0, length)) } });
    }
    socket.once(url.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
      const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`, ...Object.entries(request.headers).map(([name, value]) => `${name}: ${value}`), 'Connection: close', '', ''];
      socket.write(lines.join('\r\n'));
    });
    socket.on('error', (error) => finish(new ConnectionError(error.message)));
    socket.on('close', () => {
      if (!response) finish(new ConnectionError('connection closed before a response'));
      else finish(undefined, body.endedByClose());
    });
  });
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
    // Copied: a plain-http read buffer is reused for the next read.
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
        if (!/^[0-9a-f]+$/i.test(line.split(';')[0]!.trim()) || !Number.isSafeInteger(size)) this.failed = `bad chunk size ${JSON.stringify(line.slice(0, 20))}`;
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
