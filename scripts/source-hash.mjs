// The content hash of everything `npm run build` compiles into dist/, so a build can be
// told apart from the sources it was made from (scripts/build.mjs records it; the test
// suite refuses a dist/ built from other sources).
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

/** Files and directories the build reads, relative to the repository root. */
export const BUILD_INPUTS = ['index.ts', 'src', 'tasks', 'tsconfig.json', 'tsconfig.build.json', 'scripts/build.mjs'];

/** Where the build records the hash of the sources it compiled. */
export const STAMP_FILE = 'dist/.source-hash';

export function sourceHash(root) {
  const files = [];
  for (const input of BUILD_INPUTS) {
    const path = join(root, input);
    if (/\.(?:ts|json|mjs)$/.test(input)) files.push(path);
    else
      for (const entry of readdirSync(path, { recursive: true, withFileTypes: true })) {
        if (entry.isFile() && entry.name.endsWith('.ts')) files.push(join(entry.parentPath ?? entry.path, entry.name));
      }
  }
  const hash = createHash('sha256');
  for (const file of files.map((path) => relative(root, path)).sort()) {
    hash
      .update(`${file}\0`)
      .update(readFileSync(join(root, file)))
      .update('\0');
  }
  return hash.digest('hex');
}

/** The hash recorded by the last build, or undefined when there is none. */
export function builtHash(root) {
  try {
    return readFileSync(join(root, STAMP_FILE), 'utf8').trim();
  } catch {
    return undefined;
  }
}
