// The store contract: what every backend of the image store promises, as one list of
// backends the contract tests run against. A new backend adds one entry here and passes
// the same tests (test/store-contract*.test.ts).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ReleaseDecl } from '../../tasks/store/backends.ts';
import type { StoreOptions } from '../../tasks/store/open.ts';
import { GitHubServer } from './github-server.ts';

/** A running store of one backend, empty at first. */
export interface ContractStore {
  /** The config's `release:` settings that reach it (the tag comes from the tests). */
  readonly release: ReleaseDecl;
  /** Environment a process needs to write it (tokens, logins). */
  readonly env: Readonly<Record<string, string>>;
  /** Options for opening it in this process (short retry waits). */
  readonly options: StoreOptions;
  /** Requests the store has served so far, where the backend can count them (a loopback server). */
  readonly requestCount?: () => number;
  /** Flips one byte of what the store keeps under `storedName` (a record's attachment name), behind the backend's back. */
  corrupt(tag: string, storedName: string): Promise<void>;
  close(): Promise<void>;
}

export interface ContractBackend {
  readonly name: string;
  /** A fresh, empty store; `limits` shrink the backend's size limits so that small images are stored in pieces. */
  start(limits: { readonly maxPieceSize: number; readonly partSize: number }): Promise<ContractStore>;
}

export const CONTRACT_BACKENDS: readonly ContractBackend[] = [
  {
    name: 'directory',
    async start() {
      const dir = await mkdtemp(join(tmpdir(), 'pipeline-contract-dir-'));
      return {
        release: { dir },
        env: {},
        options: {},
        corrupt: (tag, storedName) => flipFirstByte(join(dir, tag, 'blobs', storedName)),
        close: () => rm(dir, { recursive: true, force: true }),
      };
    },
  },
  {
    name: 'github',
    async start(limits) {
      const server = await GitHubServer.start();
      const env = { GITHUB_TOKEN: server.token };
      return {
        release: { repo: `${server.owner}/${server.repo}`, apiUrl: server.url, maxAssetSize: limits.maxPieceSize, partSize: limits.partSize },
        env,
        options: { env, tuning: { retryBaseMs: 2 } },
        requestCount: () => server.requests.length,
        async corrupt(tag, storedName) {
          const bytes = await server.assetBytes(tag, storedName);
          bytes[0]! ^= 0xff;
          await server.overwriteAsset(tag, storedName, bytes);
        },
        close: () => server.close(),
      };
    },
  },
];

async function flipFirstByte(path: string): Promise<void> {
  const bytes = await readFile(path);
  bytes[0]! ^= 0xff;
  await writeFile(path, bytes);
}
