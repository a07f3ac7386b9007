// Brings a partial file to the whole of an upstream file (HTTP(S), or a `file:` mirror on
// disk), resuming from what it holds where the server allows, and hashing it with SHA-512
// as it goes. What a failure means decides what the caller does: `Interrupted` may succeed
// when resumed (a dropped connection, a 5xx, a short body); a `Failure` will not.
import { createHash } from 'node:crypto';
import { open, rm, stat, type FileHandle } from 'node:fs/promises';
import { STATUS_CODES } from 'node:http';
import { fileURLToPath } from 'node:url';
import { Failure, isFailure, type TaskContext } from '../src/index.ts';
import { readInOrder } from './store/file-reads.ts';
import { getFollowingRedirects, type GetResponse, type GetResult } from './store/http/http-get.ts';
import { isUnreachable } from './store/http/reach.ts';

const PROGRESS_STEP = 1024 * 1024;
const PROGRESS_INTERVAL_MS = 200;
/** Bytes as the server has them: a compressed transfer would not hash to the upstream SHA-512. */
export const REQUEST_HEADERS: Readonly<Record<string, string>> = { 'accept-encoding': 'identity', 'user-agent': 'pipeline-images' };

/** A transfer that may succeed when resumed: a dropped connection, a 5xx, a short body. */
export class Interrupted extends Error {
  override readonly name = 'Interrupted';
}

export interface TransferOutcome {
  readonly sha512: string;
  /** The file was completed from bytes an earlier attempt or run left. */
  readonly resumed: boolean;
}

/** Brings `partial` to the full file, resuming from its current size; returns its SHA-512. */
export async function transfer(ctx: TaskContext, url: string, partial: string): Promise<TransferOutcome> {
  if (url.startsWith('file:')) return copyFile(ctx, url, partial);
  const have = (await stat(partial).catch(() => undefined))?.size ?? 0;
  const body = new PartialBody(ctx, url, partial, have);
  /** What the answer's head decided: write from `start`, or one of the outcomes without a body. */
  let plan: ReturnType<typeof decide> | undefined;
  const headers = have > 0 ? { ...REQUEST_HEADERS, range: `bytes=${have}-` } : REQUEST_HEADERS;
  try {
    let result: GetResult;
    try {
      result = await getFollowingRedirects({
        url: new URL(url),
        headers,
        signal: ctx.signal,
        onResponse: (response) => {
          plan = decide(response, have, url);
          if (typeof plan !== 'object' || !('start' in plan)) return undefined;
          body.begin(plan.start, plan.total);
          return (chunk) => body.write(chunk);
        },
      });
    } catch (error) {
      if (isFailure(error) || isNoSpace(error)) throw error;
      if (isAbortOf(ctx.signal, error)) throw ctx.signal.reason ?? error;
      if (isUnreachable(error)) throw new Failure('network', `cannot reach ${url}: ${errorText(error)} (the partial file is kept; the next run resumes it)`);
      throw new Interrupted(
        plan === undefined ? `cannot connect to ${url}: ${errorText(error)}` : `connection to ${url} lost at byte ${body.done}: ${errorText(error)}`,
      );
    }
    if (plan === 'complete') {
      await hashPrefix(partial, have, body.sha, ctx.signal);
      return { sha512: body.sha.digest('hex'), resumed: true };
    }
    if (plan === 'restart') {
      await rm(partial, { force: true });
      return transfer(ctx, url, partial);
    }
    if (plan === undefined) throw new Interrupted(`no answer from ${url}`);
    if ('interrupted' in plan) throw new Interrupted(plan.interrupted);
    if ('failure' in plan) throw new Failure('task', plan.failure);
    const done = await body.end();
    const total = plan.total ?? result.declared;
    if (!result.complete || (total !== undefined && done !== total)) throw new Interrupted(`${url} ended at byte ${done} of ${total ?? 'more'}`);
    return { sha512: body.sha.digest('hex'), resumed: plan.start > 0 };
  } finally {
    await body.close();
  }
}

/**
 * An answer's body written into the partial file from `start`: hashed after the bytes the
 * file kept before `start`, its progress reported per MiB, or at least every
 * PROGRESS_INTERVAL_MS on a slow link.
 */
class PartialBody {
  readonly sha = createHash('sha512');
  /** The file's length so far: where the next chunk goes. */
  done = 0;
  private start = 0;
  private total: number | undefined;
  private handle: FileHandle | undefined;
  private reported = 0;
  private reportedAt = Date.now();

  constructor(
    private readonly ctx: TaskContext,
    private readonly url: string,
    private readonly partial: string,
    /** Bytes the file held before this request. */
    private readonly have: number,
  ) {}

  begin(start: number, total: number | undefined): void {
    this.start = this.done = this.reported = start;
    this.total = total;
    this.ctx.progress(start, total);
  }

  async write(chunk: Uint8Array): Promise<void> {
    const handle = await this.opened();
    await writeAt(handle, chunk, this.done);
    this.sha.update(chunk);
    this.done += chunk.length;
    if (this.done - this.reported >= PROGRESS_STEP || Date.now() - this.reportedAt >= PROGRESS_INTERVAL_MS) {
      this.reported = this.done;
      this.reportedAt = Date.now();
      this.ctx.progress(this.done, this.total);
    }
  }

