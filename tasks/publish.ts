// The publish step: install `images/{name}/{name}.qcow2` into PVE storage as
// `{publishDir}/{name}.img`. The build compressed the image already, so publishing copies
// it (a reflink where the filesystem can): the `.img` is byte-identical to the image and
// has its SHA-256. An image that is not compressed (the shell build script made those) is
// converted with `qemu-img convert -c`, as the script's publish did. Either way through a
// temp name in that directory. A sidecar record next to the published file remembers which
// source content it was made from, so an unchanged image is never published twice,
// whatever mtimes say.
import { constants as fsConstants } from 'node:fs';
import { copyFile, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  Failure,
  formatBytes,
  fsyncPath,
  type NodeDef,
  type NodeId,
  removeAbandonedTemps,
  siblingTempPath,
  type TaskContext,
  writeFileAtomic,
} from '../src/index.ts';
import { defaultImageFile } from './checksum.ts';
import { assertSelfContainedImage, selfContainedProblem } from './image-check.ts';
import { checkQemuImg, convertCompressed, DEFAULT_COMPRESSION, needsCompressing, type Compression } from './qemu-img.ts';

export const DEFAULT_PUBLISH_DIR = '/var/lib/vz/template/iso';
export const PUBLISH_DIR_ENV = 'PIPELINE_PUBLISH_DIR';

export interface PublishSpec {
  readonly name: string;
  /** Relative to the root; default `images/{name}/{name}.qcow2`. */
  readonly imageFile?: string;
  /** Default `/var/lib/vz/template/iso`; `PIPELINE_PUBLISH_DIR` overrides it. */
  readonly publishDir?: string;
  /** Default `[{name}:checksum]`. */
  readonly deps?: readonly NodeId[];
  /** Used only when an uncompressed image has to be converted; default zstd. */
  readonly compression?: Compression;
}

/** The directory publishing writes to: the environment wins over the config. */
export function resolvePublishDir(configured: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env[PUBLISH_DIR_ENV];
  return resolve(fromEnv !== undefined && fromEnv !== '' ? fromEnv : (configured ?? DEFAULT_PUBLISH_DIR));
}

export function publishedPath(publishDir: string, name: string): string {
  return join(publishDir, `${name}.img`);
}

/** Sidecar recording the source content a published file was made from. */
export function sourceRecordPath(publishDir: string, name: string): string {
  return join(publishDir, `.${name}.img.source`);
}

export function publishNode(spec: PublishSpec): NodeDef {
  const imageFile = spec.imageFile ?? defaultImageFile(spec.name);
  const compression = spec.compression ?? DEFAULT_COMPRESSION;
  const publishDir = () => resolvePublishDir(spec.publishDir);
  return {
    id: `${spec.name}:publish`,
    kind: 'publish',
    description: `install ${spec.name}.img into ${spec.publishDir ?? DEFAULT_PUBLISH_DIR}`,
    deps: spec.deps ?? [`${spec.name}:checksum`],
    params: { imageFile, publishDir: spec.publishDir ?? DEFAULT_PUBLISH_DIR, compression },
    env: [PUBLISH_DIR_ENV],
    // The published file lives outside the tree, so it cannot be a declared output. The
    // probe stands in: it keeps the recorded value while the published copy is the one
    // we made, and returns a value never seen before when someone removed or replaced it.
    probeIndependent: true,
    async probe({ previous }) {
      const dest = publishedPath(publishDir(), spec.name);
      const problem = await publishedCopyProblem(publishDir(), spec.name);
      if (problem === undefined) return { value: previous ?? 'published' };
      return { value: `republish@${Date.now()}`, note: `${dest} ${problem}` };
    },
    async preflight(context) {
      await checkPublishDir(publishDir());
      // Telling a compressed image from one to convert, and converting, both need it.
      await checkQemuImg(compression, 'publish images', context.signal);
    },
    async describeRun(context) {
      const source = resolve(context.root, imageFile);
      const dest = publishedPath(publishDir(), spec.name);
      const size = (await stat(source).catch(() => undefined))?.size;
      // Not built yet: the build that runs first compresses it, so it will be copied.
      if (size === undefined) return `would copy ${imageFile} -> ${dest} (not built yet)`;
      const problem = await selfContainedProblem(source, context.signal);
      if (problem !== undefined) return `would refuse ${imageFile}: it is not a self-contained qcow2 image: ${problem}`;
      const reason = await needsCompressing(source, context.signal).catch((error: unknown) => `qemu-img cannot read it: ${(error as Error).message}`);
      if (reason === undefined) return `would copy ${imageFile} -> ${dest} (${formatBytes(size)}, compressed)`;
      return `would convert ${imageFile} -> ${dest} with qemu-img convert -c (${compression}): ${reason} (${formatBytes(size)})`;
    },
    async run(ctx) {
      const source = resolve(ctx.root, imageFile);
      ctx.status(`SHA-256 of ${imageFile}`);
      // Usually free: the checksum step stored it in the stat cache.
      const digest = await ctx.hasher.hash(source, { sha256: true, onProgress: (done, total) => ctx.progress(done, total) });
      if (!digest.sha256) throw new Error(`hasher returned no SHA-256 for ${source}`);
      await publishImage(ctx, { source, sourceSha256: digest.sha256, publishDir: publishDir(), name: spec.name, compression });
    },
  };
}

