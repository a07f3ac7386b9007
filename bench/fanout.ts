// A GitHub Actions fan-out against one loopback release, with the remote cache: three
// runners (separate copies of a tree, each its own process tree) and a packer that sleeps
// like a real build and records each one.
//
//   1. build-on-change: `release check --json` on one runner gives the stale images (the
//      matrix); each runner then runs `pipeline {image}:upload` for one image, all at once.
//   2. the same again on three fresh runners (CI runners start clean): the check finds
//      nothing stale, so the matrix is empty; and, had the jobs run anyway, each would
//      fetch its image from the release rather than build it.
//   3. a "PVE host" (a fourth copy, nothing built or downloaded) runs `pipeline publish`;
//      and another runs it with `--no-remote-cache`, as it ran before (the comparison).
//
// Prints builds per image (expected 1, then 0, then 0), wall times and bytes moved: base
// image bytes from the mirror, and bytes to and from the store's server (counted by a TCP
// proxy in front of it).
//
// The store is the loopback GitHub, or with `oci` a real registry (distribution 2.8,
// htpasswd auth, test/support/registry.ts) reached as `release: { registry }`.
//
// Usage: npx tsx bench/fanout.ts [buildSeconds=5] [github|oci]
import { chmod, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, connect, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { formatBytes } from '../src/report/format.ts';
import { startCli, type CliResult } from '../test/support/engine-project.ts';
import { GitHubServer } from '../test/support/github-server.ts';
import { IMAGES, makeImageProject } from '../test/support/image-project.ts';
import { startRegistry } from '../test/support/registry.ts';
import { baseBytesServed, serveUpstream } from '../test/support/mirror-upstream.ts';
import { fmt } from './support.ts';

const buildSeconds = Number(process.argv[2] ?? 5);
const storeKind = process.argv[3] ?? 'github';
if (storeKind !== 'github' && storeKind !== 'oci') throw new Error(`store must be github or oci, not ${storeKind}`);
const cleanups: Array<() => Promise<unknown>> = [];

/** Counts the bytes that pass between clients and `target` in each direction. */
async function countingProxy(targetPort: number): Promise<{ url: string; up: () => number; down: () => number; server: Server }> {
  let up = 0;
  let down = 0;
  const server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    client.on('data', (chunk: Buffer) => (up += chunk.length));
    upstream.on('data', (chunk: Buffer) => (down += chunk.length));
    client.pipe(upstream).pipe(client);
    const close = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, up: () => up, down: () => down, server };
}

interface Counters {
  readonly builds: () => Promise<string[]>;
  readonly base: () => number;
  readonly githubUp: () => number;
  readonly githubDown: () => number;
}

interface Phase {
  readonly label: string;
  readonly wallMs: number;
  readonly builds: Record<string, number>;
  readonly fetched: number;
  readonly baseBytes: number;
  readonly githubUp: number;
  readonly githubDown: number;
  readonly note: string;
}

async function phase(label: string, counters: Counters, action: () => Promise<{ fetched: number; note: string }>): Promise<Phase> {
  const before = { builds: (await counters.builds()).length, base: counters.base(), up: counters.githubUp(), down: counters.githubDown() };
  const started = Date.now();
  const { fetched, note } = await action();
  const wallMs = Date.now() - started;
  const builds = Object.fromEntries(IMAGES.map((name) => [name, 0]));
  for (const line of (await counters.builds()).slice(before.builds)) {
    const image = IMAGES.find((name) => line.includes(`/${name}/`));
    if (image) builds[image]!++;
  }
  return {
    label,
    wallMs,
    builds,
    fetched,
    baseBytes: counters.base() - before.base,
    githubUp: counters.githubUp() - before.up,
    githubDown: counters.githubDown() - before.down,
    note,
  };
}

function must(result: CliResult, what: string, codes: readonly number[] = [0]): CliResult {
  if (!codes.includes(result.code ?? -1)) throw new Error(`${what} exited ${result.code}:\n${result.stderr}`);
  return result;
}

