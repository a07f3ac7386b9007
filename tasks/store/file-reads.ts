// Reading a large file in order through one reused buffer. A read stream allocates a new
// buffer for every chunk (4 MiB each at the sizes images want), which leaves the garbage
// collector hundreds of megabytes of ArrayBuffers to find per gigabyte read, and the
// process's peak RSS grows with the image; one buffer keeps it flat.
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

const READ_BYTES = 1024 * 1024;

/**
 * Hands bytes [from, to) (to: the end of the file by default) to `each` in order, one read
 * at a time, as views of one buffer: `each` may use the chunk until the promise it returns
 * settles, and not after.
 */
export async function readInOrder(
  path: string,
  options: { from?: number; to?: number; signal?: AbortSignal; each: (chunk: Buffer, offset: number) => Promise<void> | void },
): Promise<void> {
  const handle = await open(path, 'r');
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
