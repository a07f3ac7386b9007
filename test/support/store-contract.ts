// The store contract: what every backend of the image store promises, as one list of
// backends the contract tests run against. A new backend adds one entry here and passes
// the same tests (test/store-contract*.test.ts).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ReleaseDecl } from '../../tasks/store/backends.ts';
import type { StoreOptions } from '../../tasks/store/open.ts';
import { GitHubServer } from './github-server.ts';
import { startRegistry } from './registry.ts';
import { RegistryProxy } from './registry-proxy.ts';

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
  {
    name: 'oci',
    async start(limits) {
      const registry = await startRegistry({ auth: 'htpasswd' });
      // The proxy only counts requests here.
      const proxy = await RegistryProxy.start(registry.url);
      const dir = await mkdtemp(join(tmpdir(), 'pipeline-contract-oci-'));
      const authFile = join(dir, 'auth.json');
      await writeFile(authFile, JSON.stringify({ auths: { [proxy.host]: { auth: Buffer.from(`${registry.user}:${registry.password}`).toString('base64') } } }));
      const env = { REGISTRY_AUTH_FILE: authFile, HOME: dir };
      const namespace = 'acme/images';
      return {
        release: { registry: `${proxy.host}/${namespace}`, plainHttp: true, maxBlobSize: limits.maxPieceSize },
        env,
        options: { env, tuning: { retryBaseMs: 2 } },
        requestCount: () => proxy.requests.length,
        async corrupt(tag, storedName) {
          // The attachment's layer title names it, in the image's manifest or in a referrer of it.
          const image = storedName.slice(0, storedName.indexOf('.qcow2'));
          const read = async (reference: string) => {
            const answer = await fetch(`${registry.url}/v2/${namespace}/${image}/manifests/${reference}`, {
              headers: { authorization: registry.basic(), accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' },
            });
            return { digest: answer.headers.get('docker-content-digest') ?? '', json: (await answer.json()) as Record<string, unknown> };
          };
          type Layers = { layers?: Array<{ digest: string; annotations?: Record<string, string> }> };
          const titled = (manifest: Layers) => manifest.layers?.find((layer) => layer.annotations?.['org.opencontainers.image.title'] === storedName)?.digest;
          const top = await read(tag);
          let digest = titled(top.json as Layers);
          if (!digest) {
            const referrers = (await read(top.digest.replace(':', '-'))).json as { manifests?: Array<{ digest: string }> };
            for (const entry of referrers.manifests ?? []) digest ??= titled((await read(entry.digest)).json as Layers);
          }
          if (!digest) throw new Error(`corrupt: no layer titled ${storedName} in ${image}:${tag}`);
          const hex = digest.slice('sha256:'.length);
          await flipFirstByte(join(registry.storageDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data'));
        },
        async close() {
          await proxy.close();
          await registry.close();
          await rm(dir, { recursive: true, force: true });
        },
      };
    },
  },
];

async function flipFirstByte(path: string): Promise<void> {
  const bytes = await readFile(path);
  bytes[0]! ^= 0xff;
  await writeFile(path, bytes);
}
