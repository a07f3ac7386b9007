// The store contract: what every backend of the image store promises, as one list of
// backends the contract tests run against. A new backend adds one entry here and passes
// the same tests (test/store-contract*.test.ts).
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ReleaseDecl } from '../../tasks/store/backends.ts';
import type { StoreOptions } from '../../tasks/store/open.ts';
import { GitHubServer } from './github-server.ts';
import { releaseProblems, type ImageVersion } from './release-state.ts';
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
  /** Deletes what the store keeps under `storedName` (a record's attachment name), behind the backend's back. */
  lose(tag: string, storedName: string): Promise<void>;
  /**
   * What is wrong with the store once every writer is done, in words (empty: consistent):
   * each image of `versions` stored whole as one of its versions, its index entry agreeing,
   * nothing left of an unfinished put.
   */
  problems(tag: string, versions: ReadonlyMap<string, readonly ImageVersion[]>): Promise<string[]>;
  /**
   * Where the backend can see each request that changes the store: calls `onMutation` with
   * the 0-based count of such requests before carrying each out (the test kills the writer
   * there). Undefined for a backend with no requests to see (a directory: kills fall at
   * random moments instead).
   */
  readonly watchMutations?: (onMutation: (index: number) => void) => { stop(): void };
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
        lose: (tag, storedName) => rm(join(dir, tag, 'blobs', storedName)),
        problems: (tag, versions) => directoryProblems(join(dir, tag), versions),
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
        lose: (tag, storedName) => server.removeAsset(tag, storedName),
        problems: (tag, versions) => releaseProblems(server, tag, versions),
        watchMutations(onMutation) {
          let seen = 0;
          server.hook = (request) => {
            if (request.method === 'POST' || request.method === 'PATCH' || request.method === 'DELETE') onMutation(seen++);
            return 'handle';
          };
          return { stop: () => (server.hook = undefined) };
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
      /** The digest of the attachment `storedName` names: its layer title, in the image's manifest or in a referrer of it. */
      const attachmentDigest = async (tag: string, storedName: string): Promise<string> => {
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
        if (!digest) throw new Error(`no layer titled ${storedName} in ${image}:${tag}`);
        return digest;
      };
      return {
        release: { registry: `${proxy.host}/${namespace}`, plainHttp: true, maxBlobSize: limits.maxPieceSize },
        env,
        options: { env, tuning: { retryBaseMs: 2 } },
        requestCount: () => proxy.requests.length,
        async corrupt(tag, storedName) {
          const hex = (await attachmentDigest(tag, storedName)).slice('sha256:'.length);
          await flipFirstByte(join(registry.storageDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data'));
        },
        async lose(tag, storedName) {
          const image = storedName.slice(0, storedName.indexOf('.qcow2'));
          const digest = await attachmentDigest(tag, storedName);
          const answer = await fetch(`${registry.url}/v2/${namespace}/${image}/blobs/${digest}`, {
            method: 'DELETE',
            headers: { authorization: registry.basic() },
          });
          if (answer.status !== 202) throw new Error(`lose: deleting ${digest} of ${image} answered ${answer.status}`);
        },
        problems: (tag, versions) => registryProblems(registry.url, registry.basic(), namespace, tag, versions),
        watchMutations(onMutation) {
          let seen = 0;
          proxy.hook = (request) => {
            if (request.method === 'POST' || request.method === 'PUT' || request.method === 'PATCH' || request.method === 'DELETE') onMutation(seen++);
            return 'forward';
          };
          return { stop: () => (proxy.hook = undefined) };
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

const sha256Of = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** Every temporary-looking name under `dir`, relative to it. */
async function leftovers(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true });
  return entries.filter((entry) => /(^|\/)\.[^/]*\.tmp$/.test(entry) || entry.endsWith('.partial'));
}

/** Problems with a directory store's tag folder, in words (empty: consistent). */
export async function directoryProblems(dir: string, versions: ReadonlyMap<string, readonly ImageVersion[]>): Promise<string[]> {
  const problems = (await leftovers(dir)).map((entry) => `${entry} was left behind`);
  const index = JSON.parse(await readFile(join(dir, 'images.json'), 'utf8')) as { images: Record<string, { sha256: string }> };
  const listed = Object.keys(index.images).sort();
  const wanted = [...versions.keys()].sort();
  if (JSON.stringify(listed) !== JSON.stringify(wanted)) problems.push(`images.json lists ${listed.join(', ') || 'nothing'}, not ${wanted.join(', ')}`);
  for (const [name, candidates] of versions) {
    const record = JSON.parse(await readFile(join(dir, `${name}.json`), 'utf8')) as { image: { sha256: string; size: number }; blob: string };
    if (!candidates.some((candidate) => candidate.sha256 === record.image.sha256))
      problems.push(`${name}: the record's sha256 is none of the uploaded versions`);
    if (index.images[name]?.sha256 !== record.image.sha256)
      problems.push(`${name}: images.json says ${index.images[name]?.sha256}, the record ${record.image.sha256}`);
    const blob = await readFile(join(dir, 'blobs', record.blob));
    if (sha256Of(blob) !== record.image.sha256) problems.push(`${name}: blob ${record.blob} does not hold the record's bytes`);
    const copy = await readFile(join(dir, `${name}.qcow2`));
    if (sha256Of(copy) !== record.image.sha256) problems.push(`${name}.qcow2 is not the recorded version`);
    const checksum = await readFile(join(dir, `${name}.qcow2.sha256`), 'utf8');
    if (checksum !== `${record.image.sha256}  ${name}.qcow2\n`) problems.push(`${name}.qcow2.sha256 says ${checksum.trim()}, not the record's sha256`);
  }
  return problems;
}

const MANIFEST_TYPES = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';

/**
 * Problems with a registry store's tag, in words (empty: consistent), read with plain HTTP
 * rather than the backend's own code: a marker tag for exactly the images, each image's
 * manifest under the tag holding a record of one of its versions whose layers are that
 * version's bytes, and an index (images.json) whose entries are exactly those records.
 */
async function registryProblems(
  url: string,
  authorization: string,
  namespace: string,
  tag: string,
  versions: ReadonlyMap<string, readonly ImageVersion[]>,
): Promise<string[]> {
  const get = async (path: string, accept?: string): Promise<Response> =>
    fetch(`${url}/v2/${path}`, { headers: { authorization, ...(accept ? { accept } : {}) } });
  const problems: string[] = [];
  const tags = ((await (await get(`${namespace}/pipeline_index/tags/list`)).json()) as { tags?: string[] }).tags ?? [];
  const marked = tags.filter((candidate) => candidate.startsWith('_') && candidate.endsWith(`_${tag}`)).map((marker) => marker.slice(1, -`_${tag}`.length));
  const wanted = [...versions.keys()].sort();
  if (JSON.stringify(marked.sort()) !== JSON.stringify(wanted)) problems.push(`markers name ${marked.join(', ') || 'nothing'}, not ${wanted.join(', ')}`);
  const records = new Map<string, { sha256: string }>();
  for (const [name, candidates] of versions) {
    const answer = await get(`${namespace}/${name}/manifests/${tag}`, MANIFEST_TYPES);
    if (!answer.ok) {
      problems.push(`${name}:${tag} answers ${answer.status}`);
      continue;
    }
    const manifest = (await answer.json()) as {
      layers?: Array<{ digest: string; annotations?: Record<string, string> }>;
      annotations?: Record<string, string>;
    };
    const record = JSON.parse(manifest.annotations?.['vnd.vmpipeline.image.record'] ?? 'null') as { sha256: string; parts: Array<{ name: string }> } | null;
    if (!record) {
      problems.push(`${name}:${tag} has no record`);
      continue;
    }
    records.set(name, record);
    const version = candidates.find((candidate) => candidate.sha256 === record.sha256);
    if (!version) {
      problems.push(`${name}: the record's sha256 is none of the uploaded versions`);
      continue;
    }
    const parts = record.parts.map((part) => manifest.layers?.find((layer) => layer.annotations?.['org.opencontainers.image.title'] === part.name));
    const bytes = Buffer.concat(
      await Promise.all(parts.map(async (layer) => Buffer.from(await (await get(`${namespace}/${name}/blobs/${layer?.digest}`)).arrayBuffer()))),
    );
    if (sha256Of(bytes) !== record.sha256) problems.push(`${name}:${tag}'s layers are not the recorded bytes`);
  }
  const indexAnswer = await get(`${namespace}/pipeline_index/manifests/${tag}`, MANIFEST_TYPES);
  if (!indexAnswer.ok) return [...problems, `pipeline_index:${tag} answers ${indexAnswer.status}`];
  const indexLayer = ((await indexAnswer.json()) as { layers?: Array<{ digest: string }> }).layers?.[0];
  const index = (await (await get(`${namespace}/pipeline_index/blobs/${indexLayer?.digest}`)).json()) as { images?: Record<string, { sha256: string }> };
  const listed = Object.keys(index.images ?? {}).sort();
  if (JSON.stringify(listed) !== JSON.stringify(wanted)) problems.push(`images.json lists ${listed.join(', ') || 'nothing'}, not ${wanted.join(', ')}`);
  for (const [name, record] of records) {
    if (index.images?.[name]?.sha256 !== record.sha256) problems.push(`${name}: images.json says ${index.images?.[name]?.sha256}, the record ${record.sha256}`);
  }
  return problems;
}