export interface PublishRequest {
  /** Absolute path of the qcow2 to publish. */
  readonly source: string;
  readonly sourceSha256: string;
  readonly publishDir: string;
  readonly name: string;
  /** For an image that has to be converted; default zstd. */
  readonly compression?: Compression;
}

export type PublishOutcome = 'copied' | 'converted' | 'unchanged';

/**
 * Installs `source` as `{publishDir}/{name}.img` unless the file there was made from the
 * same content and is still untouched: a copy of a compressed image, a conversion of one
 * that is not. Also used by `images download --publish`.
 */
export async function publishImage(ctx: TaskContext, request: PublishRequest): Promise<PublishOutcome> {
  const dest = publishedPath(request.publishDir, request.name);
  const record = await readSourceRecord(request.publishDir, request.name);
  if (record?.sourceSha256 === request.sourceSha256 && (await publishedCopyProblem(request.publishDir, request.name, record)) === undefined) {
    ctx.log(`${dest} is already published from this image (sha256 ${request.sourceSha256.slice(0, 12)}…); skipping`);
    return 'unchanged';
  }
  // Before qemu-img or a copy reads it: an image that names another file would publish that file's bytes.
  await assertSelfContainedImage(request.source, ctx.signal, { refused: `nothing was published to ${dest}`, exec: ctx.exec });
  const reason = await needsCompressing(request.source, ctx.signal, ctx.exec);
  // A publish killed half-way (kill -9, power loss) left its temp here: PVE storage is
  // no place for gigabytes of debris.
  for (const path of await removeAbandonedTemps([request.publishDir])) ctx.log(`removed ${path}, left by a publish that was interrupted`);
  const temp = ctx.tempPath(dest);
  try {
    if (reason === undefined) {
      ctx.status(`copying -> ${dest}`);
      await copyImage(ctx, request.source, temp);
    } else {
      const compression = request.compression ?? DEFAULT_COMPRESSION;
      ctx.log(`converting ${request.source}: ${reason}`);
      ctx.status(`qemu-img convert -c (${compression}) -> ${dest}`);
      await convertCompressed(ctx, request.source, temp, { compression });
    }
    await fsyncPath(temp);
    await ctx.beginCommit();
    await rename(temp, dest);
    await fsyncPath(request.publishDir);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  // Written after the rename: an interruption in between leaves a record whose stat does
  // not match the new file, which only costs one more publish.
  const published = await stat(dest, { bigint: true });
  const next: SourceRecord = {
    sourceSha256: request.sourceSha256,
    size: Number(published.size),
    mtimeNs: published.mtimeNs.toString(),
    ctimeNs: published.ctimeNs.toString(),
    ino: published.ino.toString(),
  };
  await writeFileAtomic(sourceRecordPath(request.publishDir, request.name), `${JSON.stringify(next)}\n`);
  const outcome = reason === undefined ? 'copied' : 'converted';
  ctx.log(`published ${request.source} -> ${dest} (${outcome}, ${Number(published.size)} bytes)`);
  return outcome;
}

/** How often the byte bar of a copy is updated from the size of the file being written. */
const COPY_PROGRESS_MS = 250;

/**
 * `dest` becomes a byte-identical copy of `src`: a reflink (instant, no space used) where
 * the filesystem shares extents (btrfs, XFS), else the kernel's own copy
 * (copy_file_range), which on a 174 MiB image took about 60 % of the time of a read/write
 * loop with the next read in flight, and a fifth or less of a Node stream pipeline.
 * The kernel copy cannot be stopped half-way: an abort takes effect when it returns.
 * Fails when the source changes meanwhile.
 */
async function copyImage(ctx: TaskContext, src: string, dest: string): Promise<void> {
  const before = await stat(src, { bigint: true });
  const size = Number(before.size);
  ctx.progress(0, size);
  let copying = true;
  const poll = setInterval(() => {
    void stat(dest).then(
      (written) => copying && ctx.progress(Math.min(written.size, size), size),
      () => undefined,
    );
  }, COPY_PROGRESS_MS);
  try {
    await copyFile(src, dest, fsConstants.COPYFILE_FICLONE);
  } finally {
    copying = false;
    clearInterval(poll);
  }
  ctx.signal.throwIfAborted();
  const after = await stat(src, { bigint: true });
  const copied = await stat(dest, { bigint: true });
  if (after.size !== before.size || after.mtimeNs !== before.mtimeNs || after.ctimeNs !== before.ctimeNs || after.ino !== before.ino) {
    throw new Failure('task', `${src} changed while it was being published; run again`);
  }
  if (copied.size !== before.size) throw new Failure('task', `copying ${src} -> ${dest} wrote ${copied.size} of ${before.size} bytes`);
  ctx.progress(size, size);
}

/** What a published file was made from, and its stat right after: any later change shows. */
interface SourceRecord {
  readonly sourceSha256: string;
  readonly size: number;
  readonly mtimeNs: string;
  /** A write with the mtime put back still moves the ctime, which no one can set. */
  readonly ctimeNs: string;
  readonly ino: string;
}

async function readSourceRecord(publishDir: string, name: string): Promise<SourceRecord | undefined> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(sourceRecordPath(publishDir, name), 'utf8'));
  } catch {
    return undefined; // missing or corrupt: publish again
  }
  if (parsed === null || typeof parsed !== 'object') return undefined;
  const { sourceSha256, size, mtimeNs, ctimeNs, ino } = parsed as Record<string, unknown>;
  const digits = (value: unknown): value is string => typeof value === 'string' && /^\d+$/.test(value);
  // An older record (no ctime) or a damaged one: publish again.
  if (typeof sourceSha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sourceSha256)) return undefined;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || !digits(mtimeNs) || !digits(ctimeNs) || !digits(ino)) return undefined;
  return { sourceSha256, size, mtimeNs, ctimeNs, ino };
}

