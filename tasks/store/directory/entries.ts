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

/**
 * The text of a small regular file, read only when it is one (no link followed, no FIFO
 * waited on) and at most `limit` bytes long; otherwise what it is instead.
 */
export async function readSmallFile(path: string, limit: number): Promise<SmallFile> {
  const info = await lstatOrUndefined(path);
  if (!info) return { kind: 'missing' };
  const odd = oddKind(info);
  if (odd) return { kind: 'odd', problem: `is ${odd}` };
  if (info.size > limit) return { kind: 'odd', problem: `is ${info.size} bytes, more than a record ever is (${limit})` };
  let handle: Awaited<ReturnType<typeof openRegularFile>>;
  try {
    handle = await openRegularFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    if (error instanceof Failure) return { kind: 'odd', problem: 'is not a regular file' };
    throw error;
  }
  try {
    // Read to `limit` + 1 whatever the size said: the file may have grown since.
    const buffer = Buffer.alloc(limit + 1);
    let filled = 0;
    while (filled < buffer.length) {
      const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    if (filled > limit) return { kind: 'odd', problem: `is more than ${limit} bytes, more than a record ever is` };
    return { kind: 'text', text: buffer.toString('utf8', 0, filled) };
  } finally {
    await handle.close();
  }
}
