// Thin helpers around the real `qemu-img` binary (Debian qemu-utils): compressing
// conversion with progress, image metadata, and an availability check for preflights.
import { z } from 'zod';
import { execFile } from '../src/exec.ts';
import { Failure, type TaskContext } from '../src/types.ts';

export const QEMU_IMG = 'qemu-img';

/** `qemu-img convert -p` prints `    (12.34/100%)` lines separated by `\r`. */
const PROGRESS_LINE = /\((\d+(?:\.\d+)?)\/100%\)/;

/** True when `qemu-img` runs on this host. */
export async function qemuImgAvailable(): Promise<boolean> {
  try {
    const result = await execFile(QEMU_IMG, ['--version'], new AbortController().signal, { nothrow: true, onLine: () => {} });
    return result.exitCode === 0;
  } catch {
    return false;
  }
}

/**
 * `qemu-img convert -p -c -O qcow2 src dest`. Progress goes to `onProgress` as a fraction
 * in [0, 1] when given, otherwise to the task's bar as a percentage.
 * Other output lines go to the node's log. Throws a `task` Failure with qemu-img's last line.
 */
export async function convertCompressed(
  ctx: TaskContext,
  src: string,
  dest: string,
  onProgress?: (fraction: number) => void,
): Promise<void> {
  // qemu-img -p reports how far through the virtual disk it is, not bytes of any file
  // (a packer overlay of a few KiB converts to hundreds of MiB): show a percentage.
  const report =
    onProgress ??
    ((fraction: number) => {
      ctx.progress(Math.round(fraction * 1000) / 10, 100, 'percent');
    });
  report(0);
  const result = await ctx.exec(QEMU_IMG, ['convert', '-p', '-c', '-O', 'qcow2', src, dest], {
    nothrow: true,
    onLine: (line) => {
      const match = PROGRESS_LINE.exec(line);
      if (match) report(Math.min(1, Number(match[1]) / 100));
      else ctx.log(line);
    },
  });
  if (result.exitCode !== 0) {
    const detail = lastLine(result.stderr) ?? lastLine(result.stdout) ?? `exit code ${result.exitCode}`;
    throw new Failure('task', `qemu-img convert ${src} -> ${dest} failed: ${detail}`);
  }
  report(1);
}

const ImageInfoSchema = z.object({
  format: z.string(),
  'virtual-size': z.number(),
  'actual-size': z.number().optional(),
  filename: z.string(),
  'cluster-size': z.number().optional(),
  'format-specific': z.object({ type: z.string(), data: z.record(z.unknown()).optional() }).optional(),
});

export interface ImageInfo {
  readonly format: string;
  readonly virtualSize: number;
  readonly actualSize: number | undefined;
  readonly filename: string;
  /** qcow2 compression type when qemu-img reports one (`zlib`, `zstd`). */
  readonly compressionType: string | undefined;
}

/** `qemu-img info --output=json`, validated. Throws when the file is not a readable image. */
export async function imageInfo(path: string, signal: AbortSignal = new AbortController().signal): Promise<ImageInfo> {
  // --force-share: reading metadata must not fail because a VM or a build holds the image open.
  const result = await execFile(QEMU_IMG, ['info', '--force-share', '--output=json', path], signal, {
    nothrow: true,
    onLine: () => {},
  });
  if (result.exitCode !== 0) {
    throw new Error(`qemu-img info ${path} failed: ${lastLine(result.stderr) ?? `exit code ${result.exitCode}`}`);
  }
  const parsed = ImageInfoSchema.parse(JSON.parse(result.stdout));
  const compression = parsed['format-specific']?.data?.['compression-type'];
  return {
    format: parsed.format,
    virtualSize: parsed['virtual-size'],
    actualSize: parsed['actual-size'],
    filename: parsed.filename,
    compressionType: typeof compression === 'string' ? compression : undefined,
  };
}

function lastLine(text: string): string | undefined {
  const lines = text
    .split(/\r?\n|\r/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0 && !PROGRESS_LINE.test(line));
  return lines[lines.length - 1];
}
