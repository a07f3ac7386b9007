// An HTTP/1.1 response as it arrives: the head (status and headers), then the body by
// Content-Length, chunked encoding, or until the connection closes. It hands out views of
// the bytes it is given, never copies of the body.
export interface GetResponse {
  readonly status: number;
  /** Lower-case names; repeated headers joined with ", ". */
  readonly headers: Readonly<Record<string, string>>;
}

/** The connection failed before or during the response (refused, reset, TLS, a malformed head). */
export class ConnectionError extends Error {
  override readonly name = 'ConnectionError';
}

/** Largest response head accepted. */
const HEAD_LIMIT = 64 * 1024;

/** The response head, then the body by Content-Length, chunked encoding, or until the close. */
export class ResponseParser {
  received = 0;
  declared: number | undefined;
  done = false;
  /** Bytes arrived after the body's end: the connection carries something else and is not reused. */
  surplus = false;
  failed: string | undefined;
  private keepAlive = false;
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
    this.keepAlive = statusLine.startsWith('HTTP/1.1') && !/\bclose\b/i.test(headers.connection ?? '');
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
    if (!bytes.length) return [];
    if (this.done) {
      this.surplus = true;
      return [];
    }
    if (this.mode === 'close') return this.count([bytes]);
    if (this.mode === 'length') {
      const piece = bytes.length > this.left ? bytes.subarray(0, this.left) : bytes;
      if (piece.length < bytes.length) this.surplus = true;
      this.left -= piece.length;
      if (this.left === 0) this.done = true;
      return this.count([piece]);
    }
    return this.count(this.dechunk(bytes));
  }

  /**
   * Whether the connection may carry another request: an HTTP/1.1 answer whose body ended by
   * its length or last chunk, with nothing after it, and no `Connection: close`.
   */
  get reusable(): boolean {
    return this.keepAlive && this.done && !this.surplus && !this.failed;
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
    if (at < bytes.length) this.surplus = true;
    return out;
  }
}
