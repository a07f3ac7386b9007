// The stat cache's hashing (xxh64 + SHA-256 of one file, page cache warm) at another
// commit against this tree, in the same run: each hash in a fresh child process, so the
// SHA-256 thread starts cold as in a CLI run; the two alternate.
//
//   node --import=tsx bench/hasher-ab.ts [--ref COMMIT] [--mib N] [--runs N]
//
// --ref defaults to f8234da, the last commit before reads ahead and the SHA-256 thread.
// Its src/hasher.ts and the files it imports are taken with `git show` into a temp
// directory inside the repository (so its packages resolve), removed afterwards.
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fmt, median, REPO } from './support.ts';

const { values } = parseArgs({
  options: { ref: { type: 'string', default: 'f8234da' }, mib: { type: 'string', default: '1024' }, runs: { type: 'string', default: '5' } },
});
const OLD_FILES = ['src/hasher.ts', 'src/atomic.ts', 'src/types.ts', 'src/failure.ts'];

function hashIn(module: string, file: string): { ms: number; sha256: string } {
  const code = `
const { StatCache } = await import(${JSON.stringify(module)});
const hasher = await StatCache.open();
const started = performance.now();
const digest = await hasher.hash(process.argv[1], { sha256: true });
process.stdout.write(JSON.stringify({ ms: performance.now() - started, sha256: digest.sha256 }));`;
  return JSON.parse(execFileSync(process.execPath, ['--import=tsx', '--input-type=module', '-e', code, file], { cwd: REPO, encoding: 'utf8' })) as {
    ms: number;
    sha256: string;
  };
}

const work = await mkdtemp(join(REPO, '.bench-hasher-'));
try {
  for (const path of OLD_FILES) {
    await writeFile(join(work, path.replace('src/', '')), execFileSync('git', ['show', `${values.ref}:${path}`], { cwd: REPO }));
  }
  const file = join(work, 'data.bin');
  execFileSync('sh', ['-c', 'head -c "$1" /dev/urandom > "$2" && cat "$2" > /dev/null', 'sh', `${values.mib}M`, file]);
  const expected = execFileSync('sha256sum', [file], { encoding: 'utf8' }).split(' ')[0];
  const times: Record<'before' | 'after', number[]> = { before: [], after: [] };
  for (let round = 0; round < Number(values.runs); round++) {
    for (const [name, module] of [
      ['before', join(work, 'hasher.ts')],
      ['after', join(REPO, 'src', 'hasher.ts')],
    ] as const) {
      const result = hashIn(module, file);
      if (result.sha256 !== expected) throw new Error(`${name}: wrong SHA-256`);
      times[name].push(result.ms);
    }
  }
  const bytes = Number(values.mib) * 2 ** 20;
  for (const name of ['before', 'after'] as const) {
    const ms = median(times[name]);
    console.log(
      `${name === 'before' ? `${values.ref} ` : 'this tree'}: median ${fmt(ms)} (${(bytes / ms / 1e6).toFixed(2)} GB/s); runs ${times[name].map((t) => fmt(t)).join(', ')}`,
    );
  }
  console.log(`ratio this tree / ${values.ref}: ${(median(times.after) / median(times.before)).toFixed(2)}x`);
} finally {
  await rm(work, { recursive: true, force: true });
}
