// Names that reach a store or the file system from config, flags, the environment or the
// network, checked the same way everywhere and before any request is made.
import { Failure, type FailureKind } from '../../src/index.ts';

/** Image names: lower-case letters, digits, dots and dashes, starting with a letter or digit. */
const IMAGE_NAME = /^[a-z0-9][a-z0-9.-]*$/;
/** A tag (`latest`, `v2025.01`): what git and GitHub accept, minus what a URL path or a shell would trip on. */
const TAG_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** What may become a file name inside a target directory: no separators, no `..`. */
const SAFE_FILE_NAME = /^[A-Za-z0-9._-]+$/;

export function isValidImageName(name: string): boolean {
  return IMAGE_NAME.test(name);
}

export function isValidTag(tag: string): boolean {
  return TAG_NAME.test(tag) && !tag.includes('..') && !tag.endsWith('.') && !tag.endsWith('.lock');
}

/**
 * Returns `tag`, or throws a one-line Failure naming where it came from (`--tag`,
 * `release.tag in the config`, `the target upload:…`): config mistakes are `config`,
 * command-line ones `usage`.
 */
export function checkTag(tag: string, source: string, kind: FailureKind = 'usage'): string {
  if (!isValidTag(tag)) {
    throw new Failure(
      kind,
      `${source}: ${JSON.stringify(tag)} is not a valid release tag: use letters, digits, '.', '_' and '-', starting with a letter or digit (no '..', no spaces)`,
    );
  }
  return tag;
}

/** Throws unless `name` (from a store, so untrusted) can safely become a file name inside a directory. */
export function assertSafeFileName(name: string): string {
  if (!SAFE_FILE_NAME.test(name) || name.includes('..') || name === '.') {
    throw new Failure('integrity', `refusing name ${JSON.stringify(name)} from the store: only letters, digits, '.', '_' and '-' are allowed, and no '..'`);
  }
  return name;
}

/** `{name}.qcow2`: the image file, locally and in every store. */
export function imageFileName(name: string): string {
  return `${name}.qcow2`;
}
