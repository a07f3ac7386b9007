// A proxy in front of the real registry (test/support/registry.ts) that injects faults and
// modes the registry itself never shows:
//
// - faults, armed per test, each firing once (or `times`): a status answer (5xx, 429, …)
//   instead of forwarding; a reset after some bytes of the request body or of the
//   answer's body; an answer cut short (its full Content-Length declared, fewer bytes sent);
// - `requireChunks`: upload sessions advertise `OCI-Chunk-Min-Length` and a PUT that
//   carries bytes is refused with 413, so a client must send PATCH chunks, as some
//   registries and proxies in front of them require;
// - `redirectBlobs`: blob GETs the registry would serve are answered with a 307 to a
//   separate "blob storage" server on another port (as S3 or a CDN behind GHCR and Docker
//   Hub), which serves the bytes from the registry's storage directory, with ranges, and
//   records whether a request came with credentials it must never get.
//
// The Host header is forwarded unchanged, so the registry's Location URLs name the proxy.
// Every request is recorded (method, path, status, sizes; whether it carried credentials,
// never their value).
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';

export interface RouteMatch {
  readonly method?: string;
  /** Substring of the path and query, or a pattern. */
  readonly path?: string | RegExp;
  /** How many matching requests it applies to (default 1). */
  readonly times?: number;
}

export type ProxyFault =
  | (RouteMatch & { readonly kind: 'status'; readonly status: number; readonly headers?: Record<string, string>; readonly body?: string })
  /** Closes the connection after this many bytes of the request body (an upload) or the answer's body (a download). */
  | (RouteMatch & { readonly kind: 'reset'; readonly afterBytes: number; readonly side?: 'request' | 'response' })
  /** Declares the answer's full length, sends this many bytes of it, then closes. */
  | (RouteMatch & { readonly kind: 'truncate'; readonly afterBytes: number });

export interface ProxiedRequest {
  readonly method: string;
  readonly path: string;
  status: number;
  readonly credentials: boolean;
  readonly contentLength?: number;
  readonly contentRange?: string;
  readonly range?: string;
  /** A fault answered or cut this request. */
  fault?: ProxyFault['kind'];
}

export interface StorageRequest {
  readonly path: string;
  readonly range?: string;
  /** Any Authorization, Cookie or Proxy-Authorization header arrived: a client leaked credentials. */
  readonly credentials: boolean;
}

export interface RegistryProxyOptions {
  readonly requireChunks?: { readonly minLength: number };
  /** The registry's storage directory: blob GETs are redirected to a server reading it. */
  readonly redirectBlobsFrom?: string;
}

export class RegistryProxy {
  url = '';
  host = '';
  readonly requests: ProxiedRequest[] = [];
  readonly storageRequests: StorageRequest[] = [];
  /** Sees each request before it is forwarded; `drop` closes its connection unanswered (a client killed there). */
  hook: ((request: ProxiedRequest) => 'forward' | 'drop') | undefined;
  private faults: Array<ProxyFault & { left: number }> = [];
  private readonly target: URL;
  private readonly server: http.Server;
  private storage: http.Server | undefined;
  private storageUrl = '';
  private readonly sockets = new Set<Socket>();

