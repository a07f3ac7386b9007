// Thin helpers around the real `qemu-img` binary (Debian qemu-utils): compressing
// conversion with progress, image metadata, whether an image is compressed, and the
// checks preflights run before any work.
//
// Every call names the format (`-f qcow2`): probing would let a file decide what it is (a
// VMDK descriptor, a raw file that looks like something else). And every file is passed
// as an absolute path, which QEMU never reads as a `json:` description or a protocol
// (`nbd:`, `http:`), whatever the file is called.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { boundExec, type Exec, Failure, type TaskContext } from '../src/index.ts';

export const QEMU_IMG = 'qemu-img';

/**
 * qcow2 compression types the build can write. zstd compresses faster and a little
 * smaller; QEMU >= 5.1 reads it (Debian 11+, Proxmox VE 7+). zlib is for consumers on
 * older QEMU.
 */
export const COMPRESSIONS = ['zstd', 'zlib'] as const;
export type Compression = (typeof COMPRESSIONS)[number];
export const DEFAULT_COMPRESSION: Compression = 'zstd';

/**
 * Coroutines for `qemu-img convert -m` (its maximum). Without `-W` qemu-img writes
 * clusters in order, so the output is byte-identical whatever this number is (checked in
 * bench/compress.ts); the coroutines keep qcow2's compression threads busy.
 */
const CONVERT_COROUTINES = 16;

/** `qemu-img convert -p` prints `    (12.34/100%)` lines separated by `\r`. */
const PROGRESS_LINE = /\((\d+(?:\.\d+)?)\/100%\)/;

const quiet = { nothrow: true, onLine: () => {} } as const;

/** The only format any image is opened as. */
const IMAGE_FORMAT = ['-f', 'qcow2'] as const;

/** A file name as qemu-img must get it: absolute, so it is a plain file and nothing else. */
export function imageFileArgument(path: string): string {
  return resolve(path);
}

export function isCompression(value: unknown): value is Compression {
  return typeof value === 'string' && (COMPRESSIONS as readonly string[]).includes(value);
}

/** True when `qemu-img` runs on this host. */
export async function qemuImgAvailable(signal: AbortSignal, exec: Exec = boundExec(signal)): Promise<boolean> {
  try {
    const result = await exec(QEMU_IMG, ['--version'], quiet);
    return result.exitCode === 0;
  } catch {
    signal.throwIfAborted(); // stopped by Ctrl-C, not missing
    return false;
  }
}

const writable = new Map<Compression, Promise<string | undefined>>();

/**
 * Preflight: qemu-img is installed and can write `compression` (zstd needs QEMU >= 5.1
 * built with zstd). Throws a one-line `setup` Failure saying what to do.
 */
export async function checkQemuImg(compression: Compression, purpose: string, signal: AbortSignal): Promise<void> {
  if (!(await qemuImgAvailable(signal))) {
    throw new Failure('setup', `${QEMU_IMG} not found: install qemu-utils (apt-get install qemu-utils) to ${purpose}`);
  }
  let check = writable.get(compression);
  if (!check) {
    writable.set(compression, (check = whyCannotWrite(compression, signal)));
    // An interrupted probe answers nothing: the next check probes again.
    check.catch(() => writable.delete(compression));
  }
  const problem = await check;
  if (problem !== undefined) {
    throw new Failure(
      'setup',
      `${QEMU_IMG} on this host cannot write ${compression}-compressed qcow2 images (${problem}): install qemu-utils from QEMU >= 5.1, or set compression: 'zlib' in the config`,
    );
  }
}

