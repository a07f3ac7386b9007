// One HTTP/1.1 GET, with the response body handed to a sink as the socket delivers it. Not
// node:http: its parser copies every body chunk into a new Buffer (allocations, a copy, and
// garbage that lifts the peak RSS); here the socket reads into reused buffers (`onread`):
// plain http straight from the kernel, TLS as each record is decrypted, where a 'data'
// event would allocate a Buffer per record (BENCHMARKS.md has the peak RSS either way). The
// socket pauses while the sink's promise is pending (backpressure), so the sink may keep
// using a chunk until its promise settles.
//
// Asked to (`keepAlive`), a connection whose response ended cleanly waits a little for the
// next such GET to the same origin: a seeded fetch makes a thousand ranged reads of one
// storage URL, and a new TCP and TLS handshake for each would cost more round trips than
// the reads themselves.
import net from 'node:net';
import tls from 'node:tls';
import { CONNECT_TIMEOUT_MS, UnreachableError } from './reach.ts';
import { ConnectionError, type GetResponse, ResponseParser } from './response-parser.ts';

export { ConnectionError, type GetResponse } from './response-parser.ts';

/** The socket's read buffer (TLS fills at most a record's 16 KiB of it at a time). */
const READ_BYTES = 128 * 1024;
/** How long an idle connection waits for the next GET to its origin: less than servers keep theirs open (Node 5 s, nginx 75 s). */
const IDLE_MS = 2000;
/** Idle connections kept per origin. */
const MAX_IDLE_PER_ORIGIN = 64;

export interface GetRequest {
  readonly url: URL;
  readonly headers: Readonly<Record<string, string>>;
  readonly signal: AbortSignal;
  /**
   * The connection may come from, and go back to, the idle connections to the URL's origin:
   * for a caller making many requests of one origin (ranged reads). Otherwise the request
   * says `Connection: close` and has a connection of its own.
   */
  readonly keepAlive?: boolean;
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

export function httpGet(request: GetRequest): Promise<GetResult> {
  const { url, signal } = request;
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return Promise.reject(new ConnectionError(`unsupported URL scheme in ${url.origin}`));
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise((resolve, reject) => new GetExchange(request, resolve, reject).start());
}

/** What a connection tells the exchange it carries. */
interface ConnectionUser {
  /** Bytes off the wire; false pauses the socket. */
  take(bytes: Buffer): boolean;
  onError(error: Error): void;
  onClose(): void;
}

/**
 * A socket and its two read buffers, carrying one exchange at a time. A TLS socket goes on
 * handing over the records it had decrypted after it is paused, so reads go into the
 * buffer whose bytes the sink is not holding.
 */
class Connection {
  readonly socket: net.Socket;
  readonly readBuffers = [Buffer.allocUnsafe(READ_BYTES), Buffer.allocUnsafe(READ_BYTES)] as const;
  /** The read buffer under the chunk the sink holds (none when it holds a copy). */
  heldBuffer: Buffer | undefined;
  /** Whether an exchange before the current one ended on it. */
  reused = false;
  private user: ConnectionUser | undefined;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly origin: string,
    url: URL,
  ) {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
    const onread = {
      buffer: () => (this.heldBuffer === this.readBuffers[0] ? this.readBuffers[1] : this.readBuffers[0]),
      callback: (length: number, into: Buffer): boolean => {
        if (this.user) return this.user.take(into.subarray(0, length));
        // Bytes while idle: nothing asked for them, so the connection cannot be trusted with the next request.
        this.socket.destroy();
        return false;
      },
    };
    this.socket =
      url.protocol === 'https:'
        ? // tls.connect documents `onread` (as net.connect's) but @types/node leaves it out.
          tls.connect({ host, port, servername: net.isIP(host) ? '' : host, ALPNProtocols: ['http/1.1'], onread } as tls.ConnectionOptions)
        : net.connect({ host, port, onread });
    this.socket.on('error', (error) => this.user?.onError(error));
    this.socket.on('close', () => {
      idle.forget(this);
      this.user?.onClose();
    });
  }

  attach(user: ConnectionUser): void {
    clearTimeout(this.idleTimer);
    this.socket.ref();
    this.user = user;
  }

