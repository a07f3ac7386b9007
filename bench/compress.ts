// Compression and publish benchmark on an image of realistic content: a Debian 12 root
// filesystem (mmdebstrap from Debian's packages, `mkfs.ext4 -d` into a 3 GiB raw disk,
// converted to an uncompressed qcow2 as packer leaves it), compressed as the build can:
// zlib on one coroutine (`-m 1`), zstd on one, zstd with the build's `-m`; each twice, to
// see whether the output is byte-identical run to run. Then publishing the built image:
// pipeline's copy (tasks/publish.ts) against what publishing did before, `qemu-img
// convert -c` of the already compressed image, and `cp` + `sync` for scale.
//
//   node --import=tsx bench/compress.ts [--image FILE] [--keep]
//
// Needs root, mmdebstrap, e2fsprogs and qemu-img (sh scripts/e2e-deps.sh installs them)
// and Debian's package mirror (MIRROR, default http://deb.debian.org/debian). The root
// filesystem is cached in BENCH_CACHE (default $TMPDIR/pipeline-bench-compress), so a
// second run does not download again. `--image FILE` uses an existing uncompressed
// qcow2 or raw image instead.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { StatCache } from '../src/hasher.ts';
import { formatBytes } from '../src/report/format.ts';
import { createTaskContext } from '../src/task-context.ts';
import { publishImage } from '../tasks/publish.ts';
import { compressArgs, compressedClusters, imageInfo, type Compression } from '../tasks/qemu-img.ts';
import { fmt, timed } from './support.ts';

const PACKAGES = 'linux-image-cloud-amd64,systemd-sysv,udev,openssh-server,cloud-init,ifupdown,isc-dhcp-client,iproute2,sudo,zstd,qemu-guest-agent';
const { values } = parseArgs({ options: { image: { type: 'string' }, keep: { type: 'boolean' } } });

