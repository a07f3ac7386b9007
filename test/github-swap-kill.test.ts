// A replacement killed (SIGKILL) at each of its requests in turn, then re-run from another
// copy of the tree: the image always ends complete and consistent, and this tool can read
// a complete copy of it at every moment in between. Also measures, on an uninterrupted
// replacement, the longest window in which the image's assets under their final names
// (what `gh release download` and other external consumers see) were not a complete copy.
//
// By default every request from the commit on (the swap itself) is killed at; with
// SWAP_KILL_SWEEP=full (`npm run test:release-long`) every mutating request of the upload
// (its temporary uploads and the images.json update too), each both before and after the
// server carried it out, for two layouts (same parts, and one whole file becoming parts).
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { getImage } from '../tasks/store/get-image.ts';
import { storeSettings } from '../tasks/store/backends.ts';
import { openImageStore } from '../tasks/store/open.ts';
import { startCli } from './support/engine-project.ts';
import { GitHubServer, type AssetRecord, type MutationEvent, type ServerState } from './support/github-server.ts';
import { imageVersion, releaseProblems, type ImageVersion } from './support/release-state.ts';
import { Trees, type Tree } from './support/runner-trees.ts';
import { neverAborted } from './support/signals.ts';

const FULL = process.env.SWAP_KILL_SWEEP === 'full';
const IMAGE = 'debian-12';
const PART = 150 * 1024;
const trees = new Trees();
test.after.always(() => trees.cleanup());

/** Trials run two at a time, each lane with its own pair of trees and its own server. */
const LANES = 2;

interface Setup {
  readonly lanes: ReadonlyArray<{ readonly killed: Tree; readonly rerun: Tree }>;
  readonly oldTree: Tree;
  readonly before: ImageVersion;
  readonly after: ImageVersion;
}

let setup: Promise<Setup> | undefined;
function prepare(): Promise<Setup> {
  setup ??= (async () => {
    const built = await trees.built();
    const oldTree = await trees.copy(built, 'old');
    await trees.rebuildDifferently(oldTree, IMAGE);
    const lanes = await Promise.all(
      Array.from({ length: LANES }, async (_, lane) => ({
        killed: await trees.copy(built, `killed-${lane}`),
        rerun: await trees.copy(built, `rerun-${lane}`),
      })),
    );
    const path = (tree: Tree) => tree.path(`images/${IMAGE}/${IMAGE}.qcow2`);
    return { lanes, oldTree, before: await imageVersion(IMAGE, path(oldTree)), after: await imageVersion(IMAGE, path(built)) };
  })();
  return setup;
}

function envFor(server: GitHubServer, maxAssetSize: string): Record<string, string> {
  return {
    GITHUB_TOKEN: server.token,
    GITHUB_API_URL: server.url,
    GITHUB_REPOSITORY: `${server.owner}/${server.repo}`,
    PIPELINE_MAX_ASSET_SIZE: maxAssetSize,
    PIPELINE_PART_SIZE: '150KiB',
  };
}

