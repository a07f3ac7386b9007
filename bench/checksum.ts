// Checksum benchmark: what `pipeline` pays to checksum a large image (xxh64 + SHA-256 in
// one read, through the stat cache) against `sha256sum`, which a user would otherwise
// run, measured in the same run on the same file.
//
//   npx tsx bench/checksum.ts [size-MiB]      (default 1024; BENCH_DIR picks the disk)
//
// Both tools read the file after a warm-up pass, so the page cache holds it for each and
// the comparison is of hashing cost, not of disk luck. "cold" means a fresh stat cache:
// every byte is hashed; "warm" is a second run over the unchanged file (a no-op build).
import { execFile as execFileCallback } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { StatCache } from '../src/hasher.ts';

const execFile = promisify(execFileCallback);
const MiB = 1024 * 1024;
const ROUNDS = 3;

async function main(): Promise<void> {
  const sizeMiB = Number(process.argv[2] ?? 1024);
  if (!Number.isFinite(sizeMiB) || sizeMiB <= 0) throw new Error(`size in MiB expected, got ${process.argv[2]}`);
  const dir = await mkdtemp(join(process.env.BENCH_DIR ?? tmpdir(), 'pipeline-bench-'));
  const file = join(dir, 'image.qcow2');
  try {
    await writeRandom(file, sizeMiB * MiB);
    await readAll(file); // warm-up: both tools then read from the page cache

    const sha256sum: number[] = [];
    const cold: number[] = [];
    const warm: number[] = [];
    let agree = true;
    for (let round = 0; round < ROUNDS; round++) {
      // Alternate the order so neither tool always runs after the other.
      const steps = round % 2 === 0 ? ['sha256sum', 'pipeline'] : ['pipeline', 'sha256sum'];
      let theirs = '';
      let ours = '';
      for (const step of steps) {
        if (step === 'sha256sum') {
          const started = performance.now();
          theirs = (await execFile('sha256sum', [file])).stdout.split(' ')[0] ?? '';
          sha256sum.push(performance.now() - started);
        } else {
          const hasher = await StatCache.open();
          let started = performance.now();
          ours = (await hasher.hash(file, { sha256: true })).sha256 ?? '';
          cold.push(performance.now() - started);
          started = performance.now();
          await hasher.hash(file, { sha256: true });
          warm.push(performance.now() - started);
        }
      }
      agree &&= theirs === ours;
    }

    const best = (values: number[]) => Math.min(...values);
    const rate = (ms: number) => `${((sizeMiB / ms) * 1000).toFixed(0)} MiB/s`;
    const base = best(sha256sum);
    console.log(`file: ${sizeMiB} MiB of random bytes, best of ${ROUNDS} rounds, page cache warm`);
    console.log(`sha256sum                         ${best(sha256sum).toFixed(0).padStart(7)} ms  ${rate(base)}`);
    console.log(
      `pipeline cold (xxh64 + SHA-256)   ${best(cold).toFixed(0).padStart(7)} ms  ${rate(best(cold))}  ratio ${(best(cold) / base).toFixed(2)}x sha256sum`,
    );
    console.log(`pipeline warm (stat cache hit)    ${best(warm).toFixed(2).padStart(7)} ms  ratio ${(best(warm) / base).toFixed(5)}x sha256sum`);
    console.log(`digests agree: ${agree ? 'yes' : 'NO'}`);
    if (!agree) process.exitCode = 1;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function writeRandom(path: string, size: number): Promise<void> {
  const handle = await open(path, 'w');
  try {
    const block = 16 * MiB;
    for (let written = 0; written < size; written += block) {
      await handle.write(randomBytes(Math.min(block, size - written)));
    }
  } finally {
    await handle.close();
  }
}

async function readAll(path: string): Promise<void> {
  for await (const _chunk of createReadStream(path, { highWaterMark: 4 * MiB })) {
    // reading is the point
  }
}

await main();
