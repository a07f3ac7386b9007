// Upload and download of one image through the OCI store against a real registry
// (distribution 2.8 on loopback, htpasswd auth), beside `skopeo copy` of the same file as
// a one-layer OCI artifact (from an `oci:` layout directory, and back into a `dir:`), in
// the same run, on the same registry.
//
//   node --import=tsx bench/oci-transfer.ts [size=1GiB] [runs=3] [busy=0]
//
// `busy` starts that many CPU-bound processes for the whole run, as competitors for the
// cores (a machine shared with builds and other transfers): the figures then say how each
// tool holds up when it gets only its share of a core per thread. Each run's line names
// the 1-minute load average when it started.
//
// Ours runs as a bundled child process (esbuild, packages external, like the CLI's dist/),
// doing what `pipeline {name}:upload` and `pipeline images download` do: OciStore.put, then
// getImage (ranged parallel reads into one file, SHA-256 verified before the rename).
// Each side runs under /usr/bin/time, so wall time, CPU and peak RSS are its own. Each
// run uses a fresh random file and fresh repositories (nothing is skipped or mounted, for
// either tool); the disk is synced, untimed, before each step.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { parseByteSize } from '../tasks/store/github/sizes.ts';
import { writeOciLayout } from '../test/support/oci-layout.ts';
import { startRegistry } from '../test/support/registry.ts';
import { median, REPO } from './support.ts';

interface Measured {
  seconds: number;
  rssMiB: number;
  cpuSeconds: number;
}

const CHILD = `
import { openOciStore } from '${REPO}/tasks/store/oci/index.ts';
import { getImage } from '${REPO}/tasks/store/get-image.ts';
const [mode, registry, name, path, sha256, size] = process.argv.slice(2);
const store = openOciStore({ registry, plainHttp: true }, 'latest', { env: process.env });
const signal = AbortSignal.timeout(3_600_000);
if (mode === 'put') {
  const image = { name, path, size: Number(size), sha256, cacheKey: 'bench', versions: {}, sources: { base: { path: 'cache/base' }, files: {} } };
  await store.put(image, { force: false, signal, log: () => {} });
} else {
  await getImage(store, name, { path, overwrite: true, signal });
}
`;

async function measure(argv: readonly string[], cwd: string, env: NodeJS.ProcessEnv): Promise<Measured> {
  const timeFile = join(cwd, '.time');
  execFileSync('sync');
  const started = process.hrtime.bigint();
  const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-o', timeFile, '-f', '%M %U %S', ...argv], { cwd, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (code !== 0) throw new Error(`${argv.join(' ')} failed (${code}):\n${stderr.slice(-3000)}`);
  const [rssKiB, user, system] = (await readFile(timeFile, 'utf8')).trim().split('\n').at(-1)!.split(' ').map(Number);
  return { seconds, rssMiB: rssKiB! / 1024, cpuSeconds: user! + system! };
}

