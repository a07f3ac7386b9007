// The build's `.cache-key`, in the format README "How staleness is decided" documents (the
// one image trees built before pipeline carry, so such images are adopted without a
// rebuild):
//
//   template = sha256(cat templates/{name}/template.pkr.hcl templates/{name}/cleanup.sh \
//                         shared/scripts/cleanup-common.sh shared/scripts/detect-versions.sh \
//                         shared/cloud-init/user-data.pkrtpl shared/cloud-init/meta-data [extra…])
//   source   = sha256(cache/<base image>)
//   key      = sha256("<source>:<template>\n")        (echo "$src:$tpl" | sha256sum)
//
// `compute()` returns the 64 hex digits; the engine writes them with a newline (as
// `echo "$key" > .cache-key` would), and compares a recorded key with whitespace trimmed.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { posix, resolve } from 'node:path';
import type { FileHasher, KeyFile } from '../src/index.ts';

export interface TemplateFilesOptions {
  /** Image name: the template is `{templatesDir}/{name}/`. */
  readonly name: string;
  /** Directory of the templates, relative to the project root (default `templates`). */
  readonly templatesDir?: string;
  /** The repository's shared/ directory, relative to the project root (default `shared`). */
  readonly sharedDir?: string;
  /** Further inputs the image declares, relative to the root; hashed after the six of `templateKeyFiles`. */
  readonly extraFiles?: readonly string[];
}

export interface CacheKeyOptions extends TemplateFilesOptions {
  /** The base cloud image in cache/, relative to the root. */
  readonly baseImage: string;
}

/** Thrown when a file the key covers does not exist: a missing input is never skipped. */
export class MissingKeyInput extends Error {
  override readonly name = 'MissingKeyInput';
  constructor(readonly path: string) {
    super(`cache key input missing: ${path}`);
  }
}

/** The template specification's files, in the order the key format concatenates them. */
export function templateKeyFiles(options: TemplateFilesOptions): string[] {
  const templateDir = posix.join(options.templatesDir ?? 'templates', options.name);
  const sharedDir = options.sharedDir ?? 'shared';
  return [
    posix.join(templateDir, 'template.pkr.hcl'),
    posix.join(templateDir, 'cleanup.sh'),
    posix.join(sharedDir, 'scripts', 'cleanup-common.sh'),
    posix.join(sharedDir, 'scripts', 'detect-versions.sh'),
    posix.join(sharedDir, 'cloud-init', 'user-data.pkrtpl'),
    posix.join(sharedDir, 'cloud-init', 'meta-data'),
    ...(options.extraFiles ?? []),
  ];
}

/** SHA-256 hex of the files' contents concatenated (these are small text files). */
export async function templateHash(root: string, files: readonly string[]): Promise<string> {
  return (await templateHashes(root, files)).combined;
}

/** The concatenation's SHA-256 and each file's own, from one read of each file. */
export async function templateHashes(root: string, files: readonly string[]): Promise<{ combined: string; perFile: Record<string, string> }> {
  const combined = createHash('sha256');
  const perFile: Record<string, string> = {};
  for (const file of files) {
    let content: Buffer;
    try {
      content = await readFile(resolve(root, file));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new MissingKeyInput(file);
      throw error;
    }
    combined.update(content);
    perFile[file] = createHash('sha256').update(content).digest('hex');
  }
  return { combined: combined.digest('hex'), perFile };
}

/** SHA-256 hex of the base image, through the stat cache (free when the file is unchanged). */
export async function sourceHash(hasher: FileHasher, root: string, baseImage: string): Promise<string> {
  try {
    const digest = await hasher.hash(resolve(root, baseImage), { sha256: true });
    if (!digest.sha256) throw new Error(`the hasher gave no SHA-256 for ${baseImage}`);
    return digest.sha256;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new MissingKeyInput(baseImage);
    throw error;
  }
}

/** The composite key as 64 hex digits. */
export async function computeCacheKey(hasher: FileHasher, root: string, options: CacheKeyOptions): Promise<string> {
  const [source, template] = await Promise.all([sourceHash(hasher, root, options.baseImage), templateHash(root, templateKeyFiles(options))]);
  return composeCacheKey(source, template);
}

/** `echo "$src:$tpl" | sha256sum`. */
export function composeCacheKey(sourceSha256: string, templateSha256: string): string {
  return createHash('sha256').update(`${sourceSha256}:${templateSha256}\n`).digest('hex');
}

/** Path of an image's key file, relative to the root. */
export function cacheKeyPath(name: string): string {
  return posix.join('images', name, '.cache-key');
}

/** The build node's key file. */
export function cacheKeyFile(options: CacheKeyOptions): KeyFile {
  return {
    path: cacheKeyPath(options.name),
    compute: (hasher, root) => computeCacheKey(hasher, root, options),
  };
}