/** Build nodes that fetched rather than built in a `--json` run. */
function fetchedIn(result: CliResult): number {
  return (result.json?.nodes ?? []).filter((node) => node.id.endsWith(':build') && node.status === 'ran' && /would fetch/.test(node.reason)).length;
}

async function main(): Promise<void> {
  const shim = { teardown: (fn: () => Promise<unknown>) => void cleanups.push(fn) } as unknown as ExecutionContext;
  const work = await mkdtemp(join(tmpdir(), 'pipeline-fanout-'));
  cleanups.push(() => rm(work, { recursive: true, force: true }));
  let storeEnv: Record<string, string>;
  let extraConfig = '';
  let proxy: Awaited<ReturnType<typeof countingProxy>>;
  if (storeKind === 'oci') {
    const registry = await startRegistry({ auth: 'htpasswd' });
    cleanups.push(() => registry.close());
    proxy = await countingProxy(Number(new URL(registry.url).port));
    const host = new URL(proxy.url).host;
    const authFile = join(work, 'auth.json');
    await writeFile(authFile, JSON.stringify({ auths: { [host]: { auth: Buffer.from(`${registry.user}:${registry.password}`).toString('base64') } } }));
    storeEnv = { REGISTRY_AUTH_FILE: authFile };
    extraConfig = `release: { registry: '${host}/acme/images', plainHttp: true, maxBlobSize: 200 * 1024 },`;
  } else {
    const github = await GitHubServer.start();
    proxy = await countingProxy(Number(new URL(github.url).port));
    // Every URL the server hands out (upload_url, asset downloads) goes through the proxy.
    github.url = proxy.url;
    cleanups.push(() => github.close());
    storeEnv = {
      GITHUB_TOKEN: github.token,
      GITHUB_API_URL: proxy.url,
      GITHUB_REPOSITORY: `${github.owner}/${github.repo}`,
      PIPELINE_MAX_ASSET_SIZE: '200K',
      PIPELINE_PART_SIZE: '150KiB',
    };
  }
  const project = await makeImageProject(shim, extraConfig);
  const mirror = await serveUpstream(project);
  cleanups.push(
    () => mirror.close(),
    () => new Promise((done) => proxy.server.close(done)),
  );
  const buildLog = join(work, 'packer-builds.log');
  const fakeBin = join(work, 'bin');
  await mkdir(fakeBin);
  // A packer that takes `buildSeconds` like a (very short) real build, recording each one.
  await writeFile(
    join(fakeBin, 'packer'),
    `#!/bin/sh\nif [ "$1" = build ]; then for last; do :; done; echo "$PIPELINE_RUNNER $last" >> ${JSON.stringify(buildLog)}; sleep ${buildSeconds}; fi\nexec /usr/bin/packer "$@"\n`,
  );
  await chmod(join(fakeBin, 'packer'), 0o755);
  const env = { ...storeEnv, PATH: `${fakeBin}:${process.env.PATH ?? ''}` };
  const counters: Counters = {
    builds: async () => (await readFile(buildLog, 'utf8').catch(() => '')).split('\n').filter(Boolean),
    base: () => baseBytesServed(mirror),
    githubUp: proxy.up,
    githubDown: proxy.down,
  };
  let copies = 0;
  const runner = async (label: string): Promise<string> => {
    const root = join(work, `${label}-${++copies}`);
    await cp(project.root, root, { recursive: true });
    const config = await readFile(join(root, 'pipeline.config.ts'), 'utf8');
    await writeFile(join(root, 'pipeline.config.ts'), config.replaceAll(project.root, root));
    return root;
  };
  const pipeline = (root: string, args: readonly string[], label: string) =>
    startCli(root, args, { env: { ...env, PIPELINE_RUNNER: label }, timeoutMs: 600_000 }).done;

  /** release check --json on the first runner, then one `{image}:upload` per stale image, one runner each. */
  const buildOnChange = async (roots: readonly string[]): Promise<{ fetched: number; note: string }> => {
    const check = must(await pipeline(roots[0]!, ['release', 'check', '--json'], 'check'), 'release check', [0, 1]);
    const matrix = (JSON.parse(check.stdout) as { stale: string[] }).stale;
    const jobs = await Promise.all(matrix.map((image, index) => pipeline(roots[index % roots.length]!, [`${image}:upload`, '--json'], `runner-${index}`)));
    for (const [index, job] of jobs.entries()) must(job, `${matrix[index]}:upload`);
    return { fetched: jobs.reduce((sum, job) => sum + fetchedIn(job), 0), note: `matrix: ${matrix.join(', ') || '(empty)'}` };
  };

  const phases: Phase[] = [];
  const first = await Promise.all(['a', 'b', 'c'].map((label) => runner(`runner-${label}`)));
  phases.push(await phase('1. build-on-change, 3 runners', counters, () => buildOnChange(first)));
  const second = await Promise.all(['a', 'b', 'c'].map((label) => runner(`runner-${label}`)));
  phases.push(await phase('2. the same again, fresh runners', counters, () => buildOnChange(second)));
  phases.push(
    await phase('2b. jobs run anyway, fresh runners', counters, async () => {
      const roots = await Promise.all(['a', 'b', 'c'].map((label) => runner(`runner-${label}`)));
      const jobs = await Promise.all(IMAGES.map((image, index) => pipeline(roots[index]!, [`${image}:upload`, '--json'], `runner-${index}`)));
      for (const [index, job] of jobs.entries()) must(job, `${IMAGES[index]}:upload`);
      return { fetched: jobs.reduce((sum, job) => sum + fetchedIn(job), 0), note: 'every image uploaded as if stale' };
    }),
  );
  phases.push(
    await phase('3. PVE host: pipeline publish', counters, async () => {
      const host = await runner('pve-host');
      const result = must(await pipeline(host, ['publish', '--json'], 'pve-host'), 'publish');
      return {
        fetched: fetchedIn(result),
        note: `${(result.json?.nodes ?? []).filter((node) => node.id.endsWith(':download')).length} base downloads in the run`,
      };
    }),
  );
  phases.push(
    await phase('3x. PVE host: publish --no-remote-cache (as before)', counters, async () => {
      const host = await runner('pve-host-no-cache');
      const result = must(await pipeline(host, ['publish', '--json', '--no-remote-cache'], 'pve-host-no-cache'), 'publish --no-remote-cache');
      return {
        fetched: fetchedIn(result),
        note: `${(result.json?.nodes ?? []).filter((node) => node.id.endsWith(':download')).length} base downloads in the run`,
      };
    }),
  );

  const storeName = storeKind === 'oci' ? 'registry' : 'GitHub';
  console.log(`fan-out with the remote cache: 3 images, fake packer sleeping ${buildSeconds} s per build, loopback mirror and ${storeName}`);
  console.log('');
  console.log(`| phase | builds (${IMAGES.join(' / ')}) | fetched | wall | base bytes | ${storeName} up | ${storeName} down | |`);
  console.log('|---|---|---|---|---|---|---|---|');
  for (const p of phases) {
    console.log(
      `| ${p.label} | ${IMAGES.map((name) => p.builds[name]).join(' / ')} | ${p.fetched} | ${fmt(p.wallMs)} | ${formatBytes(p.baseBytes)} | ${formatBytes(p.githubUp)} | ${formatBytes(p.githubDown)} | ${p.note} |`,
    );
  }
  const [withCache, without] = [phases.at(-2)!, phases.at(-1)!];
  console.log(`\nPVE host publish, remote cache / building: ${(withCache.wallMs / without.wallMs).toFixed(2)}x the wall time`);
}

try {
  await main();
} finally {
  await Promise.all(cleanups.splice(0).map((cleanup) => cleanup().catch(() => undefined)));
}
