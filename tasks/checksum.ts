// The checksum step: `images/{name}/{name}.qcow2.sha256` in sha256sum format, so people
// and `sha256sum -c` (run inside the image directory) can check the image. The digest
// comes from the stat cache, which usually has it already from the build's output hash.
import { open, readFile, rename, rm } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import type { FileHasher, NodeDef, NodeId, TaskContext } from '../src/index.ts';

export interface ChecksumSpec {
  readonly name: string;
  /** Relative to the root; default `images/{name}/{name}.qcow2`. */
  readonly imageFile?: string;
  /** Default `[{name}:build]`. */
  readonly deps?: readonly NodeId[];
}

export function defaultImageFile(name: string): string {
  return `images/${name}/${name}.qcow2`;
}

export function checksumFileFor(imageFile: string): string {
  return `${imageFile}.sha256`;
}

export function checksumNode(spec: ChecksumSpec): NodeDef {
  const imageFile = spec.imageFile ?? defaultImageFile(spec.name);
  const checksumFile = checksumFileFor(imageFile);
  return {
    id: `${spec.name}:checksum`,
    kind: 'checksum',
    description: `write ${checksumFile}`,
    deps: spec.deps ?? [`${spec.name}:build`],
    params: { imageFile },
    // No `files: [imageFile]`: the image is the build's output, whose hash already reaches
    // this fingerprint through the dependency, and it does not exist before the first build.
    outputs: [checksumFile],
    // A .sha256 with no stamp (another tool wrote it, or .pipeline/ was lost) is kept
    // when it is the image's: rewriting it would only be right if it were not.
    async adopt({ root, hasher, waitingOn }) {
      if (waitingOn.length > 0) return undefined; // the image may still be rebuilt
      const problem = await checksumFileProblem(root, hasher, imageFile);
      return problem ? { adopt: false, reason: problem } : { adopt: true, reason: `it holds the SHA-256 of ${basename(imageFile)}` };
    },
    async describeRun() {
      return `would write ${checksumFile}`;
    },
    async run(ctx) {
      await writeChecksumFile(ctx, imageFile);
    },
  };
}

/**
 * What is wrong between `imageFile` and the `.sha256` beside it (both relative to the
 * root), said for a person, or undefined when the file holds the image's SHA-256. The
 * image is hashed through the stat cache: one read, free on later runs.
 */
export async function checksumFileProblem(root: string, hasher: FileHasher, imageFile: string): Promise<string | undefined> {
  const checksumFile = checksumFileFor(imageFile);
  let text: string;
  try {
    text = await readFile(resolve(root, checksumFile), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    return `${imageFile} has no ${basename(checksumFile)} to check it against`;
  }
  const recorded = parseSha256Line(text);
  if (!recorded || recorded.fileName !== basename(imageFile)) return `${checksumFile} is not a sha256sum line for ${basename(imageFile)}`;
  const digest = await hasher.hash(resolve(root, imageFile), { sha256: true });
  return digest.sha256 === recorded.sha256 ? undefined : `${imageFile} does not match its .sha256`;
}

/** Hashes `imageFile` (relative to the root) and writes its `.sha256` atomically; returns the digest. */
export async function writeChecksumFile(ctx: TaskContext, imageFile: string): Promise<string> {
  const image = resolve(ctx.root, imageFile);
  ctx.status(`SHA-256 of ${imageFile}`);
  const digest = await ctx.hasher.hash(image, { sha256: true, onProgress: (done, total) => ctx.progress(done, total) });
  if (!digest.sha256) throw new Error(`hasher returned no SHA-256 for ${image}`);
  const target = resolve(ctx.root, checksumFileFor(imageFile));
  const temp = ctx.tempPath(target);
  try {
    const handle = await open(temp, 'w');
    try {
      await handle.writeFile(formatSha256Line(digest.sha256, basename(imageFile)));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await ctx.beginCommit();
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  ctx.log(`${digest.sha256}  ${basename(imageFile)}`);
  return digest.sha256;
}

/** One sha256sum line: digest, two spaces (text mode), the file's base name. */
export function formatSha256Line(sha256: string, fileName: string): string {
  return `${sha256}  ${fileName}\n`;
}

/**
 * Reads a `.sha256` file's first line (`<hex>  name` or `<hex> *name`). Returns undefined
 * when it is not one: the file is untrusted input (a release asset, a hand edit).
 */
export function parseSha256Line(text: string): { sha256: string; fileName: string } | undefined {
  const line = text.split('\n', 1)[0]?.trim() ?? '';
  const match = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(line);
  if (!match?.[1] || !match[2]) return undefined;
  return { sha256: match[1].toLowerCase(), fileName: match[2] };
}
