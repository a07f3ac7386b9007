// Node ids become file names: a stamp and a log per node. An id is any non-empty string,
// so the name made of it must be one path component (no "/", so "../x" stays in its
// directory) and fit the filesystem's 255 bytes with room for what is added to it (a
// temp name's prefix and suffix, a timestamp). A longer one keeps a readable prefix and
// ends in a digest of the whole: two ids that share the prefix still get two names.
import type { NodeId } from './types.ts';

/** What a stem may take of a name: the rest of the 255 bytes is the temp name's and the suffix's. */
const MAX_STEM_BYTES = 160;
/** The readable part kept of a longer stem. */
const PREFIX_BYTES = 120;

/**
 * The stem, unchanged when it fits, else its first bytes (whole characters and whole
 * `%XX` escapes) and `%h` with 16 hex digits of the SHA-256 of `whole`. `%h` is never
 * an escape, so such a name cannot be one a shorter id was given.
 */
export function boundedStem(stem: string, whole: string): string {
  if (Buffer.byteLength(stem) <= MAX_STEM_BYTES) return stem;
  let prefix = '';
  let bytes = 0;
  for (const char of stem) {
    bytes += Buffer.byteLength(char);
    if (bytes > PREFIX_BYTES) break;
    prefix += char;
  }
  prefix = prefix.replace(/%[0-9A-Fa-f]?$/, ''); // an escape cut in two
  // node:crypto is loaded only for such a name: every start would pay for it otherwise.
  const { createHash } = process.getBuiltinModule('node:crypto');
  return `${prefix}%h${createHash('sha256').update(whole).digest('hex').slice(0, 16)}`;
}

/** A name's characters that may not stand in a file name as they are: the separator, control characters, and "%" (the escape). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what this pattern finds
const UNSAFE = /[/%\u0000-\u001f\u007f]/g;

/**
 * A node's log file stem: its log name, or its id with ":" as "." (build:debian-12 logs
 * to build.debian-12…), with "/", "%" and control characters escaped as %XX, bounded.
 */
export function logStem(id: NodeId, logName: string | undefined): string {
  const name = logName ?? id.replaceAll(':', '.');
  return boundedStem(
    name.replace(UNSAFE, (char) => `%${char.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`),
    name,
  );
}