  private constructor(
    target: string,
    private readonly options: RegistryProxyOptions,
  ) {
    this.target = new URL(target);
    this.server = http.createServer((request, response) => this.forward(request, response));
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  static async start(target: string, options: RegistryProxyOptions = {}): Promise<RegistryProxy> {
    const proxy = new RegistryProxy(target, options);
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    proxy.host = `127.0.0.1:${(proxy.server.address() as AddressInfo).port}`;
    proxy.url = `http://${proxy.host}`;
    if (options.redirectBlobsFrom) {
      const storage = http.createServer((request, response) => proxy.serveStorage(request, response, options.redirectBlobsFrom!));
      await new Promise<void>((resolve) => storage.listen(0, '127.0.0.1', resolve));
      proxy.storage = storage;
      proxy.storageUrl = `http://127.0.0.1:${(storage.address() as AddressInfo).port}`;
    }
    return proxy;
  }

  arm(fault: ProxyFault): void {
    this.faults.push({ ...fault, left: fault.times ?? 1 });
  }

  get pendingFaults(): number {
    return this.faults.length;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
    if (this.storage) {
      this.storage.closeAllConnections();
      await new Promise((resolve) => this.storage!.close(resolve));
    }
  }

  private takeFault(method: string, path: string): ProxyFault | undefined {
    const at = this.faults.findIndex(
      (fault) =>
        (!fault.method || fault.method === method) && (!fault.path || (typeof fault.path === 'string' ? path.includes(fault.path) : fault.path.test(path))),
    );
    if (at < 0) return undefined;
    const fault = this.faults[at]!;
    if (--fault.left <= 0) this.faults.splice(at, 1);
    return fault;
  }

  private forward(request: IncomingMessage, response: ServerResponse): void {
    const method = request.method ?? 'GET';
    const path = request.url ?? '/';
    const length = request.headers['content-length'];
    const record: ProxiedRequest = {
      method,
      path,
      status: 0,
      credentials: request.headers.authorization !== undefined,
      ...(length !== undefined ? { contentLength: Number(length) } : {}),
      ...(request.headers['content-range'] ? { contentRange: request.headers['content-range'] } : {}),
      ...(request.headers.range ? { range: request.headers.range } : {}),
    };
    this.requests.push(record);
    if (this.hook?.(record) === 'drop') {
      request.socket.destroy();
      return;
    }
    const fault = this.takeFault(method, path);
    if (fault) record.fault = fault.kind;
    if (fault?.kind === 'status') {
      record.status = fault.status;
      request.resume();
      const body = fault.body ?? JSON.stringify({ errors: [{ code: 'UNKNOWN', message: `injected ${fault.status}` }] });
      response.writeHead(fault.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...fault.headers });
      response.end(body);
      return;
    }
    const isUploadSession = /^\/v2\/.+\/blobs\/uploads\/[^/?]+/.test(path);
    if (this.options.requireChunks && method === 'PUT' && isUploadSession && Number(length ?? 0) > 0) {
      record.status = 413;
      const body = JSON.stringify({ errors: [{ code: 'SIZE_INVALID', message: 'send the blob in PATCH chunks' }] });
      response.writeHead(413, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' });
      response.end(body);
      request.resume();
      return;
    }
    const upstream = http.request({ host: this.target.hostname, port: this.target.port, method, path, headers: request.headers, agent: false }, (answer) => {
      record.status = answer.statusCode ?? 0;
      const headers = { ...answer.headers };
      if (this.options.requireChunks && method === 'POST' && /\/blobs\/uploads\/?(\?|$)/.test(path) && answer.statusCode === 202) {
        headers['oci-chunk-min-length'] = String(this.options.requireChunks.minLength);
      }
      const blobGet = method === 'GET' && /^\/v2\/.+\/blobs\/sha256:[0-9a-f]{64}$/.test(path.split('?')[0]!);
      if (this.storage && blobGet && (answer.statusCode === 200 || answer.statusCode === 206)) {
        record.status = 307;
        answer.destroy();
        const [, name, digest] = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})/.exec(path)!;
        response.writeHead(307, { location: `${this.storageUrl}/blobs/${name}/${digest}?signature=test`, 'content-length': 0 });
        response.end();
        return;
      }
      response.writeHead(answer.statusCode ?? 502, headers);
      if (fault?.kind === 'reset' && (fault.side ?? 'response') === 'response')
        return cutAfter(answer, response, fault.afterBytes, () => request.socket.destroy());
      if (fault?.kind === 'truncate') return cutAfter(answer, response, fault.afterBytes, () => request.socket.destroy());
      answer.pipe(response);
      answer.on('aborted', () => response.destroy());
      answer.on('error', () => response.destroy());
    });
    upstream.on('error', () => response.destroy());
    if (fault?.kind === 'reset' && fault.side === 'request') {
      let seen = 0;
      request.on('data', (chunk: Buffer) => {
        seen += chunk.length;
        if (seen >= fault.afterBytes) {
          upstream.destroy();
          request.socket.destroy();
        } else upstream.write(chunk);
      });
      request.on('end', () => upstream.end());
      return;
    }
    request.pipe(upstream);
  }

  /** Blob storage behind the redirects: bytes from the registry's own files, with ranges. */
  private async serveStorage(request: IncomingMessage, response: ServerResponse, storageDir: string): Promise<void> {
    const headers = request.headers;
    this.storageRequests.push({
      path: request.url ?? '/',
      ...(headers.range ? { range: headers.range } : {}),
      credentials: headers.authorization !== undefined || headers.cookie !== undefined || headers['proxy-authorization'] !== undefined,
    });
    const match = /^\/blobs\/.+\/sha256:([0-9a-f]{64})/.exec(request.url ?? '');
    if (!match) return void response.writeHead(404).end();
    // Signed storage URLs refuse credentials they did not ask for (as S3 does).
    if (headers.authorization) return void response.writeHead(400, { 'content-type': 'text/plain' }).end('Only one auth mechanism allowed');
    const hex = match[1]!;
    const file = join(storageDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    const size = (await stat(file).catch(() => undefined))?.size;
    if (size === undefined) return void response.writeHead(404).end();
    const range = /^bytes=(\d+)-(\d*)$/.exec(headers.range ?? '');
    const fault = this.takeFault('STORAGE', request.url ?? '');
    let start = 0;
    let end = size - 1;
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      if (start >= size) return void response.writeHead(416, { 'content-range': `bytes */${size}` }).end();
      response.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${size}`, 'accept-ranges': 'bytes' });
    } else {
      response.writeHead(200, { 'content-length': size, 'accept-ranges': 'bytes' });
    }
    if (end < start) return void response.end();
    const body = createReadStream(file, { start, end });
    if (fault && fault.kind !== 'status') return cutAfter(body, response, fault.afterBytes, () => request.socket.destroy());
    body.pipe(response);
  }
}

/** Passes `afterBytes` of `source` on, then calls `cut` (which closes the connection). */
function cutAfter(source: NodeJS.ReadableStream & { destroy(): void }, response: ServerResponse, afterBytes: number, cut: () => void): void {
  let sent = 0;
  source.on('data', (chunk: Buffer) => {
    if (sent >= afterBytes) return;
    const piece = chunk.subarray(0, afterBytes - sent);
    sent += piece.length;
    response.write(piece);
    if (sent >= afterBytes) {
      source.destroy();
      // Let the bytes reach the socket, then drop it mid-body.
      setImmediate(cut);
    }
  });
  source.on('end', () => {
    if (sent < afterBytes) response.end();
  });
}
