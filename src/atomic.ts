// Writes that another process or a later run reads are atomic: a temp file in the same
// directory, fsync, then rename over the destination.
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { WRITER } from './debris.ts';

/**
 * A unique sibling of `finalPath`; dot-prefixed so globs and listings skip it, and named
 * by its writer so a later run can tell one that was abandoned (debris.ts).
 */
export function siblingTempPath(finalPath: string): string {
  // Unpredictable, not just unique: a temp file is opened for writing by name. node:crypto
  // loads on the first write; a no-op run writes nothing.
  const { randomBytes } = process.getBuiltinModule('node:crypto');
  return join(dirname(finalPath), `.${basename(finalPath)}.${WRITER}.${randomBytes(4).toString('hex')}.tmp`);
}

/** Flushes a written file (or a directory, after renames in it) to the disk. */
export async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const temp = siblingTempPath(path);
  try {
    // wx: the name is new; anything already under it (a link someone placed) is never written through.
    const handle = await open(temp, 'wx');
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}