  /** The exchange is done with it: it waits for the next GET to its origin, or closes. */
  release(reusable: boolean): void {
    this.user = undefined;
    this.heldBuffer = undefined;
    if (!reusable || this.socket.destroyed || !idle.keep(this)) {
      this.socket.destroy();
      return;
    }
    this.reused = true;
    // An idle connection never keeps the process alive. It reads on while idle, so that a
    // close (or stray bytes) is noticed and the connection dropped: from the next tick, as
    // the read callback that ended the response may still be returning false (a pause).
    this.socket.unref();
    process.nextTick(() => {
      if (!this.user) this.socket.resume();
    });
    this.idleTimer = setTimeout(() => {
      idle.forget(this);
      this.socket.destroy();
    }, IDLE_MS);
    this.idleTimer.unref();
  }
}

/** Idle connections by origin, most recently used last. */
class IdleConnections {
  private readonly byOrigin = new Map<string, Connection[]>();

  /** An idle connection to `origin` that can still carry a request, taken out of the pool. */
  take(origin: string): Connection | undefined {
    const connections = this.byOrigin.get(origin);
    let connection: Connection | undefined;
    // One the server is closing (its 'close' not yet heard) would never answer: passed over.
    while (connections?.length && !connection) {
      const candidate = connections.pop()!;
      if (candidate.socket.writable) connection = candidate;
    }
    if (connections?.length === 0) this.byOrigin.delete(origin);
    return connection;
  }

  /** Whether the pool keeps it. */
  keep(connection: Connection): boolean {
    const connections = this.byOrigin.get(connection.origin) ?? [];
    if (connections.length >= MAX_IDLE_PER_ORIGIN) return false;
    connections.push(connection);
    this.byOrigin.set(connection.origin, connections);
    return true;
  }

  forget(connection: Connection): void {
    const connections = this.byOrigin.get(connection.origin);
    const at = connections?.indexOf(connection) ?? -1;
    if (at < 0) return;
    connections!.splice(at, 1);
    if (connections!.length === 0) this.byOrigin.delete(connection.origin);
  }
}

const idle = new IdleConnections();

/** One request and its response on one connection: the parser and the sink's backpressure. */
class GetExchange implements ConnectionUser {
  private body = new ResponseParser();
  private response: GetResponse | undefined;
  private sink: BodySink | undefined;
  private settled = false;
  /** The sink's promise for the chunk it holds; the socket is paused meanwhile. */
  private pending: Promise<void> | undefined;
  /**
   * Body chunks waiting for the sink, copied out of the read buffer. A paused TLS socket
   * still hands over the rest of the records it had decrypted; they wait here, in order.
   */
  private readonly waiting: Buffer[] = [];
  /** The connection closed while chunks were still waiting for the sink. */
  private closedEarly = false;
  /** Whether any byte of the response arrived. */
  private answered = false;
  private connection!: Connection;
  private connectTimer: NodeJS.Timeout | undefined;
  private readonly onAbort = (): void => this.finish(abortError(this.request.signal));

  constructor(
    private readonly request: GetRequest,
    private readonly resolve: (result: GetResult) => void,
    private readonly reject: (error: unknown) => void,
  ) {}

  start(): void {
    this.request.signal.addEventListener('abort', this.onAbort, { once: true });
    const pooled = this.request.keepAlive ? idle.take(this.request.url.origin) : undefined;
    if (pooled) this.send(pooled);
    else this.connectAndSend();
  }

