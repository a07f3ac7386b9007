// A loopback GitHub release holding one image (split into parts) with its chunk index,
// put through the store as an upload puts it, for the seeded-fetch tests.
import type { ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChunkIndexBuilder } from '../../tasks/store/delta/chunk-index.ts';
import { storeSettings } from '../../tasks/store/backends.ts';
import { openImageStore } from '../../tasks/store/open.ts';
import type { ImageStore } from '../../tasks/store/store.ts';
import { GitHubServer } from './github-server.ts';

export interface DeltaRelease {
  readonly server: GitHubServer;
  readonly store: ImageStore;
  readonly sha256: string;
  readonly env: Record<string, string>;
}

export async function tempDir(t: ExecutionContext, prefix = 'pipeline-delta-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export async function chunkIndexOfBytes(bytes: Uint8Array, sha256: string): Promise<Uint8Array> {
  const builder = new ChunkIndexBuilder();
  for (let at = 0; at < bytes.length; at += 1 << 20) builder.update(bytes.subarray(at, at + (1 << 20)));
  return builder.finish(sha256);
}

/**
 * Starts a server and puts `image` as `name` (parts of `partSize`), with `index` as its
 * chunk index (by default the image's own).
 */
export async function releaseWithIndex(
  t: ExecutionContext,
  dir: string,
  image: Buffer,
  options: { name?: string; partSize?: number; index?: Uint8Array; server?: GitHubServer } = {},
): Promise<DeltaRelease> {
  const name = options.name ?? 'img';
  const server = options.server ?? (await GitHubServer.start());
  if (!options.server) t.teardown(() => server.close());
  const partSize = String(options.partSize ?? 64 * 1024);
  const env = {
    GITHUB_TOKEN: server.token,
    GITHUB_API_URL: server.url,
    GITHUB_REPOSITORY: `${server.owner}/${server.repo}`,
    PIPELINE_PART_SIZE: partSize,
    PIPELINE_MAX_ASSET_SIZE: partSize,
  };
  const store = await openImageStore(storeSettings({ repo: `${server.owner}/${server.repo}`, apiUrl: server.url }, 'latest'), 'latest', {
    env,
    tuning: { retryBaseMs: 1, transferAttempts: 2 },
  });
  const sha256 = createHash('sha256').update(image).digest('hex');
  const path = join(dir, `upload-${name}.qcow2`);
  await writeFile(path, image);
  await store.put(
    {
      name,
      path,
      size: image.length,
      sha256,
      cacheKey: 'k'.repeat(64),
      versions: {},
      sources: { base: { path: 'cache/base.qcow2' }, files: {} },
      attachments: { 'chunk-index': options.index ?? (await chunkIndexOfBytes(image, sha256)) },
    },
    { force: false, signal: new AbortController().signal, log: () => {} },
  );
  await rm(path);
  return { server, store, sha256, env };
}

/** Ranged reads of the image's parts (not of its chunk index, `{name}.qcow2.chunks`, whose head and records are read in ranges too). */
export function rangedRequests(server: GitHubServer): number {
  return server.requests.filter((request) => request.path.includes('/storage/') && !request.path.endsWith('.chunks') && request.range !== undefined).length;
}
