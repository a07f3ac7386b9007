// The publish step: install `images/{name}/{name}.qcow2` into PVE storage as
// `{publishDir}/{name}.img` with `qemu-img convert -c`, through a temp name in that
// directory. A sidecar record next to the published file remembers which source content
// it was made from, so an unchanged image is never converted twice, whatever mtimes say.
import { open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { fsyncPath, writeFileAtomic } from '../src/atomic.ts';
import { formatBytes } from '../src/report/format.ts';
import { Failure, type NodeDef, type NodeId, type TaskContext } from '../src/types.ts';
import { defaultImageFile } from './checksum.ts';
import { convertCompressed, qemuImgAvailable } from './qemu-img.ts';

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
  const publishDir = () => resolvePublishDir(spec.publishDir);
  return {
    id: `${spec.name}:publish`,
    kind: 'publish',
    description: `install ${spec.name}.img into ${spec.publishDir ?? DEFAULT_PUBLISH_DIR}`,
    deps: spec.deps ?? [`${spec.name}:checksum`],
    params: { imageFile, publishDir: spec.publishDir ?? DEFAULT_PUBLISH_DIR },
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
    async preflight() {
      await checkPublishDir(publishDir());
      if (!(await qemuImgAvailable())) {
        throw new Failure('setup', 'qemu-img not found: install it (apt install qemu-utils) to publish images');
      }
    },
    async describeRun(context) {
      const source = resolve(context.root, imageFile);
      const size = (await stat(source).catch(() => undefined))?.size;
      const detail = size === undefined ? 'not built yet' : formatBytes(size);
      return `would copy ${imageFile} -> ${publishedPath(publishDir(), spec.name)} (${detail})`;
    },
    async run(ctx) {
      const source = resolve(ctx.root, imageFile);
      ctx.status(`SHA-256 of ${imageFile}`);
      // Usually free: the checksum step stored it in the stat cache.
      const digest = await ctx.hasher.hash(source, { sha256: true, onProgress: (done, total) => ctx.progress(done, total) });
      if (!digest.sha256) throw new Error(`hasher returned no SHA-256 for ${source}`);
      await publishImage(ctx, { source, sourceSha256: digest.sha256, publishDir: publishDir(), name: spec.name });
    },
  };
}

export interface PublishRequest {
  /** Absolute path of the qcow2 to publish. */
  readonly source: string;
  readonly sourceSha256: string;
  readonly publishDir: string;
  readonly name: string;
}

/**
 * Converts `source` into `{publishDir}/{name}.img` unless the file there was made from
 * the same content and is still untouched. Also used by `images download --publish`.
 */
export async function publishImage(ctx: TaskContext, request: PublishRequest): Promise<'published' | 'unchanged'> {
  const dest = publishedPath(request.publishDir, request.name);
  const record = await readSourceRecord(request.publishDir, request.name);
  if (record?.sourceSha256 === request.sourceSha256 && (await publishedCopyProblem(request.publishDir, request.name, record)) === undefined) {
    ctx.log(`${dest} is already published from this image (sha256 ${request.sourceSha256.slice(0, 12)}…); skipping`);
    return 'unchanged';
  }
  const temp = ctx.tempPath(dest);
  try {
    ctx.status(`qemu-img convert -c -> ${dest}`);
    await convertCompressed(ctx, request.source, temp);
    await fsyncPath(temp);
    await ctx.beginCommit();
    await rename(temp, dest);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  // Written after the rename: an interruption in between leaves a record whose size and
  // mtime do not match the new file, which only costs one more conversion.
  const published = await stat(dest, { bigint: true });
  const next: SourceRecord = {
    sourceSha256: request.sourceSha256,
    size: Number(published.size),
    mtimeNs: published.mtimeNs.toString(),
    ino: published.ino.toString(),
  };
  await writeFileAtomic(sourceRecordPath(request.publishDir, request.name), `${JSON.stringify(next)}\n`);
  ctx.log(`published ${request.source} -> ${dest} (${Number(published.size)} bytes)`);
  return 'published';
}

const SourceRecordSchema = z.object({
  sourceSha256: z.string().regex(/^[0-9a-f]{64}$/),
  size: z.number().int().nonnegative(),
  mtimeNs: z.string().regex(/^\d+$/),
  ino: z.string().regex(/^\d+$/),
});
type SourceRecord = z.infer<typeof SourceRecordSchema>;

async function readSourceRecord(publishDir: string, name: string): Promise<SourceRecord | undefined> {
  try {
    const parsed = SourceRecordSchema.safeParse(JSON.parse(await readFile(sourceRecordPath(publishDir, name), 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined; // missing or corrupt: publish again
  }
}

/** Why the published copy is not the one the record describes, or undefined when it is. */
async function publishedCopyProblem(publishDir: string, name: string, known?: SourceRecord): Promise<string | undefined> {
  const record = known ?? (await readSourceRecord(publishDir, name));
  const current = await stat(publishedPath(publishDir, name), { bigint: true }).catch(() => undefined);
  if (!current) return 'is missing';
  if (!record) return 'has no record of its source';
  if (Number(current.size) !== record.size || current.mtimeNs.toString() !== record.mtimeNs || current.ino.toString() !== record.ino) {
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
  const probe = join(dir, `.pipeline-write-check.${process.pid}`);
  try {
    const handle = await open(probe, 'w');
    await handle.close();
    await rm(probe, { force: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw new Failure('setup', `publish directory ${dir} is not writable (${code}): run as a user who can write it (root on a PVE host), ${hint}`);
  }
}