  /** A new connection, and the request once it is up. */
  private connectAndSend(): void {
    const { url } = this.request;
    // DNS and the TCP handshake within CONNECT_TIMEOUT_MS, or the host counts as out of reach.
    this.connectTimer = setTimeout(
      () => this.finish(new UnreachableError(`no connection to ${url.host} within ${CONNECT_TIMEOUT_MS / 1000} s`, 'ECONNECT_TIMEOUT')),
      CONNECT_TIMEOUT_MS,
    );
    const connection = new Connection(url.origin, url);
    this.connection = connection;
    connection.attach(this);
    connection.socket.once('connect', () => clearTimeout(this.connectTimer));
    connection.socket.once(url.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
      if (!this.settled) this.writeRequest();
    });
  }

  private send(connection: Connection): void {
    this.connection = connection;
    connection.attach(this);
    this.writeRequest();
    connection.socket.resume();
  }

  private writeRequest(): void {
    const { url, headers } = this.request;
    const lines = [
      `GET ${url.pathname}${url.search} HTTP/1.1`,
      `Host: ${url.host}`,
      ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
      ...(this.request.keepAlive ? [] : ['Connection: close']),
      '',
      '',
    ];
    this.connection.socket.write(lines.join('\r\n'));
  }

  onError(error: Error): void {
    if (this.retryFresh()) return;
    this.finish(new ConnectionError(error.message, { cause: error }));
  }

  onClose(): void {
    if (this.retryFresh()) return;
    if (!this.response) this.finish(new ConnectionError('connection closed before a response'));
    // What arrived before the close goes to the sink first; `deliver` finishes after it.
    else if (this.pending || this.waiting.length) this.closedEarly = true;
    else this.finish(undefined, this.body.endedByClose());
  }

  /**
   * A kept-alive connection the server closed before answering (it timed out as the request
   * went out): the request goes again on a new connection, as nothing of it was answered.
   */
  private retryFresh(): boolean {
    if (this.settled || this.answered || !this.connection.reused) return false;
    this.connection.release(false);
    this.body = new ResponseParser();
    this.connectAndSend();
    return true;
  }

  private finish(error: unknown, complete = false): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.connectTimer);
    this.request.signal.removeEventListener('abort', this.onAbort);
    const { body, response, connection } = this;
    const reusable = this.request.keepAlive === true && error === undefined && complete && body.reusable && !this.closedEarly;
    if (!reusable) connection?.release(false);
    const settle = (): void => {
      // Given back only now: the next exchange reads into the buffers the sink was holding.
      if (reusable) connection.release(true);
      if (error !== undefined) this.reject(error);
      else this.resolve({ ...response!, received: body.received, ...(body.declared !== undefined ? { declared: body.declared } : {}), complete });
    };
    // Never answer while the sink still holds a chunk: a retry must not overtake it.
    if (this.pending) this.pending.then(settle, settle);
    else settle();
  }

  /** Takes bytes off the wire; false pauses the socket until the sink is ready again. */
  take(bytes: Buffer): boolean {
    if (this.settled) return false;
    this.answered = true;
    try {
      if (!this.response) {
        const head = this.body.head(bytes);
        if (!head) return true;
        this.response = head.response;
        this.sink = this.request.onResponse(head.response);
        if (!this.sink) {
          // Declined: a body still to come stays unread, and the connection closes.
          this.finish(undefined, true);
          return false;
        }
        bytes = head.rest;
      }
      const chunks = this.body.take(bytes);
      if (this.body.failed) throw new ConnectionError(this.body.failed);
      if (this.pending || this.waiting.length) {
        for (const chunk of chunks) this.waiting.push(Buffer.from(chunk));
        return false;
      }
      return this.deliver(chunks);
    } catch (error) {
      this.finish(error);
      return false;
    }
  }

  /**
   * Hands chunks to the sink one at a time; false when the socket must wait for it. The
   * chunk the sink holds stays untouched (reads go to the other buffer meanwhile); the
   * ones after it are copied to `waiting`.
   */
  private deliver(chunks: readonly Buffer[]): boolean {
    for (let at = 0; at < chunks.length; at++) {
      const held = this.sink!(chunks[at]!);
      if (!held) continue;
      for (const chunk of chunks.slice(at + 1)) this.waiting.push(Buffer.from(chunk));
      this.pending = held;
      this.connection.heldBuffer = this.connection.readBuffers.find((buffer) => buffer.buffer === chunks[at]!.buffer);
      held.then(
        () => this.released(),
        (error: unknown) => {
          this.pending = undefined;
          this.connection.heldBuffer = undefined;
          this.finish(error);
        },
      );
      return false;
    }
    if (this.body.done || this.closedEarly) {
      this.finish(undefined, this.body.endedByClose());
      return false;
    }
    return true;
  }

  /** The sink is done with its chunk: the waiting ones go next, then the socket reads on. */
  private released(): void {
    this.pending = undefined;
    this.connection.heldBuffer = undefined;
    if (this.settled) return;
    try {
      if (this.deliver(this.waiting.splice(0))) this.connection.socket.resume();
    } catch (error) {
      this.finish(error);
    }
  }
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
  /** Hears the URL of the final answer, just before `onResponse` sees it. */
  readonly onFinalUrl?: (url: URL) => void;
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
      ...(request.keepAlive ? { keepAlive: true } : {}),
      onResponse: (response) => {
        if (response.status >= 300 && response.status < 400 && response.status !== 304 && response.headers.location) {
          location = response.headers.location;
          return undefined;
        }
        request.onFinalUrl?.(url);
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
