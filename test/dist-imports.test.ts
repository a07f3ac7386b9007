// The built CLI in dist/ is whole: every relative import in every file names a file that is
// there. The build drops esbuild's empty chunks and the imports of them (scripts/build.mjs);
// an import it missed fails only when that code path loads (a lazily loaded signer, say),
// long after the build looked fine.
import test from 'ava';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const DIST = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');

/** Relative specifiers of static and dynamic imports and re-exports in bundled JavaScript. */
function relativeImports(text: string): string[] {
  const found: string[] = [];
  for (const match of text.matchAll(/(?:\bimport\s*\(?\s*|\bfrom\s*)"(\.{1,2}\/[^"]+)"/g)) found.push(match[1]!);
  return found;
}

test('every relative import in dist/ names a file that exists', (t) => {
  const files = readdirSync(DIST, { recursive: true, encoding: 'utf8' }).filter((path) => path.endsWith('.js'));
  t.true(files.length > 0, 'dist/ holds the built CLI');
  let checked = 0;
  for (const file of files) {
    const path = join(DIST, file);
    for (const specifier of relativeImports(readFileSync(path, 'utf8'))) {
      const target = join(dirname(path), specifier);
      t.true(existsSync(target), `dist/${file} imports ${specifier}: dist/${relative(DIST, target)} does not exist`);
      checked++;
    }
  }
  t.true(checked > 0, 'the bundle has shared chunks to import');
  t.log(`${checked} imports in ${files.length} files`);
});
