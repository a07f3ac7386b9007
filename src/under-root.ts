// The absolute path of a file a config names, relative to the tree's root: made for every
// input and output of every node at every run. path.resolve normalises character by
// character, dear in code that runs once and so is never optimised. A plain relative path (no `.` or `..` segment, no empty
// segment, no trailing slash) under a normalised root needs only the two joined by a
// slash; anything else goes through path.resolve, so the answer is always resolve's.
import { resolve, sep } from 'node:path';

const NEEDS_NORMALISING = /(?:^|\/)\.{1,2}(?:\/|$)|\/\/|\/$/;

/** Roots seen to be absolute and normalised (resolve(root) === root). */
const normalisedRoots = new Set<string>();

export function resolveUnder(root: string, path: string): string {
  if (sep !== '/' || path === '' || path.startsWith('/') || NEEDS_NORMALISING.test(path) || !isNormalisedRoot(root)) return resolve(root, path);
  return root === '/' ? `/${path}` : `${root}/${path}`;
}

function isNormalisedRoot(root: string): boolean {
  if (normalisedRoots.has(root)) return true;
  if (resolve(root) !== root) return false;
  normalisedRoots.add(root);
  return true;
}
