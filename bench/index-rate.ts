// The hashing rate of the CLI's hasher (xxh64 and SHA-256 in one read) with and without
// the chunk index made in the same read, as the build's output hashing makes it:
//
//   node --import=tsx bench/index-rate.ts [--gib 1] [--runs 5]
//
// The file is read from the page cache (it was just written), so the figures are the
// hashing's, not the disk's. Rates in GB/s (10^9 bytes), as the target (>= 1 GB/s) is stated;
// beside them the CPU time per GB (all threads: SHA-256 runs on one of its own), which on a
// machine shared with other work says more than the wall time.
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { StatCache } from '../src/hasher.ts';
import { ChunkIndexBuilder } from '../tasks/store/delta/chunk-index.ts';
import { median } from './support.ts';

const { values } = parseArgs({ options: { gib: { type: 'string', default: '1' }, runs: { type: 'string', default: '5' } } });
const bytes = Number(values.gib) * 1024 ** 3;
const runs = Number(values.runs);
const dir = await mkdtemp(join(tmpdir(), 'pipeline-index-rate-'));
try {
  const file = join(dir, 'image');
  execFileSync('sh', ['-c', 'head -c "$1" /dev/urandom > "$2"', 'sh', String(bytes), file]);
  const plain: number[] = [];
  const indexed: number[] = [];
  const plainCpu: number[] = [];
  const indexedCpu: number[] = [];
  let indexBytes = 0;
  const cpuMs = (since: NodeJS.CpuUsage) => {
    const used = process.cpuUsage(since);
    return (used.user + used.system) / 1000;
  };
  for (let round = 0; round < runs; round++) {
    // A fresh cache each time: every hash reads the file.
    let started = performance.now();
    let cpu = process.cpuUsage();
    await (await StatCache.open()).hash(file, { sha256: true });
    plain.push(performance.now() - started);
    plainCpu.push(cpuMs(cpu));
    const builder = new ChunkIndexBuilder();
    started = performance.now();
    cpu = process.cpuUsage();
    const digest = await (await StatCache.open()).hash(file, { sha256: true, observe: builder });
    indexBytes = (await builder.finish(digest.sha256!)).length;
    indexed.push(performance.now() - started);
    indexedCpu.push(cpuMs(cpu));
  }
  const rate = (ms: number, cpu: number) => `${(bytes / ms / 1e6).toFixed(2)} GB/s (CPU ${((cpu / bytes) * 1e6).toFixed(2)} s/GB)`;
  console.log(
    `${values.gib} GiB, median of ${runs}: SHA-256 + xxh64 ${rate(median(plain), median(plainCpu))}; with the chunk index ${rate(median(indexed), median(indexedCpu))} (index ${indexBytes} bytes, ${((indexBytes / bytes) * 100).toFixed(3)} %)`,
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