  /** The body is all there: the file (empty, for an empty body) made durable. Returns its length. */
  async end(): Promise<number> {
    await (await this.opened()).sync();
    this.ctx.progress(this.done, this.total ?? this.done);
    return this.done;
  }

  async close(): Promise<void> {
    await this.handle?.close();
  }

  private async opened(): Promise<FileHandle> {
    if (this.handle) return this.handle;
    const { ctx, start } = this;
    if (start > 0) {
      await hashPrefix(this.partial, start, this.sha, ctx.signal);
      ctx.log(`resuming ${this.url} at byte ${start}`);
    } else if (this.have > 0) {
      ctx.log(`${this.url} does not resume (no Range support); starting over`);
    }
    this.handle = await open(this.partial, start > 0 ? 'r+' : 'w');
    return this.handle;
  }
}

/** What to do with an answer to a request for `url` from byte `have`. */
function decide(
  response: GetResponse,
  have: number,
  url: string,
): { start: number; total: number | undefined } | 'complete' | 'restart' | { interrupted: string } | { failure: string } {
  const { status, headers } = response;
  if (have > 0 && status === 416) {
    // Refused range: the partial is whole if the server's size equals it, else start over.
    return parseContentRange(headers['content-range'])?.total === have ? 'complete' : 'restart';
  }
  if (status >= 500) return { interrupted: `HTTP ${statusLine(status)} from ${url}` };
  if (status < 200 || status >= 300) return { failure: `HTTP ${statusLine(status)} from ${url}` };
  const length = headers['content-length'];
  if (status === 206) {
    const range = parseContentRange(headers['content-range']);
    // A range we did not ask for cannot be appended; fetch the whole file instead.
    if (!range || range.start !== have) return 'restart';
    return { start: have, total: range.total };
  }
  // 200: the whole file, whatever was asked.
  return { start: 0, total: length === undefined ? undefined : Number(length) };
}

/** A file: URL, as a mirror on disk: the rest of the file after what `partial` holds. */
async function copyFile(ctx: TaskContext, url: string, partial: string): Promise<TransferOutcome> {
  const path = fileURLToPath(url);
  const size = (
    await stat(path).catch((error: unknown) => {
      throw new Failure('task', `cannot read ${url}: ${errorText(error)}`);
    })
  ).size;
  const have = (await stat(partial).catch(() => undefined))?.size ?? 0;
  const start = have <= size ? have : 0;
  const sha = createHash('sha512');
  if (start > 0) await hashPrefix(partial, start, sha, ctx.signal);
  const handle = await open(partial, start > 0 ? 'r+' : 'w');
  let done = start;
  try {
    await readInOrder(path, {
      from: start,
      signal: ctx.signal,
      each: async (chunk) => {
        await writeAt(handle, chunk, done);
        sha.update(chunk);
        done += chunk.length;
        ctx.progress(done, size);
      },
    });
    await handle.sync();
  } finally {
    await handle.close();
  }
  return { sha512: sha.digest('hex'), resumed: start > 0 };
}

async function hashPrefix(path: string, end: number, sha: ReturnType<typeof createHash>, signal: AbortSignal): Promise<void> {
  await readInOrder(path, { to: end, signal, each: (chunk) => void sha.update(chunk) });
}

/** Writes all of `chunk` at `position` (a positioned write may take less than all). */
async function writeAt(handle: FileHandle, chunk: Uint8Array, position: number): Promise<void> {
  for (let offset = 0; offset < chunk.byteLength; ) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.byteLength - offset, position + offset);
    offset += bytesWritten;
  }
}

export function statusLine(status: number): string {
  const text = STATUS_CODES[status];
  return text ? `${status} ${text}` : String(status);
}

function isNoSpace(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

function parseContentRange(header: string | undefined): { start: number; total: number | undefined } | undefined {
  if (!header) return undefined;
  const match = /^bytes\s+(?:(\d+)-\d+|\*)\/(\d+|\*)$/.exec(header.trim());
  if (!match) return undefined;
  return {
    start: match[1] === undefined ? -1 : Number(match[1]),
    total: match[2] === '*' || match[2] === undefined ? undefined : Number(match[2]),
  };
}

/** True when `error` is the caller cancelling (Ctrl-C), not a timeout or a network failure. */
export function isAbortOf(signal: AbortSignal, error: unknown): boolean {
  if (error instanceof Error && error.name === 'TimeoutError') return false;
  if (signal.reason instanceof Error && signal.reason.name === 'TimeoutError') return false;
  return signal.aborted && error instanceof Error && (error.name === 'AbortError' || error === signal.reason);
}

/** The useful part of a connection failure (ECONNREFUSED, …) is in its `cause`. */
export function errorText(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = (error as { cause?: unknown }).cause;
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return typeof code === 'string' ? `${code} ${cause.message}` : cause.message;
  }
  if (error.name === 'TimeoutError') return 'timed out';
  return error.message;
}
