// The one gate every image from outside this host passes before it is uploaded, renamed
// into place after a download or a fetch, published, or adopted: it must be a qcow2 that
// stands on its own. An image with a backing file or an external data file makes QEMU
// (qemu-img convert, a VM) read whatever file it names on the consumer's host, so its
// bytes would end up in the published image; a VMDK descriptor does the same with its
// extents. The header is judged first, without qemu-img (tasks/qcow2-header.ts), so a
// hostile image never reaches QEMU; qemu-img then opens it as qcow2 (never probing the
// format) as a second opinion, where it is installed.
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import { boundExec, type Exec, Failure } from '../src/index.ts';
import { HEADER_READ_BYTES, inspectQcow2Header } from './qcow2-header.ts';
import { imageInfo, qemuImgAvailable } from './qemu-img.ts';
import { quoteUntrusted } from './untrusted-text.ts';

/** qemu-img info on a sound image takes milliseconds; one that takes this long is not one to install. */
const QEMU_IMG_INFO_TIMEOUT_MS = 60_000;

/**
 * Why `path` is not a self-contained qcow2 image, in words that complete "… is not a
 * self-contained qcow2 image: "; undefined when it is one.
 */
export async function selfContainedProblem(path: string, signal: AbortSignal, exec?: Exec): Promise<string | undefined> {
  const head = await readHead(path);
  if (typeof head === 'string') return head;
  const verdict = inspectQcow2Header(head.bytes, head.size);
  if (!verdict.ok) return verdict.problem;
  // A task's exec is asked each time; execFile, once per process.
  if (!(await (exec ? qemuImgAvailable(signal, exec) : qemuImgPresent(signal)))) return undefined;
  const timeout = AbortSignal.timeout(QEMU_IMG_INFO_TIMEOUT_MS);
  try {
    const info = await imageInfo(path, signal, (file, args, options) => (exec ?? boundExec(signal))(file, args, { ...options, signal: timeout }));
    if (info.backingFile !== undefined) return `qemu-img finds a backing file, ${quoteUntrusted(info.backingFile)}`;
    if (info.dataFile !== undefined) return `qemu-img finds an external data file, ${quoteUntrusted(info.dataFile)}`;
    return undefined;
  } catch (error) {
    signal.throwIfAborted();
    if (timeout.aborted) return `qemu-img info did not finish within ${QEMU_IMG_INFO_TIMEOUT_MS / 1000} s`;
    return `qemu-img cannot open it as qcow2 (${error instanceof Error ? error.message.replace(/^qemu-img info \S+ failed: /, '') : String(error)})`;
  }
}

/**
 * Throws an `integrity` Failure naming `label` (default: the path) and what the image
 * references unless `path` is a self-contained qcow2. `what` says what was refused
 * ("the download", "the upload"), so the line says what did not happen.
 */
export async function assertSelfContainedImage(
  path: string,
  signal: AbortSignal,
  options: { label?: string; refused?: string; exec?: Exec } = {},
): Promise<void> {
  const problem = await selfContainedProblem(path, signal, options.exec);
  if (problem === undefined) return;
  throw new Failure('integrity', `${options.label ?? path} is not a self-contained qcow2 image: ${problem}; ${options.refused ?? 'refused'}`);
}

/** The file's first bytes (up to what the header check needs) and its size, or why it cannot be read as an image. */
async function readHead(path: string): Promise<{ bytes: Buffer; size: number } | string> {
  let handle: import('node:fs/promises').FileHandle;
  try {
    // Never through a symbolic link, and never blocking on a FIFO or a device.
    handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') return 'it is a symbolic link';
    throw error;
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) return 'it is not a regular file';
    const bytes = Buffer.alloc(Math.min(HEADER_READ_BYTES, info.size));
    let filled = 0;
    while (filled < bytes.length) {
      const { bytesRead } = await handle.read(bytes, filled, bytes.length - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    return { bytes: bytes.subarray(0, filled), size: info.size };
  } finally {
    await handle.close();
  }
}

/**
 * Starts what the check of a downloaded image needs (the process runner, and asking
 * whether qemu-img runs here) while the bytes are still on their way, so that the check
 * after them costs one `qemu-img info`.
 */
export function prepareSelfContainedCheck(signal: AbortSignal): void {
  qemuImgPresent(signal).catch(() => {}); // asked again, and its failure met, by the check itself
}

let present: Promise<boolean> | undefined;

/** Whether qemu-img runs here, asked once per process (a host that only uploads may lack it). */
function qemuImgPresent(signal: AbortSignal): Promise<boolean> {
  if (!present) {
    present = qemuImgAvailable(signal);
    present.catch(() => (present = undefined));
  }
  return present;
}
