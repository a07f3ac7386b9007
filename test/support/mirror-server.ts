// A loopback HTTP server standing in for the Debian cloud image mirror: it serves files
// and a SHA512SUMS list built from them, honours Range requests, and injects the faults
// a real mirror shows (dropped connections, 5xx, a stale checksum list, slow bodies).
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ServedRequest {
  readonly method: string;
  readonly path: string;
  readonly range: string | undefined;
  readonly status: number;
}

export interface MirrorFaults {
  /** Per path: destroy the connection after this many body bytes, for the next `times` requests. */
  dropAfter?: Map<string, { bytes: number; times: number }>;
  /** Per path: answer this status for the next `times` requests. */
  failWith?: Map<string, { status: number; times: number }>;
  /** Answer every Range request with the whole file (a server without range support). */
  ignoreRange?: boolean;
  /** Pause this long between body chunks of `slowChunkBytes`. */
  slowDelayMs?: number;
  slowChunkBytes?: number;
}

export class MirrorServer {
  readonly requests: ServedRequest[] = [];
  /** Body bytes written to sockets (including those of dropped responses). */
  bytesServed = 0;
  readonly faults: MirrorFaults = {};
  private readonly files = new Map<string, Buffer>();
  /** Overrides the SHA-512 the list states for a file (a list that does not match the file). */
  private readonly listedSha512 = new Map<string, string>();
  private readonly redirects = new Map<string, string>();
  private server: Server | undefined;
  private base = '';

  /** Starts on 127.0.0.1 with an ephemeral port. */
  static async start(files: Record<string, Buffer> = {}): Promise<MirrorServer> {
    const mirror = new MirrorServer();
    for (const [name, content] of Object.entries(files)) mirror.setFile(name, content);
    await mirror.listen();
    return mirror;
  }

  /** Base URL ending without a slash: `http://127.0.0.1:PORT`. */
  get url(): string {
    return this.base;
  }

  urlOf(name: string): string {
    return `${this.base}/${name}`;
  }

  get checksumsUrl(): string {
    return `${this.base}/SHA512SUMS`;
  }

  /** Adds or replaces a file (upstream publishing a new image). */
  setFile(name: string, content: Buffer): void {
    this.files.set(name, content);
    this.listedSha512.delete(name);
  }

  /** Makes SHA512SUMS state `sha512` for `name` whatever the file holds. */
  listChecksum(name: string, sha512: string): void {
    this.listedSha512.set(name, sha512);
  }

  /** Answers `from` with a 302 to `to` (both paths, e.g. `/a.qcow2`). */
  redirect(from: string, to: string): void {
    this.redirects.set(from, to);
  }

  dropAfter(name: string, bytes: number, times = 1): void {
    (this.faults.dropAfter ??= new Map()).set(`/${name}`, { bytes, times });
  }

  failWith(name: string, status: number, times = 1): void {
    (this.faults.failWith ??= new Map()).set(`/${name}`, { status, times });
  }

  requestsFor(name: string): ServedRequest[] {
    return this.requests.filter((entry) => entry.path === `/${name}`);
  }

  checksumList(): string {
    return [...this.files.entries()].map(([name, content]) => `${this.listedSha512.get(name) ?? sha512(content)}  ${name}\n`).join('');
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((done) => server.close(() => done()));
  }

  private async listen(): Promise<void> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch(() => res.destroy());
    });
    // Node closes idle kept-alive sockets after 5 s; on a loaded machine the client can
    // reuse one just as it closes, a transport retry that would make request counts
    // flaky. A mirror keeps them open for the length of a test.
    server.keepAliveTimeout = 120_000;
    this.server = server;
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    const address = server.address() as AddressInfo;
    this.base = `http://127.0.0.1:${address.port}`;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', this.base).pathname;
    const range = req.headers.range;
    const record = (status: number): void => {
      this.requests.push({ method: req.method ?? 'GET', path, range, status });
    };

    const redirect = this.redirects.get(path);
    if (redirect) {
      record(302);
      res.writeHead(302, { location: redirect }).end();
      return;
    }
    const failure = this.faults.failWith?.get(path);
    if (failure && failure.times > 0) {
      failure.times--;
      record(failure.status);
      res.writeHead(failure.status, { 'content-type': 'text/plain' }).end('injected failure\n');
      return;
    }

    let content: Buffer | undefined;
    if (path === '/SHA512SUMS') content = Buffer.from(this.checksumList());
    else content = this.files.get(path.slice(1));
    if (!content) {
      record(404);
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }

    let start = 0;
    let end = content.length - 1;
    let status = 200;
    const headers: Record<string, string> = { 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' };
    if (range && !this.faults.ignoreRange) {
      const match = /^bytes=(\d+)-(\d*)$/.exec(range);
      const from = match?.[1] === undefined ? NaN : Number(match[1]);
      if (!match || from >= content.length) {
        record(416);
        res.writeHead(416, { 'content-range': `bytes */${content.length}` }).end();
        return;
      }
      start = from;
      if (match[2]) end = Math.min(end, Number(match[2]));
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${content.length}`;
    }
    headers['content-length'] = String(end - start + 1);
    record(status);
    res.writeHead(status, headers);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    await this.writeBody(res, path, content.subarray(start, end + 1));
  }

  private async writeBody(res: ServerResponse, path: string, body: Buffer): Promise<void> {
    const drop = this.faults.dropAfter?.get(path);
    let limit = body.length;
    let dropping = false;
    if (drop && drop.times > 0) {
      drop.times--;
      limit = Math.min(limit, drop.bytes);
      dropping = true;
    }
    const chunkSize = this.faults.slowChunkBytes ?? 64 * 1024;
    for (let offset = 0; offset < limit; offset += chunkSize) {
      const chunk = body.subarray(offset, Math.min(limit, offset + chunkSize));
      this.bytesServed += chunk.length;
      const flushed = res.write(chunk);
      // A client that went away never drains: wait for whichever comes first.
      if (!flushed) {
        await new Promise<void>((done) => {
          const settle = (): void => {
            res.off('drain', settle);
            res.off('close', settle);
            done();
          };
          res.on('drain', settle);
          res.on('close', settle);
        });
      }
      if (res.destroyed) return;
      if (this.faults.slowDelayMs) await new Promise((done) => setTimeout(done, this.faults.slowDelayMs));
    }
    if (dropping) {
      // Let the bytes written so far reach the client, then cut the connection mid-body.
      await new Promise((done) => setTimeout(done, 20));
      res.socket?.destroy();
      return;
    }
    res.end();
  }
}

export function sha512(content: Buffer | string): string {
  return createHash('sha512').update(content).digest('hex');
}
