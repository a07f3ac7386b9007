// `pipeline images download` of an image in parts from the loopback GitHub, against the
// shell way a user would otherwise run (`curl` each part in turn, `cat` them into one
// file, `sha256sum -c`), against the same server and the same image, in the same run.
//
//   node --import=tsx bench/transfer.ts [size=3GiB] [parts=3] [runs=3]
//
// The server runs in a child process, and each download (ours: the real CLI; the shell
// way: `sh -c`) in another under /usr/bin/time, so each side's wall time, CPU and peak RSS
// are its own. Runs alternate which side goes first; the disk is synced (untimed) before
// each download so neither inherits the other's dirty pages. The upload that puts the
// image on the server is timed once, for reference.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { formatBytes } from '../src/report/format.ts';
import { createGitHubClient } from '../tasks/store/github/client.ts';
import { planParts } from '../tasks/store/github/put-image.ts';
import { ReleaseApi } from '../tasks/store/github/release-api.ts';
import { parseByteSize } from '../tasks/store/github/sizes.ts';
import { GitHubServer } from '../test/support/github-server.ts';
import { BIN, median, REPO } from './support.ts';

interface ServerInfo {
  url: string;
  token: string;
  owner: string;
  repo: string;
}

interface Measured {
  seconds: number;
  /** Peak RSS of the largest process in the tree, MiB (from /usr/bin/time). */
  rssMiB: number;
  cpuSeconds: number;
}

const IMAGE = 'bench';

if (process.argv[2] === '--serve') {
  const server = await GitHubServer.start();
  server.createRelease('latest');
  process.stdout.write(`${JSON.stringify({ url: server.url, token: server.token, owner: server.owner, repo: server.repo })}\n`);
  process.stdin.resume();
  process.stdin.on('end', () => void server.close().then(() => process.exit(0)));
} else {
  await main();
}

/** Runs `argv` under /usr/bin/time; throws with its stderr when it fails. */
async function measure(argv: readonly string[], options: { cwd: string; env: NodeJS.ProcessEnv }): Promise<Measured> {
  const timeFile = join(options.cwd, '.time');
  const started = process.hrtime.bigint();
  const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-o', timeFile, '-f', '%M %U %S', ...argv], {
      cwd: options.cwd,
      env: options.env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (code !== 0) throw new Error(`${argv.join(' ')} exited ${code}: ${stderr.trim()}`);
  const [rssKiB, user, system] = (await readFile(timeFile, 'utf8')).trim().split('\n').at(-1)!.split(' ').map(Number);
  return { seconds, rssMiB: rssKiB! / 1024, cpuSeconds: user! + system! };
}