async function run(file: string, args: readonly string[], cwd: string): Promise<number> {
  const result = await timed(file, args, cwd);
  if (result.code !== 0) throw new Error(`${file} ${args.join(' ')} failed (exit ${result.code}): ${result.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  return result.ms;
}

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 8 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** A Debian 12 root filesystem (a directory), made once and cached. */
async function rootfs(): Promise<string> {
  const cache = process.env.BENCH_CACHE ?? join(tmpdir(), 'pipeline-bench-compress');
  await mkdir(cache, { recursive: true });
  const dir = join(cache, 'bookworm-rootfs');
  if (existsSync(dir)) {
    console.error(`reusing ${dir}`);
    return dir;
  }
  if (process.getuid?.() !== 0) throw new Error('making the root filesystem needs root (mmdebstrap); or pass --image FILE');
  console.error(`mmdebstrap bookworm (${PACKAGES}) -> ${dir} …`);
  const mirror = process.env.MIRROR ?? 'http://deb.debian.org/debian';
  await rm(`${dir}.tmp`, { recursive: true, force: true });
  await run('mmdebstrap', ['--quiet', '--variant=minbase', '--format=directory', `--include=${PACKAGES}`, 'bookworm', `${dir}.tmp`, mirror], cache);
  await rename(`${dir}.tmp`, dir);
  return dir;
}

/** The uncompressed qcow2 packer would leave: the root filesystem on a 3 GiB ext4 disk. */
async function makeSourceImage(work: string): Promise<string> {
  await run('mkfs.ext4', ['-q', '-F', '-d', await rootfs(), join(work, 'disk.raw'), '3G'], work);
  const image = join(work, 'source.qcow2');
  await run('qemu-img', ['convert', '-O', 'qcow2', join(work, 'disk.raw'), image], work);
  await rm(join(work, 'disk.raw'));
  return image;
}

interface Variant {
  readonly label: string;
  readonly compression: Compression;
  /** qemu-img convert coroutines; undefined: the build's own arguments. */
  readonly coroutines?: number;
}

const VARIANTS: readonly Variant[] = [
  { label: 'zlib, one coroutine (-m 1)', compression: 'zlib', coroutines: 1 },
  { label: 'zstd, one coroutine (-m 1)', compression: 'zstd', coroutines: 1 },
  { label: 'zlib, the build’s -m', compression: 'zlib' },
  { label: 'zstd, the build’s -m (pipeline default)', compression: 'zstd' },
];

function convertArgs(variant: Variant, source: string, dest: string): string[] {
  const args = compressArgs(variant.compression);
  if (variant.coroutines !== undefined) args[args.indexOf('-m') + 1] = String(variant.coroutines);
  return ['convert', ...args, source, dest];
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(process.env.BENCH_DIR ?? tmpdir(), 'pipeline-bench-compress-'));
  try {
    const source = values.image ?? (await makeSourceImage(work));
    const info = await imageInfo(source);
    const allocated = info.actualSize ?? (await stat(source)).size;
    console.log(
      `image: ${values.image ?? 'Debian 12 root filesystem (mmdebstrap) on ext4'}, ${formatBytes(info.virtualSize)} virtual, ${formatBytes(allocated)} allocated, ${info.format}, ${await compressedClusters(source)} compressed clusters`,
    );
    await sha256(source); // into the page cache: every variant reads it from memory

    const rows: string[] = [];
    const digests = new Map<string, string>();
    let pipelineImage = '';
    for (const variant of VARIANTS) {
      const outputs = [
        join(work, `${variant.compression}-${variant.coroutines ?? 'm'}-1.qcow2`),
        join(work, `${variant.compression}-${variant.coroutines ?? 'm'}-2.qcow2`),
      ];
      const times: number[] = [];
      for (const output of outputs) times.push(await run('qemu-img', convertArgs(variant, source, output), work));
      const [first, second] = await Promise.all(outputs.map(sha256));
      digests.set(variant.label, first!);
      const size = (await stat(outputs[0]!)).size;
      const args = convertArgs(variant, 'SRC', 'DEST').slice(1, -2).join(' ');
      rows.push(
        `| ${variant.label} (\`${args}\`) | ${fmt(Math.min(...times))} | ${fmt(Math.max(...times))} | ${formatBytes(size)} (${((size / allocated) * 100).toFixed(1)} %) | ${first === second ? 'yes' : 'NO'} |`,
      );
      if (variant.compression === 'zstd' && variant.coroutines === undefined) pipelineImage = outputs[0]!;
      else await Promise.all(outputs.map((output) => rm(output)));
    }
    const sameAcrossM = digests.get(VARIANTS[1]!.label) === digests.get(VARIANTS[3]!.label);
    console.log('\n| compression | faster run | slower run | size (of allocated) | two runs identical |\n|---|---:|---:|---:|---|');
    for (const row of rows) console.log(row);
    console.log(`\nzstd -m 1 and the build's -m write the same bytes: ${sameAcrossM ? 'yes' : 'NO'}`);

    // Publishing the built (zstd) image, twice: the first publish in a process also loads
    // zx for the qemu-img calls (a build before it in the same run would have).
    const imageSha = await sha256(pipelineImage);
    const publishMs: number[] = [];
    let outcome = '';
    let identical = true;
    for (const round of [1, 2]) {
      const publishDir = join(work, `publish-${round}`);
      await mkdir(publishDir);
      const context = createTaskContext({
        id: 'bench:publish',
        root: work,
        logFile: join(work, 'publish.log'),
        signal: new AbortController().signal,
        hasher: await StatCache.open(),
      });
      const started = performance.now();
      outcome = await publishImage(context, { source: pipelineImage, sourceSha256: imageSha, publishDir, name: 'bench' });
      publishMs.push(performance.now() - started);
      await context.close();
      identical &&= (await sha256(join(publishDir, 'bench.img'))) === imageSha;
    }
    const copyMs = publishMs[1]!;
    const convertMs = await run('qemu-img', ['convert', '-c', '-O', 'qcow2', pipelineImage, join(work, 'converted.img')], work);
    const convertedSize = (await stat(join(work, 'converted.img'))).size;
    // The shell's copy with the durability publish gives its copy (sync FILE fsyncs it).
    const cpMs = await run('sh', ['-c', 'cp --reflink=auto "$1" "$2" && sync "$2"', 'sh', pipelineImage, join(work, 'cp.img')], work);
    console.log(`\npublish of the built image (${formatBytes((await stat(pipelineImage)).size)}):\n`);
    console.log('| publish | time | result |\n|---|---:|---|');
    console.log(
      `| pipeline (${outcome}: qemu-img info + check, copy, fsync, rename) | ${fmt(copyMs)} | byte-identical to the image: ${identical ? 'yes' : 'NO'} |`,
    );
    console.log(`| the same, first in its process (zx loads) | ${fmt(publishMs[0]!)} | |`);
    console.log(`| \`qemu-img convert -c -O qcow2\` (publish before) | ${fmt(convertMs)} | ${formatBytes(convertedSize)}, a second compression (zlib) |`);
    console.log(`| \`cp --reflink=auto\` + \`sync\` of the copy | ${fmt(cpMs)} | |`);
    console.log(`\nratio pipeline publish / convert -c: ${(copyMs / convertMs).toFixed(3)}x`);
    if (!identical || rows.some((row) => row.endsWith('NO |')) || !sameAcrossM) process.exitCode = 1;
  } finally {
    if (values.keep) console.error(`kept ${work}`);
    else await rm(work, { recursive: true, force: true });
  }
}

await main();