/** Creates a tiny qcow2 with the compression type; qemu-img's complaint when it cannot. */
async function whyCannotWrite(compression: Compression, signal: AbortSignal): Promise<string | undefined> {
  if (compression === 'zlib') return undefined; // every qemu-img writes zlib
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-qemu-img-'));
  try {
    const result = await boundExec(signal)(
      QEMU_IMG,
      ['create', '-q', '-f', 'qcow2', '-o', `compression_type=${compression}`, join(dir, 'probe.qcow2'), '64K'],
      quiet,
    );
    if (result.exitCode === 0) return undefined;
    return (lastLine(result.stderr) ?? lastLine(result.stdout) ?? `exit code ${result.exitCode}`).replace(/^qemu-img: /, '');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The arguments of the build's compressing conversion (also shown by `--dry-run`). */
export function compressArgs(compression: Compression): string[] {
  // zlib is qcow2's default type: leaving the option out keeps older qemu-img working too.
  const type = compression === 'zlib' ? [] : ['-o', `compression_type=${compression}`];
  return ['-c', '-m', String(CONVERT_COROUTINES), '-O', 'qcow2', ...type];
}

export interface ConvertOptions {
  readonly compression: Compression;
  /** Progress as a fraction in [0, 1]; default: the task's bar as a percentage. */
  readonly onProgress?: (fraction: number) => void;
}

/**
 * `qemu-img convert -p -c … src dest`. Other output lines go to the node's log. Throws a
 * `task` Failure with qemu-img's last line.
 */
export async function convertCompressed(ctx: TaskContext, src: string, dest: string, options: ConvertOptions): Promise<void> {
  // qemu-img -p reports how far through the virtual disk it is, not bytes of any file
  // (a packer overlay of a few KiB converts to hundreds of MiB): show a percentage.
  const report =
    options.onProgress ??
    ((fraction: number) => {
      ctx.progress(Math.round(fraction * 1000) / 10, 100, 'percent');
    });
  report(0);
  const result = await ctx.exec(
    QEMU_IMG,
    ['convert', '-p', ...IMAGE_FORMAT, ...compressArgs(options.compression), imageFileArgument(src), imageFileArgument(dest)],
    {
      nothrow: true,
      onLine: (line) => {
        const match = PROGRESS_LINE.exec(line);
        if (match) report(Math.min(1, Number(match[1]) / 100));
        else ctx.log(line);
      },
    },
  );
  if (result.exitCode !== 0) {
    const detail = lastLine(result.stderr) ?? lastLine(result.stdout) ?? `exit code ${result.exitCode}`;
    throw new Failure('task', `qemu-img convert ${src} -> ${dest} failed: ${detail}`);
  }
  report(1);
}

export interface ImageInfo {
  readonly format: string;
  readonly virtualSize: number;
  readonly actualSize: number | undefined;
  readonly filename: string;
  /** The image reads through this one (qcow2 overlays); undefined for a standalone image. */
  readonly backingFile: string | undefined;
  /** The qcow2 keeps its data in this other file; undefined when it holds its own. */
  readonly dataFile: string | undefined;
  /** The qcow2 header's compression type (`zlib`, `zstd`), set even when no cluster is compressed. */
  readonly compressionType: string | undefined;
}

/**
 * `qemu-img info --output=json` of a qcow2, validated. Throws when the file is not a
 * readable qcow2. Every qemu-img here starts through `exec`: a task's `ctx.exec`, else
 * `execFile` bound to `signal`.
 */
export async function imageInfo(path: string, signal: AbortSignal = new AbortController().signal, exec: Exec = boundExec(signal)): Promise<ImageInfo> {
  // --force-share: reading metadata must not fail because a VM or a build holds the image open.
  const info = await qemuImgJson(['info', ...IMAGE_FORMAT, '--force-share', '--output=json', imageFileArgument(path)], path, exec);
  const format = info.format;
  const virtualSize = info['virtual-size'];
  if (typeof format !== 'string' || typeof virtualSize !== 'number') throw new Failure('task', `qemu-img info ${path}: unexpected output`);
  const specific = info['format-specific'] as { data?: Record<string, unknown> } | undefined;
  const compression = specific?.data?.['compression-type'];
  const dataFile = specific?.data?.['data-file'];
  const backing = info['backing-filename'];
  const actual = info['actual-size'];
  return {
    format,
    virtualSize,
    actualSize: typeof actual === 'number' ? actual : undefined,
    filename: typeof info.filename === 'string' ? info.filename : path,
    backingFile: typeof backing === 'string' ? backing : undefined,
    dataFile: typeof dataFile === 'string' ? dataFile : undefined,
    compressionType: typeof compression === 'string' ? compression : undefined,
  };
}

/**
 * Clusters of a qcow2 stored compressed, from `qemu-img check` (metadata only, no guest
 * data is read). 0 for an image converted without `-c`: the shell scripts built those.
 */
export async function compressedClusters(path: string, signal: AbortSignal = new AbortController().signal, exec: Exec = boundExec(signal)): Promise<number> {
  // Exit 3 means leaked clusters: harmless, and the counts are still right.
  const report = await qemuImgJson(['check', ...IMAGE_FORMAT, '--force-share', '--output=json', imageFileArgument(path)], path, exec, [0, 3]);
  const count = report['compressed-clusters'];
  return typeof count === 'number' ? count : 0;
}

/**
 * What a consumer's QEMU must be able to read, for a release manifest: the qcow2
 * compression type when the header names zstd (QEMU >= 5.1 opens only then) or when
 * clusters are compressed; `none` for an image with no compressed cluster that any QEMU
 * reads; `undefined` when the file is not a qcow2.
 */
export async function imageCompression(path: string, signal?: AbortSignal): Promise<Compression | 'none' | undefined> {
  const info = await imageInfo(path, signal);
  if (info.format !== 'qcow2') return undefined;
  if (info.compressionType === 'zstd') return 'zstd';
  if ((await compressedClusters(path, signal)) === 0) return 'none';
  return isCompression(info.compressionType) ? info.compressionType : 'zlib';
}

/** Why an image must be converted rather than copied to be published compressed; undefined when a copy will do. */
export async function needsCompressing(path: string, signal?: AbortSignal, exec?: Exec): Promise<string | undefined> {
  // Both at once: the answer usually needs both, and each is a process start.
  const [info, clusters] = await Promise.allSettled([imageInfo(path, signal, exec), compressedClusters(path, signal, exec)]);
  if (info.status === 'rejected') throw info.reason;
  if (info.value.backingFile !== undefined) return `it reads through a backing file (${info.value.backingFile})`;
  if (clusters.status === 'rejected') throw clusters.reason;
  if (clusters.value === 0) return 'it is not compressed';
  return undefined;
}

async function qemuImgJson(args: readonly string[], path: string, exec: Exec, okCodes: readonly number[] = [0]): Promise<Record<string, unknown>> {
  const result = await exec(QEMU_IMG, args, quiet);
  if (!okCodes.includes(result.exitCode)) {
    throw new Failure('task', `qemu-img ${args[0]} ${path} failed: ${lastLine(result.stderr) ?? `exit code ${result.exitCode}`}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(result.stdout);
  } catch {
    parsed = undefined;
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Failure('task', `qemu-img ${args[0]} ${path}: unexpected output`);
  return parsed as Record<string, unknown>;
}

function lastLine(text: string): string | undefined {
  const lines = text
    .split(/\r?\n|\r/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0 && !PROGRESS_LINE.test(line));
  return lines[lines.length - 1];
}
