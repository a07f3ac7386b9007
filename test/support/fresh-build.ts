// Loaded by ava before every test file (package.json "ava.require"): the CLI the tests run
// is the compiled one in dist/, so a dist/ built from other sources than these would test
// old code while the sources look tested. `npm test` builds first; a bare `npx ava` after
// an edit stops here with what to run.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { builtHash, sourceHash } from '../../scripts/source-hash.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const built = builtHash(repo);
if (built !== sourceHash(repo)) {
  const what = built === undefined ? 'dist/ has not been built' : 'dist/ was built from other sources than these';
  throw new Error(`${what}: run \`npm run build\` (npm test builds first)`);
}