async function randomFile(path: string, size: number): Promise<string> {
  const handle = await open(path, 'w');
  const hash = createHash('sha256');
  try {
    for (let written = 0; written < size; ) {
      const chunk = randomBytes(Math.min(8 * 1024 * 1024, size - written));
      hash.update(chunk);
      await handle.write(chunk);
      written += chunk.length;
    }
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}

const describe = (m: Measured) => `${m.seconds.toFixed(2)} s (cpu ${m.cpuSeconds.toFixed(2)} s, peak RSS ${m.rssMiB.toFixed(0)} MiB)`;

async function main(): Promise<void> {
  const size = parseByteSize(process.argv[2] ?? '1GiB', 'size');
  const runs = Number(process.argv[3] ?? 3);
  const busy = Number(process.argv[4] ?? 0);
  const work = await mkdtemp(join(tmpdir(), 'bench-oci-'));
  const registry = await startRegistry({ auth: 'htpasswd' });
  const competitors: ChildProcess[] = Array.from({ length: busy }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
  try {
    const child = join(work, 'oci-child.mjs');
    await writeFile(join(work, 'oci-child.ts'), CHILD);
    await build({
      entryPoints: [join(work, 'oci-child.ts')],
      outfile: child,
      bundle: true,
      platform: 'node',
      format: 'esm',
      packages: 'external',
      absWorkingDir: REPO,
      logLevel: 'error',
    });
    // The bundle imports packages from the repository's node_modules.
    execFileSync('ln', ['-s', join(REPO, 'node_modules'), join(work, 'node_modules')]);
    const authFile = join(work, 'auth.json');
    await writeFile(
      authFile,
      JSON.stringify({ auths: { [registry.host]: { auth: Buffer.from(`${registry.user}:${registry.password}`).toString('base64') } } }),
    );
    const env = { PATH: process.env.PATH, HOME: work, REGISTRY_AUTH_FILE: authFile };
    const creds = `${registry.user}:${registry.password}`;
    const rows: Array<Record<'ourPut' | 'skopeoPut' | 'ourGet' | 'skopeoGet' | 'skopeoGetSynced', Measured>> = [];
    for (let run = 0; run < runs; run++) {
      const load = loadavg()[0]!.toFixed(1);
      const name = 'bench';
      const image = join(work, `${name}.qcow2`);
      const sha256 = await randomFile(image, size);
      const layout = await writeOciLayout(join(work, `layout-${run}`), image, { layerDigest: sha256, artifactType: 'application/vnd.vmpipeline.image.v1' });
      const ours = `${registry.host}/run${run}/ours`;
      const theirs = `docker://${registry.host}/run${run}/skopeo/${name}:latest`;
      const order = run % 2 === 0;
      const ourPut = () => measure(['node', child, 'put', ours, name, image, sha256, String(size)], work, env);
      const skopeoPut = () =>
        measure(['skopeo', 'copy', '--quiet', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${layout.dir}:latest`, theirs], work, env);
      const row = {} as (typeof rows)[number];
      if (order) {
        row.ourPut = await ourPut();
        row.skopeoPut = await skopeoPut();
      } else {
        row.skopeoPut = await skopeoPut();
        row.ourPut = await ourPut();
      }
      await mkdir(join(work, 'got'), { recursive: true });
      const ourGet = () => measure(['node', child, 'get', ours, name, join(work, 'got', `${name}.qcow2`), sha256, String(size)], work, env);
      const skopeoGet = () =>
        measure(['skopeo', 'copy', '--quiet', '--src-tls-verify=false', '--src-creds', creds, theirs, `dir:${join(work, 'got', 'skopeo')}`], work, env);
      // Ours fsyncs the image before renaming it into place; skopeo leaves its write in the
      // page cache. The second skopeo figure adds an fsync of the file it wrote (sync FILE).
      const skopeoGetSynced = () =>
        measure(
          [
            'sh',
            '-c',
            'skopeo copy --quiet --src-tls-verify=false --src-creds "$1" "$2" "dir:$3" && sync "$3/$4"',
            'sh',
            creds,
            theirs,
            join(work, 'got', 'skopeo-synced'),
            sha256,
          ],
          work,
          env,
        );
      if (order) {
        row.ourGet = await ourGet();
        row.skopeoGet = await skopeoGet();
        row.skopeoGetSynced = await skopeoGetSynced();
      } else {
        row.skopeoGetSynced = await skopeoGetSynced();
        row.skopeoGet = await skopeoGet();
        row.ourGet = await ourGet();
      }
      rows.push(row);
      console.log(
        `run ${run + 1} (load ${load}${busy ? `, ${busy} busy` : ''}): upload ${describe(row.ourPut)} | skopeo ${describe(row.skopeoPut)} | ${(row.ourPut.seconds / row.skopeoPut.seconds).toFixed(2)}x\n` +
          `       download ${describe(row.ourGet)} | skopeo ${describe(row.skopeoGet)} | ${(row.ourGet.seconds / row.skopeoGet.seconds).toFixed(2)}x` +
          ` | skopeo + fsync ${row.skopeoGetSynced.seconds.toFixed(2)} s | ${(row.ourGet.seconds / row.skopeoGetSynced.seconds).toFixed(2)}x`,
      );
      await rm(join(work, 'got'), { recursive: true, force: true });
      await rm(layout.dir, { recursive: true, force: true });
      await rm(image, { force: true });
    }
    const m = (pick: (row: (typeof rows)[number]) => number) => median(rows.map(pick));
    console.log(
      `median of ${runs} (${(size / 1024 ** 3).toFixed(2)} GiB): upload ${m((r) => r.ourPut.seconds).toFixed(2)} s vs skopeo ${m((r) => r.skopeoPut.seconds).toFixed(2)} s` +
        ` (${m((r) => r.ourPut.seconds / r.skopeoPut.seconds).toFixed(2)}x), peak RSS ${m((r) => r.ourPut.rssMiB).toFixed(0)} vs ${m((r) => r.skopeoPut.rssMiB).toFixed(0)} MiB;` +
        ` download ${m((r) => r.ourGet.seconds).toFixed(2)} s vs skopeo ${m((r) => r.skopeoGet.seconds).toFixed(2)} s` +
        ` (${m((r) => r.ourGet.seconds / r.skopeoGet.seconds).toFixed(2)}x; ${m((r) => r.ourGet.seconds / r.skopeoGetSynced.seconds).toFixed(2)}x skopeo + fsync),` +
        ` peak RSS ${m((r) => r.ourGet.rssMiB).toFixed(0)} vs ${m((r) => r.skopeoGet.rssMiB).toFixed(0)} MiB`,
    );
  } finally {
    for (const competitor of competitors) competitor.kill();
    await registry.close();
    await rm(work, { recursive: true, force: true });
  }
}

await main();
