// What the directory store finds in its folders, looked at without following anything:
// a shared directory is written by whoever can write the share, so any entry may be a
// symbolic link (to a file on the reader's host, or out of the store), a FIFO that
// blocks whoever opens it, a device, a socket, a directory where a file should be, or a
// file far larger than what it claims to be. The store acts only on regular files under
// names it makes; everything else is reported by what it is and left alone.
import type { Dirent, Stats } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { Failure } from '../../../src/index.ts';
import { openRegularFile } from '../file-reads.ts';

/** What an entry is, in words: "a symbolic link", "a FIFO", …; undefined for a regular file. */
export function oddKind(entry: Stats | Dirent): string | undefined {
  if (entry.isSymbolicLink()) return 'a symbolic link';
  if (entry.isFile()) return undefined;
  if (entry.isDirectory()) return 'a directory';
  if (entry.isFIFO()) return 'a FIFO';
  if (entry.isSocket()) return 'a socket';
  if (entry.isBlockDevice() || entry.isCharacterDevice()) return 'a device';
  return 'not a regular file';
}

/** lstat, with a missing entry as undefined. */
export async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw error;
  }
}

export type SmallFile = { readonly kind: 'text'; readonly text: string } | { readonly kind: 'missing' } | { readonly kind: 'odd'; readonly problem: string };
export type SmallBytes = { readonly kind: 'bytes'; readonly bytes: Buffer } | { readonly kind: 'missing' } | { readonly kind: 'odd'; readonly problem: string };

/**
 * The text of a small regular file (a record, an index), read only when it is one (no
 * link followed, no FIFO waited on) and at most `limit` bytes long; otherwise what it is
 * instead.
 */
export async function readSmallFile(path: string, limit: number): Promise<SmallFile> {
  const read = await readSmallBytes(path, limit, 'a record ever is');
  return read.kind === 'bytes' ? { kind: 'text', text: read.bytes.toString('utf8') } : read;
}

/**
 * The bytes of a small regular file, read only when it is one (no link followed, no FIFO
 * waited on) and at most `limit` bytes long; otherwise what it is instead. `largest` ends
 * the sentence "more than …" for a file over the limit.
 */
export async function readSmallBytes(path: string, limit: number, largest = `it may be (${limit})`): Promise<SmallBytes> {
  const info = await lstatOrUndefined(path);
  if (!info) return { kind: 'missing' };
  const odd = oddKind(info);
  if (odd) return { kind: 'odd', problem: `is ${odd}` };
  if (info.size > limit) return { kind: 'odd', problem: `is ${info.size} bytes, more than ${largest}` };
  let handle: Awaited<ReturnType<typeof openRegularFile>>;
  try {
    handle = await openRegularFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    if (error instanceof Failure) return { kind: 'odd', problem: 'is not a regular file' };
    throw error;
  }
  try {
    // One byte past the size lstat saw: a file that grew since (someone writing it) is refused, not read unbounded.
    const buffer = Buffer.alloc(info.size + 1);
    let filled = 0;
    while (filled < buffer.length) {
      const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    if (filled > info.size) return { kind: 'odd', problem: `grew while it was read (past ${info.size} bytes)` };
    return { kind: 'bytes', bytes: buffer.subarray(0, filled) };
  } finally {
    await handle.close();
  }
}
