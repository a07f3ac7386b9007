// Seeded fetches (issue 20) against zsync 0.6.2 and casync on real image pairs, served by
// the loopback GitHub server throttled to a home uplink (20 MB/s by default, all
// downloads together), all measured in one run:
//
//   node --import=tsx bench/delta.ts --pair builds:OLD.qcow2:NEW.qcow2 --pair edited:OLD:NEW [--rate 20] [--runs 1] [--no-peers]
//
// The seeded fetch also runs once as the CLI itself (`node bin/pipeline.js images download
// --overwrite`, from dist/) under /usr/bin/time (Debian's `time` package), for its peak RSS
// and its wall time as a user meets it on a host that ran pipeline before (its config
// compiled once, untimed, by `images list`). `--no-peers` leaves out zsync, casync and the lower
// bound (for a large pair); `--cli-only` runs only the CLI's seeded download (its peak RSS).
//
// Pairs: two builds of the e2e image from the same inputs (`e2e-debian:build --force`
// twice), and a real image with an edited next version (bench/delta-edit-pair.sh).
// Per pair:
// - pipeline: `images download` with the old image as the file being replaced (its chunk
//   index and ranged reads of the release's 64 MiB parts; copying the old image into place
//   is not timed, as zsync reads its seed where it is), the whole download with no seed,
//   and with a seed that holds nothing of it (random bytes);
// - zsync: `zsyncmake` (not timed), then `zsync -i OLD` of the control file's URL;
// - casync: `casync make` (default chunking, not timed), then `casync extract --seed=OLD`
//   from an HTTP chunk store behind the same throttle;
// - the lower bound: bytes of the new image's 4 KiB content-defined chunks not in the old.
// Bytes are body bytes the servers sent (index or control file included); times are wall.
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join, normalize } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { DEFAULT_CHUNKING } from '../tasks/store/delta/chunk-index.ts';
import { chunkIndexOf } from '../tasks/store/delta/index-file.ts';
import { type ChunkingParams, GearChunker } from '../tasks/store/delta/gear-chunker.ts';
import { getImage } from '../tasks/store/get-image.ts';
import { readInOrder } from '../tasks/store/file-reads.ts';
import { storeSettings } from '../tasks/store/backends.ts';
import { openImageStore } from '../tasks/store/open.ts';
import { GitHubServer, Pacer } from '../test/support/github-server.ts';
import { BIN, fmt, median, REPO, timed } from './support.ts';

const { values } = parseArgs({
  options: {
    pair: { type: 'string', multiple: true },
    rate: { type: 'string', default: '20' },
    runs: { type: 'string', default: '1' },
    'no-peers': { type: 'boolean', default: false },
    'cli-only': { type: 'boolean', default: false },
  },
});
const cliOnly = values['cli-only'];
const peers = !values['no-peers'] && !cliOnly;
const rate = Number(values.rate) * 1e6;
const runs = Number(values.runs);
const PART_SIZE = 64 * 1024 * 1024;