async function sha256Of(path: string): Promise<string> {
  const hash = createHash('sha256');
  const handle = await open(path);
  for await (const chunk of handle.createReadStream({ highWaterMark: 8 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function main(): Promise<void> {
  const size = parseByteSize(process.argv[2] ?? '3GiB', 'size');
  const partCount = Number(process.argv[3] ?? 3);
  const runs = Number(process.argv[4] ?? 3);
  // With a MiB to spare, so the qcow2's metadata does not add a part.
  const partSize = Math.ceil(size / partCount / 2 ** 20) * 2 ** 20 + 2 ** 20;
  // The CLI runs from the compiled build: bring it up to date with the sources first.
  execFileSync(process.execPath, [join(REPO, 'scripts', 'build.mjs'), '--if-stale'], { stdio: 'inherit' });
  const work = await mkdtemp(join(tmpdir(), 'pipeline-bench-'));
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve'], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const info = JSON.parse(await new Promise<string>((resolve) => createInterface({ input: child.stdout! }).once('line', resolve))) as ServerInfo;
    const image = join(work, `${IMAGE}.qcow2`);
    console.log(`writing a qcow2 of ${formatBytes(size)} of random data…`);
    // A real qcow2: downloads take only a self-contained one. Its metadata makes the file a
    // little larger than the data, so the parts are planned from the file's own size.
    const raw = join(work, 'raw');
    execFileSync('sh', ['-c', 'head -c "$1" /dev/urandom > "$2"', 'sh', String(size), raw]);
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, image]);
    await rm(raw);
    const imageSize = (await stat(image)).size;
    const digest = await sha256Of(image);
    const checksumPath = `${image}.sha256`;
    await writeFile(checksumPath, `${digest}  ${IMAGE}.qcow2\n`);

    const settings = { repo: `${info.owner}/${info.repo}`, apiUrl: info.url, tag: 'latest' };
    const api = new ReleaseApi(await createGitHubClient(settings, { env: { GITHUB_TOKEN: info.token } }));
    const release = await api.requireRelease('latest');
    const parts = planParts(IMAGE, imageSize, { maxAssetSize: partSize, partSize });
    const uploadStart = process.hrtime.bigint();
    for (const part of parts) {
      await api.uploadAsset({ release, name: part.name, path: image, start: part.start, length: part.length, signal: AbortSignal.timeout(3_600_000) });
    }
    const uploadSeconds = Number(process.hrtime.bigint() - uploadStart) / 1e9;
    await api.uploadAsset({
      release,
      name: `${IMAGE}.qcow2.sha256`,
      path: checksumPath,
      start: 0,
      length: (await stat(checksumPath)).size,
      signal: AbortSignal.timeout(60_000),
    });
    await rm(image);
    const assets = await api.listAssets(release.id);
    const idOf = (name: string) => assets.find((asset) => asset.name === name)!.id;

    // Ours: the real CLI, from the compiled build, with a config that names only the release.
    const project = join(work, 'project');
    await mkdir(project);
    const config = join(project, 'pipeline.config.mjs');
    await writeFile(
      config,
      `import { defineConfig } from ${JSON.stringify(pathToFileURL(join(REPO, 'dist', 'index.js')).href)};\n` +
        `export default defineConfig({ bases: {}, images: {}, release: { repo: ${JSON.stringify(settings.repo)}, tag: 'latest' } });\n`,
    );
    const env = { ...process.env, GITHUB_TOKEN: info.token, GITHUB_API_URL: info.url, GITHUB_REPOSITORY: settings.repo, CI: '1' };
    const ourDir = join(work, 'ours');
    // BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' profiles our side.
    const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const ours = async () => {
      const measured = await measure([process.execPath, ...nodeArgs, BIN, '--config', config, 'images', 'download', IMAGE, '--dir', ourDir, '--overwrite'], {
        cwd: project,
        env,
      });
      if ((await sha256Of(join(ourDir, `${IMAGE}.qcow2`))) !== digest) throw new Error('our download does not match the image');
      return measured;
    };

    // The shell way, against the same server: the API's asset URL answers with a redirect
    // to the bytes, as GitHub's does. The asset ids are handed over (a user's script would
    // list them first; that is one small request either way).
    const shellDir = join(work, 'shell');
    const assetUrl = (name: string) => `${info.url}/repos/${settings.repo}/releases/assets/${idOf(name)}`;
    const script = [
      'set -e',
      ...parts.map(
        (part) => `curl -sSfL -H "Authorization: Bearer $GITHUB_TOKEN" -H 'Accept: application/octet-stream' -o ${part.name} ${assetUrl(part.name)}`,
      ),
      `curl -sSfL -H "Authorization: Bearer $GITHUB_TOKEN" -H 'Accept: application/octet-stream' -o ${IMAGE}.qcow2.sha256 ${assetUrl(`${IMAGE}.qcow2.sha256`)}`,
      `cat ${parts.map((part) => part.name).join(' ')} > ${IMAGE}.qcow2`,
      `rm ${parts.map((part) => part.name).join(' ')}`,
      `sha256sum -c --quiet ${IMAGE}.qcow2.sha256`,
    ].join('\n');
    const shell = async () => {
      await mkdir(shellDir, { recursive: true });
      return measure(['sh', '-c', script], { cwd: shellDir, env });
    };

    const fresh = async () => {
      await rm(ourDir, { recursive: true, force: true });
      await rm(shellDir, { recursive: true, force: true });
      execFileSync('sync');
    };
    const load = [loadavg()[0]!];
    const rows: Array<{ ours: Measured; shell: Measured }> = [];
    console.log(`size ${formatBytes(size)} in ${parts.length} part(s) of up to ${formatBytes(partSize)}; upload took ${uploadSeconds.toFixed(2)} s`);
    for (let run = 0; run < runs; run++) {
      const order = run % 2 === 0 ? ([ours, shell] as const) : ([shell, ours] as const);
      const results: Measured[] = [];
      for (const side of order) {
        await fresh();
        results.push(await side());
      }
      const row = run % 2 === 0 ? { ours: results[0]!, shell: results[1]! } : { ours: results[1]!, shell: results[0]! };
      rows.push(row);
      load.push(loadavg()[0]!);
      console.log(
        `run ${run + 1}: images download ${row.ours.seconds.toFixed(2)} s (cpu ${row.ours.cpuSeconds.toFixed(2)} s, peak RSS ${row.ours.rssMiB.toFixed(0)} MiB)` +
          ` | curl+cat+sha256sum ${row.shell.seconds.toFixed(2)} s (cpu ${row.shell.cpuSeconds.toFixed(2)} s, peak RSS ${row.shell.rssMiB.toFixed(0)} MiB)` +
          ` | ratio ${(row.ours.seconds / row.shell.seconds).toFixed(2)}x`,
      );
    }
    await fresh();
    const m = (pick: (row: { ours: Measured; shell: Measured }) => number) => median(rows.map(pick));
    console.log(
      `median of ${runs}: images download ${m((r) => r.ours.seconds).toFixed(2)} s, peak RSS ${m((r) => r.ours.rssMiB).toFixed(0)} MiB;` +
        ` shell way ${m((r) => r.shell.seconds).toFixed(2)} s, peak RSS ${m((r) => r.shell.rssMiB).toFixed(0)} MiB;` +
        ` ratio ${m((r) => r.ours.seconds / r.shell.seconds).toFixed(2)}x`,
    );
    console.log(`1-minute load average during the runs: ${load.map((value) => value.toFixed(1)).join(', ')} (${formatBytes(size)}, 2 cores)`);
  } finally {
    child.stdin!.end();
    await rm(work, { recursive: true, force: true });
  }
}