/** Why the published copy is not the one the record describes, or undefined when it is. */
async function publishedCopyProblem(publishDir: string, name: string, known?: SourceRecord): Promise<string | undefined> {
  const record = known ?? (await readSourceRecord(publishDir, name));
  const current = await stat(publishedPath(publishDir, name), { bigint: true }).catch(() => undefined);
  if (!current) return 'is missing';
  if (!record) return 'has no record of its source';
  if (
    Number(current.size) !== record.size ||
    current.mtimeNs.toString() !== record.mtimeNs ||
    current.ctimeNs.toString() !== record.ctimeNs ||
    current.ino.toString() !== record.ino
  ) {
    return 'was changed outside pipeline';
  }
  return undefined;
}

/** A publish directory must exist and take new files; checked by creating one. */
export async function checkPublishDir(dir: string): Promise<void> {
  const hint = `or set ${PUBLISH_DIR_ENV}`;
  const info = await stat(dir).catch(() => undefined);
  if (!info) throw new Failure('setup', `publish directory ${dir} does not exist: create it (on a PVE host it is local storage's iso directory), ${hint}`);
  if (!info.isDirectory()) throw new Failure('setup', `publish directory ${dir} is not a directory; ${hint.replace('or ', '')}`);
  // access(W_OK) says yes to root on a read-only mount or a protected directory; a real create does not.
  const probe = siblingTempPath(join(dir, '.pipeline-write-check'));
  try {
    const handle = await open(probe, 'w');
    await handle.close();
    await rm(probe, { force: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw new Failure('setup', `publish directory ${dir} is not writable (${code}): run as a user who can write it (root on a PVE host), ${hint}`);
  }
}