interface Figures {
  bytes: number;
  ms: number;
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(2)} MB`;
}

async function sha256Of(path: string): Promise<string> {
  const hash = createHash('sha256');
  await readInOrder(path, { each: (chunk) => void hash.update(chunk) });
  return hash.digest('hex');
}

/** The issue's lower bound: content-defined chunks of 4 KiB on average (the index itself cuts smaller). */
const BOUND_CHUNKING: ChunkingParams = { ...DEFAULT_CHUNKING, minSize: 1024, avgSize: 4096, maxSize: 16384 };

/** Bytes of `after`'s distinct chunks (cut by `params`) that `before` does not have. */
async function lowerBound(before: string, after: string, params: ChunkingParams): Promise<number> {
  const keys = async (path: string): Promise<Map<string, number>> => {
    const chunker = new GearChunker(params);
    const found = new Map<string, number>();
    const each = (_offset: number, length: number, high: number, low: number) => found.set(`${high}:${low}:${length}`, length);
    await readInOrder(path, { each: (bytes) => chunker.push(bytes, each) });
    chunker.end(each);
    return found;
  };
  const old = await keys(before);
  let missing = 0;
  for (const [key, length] of await keys(after)) if (!old.has(key)) missing += length;
  return missing;
}

/** A static file server behind a pacer (casync's chunk store), counting body bytes. */
async function staticServer(root: string, pacer: Pacer): Promise<{ url: string; bytes: () => number; close: () => Promise<void> }> {
  let served = 0;
  const server = http.createServer(async (request, response) => {
    const path = join(root, normalize(decodeURIComponent(new URL(request.url ?? '/', 'http://x').pathname)));
    const info = await stat(path).catch(() => undefined);
    if (!info?.isFile()) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-length': String(info.size) });
    for await (const chunk of createReadStream(path, { highWaterMark: 64 * 1024 }) as AsyncIterable<Buffer>) {
      served += chunk.length;
      await pacer.take(chunk.length);
      if (!response.write(chunk)) await new Promise((resolve) => response.once('drain', resolve));
    }
    response.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    bytes: () => served,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** zsync wants the whole file at one URL: a second asset, outside the image's own, and the control file beside it. */
async function zsyncControl(server: GitHubServer, newPath: string, work: string): Promise<{ url: string; size: number }> {
  await server.putAsset('latest', 'whole.qcow2', await readFile(newPath));
  const whole = server.assets('latest').find((asset) => asset.name === 'whole.qcow2')!;
  const wholeUrl = `${server.url}/storage/${whole.id}/whole.qcow2`;
  execFileSync('zsyncmake', ['-u', wholeUrl, '-o', join(work, 'img.zsync'), newPath], { stdio: 'ignore' });
  await server.putAsset('latest', 'img.zsync', await readFile(join(work, 'img.zsync')));
  const control = server.assets('latest').find((asset) => asset.name === 'img.zsync')!;
  return { url: `${server.url}/storage/${control.id}/img.zsync`, size: control.size };
}

/**
 * The seeded download as a user runs it: `pipeline images download img --dir D --overwrite`
 * from dist/, in a project that declares the image and the release, with the old image as
 * the file being replaced; under /usr/bin/time for its peak RSS. Not execFileSync: the
 * server answering it runs in this process.
 */
async function seededCli(
  server: GitHubServer,
  env: Record<string, string>,
  oldPath: string,
  work: string,
): Promise<{ path: string; ms: number; rssMiB: number; summary: string }> {
  const project = join(work, 'cli');
  const dir = join(project, 'downloads');
  await mkdir(dir, { recursive: true });
  await writeFile(
    join(project, 'pipeline.config.ts'),
    `import { defineConfig } from ${JSON.stringify(join(REPO, 'dist', 'index.js'))};