/** Final asset name -> sha256 digest of its bytes, for a version stored whole or in parts. */
function assetDigests(version: ImageVersion, whole: boolean): Map<string, string> {
  const digest = (bytes: Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  const digests = new Map<string, string>();
  if (whole) digests.set(`${IMAGE}.qcow2`, digest(version.bytes));
  else {
    for (let start = 0, index = 0; start < version.bytes.length; start += PART, index++) {
      const suffix = String.fromCharCode(97 + Math.floor(index / 26)) + String.fromCharCode(97 + (index % 26));
      digests.set(`${IMAGE}.qcow2.part${suffix}`, digest(version.bytes.subarray(start, start + PART)));
    }
  }
  digests.set(`${IMAGE}.qcow2.sha256`, digest(Buffer.from(`${version.sha256}  ${IMAGE}.qcow2\n`)));
  return digests;
}

/** Whether the assets under final names form a complete copy of one of the versions. */
function completeByName(assets: readonly AssetRecord[], versions: ReadonlyArray<Map<string, string>>): boolean {
  return versions.some((digests) =>
    [...digests].every(([name, digest]) => assets.some((asset) => asset.name === name && asset.state === 'uploaded' && asset.digest === digest)),
  );
}

function isMutation(method: string): boolean {
  return method === 'POST' || method === 'PATCH' || method === 'DELETE';
}

/** A release holding the old image (uploaded by the CLI from the old tree), to restore before each trial. */
async function releaseWithOldImage(oldTree: Tree, maxAssetSize: string): Promise<ServerState> {
  const server = await GitHubServer.start();
  try {
    const result = await startCli(oldTree.root, [`${IMAGE}:upload`], { env: envFor(server, maxAssetSize), timeoutMs: 120_000 }).done;
    if (result.code !== 0) throw new Error(`uploading the old image failed: ${result.stderr}`);
    return await server.exportState();
  } finally {
    await server.close();
  }
}

interface Window {
  readonly requests: number;
  readonly mutations: number;
  readonly ms: number;
}

/** The longest stretch of mutations after which the final names held no complete copy. */
function longestWindow(server: GitHubServer, events: readonly MutationEvent[], versions: ReadonlyArray<Map<string, string>>): Window {
  let longest: Window = { requests: 0, mutations: 0, ms: 0 };
  let broke: { index: number; event: MutationEvent } | undefined;
  events.forEach((event, index) => {
    const complete = completeByName(event.after, versions);
    if (!complete && !broke) broke = { index, event };
    if (complete && broke) {
      const ms = event.endAt - broke.event.endAt;
      const requests = server.requests.filter((request) => request.at > broke!.event.at && request.at <= event.at).length + 1;
      if (ms >= longest.ms) longest = { requests, mutations: index - broke.index, ms };
      broke = undefined;
    }
  });
  return longest;
}

interface Sweep {
  readonly state: ServerState;
  readonly mutations: ReadonlyArray<{ method: string; path: string }>;
  readonly trials: ReadonlyArray<{ position: number; variant: 'drop' | 'handle' }>;
  readonly window: Window;
}

/** The old image on a release, then one uninterrupted replacement: its requests, and where to kill. */
async function reference(layout: Layout): Promise<Sweep> {
  const { lanes, oldTree, before, after } = await prepare();
  const state = await releaseWithOldImage(oldTree, layout === 'same parts' ? '200K' : '2M');
  const versions = [assetDigests(before, layout === 'whole to parts'), assetDigests(after, false)];
  const server = await GitHubServer.start();
  try {
    await server.importState(state);
    const start = server.requests.length;
    const firstEvent = server.events.length;
    const result = await startCli(lanes[0]!.killed.root, [`${IMAGE}:upload`], { env: envFor(server, '200K'), timeoutMs: 120_000 }).done;
    if (result.code !== 0) throw new Error(`the uninterrupted replacement failed: ${result.stderr}`);
    const problems = await releaseProblems(server, 'latest', new Map([[IMAGE, [after]]]));
    if (problems.length) throw new Error(`the uninterrupted replacement left ${problems.join('; ')}`);
    const mutations = server.requests.slice(start).filter((request) => isMutation(request.method));
    // Every request from the commit (the record under a temporary name) on, or every mutation.
    const commitAt = mutations.findIndex((request) => request.path.includes(`name=${IMAGE}.qcow2.json.uploading-`));
    if (commitAt < 0) throw new Error('the replacement made no commit');
    const positions = mutations.map((_, index) => index).filter((index) => FULL || index >= commitAt);
    const variants: Array<'drop' | 'handle'> = FULL ? ['drop', 'handle'] : ['drop'];
    return {
      state,
      mutations,
      trials: positions.flatMap((position) => variants.map((variant) => ({ position, variant }))),
      window: longestWindow(server, server.events.slice(firstEvent), versions),
    };
  } finally {
    await server.close();
  }
}

async function killTrials(t: import('ava').ExecutionContext, layout: Layout, sweep: Sweep, trials: Sweep['trials']): Promise<void> {
  const { lanes, before, after } = await prepare();
  const { state, mutations } = sweep;
  const tried: string[] = [];
  let next = 0;
  const lane = async ({ killed, rerun }: Setup['lanes'][number]) => {
    while (next < trials.length) {
      const { position, variant } = trials[next++]!;
      const label = `${layout}, killed at mutation ${position + 1}/${mutations.length} (${mutations[position]!.method} ${mutations[position]!.path.replace(/\?.*name=/, ' ')}), ${variant === 'drop' ? 'before' : 'after'} the server carried it out`;
      const server = await GitHubServer.start();
      try {
        await server.importState(state);
        let seen = 0;
        let child: ReturnType<typeof startCli>['child'] | undefined;
        server.hook = (request) => {
          if (!isMutation(request.method) || seen++ !== position) return 'handle';
          child?.kill('SIGKILL');
          return variant;
        };
        const running = startCli(killed.root, [`${IMAGE}:upload`], { env: envFor(server, '200K'), timeoutMs: 120_000 });
        child = running.child;
        const killedResult = await running.done;
        server.hook = undefined;
        t.is(killedResult.signal, 'SIGKILL', `${label}: the run was killed`);

        // Right after the kill, this tool still reads a complete, verified copy (old or new).
        t.true(await readsComplete(server, [before, after]), `${label}: no complete copy could be read after the kill`);

        const again = await startCli(rerun.root, [`${IMAGE}:upload`], { env: envFor(server, '200K'), timeoutMs: 120_000 }).done;
        t.is(again.code, 0, `${label}: the re-run failed\n${again.stderr}`);
        t.deepEqual(await releaseProblems(server, 'latest', new Map([[IMAGE, [after]]])), [], label);
        tried.push(label);
      } finally {
        await server.close();
      }
    }
  };
  await Promise.all(lanes.map(lane));
  t.is(tried.length, trials.length);
  t.log(
    `${layout}: ${tried.length} kills (mutations ${trials.map((trial) => trial.position + 1).join(', ')}), each followed by a re-run from another copy of the tree: all converged`,
  );
}

type Layout = 'same parts' | 'whole to parts';

/** Kill trials in chunks, one test each, so each stays well inside ava's timeout on a busy machine. */
function declareSweep(layout: Layout): void {
  let sweep: Promise<Sweep> | undefined;
  const once = () => (sweep ??= reference(layout));
  test.serial(`${layout}: an uninterrupted replacement leaves the final names without a complete copy for a few requests only`, async (t) => {
    const { window, mutations } = await once();
    t.log(
      `${layout}: ${mutations.length} mutating requests; the final names held no complete copy for at most ${window.mutations} mutations (${window.requests} requests), ${window.ms.toFixed(1)} ms`,
    );
    t.true(window.mutations <= 8, 'one delete and one rename per piece and checksum, in parallel');
  });
  const chunks = FULL ? 12 : 5;
  for (let chunk = 0; chunk < chunks; chunk++) {
    test.serial(`${layout}: killed at each request of the replacement, then re-run from another tree (part ${chunk + 1} of ${chunks})`, async (t) => {
      const found = await once();
      await killTrials(
        t,
        layout,
        found,
        found.trials.filter((_, index) => index % chunks === chunk),
      );
    });
  }
}

async function readsComplete(server: GitHubServer, versions: readonly ImageVersion[]): Promise<boolean> {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-read-'));
  try {
    const store = await openImageStore(storeSettings({ repo: `${server.owner}/${server.repo}`, apiUrl: server.url }, 'latest'), 'latest', {
      env: { GITHUB_TOKEN: server.token },
      tuning: { retryBaseMs: 2 },
    });
    const got = await getImage(store, IMAGE, { path: join(dir, `${IMAGE}.qcow2`), overwrite: true, signal: neverAborted(), replacingWaitsMs: [] });
    const bytes = await readFile(got.path);
    return versions.some((version) => version.bytes.equals(bytes));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

declareSweep('same parts');
if (FULL) declareSweep('whole to parts');
