// Upload and download of one large image through the loopback GitHub, against what a user
// would otherwise run (`split -b` then `cat`), in the same run on the same disk.
// Usage: npx tsx bench/transfer.ts [size=3GiB] [partSize=1.9GiB]
// The server runs in a child process so this process's I/O counters are the client's alone.
import { spawn, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtemp, readFile, rm, stat, writeFile, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { createGitHubClient } from '../tasks/store/github/client.ts';
import { ReleaseApi } from '../tasks/store/github/release-api.ts';
import { planParts } from '../tasks/store/github/put-image.ts';
import { getImage } from '../tasks/store/get-image.ts';
import { openImageStore } from '../tasks/store/open.ts';
import { formatBytes } from '../src/report/format.ts';
import { parseByteSize } from '../tasks/store/github/sizes.ts';
import { GitHubServer } from '../test/support/github-server.ts';

if (process.argv[2] === '--serve') {
  const server = await GitHubServer.start();
  server.createRelease('latest');
  process.stdout.write(`${JSON.stringify({ url: server.url, token: server.token, owner: server.owner, repo: server.repo })}\n`);
  process.stdin.resume();
  process.stdin.on('end', () => void server.close().then(() => process.exit(0)));
} else {
  await main();
}

/** Bytes this process caused to be written to storage (Linux /proc/self/io). */
async function writtenBytes(): Promise<number> {
  const text = await readFile('/proc/self/io', 'utf8').catch(() => '');
  return Number(/write_bytes:\s*(\d+)/.exec(text)?.[1] ?? NaN);
}

async function timed<T>(label: string, action: () => Promise<T>): Promise<{ label: string; seconds: number; written: number; value: T }> {
  const written = await writtenBytes();
  const start = process.hrtime.bigint();
  const value = await action();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { label, seconds, written: (await writtenBytes()) - written, value };
}

async function main(): Promise<void> {
  const size = parseByteSize(process.argv[2] ?? '3GiB', 'size');
  const partSize = parseByteSize(process.argv[3] ?? '1.9GiB', 'partSize');
  const work = await mkdtemp(join(tmpdir(), 'pipeline-bench-'));
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve'], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const first = await new Promise<string>((resolve) => createInterface({ input: child.stdout! }).once('line', resolve));
    const info = JSON.parse(first) as { url: string; token: string; owner: string; repo: string };
    const image = join(work, 'bench.qcow2');
    console.log(`writing a ${formatBytes(size)} test file…`);
    execFileSync('sh', ['-c', 'head -c "$1" /dev/urandom > "$2"', 'sh', String(size), image]);
    const sha = createHash('sha256');
    const handle = await open(image);
    for await (const chunk of handle.createReadStream({ highWaterMark: 8 << 20 })) sha.update(chunk as Buffer);
    const digest = sha.digest('hex');
    const checksumPath = `${image}.sha256`;
    await writeFile(checksumPath, `${digest}  bench.qcow2\n`);

    const settings = { repo: `${info.owner}/${info.repo}`, apiUrl: info.url, tag: 'latest' };
    const store = new ReleaseApi(await createGitHubClient(settings, { env: { GITHUB_TOKEN: info.token } }));
    const release = await store.requireRelease('latest');
    // Split whenever the file exceeds one part, so a small benchmark still exercises parts.
    const parts = planParts('bench', size, { maxAssetSize: partSize, partSize });
    const upload = await timed('upload (ranges streamed)', async () => {
      for (const part of parts) {
        await store.uploadAsset({ release, name: part.name, path: image, start: part.start, length: part.length, signal: AbortSignal.timeout(3_600_000) });
      }
      await store.uploadAsset({ release, name: 'bench.qcow2.sha256', path: checksumPath, start: 0, length: (await stat(checksumPath)).size, signal: AbortSignal.timeout(60_000) });
    });
    const outDir = join(work, 'download');
    const images = await openImageStore(settings, 'latest', { env: { GITHUB_TOKEN: info.token } });
    const download = await timed('download (parts at offsets)', async () =>
      getImage(images, 'bench', { path: join(outDir, 'bench.qcow2'), overwrite: true, signal: AbortSignal.timeout(3_600_000) }),
    );
    if (download.value.sha256 !== digest) throw new Error('downloaded image does not match');

    const splitDir = join(work, 'split');
    execFileSync('mkdir', ['-p', splitDir]);
    const split = await timed('split -b', async () => execFileSync('split', ['-b', String(partSize), image, join(splitDir, 'bench.qcow2.part')]));
    const cat = await timed('cat parts', async () =>
      execFileSync('sh', ['-c', 'cat "$1"/bench.qcow2.part* > "$1"/joined', 'sh', splitDir]),
    );
    // Child processes' writes do not show in our counters: count the files they made.
    const splitWritten = size;
    const catWritten = (await stat(join(splitDir, 'joined'))).size;

    const rssMiB = process.resourceUsage().maxRSS / 1024;
    console.log(`size ${formatBytes(size)}, ${parts.length} part(s) of up to ${formatBytes(partSize)}`);
    console.log(`${upload.label.padEnd(30)} ${upload.seconds.toFixed(2)} s  extra disk writes ${formatBytes(Math.max(0, upload.written))}`);
    console.log(`${download.label.padEnd(30)} ${download.seconds.toFixed(2)} s  extra disk writes ${formatBytes(Math.max(0, download.written - size))}`);
    console.log(`${split.label.padEnd(30)} ${split.seconds.toFixed(2)} s  extra disk writes ${formatBytes(splitWritten)}`);
    console.log(`${cat.label.padEnd(30)} ${cat.seconds.toFixed(2)} s  extra disk writes ${formatBytes(catWritten - size)} (plus the ${formatBytes(splitWritten)} of parts)`);
    console.log(`peak RSS of pipeline's client: ${rssMiB.toFixed(0)} MiB`);
    console.log(`ratio: (upload+download) / (split+cat) wall time = ${((upload.seconds + download.seconds) / (split.seconds + cat.seconds)).toFixed(2)} (ours also moves the bytes over HTTP)`);
  } finally {
    child.stdin!.end();
    await rm(work, { recursive: true, force: true });
  }
}