export default defineConfig({
  bases: { base: { url: 'file:///nonexistent/base.qcow2', checksumsUrl: 'file:///nonexistent/SHA512SUMS' } },
  images: { img: { base: 'base' } },
  release: { repo: '${server.owner}/${server.repo}', apiUrl: ${JSON.stringify(server.url)}, tag: 'latest' },
});
`,
  );
  const path = join(dir, 'img.qcow2');
  await copyFile(oldPath, path);
  // A host that ran pipeline before has its config compiled already (.pipeline/config/): not timed.
  await promisify(execFile)(process.execPath, [BIN, 'images', 'list'], { cwd: project, env: { ...process.env, ...env, CI: '1' } });
  const timeFile = join(work, 'time');
  const started = performance.now();
  const { stdout } = await promisify(execFile)(
    '/usr/bin/time',
    ['-o', timeFile, '-f', '%M', process.execPath, BIN, 'images', 'download', 'img', '--dir', dir, '--overwrite'],
    { cwd: project, env: { ...process.env, ...env, CI: '1' }, maxBuffer: 16 * 1024 * 1024 },
  );
  const ms = performance.now() - started;
  const rssMiB = Number((await readFile(timeFile, 'utf8')).trim().split('\n').at(-1)) / 1024;
  const summary = stdout.trim().split('\n').at(-1) ?? '';
  return { path, ms, rssMiB, summary };
}

async function benchPair(label: string, oldPath: string, newPath: string): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'pipeline-delta-bench-'));
  try {
    const size = (await stat(newPath)).size;
    const sha256 = await sha256Of(newPath);
    console.log(`\n== ${label}: ${oldPath} -> ${newPath} (${mb(size)})`);
    const server = await GitHubServer.start({ rateBytesPerSecond: rate });
    const env = {
      GITHUB_TOKEN: server.token,
      PIPELINE_PART_SIZE: String(PART_SIZE),
      PIPELINE_MAX_ASSET_SIZE: String(PART_SIZE),
    };
    const store = await openImageStore(storeSettings({ repo: `${server.owner}/${server.repo}`, apiUrl: server.url }, 'latest'), 'latest', { env });
    const imagePath = join(work, 'img.qcow2');
    await copyFile(newPath, imagePath);
    const index = await chunkIndexOf(imagePath, size, sha256);
    await store.put(
      {
        name: 'img',
        path: imagePath,
        size,
        sha256,
        cacheKey: 'bench',
        versions: {},
        sources: { base: { path: 'cache/base.qcow2' }, files: {} },
        attachments: { 'chunk-index': index },
      },
      { force: false, signal: new AbortController().signal, log: () => {} },
    );
    const control = peers ? await zsyncControl(server, newPath, work) : undefined;

    const measure = async (run: () => Promise<void>, bytes: () => number, setUp?: () => Promise<void>): Promise<Figures> => {
      const times: number[] = [];
      let moved = 0;
      for (let round = 0; round < runs; round++) {
        await setUp?.();
        const before = bytes();
        const started = performance.now();
        await run();
        times.push(performance.now() - started);
        moved = bytes() - before;
      }
      return { bytes: moved, ms: median(times) };
    };
    const served = () => server.bytesServed;
    const check = async (path: string, what: string) => {
      if ((await sha256Of(path)) !== sha256) throw new Error(`${what} did not rebuild the new image`);
    };

    if (cliOnly) {
      const cli = await seededCli(server, env, oldPath, work);
      await check(cli.path, 'the CLI');
      await server.close();
      console.log(`  the CLI, seeded: ${fmt(cli.ms)}, peak RSS ${cli.rssMiB.toFixed(0)} MiB (${cli.summary})`);
      return;
    }
    // pipeline, seeded: the old image is the file being replaced.
    const seededDir = join(work, 'seeded');
    await mkdir(seededDir);
    const indexRead = () => server.bytesServedOf.get('img.qcow2.chunks') ?? 0;
    const indexReadBefore = indexRead();
    const seeded = await measure(
      async () => {
        await getImage(store, 'img', {
          path: join(seededDir, 'img.qcow2'),
          overwrite: true,
          signal: new AbortController().signal,
          seeds: [{ path: join(seededDir, 'img.qcow2'), role: 'the file being replaced' }],
        });
      },
      served,
      () => copyFile(oldPath, join(seededDir, 'img.qcow2')),
    );
    await check(join(seededDir, 'img.qcow2'), 'the seeded fetch');
    const indexBytesRead = (indexRead() - indexReadBefore) / runs;
    await rm(seededDir, { recursive: true });
    const cli = await seededCli(server, env, oldPath, work);
    await check(cli.path, 'the CLI');
    await rm(cli.path);
    // pipeline, whole download.
    const full = await measure(async () => {
      await rm(join(work, 'full'), { recursive: true, force: true });
      await getImage(store, 'img', { path: join(work, 'full', 'img.qcow2'), overwrite: false, signal: new AbortController().signal });
    }, served);
    // pipeline, a seed that holds nothing of the image.
    const strangerDir = join(work, 'stranger');
    await mkdir(strangerDir);
    // Unrelated bytes; past the first 4 MiB the seed is given up, so a large image needs no more.
    execFileSync('sh', ['-c', 'head -c "$1" /dev/urandom > "$2"', 'sh', String(Math.min(size, 256 * 1024 * 1024)), join(strangerDir, 'img.qcow2')]);
    const stranger = await measure(async () => {
      await rm(join(strangerDir, '.img.qcow2.partial'), { force: true });
      await getImage(store, 'img', {
        path: join(strangerDir, 'new.qcow2'),
        overwrite: true,
        signal: new AbortController().signal,
        seeds: [{ path: join(strangerDir, 'img.qcow2'), role: 'unrelated' }],
      });
      await rm(join(strangerDir, 'new.qcow2'));
    }, served);
    if (!peers) {
      await server.close();
      console.log(
        `  pipeline, seeded: ${mb(seeded.bytes)} in ${fmt(seeded.ms)}; whole download ${mb(full.bytes)} in ${fmt(full.ms)}; seed that matches none ${mb(stranger.bytes)} in ${fmt(stranger.ms)}`,
      );
      console.log(`  the CLI, seeded: ${fmt(cli.ms)}, peak RSS ${cli.rssMiB.toFixed(0)} MiB (${cli.summary})`);
      console.log(`  chunk index ${mb(index.length)} (${((index.length / size) * 100).toFixed(3)} % of the image)`);
      return;
    }
    // zsync.
    const zsync = await measure(async () => {
      await rm(join(work, 'zsync.out'), { force: true });
      const result = await timed('zsync', ['-q', '-i', oldPath, '-o', join(work, 'zsync.out'), control!.url], work);
      if (result.code !== 0) throw new Error(`zsync failed: ${result.stderr}`);
    }, served);
    await check(join(work, 'zsync.out'), 'zsync');
    await server.close();

    // casync, from an HTTP chunk store behind the same rate.
    execFileSync('casync', ['make', `--store=${join(work, 'castr')}`, join(work, 'img.caibx'), newPath], { stdio: 'ignore' });
    const statics = await staticServer(work, new Pacer(rate));
    const casync = await measure(async () => {
      await rm(join(work, 'casync.out'), { force: true });
      const result = await timed(
        'casync',
        ['extract', `--store=${statics.url}/castr`, `--seed=${oldPath}`, `${statics.url}/img.caibx`, join(work, 'casync.out')],
        work,
      );
      if (result.code !== 0) throw new Error(`casync failed: ${result.stderr}`);
    }, statics.bytes);
    await statics.close();
    await check(join(work, 'casync.out'), 'casync');

    const bound = await lowerBound(oldPath, newPath, BOUND_CHUNKING);
    const indexBound = await lowerBound(oldPath, newPath, DEFAULT_CHUNKING);
    const row = (name: string, figures: Figures) =>
      `  ${name.padEnd(30)} ${mb(figures.bytes).padStart(11)} ${`${((figures.bytes / zsync.bytes) * 100).toFixed(1)} %`.padStart(9)}  ${fmt(figures.ms).padStart(9)} ${`${((figures.ms / zsync.ms) * 100).toFixed(0)} %`.padStart(7)} ${`${((figures.ms / full.ms) * 100).toFixed(0)} %`.padStart(9)}`;
    console.log(
      `  ${''.padEnd(30)} ${'bytes'.padStart(11)} ${'vs zsync'.padStart(9)}  ${'wall'.padStart(9)} ${'vs zsync'.padStart(7)} ${'vs full'.padStart(9)}`,
    );
    console.log(row('pipeline, seeded', seeded));
    console.log(row('pipeline, whole download', full));
    console.log(row('pipeline, seed that matches none', stranger));
    console.log(row('zsync -i old', zsync));
    console.log(row('casync extract --seed=old', casync));
    console.log(row('the CLI, seeded (own process)', { bytes: seeded.bytes, ms: cli.ms }));
    console.log(`  peak RSS of the CLI's seeded download: ${cli.rssMiB.toFixed(0)} MiB (${cli.summary})`);
    console.log(
      `  chunk index ${mb(index.length)} (${((index.length / size) * 100).toFixed(3)} % of the image), of which the seeded fetch read ${mb(indexBytesRead)}; zsync control file ${mb(control!.size)}`,
    );
    console.log(`  lower bound (4 KiB CDC chunks not in the old): ${mb(bound)}; pipeline moved ${((seeded.bytes / bound) * 100).toFixed(1)} % of it`);
    console.log(`  the index's own chunks (${DEFAULT_CHUNKING.avgSize / 1024} KiB) not in the old: ${mb(indexBound)}`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

for (const pair of values.pair ?? []) {
  const [label, oldPath, newPath] = pair.split(':');
  if (!label || !oldPath || !newPath) throw new Error(`--pair ${pair}: expected LABEL:OLD:NEW`);
  await benchPair(label, oldPath, newPath);
}
if (!values.pair?.length) console.error('usage: node --import=tsx bench/delta.ts --pair LABEL:OLD.qcow2:NEW.qcow2 [--pair …] [--rate MB/s] [--runs N]');
