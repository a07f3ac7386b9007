// Reading a large file in order through one reused buffer. A read stream allocates a new
// buffer for every chunk (4 MiB each at the sizes images want), which leaves the garbage
// collector hundreds of megabytes of ArrayBuffers to find per gigabyte read, and the
// process's peak RSS grows with the image; one buffer keeps it flat.
import { createHash } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import { Failure } from '../../src/index.ts';

const READ_BYTES = 1024 * 1024;

/**
 * Hands bytes [from, to) (to: the end of the file by default) to `each` in order, one read
 * at a time, as views of one buffer: `each` may use the chunk until the promise it returns
 * settles, and not after. With `regularOnly`, the file must be a regular file under that
 * very name: a symbolic link, a FIFO or a device is refused (an `integrity` Failure)
 * without being opened through or waited on.
 */
export async function readInOrder(
  path: string,
  options: { from?: number; to?: number; signal?: AbortSignal; regularOnly?: boolean; each: (chunk: Buffer, offset: number) => Promise<void> | void },
): Promise<void> {
  const handle = options.regularOnly ? await openRegularFile(path) : await open(path, 'r');
  try {
    const buffer = Buffer.allocUnsafe(READ_BYTES);
    const end = options.to ?? Number.POSITIVE_INFINITY;
    for (let offset = options.from ?? 0; offset < end; ) {
      options.signal?.throwIfAborted();
      const { bytesRead } = await handle.read(buffer, 0, Math.min(READ_BYTES, end - offset), offset);
      if (bytesRead === 0) return;
      await options.each(buffer.subarray(0, bytesRead), offset);
      offset += bytesRead;
    }
  } finally {
    await handle.close();
  }
}

export async function sha256OfFile(path: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  await readInOrder(path, { ...(signal ? { signal } : {}), each: (chunk) => void hash.update(chunk) });
  return hash.digest('hex');
}

/** Opens `path` for reading only if it is a regular file itself (not a link to one); never blocks on a FIFO. */
export async function openRegularFile(path: string): Promise<import('node:fs/promises').FileHandle> {
  let handle: import('node:fs/promises').FileHandle;
  try {
    handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') throw new Failure('integrity', `${path} is a symbolic link; refusing to read through it`);
    throw error;
  }
  const info = await handle.stat().catch(async (error: unknown) => {
    await handle.close();
    throw error;
  });
  if (!info.isFile()) {
    await handle.close();
    throw new Failure('integrity', `${path} is not a regular file; refusing to read it`);
  }
  return handle;
}
