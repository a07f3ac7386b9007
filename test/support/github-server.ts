// A loopback stand-in for the GitHub REST subset the release tasks use: releases by tag,
// create/update, paginated asset lists, uploads to `upload_url`, delete, rename, asset
// downloads (octet-stream via a redirect, with Range), git refs (tags, and branch heads to
// read), artifact attestations. Faults are armed per test.
// Every mutating request is recorded with the asset list before and after it, so a test
// can check that no upload ever runs while an image is missing from the release.
//
// It models what concurrent writers meet on GitHub: creating a release that another
// request created first is 422 already_exists, renaming onto a taken name is 422,
// deleting a deleted asset is 404, lists are paginated (and can be capped at a few items a
// page), and each request can wait a random, seeded time before it is handled, so that
// processes interleave differently from run to run. A hook sees every request first (a
// test can kill the client there, and say whether the server still carries it out).
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { execFileSync } from 'node:child_process';
import { closeSync, createWriteStream, fstatSync, mkdtempSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { storeSettings, type ReleaseDecl } from '../../tasks/store/backends.ts';
import type { components } from '@octokit/openapi-types';
import { seededRandom } from './seeded-random.ts';

type ApiRelease = components['schemas']['release'];
/** GitHub reports `new` for a half-made asset, though the schema lists only uploaded/open. */
type ApiAsset = Omit<components['schemas']['release-asset'], 'state'> & { state: components['schemas']['release-asset']['state'] | 'new' };
type ApiUser = components['schemas']['simple-user'];
type ApiRef = components['schemas']['git-ref'];

export interface AssetRecord {
  readonly id: number;
  readonly name: string;
  readonly size: number;
  readonly state: string;
  /** `sha256:<hex>` of the bytes, once uploaded. */
  readonly digest: string | null;
}

export interface MutationEvent {
  readonly seq: number;
  readonly kind: 'upload' | 'delete' | 'rename' | 'create-release' | 'update-release' | 'update-ref' | 'create-ref';
  readonly target: string;
  readonly releaseTag?: string;
  /** Assets of the release when the request arrived. */
  readonly before: readonly AssetRecord[];
  /** Assets of the release when the request finished (or failed). */
  after: readonly AssetRecord[];
  /** When it arrived and when it finished, in ms on the server's clock (performance.now()). */
  readonly at: number;
  endAt: number;
}

export interface RequestInfo {
  /** Position of this request among all requests the server received (0-based). */
  readonly seq: number;
  readonly method: string;
  readonly path: string;
}

/** `handle`: serve it; `drop`: close the connection without carrying it out. */
export type RequestHook = (request: RequestInfo) => Promise<'handle' | 'drop'> | 'handle' | 'drop';

export interface RouteMatch {
  readonly method?: string;
  /** Substring of the decoded path (plus query). */
  readonly path?: string;
}

export type Fault =
  | (RouteMatch & { kind: 'status'; status: number; headers?: Record<string, string>; body?: unknown; leaveHalfMade?: boolean })
  /** Drops the connection after this many body bytes (a download's response or an upload's request). */
  | (RouteMatch & { kind: 'reset'; afterBytes: number })
  /** Sends a full Content-Length but ends the response after this many bytes. */
  | (RouteMatch & { kind: 'truncate'; afterBytes: number })
  /** Pauses between chunks of a download. */
  | (RouteMatch & { kind: 'slow'; delayMs: number; chunkBytes?: number })
  /** Flips bytes in a download's body (a corrupt transfer the checksum must catch). */
  | (RouteMatch & { kind: 'corrupt' });

interface StoredAsset {
  api: ApiAsset;
  file: string;
}

interface StoredRelease {
  api: Omit<ApiRelease, 'assets'>;
  assets: StoredAsset[];
}

const user: ApiUser = {
  login: 'pipeline-bot',
  id: 1,
  node_id: 'U_1',
  avatar_url: 'https://avatars.example/u/1',
  gravatar_id: null,
  url: 'https://api.example/users/pipeline-bot',
  html_url: 'https://example/pipeline-bot',
  followers_url: '',
  following_url: '',
  gists_url: '',
  starred_url: '',
  subscriptions_url: '',
  organizations_url: '',
  repos_url: '',
  events_url: '',
  received_events_url: '',
  type: 'User',
  site_admin: false,
};

export interface ServerState {
  readonly releases: ReadonlyArray<{ api: Omit<ApiRelease, 'assets'>; assets: ReadonlyArray<{ api: ApiAsset; bytes: Buffer }> }>;
  readonly refs: ReadonlyArray<[string, { type: 'commit' | 'tag'; sha: string }]>;
  readonly nextId: number;
}

export interface GitHubServerOptions {
  readonly token?: string;
  readonly owner?: string;
  readonly repo?: string;
  /** Page size when a list request gives no per_page (GitHub: 30). */
  readonly defaultPerPage?: number;
  /** Serve asset bytes through a redirect to /storage/... as GitHub does (default true). */
  readonly redirectDownloads?: boolean;
  /** Largest page a list request gets, whatever per_page it asks for (GitHub: 100). */
  readonly maxPerPage?: number;
  /** Each request waits a random 0..delayMs ms before it is handled. */
  readonly delayMs?: number;
  /** Seed of those random waits (default random; read it back from `seed`). */
  readonly seed?: number;
  /** Paces every asset download to this many bytes a second (default: as fast as it goes). */
  readonly bytesPerSecond?: number;
  /** A private repository: without the token, everything answers 404, as GitHub does. Default: public (anyone may read). */
  readonly private?: boolean;
  /** Asset bytes served per second, over all downloads together (a home uplink in bench/delta.ts); unlimited by default. */
  readonly rateBytesPerSecond?: number;
}

/** Paces bytes to a rate shared by every response that asks it (a token bucket one write deep). */
export class Pacer {
  private nextFree = 0;
  constructor(private readonly bytesPerSecond: number) {}

  /** Waits until `bytes` more may go. */
  async take(bytes: number): Promise<void> {
    const now = performance.now();
    const start = Math.max(now, this.nextFree);
    this.nextFree = start + (bytes * 1000) / this.bytesPerSecond;
    if (this.nextFree - now > 1) await sleep(this.nextFree - now);
  }
}

export class GitHubServer {
  readonly token: string;
  readonly owner: string;
  readonly repo: string;
  url = '';
  readonly events: MutationEvent[] = [];
  /** Every request's method and path, in order. */
  readonly requests: Array<{ method: string; path: string; authorization: string | undefined; range: string | undefined; at: number }> = [];
  /** Sigstore bundles written to the attestations API (`POST /repos/{owner}/{repo}/attestations`), in order. */
  readonly attestations: unknown[] = [];
  readonly seed: number;
  /** Sees every request before it is handled. */
  hook: RequestHook | undefined;
  private readonly random: () => number;
  private readonly releases: StoredRelease[] = [];
  private readonly refs = new Map<string, { type: 'commit' | 'tag'; sha: string }>();
  /** Branch heads, by branch name (what a workflow reads to see whether main moved on). */
  private readonly branches = new Map<string, string>();
  private readonly annotatedTags = new Map<string, string>();
  private faults: Fault[] = [];
  private nextId = 1000;
  private seq = 0;
  private dir = '';
  private readonly server: http.Server;
  private readonly sockets = new Set<Socket>();

  /** Body bytes of asset downloads served so far. */
  bytesServed = 0;
  /** Body bytes sent per asset name (single-range and whole reads). */
  readonly bytesServedOf = new Map<string, number>();
  private readonly pacer: Pacer | undefined;
  /**
   * Asset files open for reading, by path: a ranged read costs one synchronous read from the
   * page cache, not an open, a stat, reads and a close through the thread pool that the
   * client in the same process (a bench) shares.
   */
  private readonly openFiles = new Map<string, number>();

  constructor(private readonly options: GitHubServerOptions = {}) {
    this.pacer = options.rateBytesPerSecond ? new Pacer(options.rateBytesPerSecond) : undefined;
    this.token = options.token ?? `ghp_${randomBytes(12).toString('hex')}`;
    this.owner = options.owner ?? 'acme';
    this.repo = options.repo ?? 'images';
    this.seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
    this.random = seededRandom(this.seed);
    this.server = http.createServer((request, response) => {
      this.handle(request, response).catch((error: unknown) => {
        if (!response.headersSent) this.json(response, 500, { message: String(error) });
        else response.destroy();
      });
    });
    // Idle kept-alive sockets stay open for a test's length (see mirror-server.ts).
    this.server.keepAliveTimeout = 120_000;
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  static async start(options: GitHubServerOptions = {}): Promise<GitHubServer> {
    const server = new GitHubServer(options);
    server.dir = await mkdtemp(join(tmpdir(), 'fake-github-'));
    await new Promise<void>((resolve) => server.server.listen(0, '127.0.0.1', resolve));
    server.url = `http://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
    return server;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    for (const fd of this.openFiles.values()) closeSync(fd);
    this.openFiles.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Arms a fault for the next matching request (each fault fires once). */
  arm(fault: Fault): void {
    this.faults.push(fault);
  }

  /** Arms a 403 rate-limit answer with the reset `resetInSeconds` from now. */
  armRateLimit(resetInSeconds: number, match: RouteMatch = {}): number {
    const reset = Math.floor(Date.now() / 1000) + resetInSeconds;
    this.arm({
      ...match,
      kind: 'status',
      status: 403,
      headers: { 'x-ratelimit-remaining': '0', 'x-ratelimit-limit': '5000', 'x-ratelimit-reset': String(reset) },
      body: { message: 'API rate limit exceeded for user ID 1.' },
    });
    return reset;
  }

  get pendingFaults(): number {
    return this.faults.length;
  }

  // Test setup and inspection.

  addTag(tag: string, sha = randomBytes(20).toString('hex'), annotated = false): string {
    if (annotated) {
      const tagSha = randomBytes(20).toString('hex');
      this.annotatedTags.set(tagSha, sha);
      this.refs.set(tag, { type: 'tag', sha: tagSha });
    } else {
      this.refs.set(tag, { type: 'commit', sha });
    }
    return sha;
  }

  /** Points branch `name` at `sha` (the repository's main moving on). */
  setBranch(name: string, sha: string): void {
    this.branches.set(name, sha);
  }

  /** The commit a tag points at, peeled. */
  tagCommit(tag: string): string | undefined {
    const ref = this.refs.get(tag);
    return ref?.type === 'tag' ? this.annotatedTags.get(ref.sha) : ref?.sha;
  }

  createRelease(tag: string, fields: { name?: string; body?: string; prerelease?: boolean } = {}): ApiRelease {
    if (!this.refs.has(tag)) this.addTag(tag);
    const id = this.nextId++;
    const base = `${this.url}/repos/${this.owner}/${this.repo}`;
    const now = new Date().toISOString();
    const release: StoredRelease = {
      api: {
        url: `${base}/releases/${id}`,
        html_url: `https://github.example/${this.owner}/${this.repo}/releases/tag/${tag}`,
        assets_url: `${base}/releases/${id}/assets`,
        upload_url: `${this.url}/uploads/repos/${this.owner}/${this.repo}/releases/${id}/assets{?name,label}`,
        tarball_url: null,
        zipball_url: null,
        id,
        node_id: `RE_${id}`,
        tag_name: tag,
        target_commitish: 'main',
        name: fields.name ?? tag,
        body: fields.body ?? null,
        draft: false,
        prerelease: fields.prerelease ?? false,
        created_at: now,
        published_at: now,
        author: user,
      },
      assets: [],
    };
    this.releases.push(release);
    return this.releaseJson(release);
  }

  /** How many releases carry this tag (GitHub allows one; a racing create must not make two). */
  releaseCount(tag: string): number {
    return this.releases.filter((release) => release.api.tag_name === tag).length;
  }

  release(tag: string): ApiRelease | undefined {
    const found = this.releases.find((release) => release.api.tag_name === tag);
    return found && this.releaseJson(found);
  }

  assets(tag: string): AssetRecord[] {
    const found = this.releases.find((release) => release.api.tag_name === tag);
    return found ? this.snapshot(found) : [];
  }

  async assetBytes(tag: string, name: string): Promise<Buffer> {
    const asset = this.releases.find((release) => release.api.tag_name === tag)?.assets.find((a) => a.api.name === name);
    if (!asset) throw new Error(`no asset ${name} on ${tag}`);
    const { readFile } = await import('node:fs/promises');
    return readFile(asset.file);
  }

  /** Everything a release holds, ids included, to be put back with `importState` (on this or another server). */
  async exportState(): Promise<ServerState> {
    const { readFile } = await import('node:fs/promises');
    const releases = await Promise.all(
      this.releases.map(async (release) => ({
        api: structuredClone(release.api),
        assets: await Promise.all(release.assets.map(async (asset) => ({ api: structuredClone(asset.api), bytes: await readFile(asset.file) }))),
      })),
    );
    return { releases, refs: [...this.refs], nextId: this.nextId };
  }

  /** Replaces every release and tag with an exported state (URLs rewritten to this server). */
  async importState(state: ServerState): Promise<void> {
    const { writeFile } = await import('node:fs/promises');
    const rewrite = <T>(value: T, from: string): T => JSON.parse(JSON.stringify(value).split(from).join(this.url)) as T;
    const from = new URL(state.releases[0]?.api.url ?? this.url).origin;
    this.releases.splice(0);
    for (const release of state.releases) {
      const stored: StoredRelease = { api: rewrite(release.api, from), assets: [] };
      for (const asset of release.assets) {
        const file = join(this.dir, String(asset.api.id));
        await writeFile(file, asset.bytes);
        stored.assets.push({ api: rewrite(asset.api, from), file });
      }
      this.releases.push(stored);
    }
    this.refs.clear();
    for (const [tag, ref] of state.refs) this.refs.set(tag, ref);
    this.nextId = Math.max(this.nextId, state.nextId);
  }

  /** Deletes an asset directly, as another writer would (no request recorded). */
  async removeAsset(tag: string, name: string): Promise<void> {
    const release = this.releases.find((candidate) => candidate.api.tag_name === tag);
    const asset = release?.assets.find((candidate) => candidate.api.name === name);
    if (!release || !asset) throw new Error(`no asset ${name} on ${tag}`);
    release.assets = release.assets.filter((candidate) => candidate !== asset);
    this.forgetFile(asset.file);
    await rm(asset.file, { force: true });
  }

  private forgetFile(file: string): void {
    const fd = this.openFiles.get(file);
    if (fd !== undefined) closeSync(fd);
    this.openFiles.delete(file);
  }

  private openFile(file: string): number {
    let fd = this.openFiles.get(file);
    if (fd === undefined) {
      fd = openSync(file, 'r');
      this.openFiles.set(file, fd);
    }
    return fd;
  }

  /** Replaces an asset's bytes in place, keeping its id and name, as a store writer with other intentions might (no request recorded). */
  async overwriteAsset(tag: string, name: string, bytes: Buffer): Promise<void> {
    const asset = this.releases.find((candidate) => candidate.api.tag_name === tag)?.assets.find((candidate) => candidate.api.name === name);
    if (!asset) throw new Error(`no asset ${name} on ${tag}`);
    const { writeFile } = await import('node:fs/promises');
    await writeFile(asset.file, bytes);
    asset.api.size = bytes.length;
  }

  /** Adds a finished asset directly (no request recorded). */
  async putAsset(tag: string, name: string, bytes: Buffer, state: ApiAsset['state'] = 'uploaded'): Promise<void> {
    const release = this.releases.find((candidate) => candidate.api.tag_name === tag) ?? this.storedRelease(this.createRelease(tag).id)!;
    const stored = this.newAsset(release, name, 'application/octet-stream');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(stored.file, bytes);
    stored.api.size = bytes.length;
    stored.api.state = state;
    stored.api.digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  }

  // Request handling.

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', this.url);
    const path = decodeURIComponent(url.pathname);
    const method = request.method ?? 'GET';
    const seq = this.requests.length;
    this.requests.push({
      method,
      path: `${path}${url.search}`,
      authorization: request.headers.authorization,
      range: request.headers.range,
      at: performance.now(),
    });
    if (this.options.delayMs) await sleep(this.random() * this.options.delayMs);
    if (this.hook && (await this.hook({ seq, method, path: `${path}${url.search}` })) === 'drop') {
      request.socket.destroy();
      return;
    }

    const fault = this.takeFault(method, `${path}${url.search}`);

    // Storage URLs are pre-signed, like GitHub's redirect targets: no token needed (nor wanted).
    const storage = /^\/storage\/(\d+)\/[^/]+$/.exec(path);
    if (storage && method === 'GET') return this.serveBytes(request, response, Number(storage[1]), fault);

    const anonymous = request.headers.authorization === undefined;
    if (anonymous && this.options.private) {
      request.resume();
      return this.json(response, 404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest' });
    }
    // The public download URL of an asset, as github.com serves it: a redirect to storage, for anyone.
    const download = /^\/([^/]+)\/([^/]+)\/releases\/download\/([^/]+)\/([^/]+)$/.exec(path);
    if (download && method === 'GET' && download[1] === this.owner && download[2] === this.repo) {
      const release = this.releases.find((candidate) => candidate.api.tag_name === download[3]);
      const asset = release?.assets.find((candidate) => candidate.api.name === download[4] && candidate.api.state === 'uploaded');
      if (!asset) return this.json(response, 404, { message: 'Not Found' });
      response.writeHead(302, { location: `${this.url}/storage/${asset.api.id}/${encodeURIComponent(asset.api.name)}` });
      return void response.end();
    }
    // Anyone may read a public repository; writing needs the token.
    if (!(anonymous && (method === 'GET' || method === 'HEAD')) && !this.authorized(request.headers.authorization)) {
      request.resume();
      return this.json(response, 401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest' });
    }

    if (fault?.kind === 'status' && !fault.leaveHalfMade) {
      request.resume();
      for (const [key, value] of Object.entries(fault.headers ?? {})) response.setHeader(key, value);
      return this.json(response, fault.status, fault.body ?? { message: `injected ${fault.status}` });
    }

    const prefix = `/repos/${this.owner}/${this.repo}`;
    const uploadPrefix = `/uploads${prefix}/releases/`;
    if (path.startsWith(uploadPrefix) && method === 'POST') {
      const id = Number(/^(\d+)\/assets$/.exec(path.slice(uploadPrefix.length))?.[1]);
      return this.upload(request, response, id, url.searchParams.get('name') ?? '', fault);
    }
    if (path.startsWith('/repos/') && !path.startsWith(`${prefix}/`) && path !== prefix) {
      request.resume();
      return this.json(response, 404, { message: 'Not Found' });
    }
    const route = path.slice(prefix.length);
    const body = method === 'GET' || method === 'DELETE' ? undefined : await readJson(request);
    let match: RegExpExecArray | null;

    if (route === '/attestations' && method === 'POST') {
      const bundle = (body as { bundle?: unknown } | undefined)?.bundle;
      if (!bundle || typeof bundle !== 'object') return this.json(response, 422, { message: 'Invalid request: bundle is required' });
      this.attestations.push(bundle);
      return this.json(response, 201, { id: this.attestations.length });
    }
    if (route === '' && method === 'GET') {
      return this.json(response, 200, { id: 1, name: this.repo, full_name: `${this.owner}/${this.repo}`, private: false });
    }
    if ((match = /^\/releases\/tags\/(.+)$/.exec(route)) && method === 'GET') {
      const release = this.releases.find((candidate) => candidate.api.tag_name === match![1]);
      return release ? this.json(response, 200, this.releaseJson(release)) : this.json(response, 404, { message: 'Not Found' });
    }
    if (route === '/releases' && method === 'POST') {
      const fields = body as { tag_name?: string; name?: string; body?: string; prerelease?: boolean };
      if (!fields.tag_name) return this.json(response, 422, { message: 'Validation Failed' });
      if (this.releases.some((candidate) => candidate.api.tag_name === fields.tag_name)) {
        return this.json(response, 422, { message: 'Validation Failed', errors: [{ code: 'already_exists', field: 'tag_name' }] });
      }
      const event = this.begin('create-release', fields.tag_name, undefined);
      const created = this.createRelease(fields.tag_name, fields);
      this.end(event, this.storedRelease(created.id));
      return this.json(response, 201, created);
    }
    if ((match = /^\/releases\/(\d+)$/.exec(route)) && method === 'PATCH') {
      const release = this.storedRelease(Number(match[1]));
      if (!release) return this.json(response, 404, { message: 'Not Found' });
      const event = this.begin('update-release', release.api.tag_name, release);
      const fields = body as { body?: string; name?: string };
      if (fields.body !== undefined) release.api.body = fields.body;
      if (fields.name !== undefined) release.api.name = fields.name;
      this.end(event, release);
      return this.json(response, 200, this.releaseJson(release));
    }
    if ((match = /^\/releases\/(\d+)\/assets$/.exec(route)) && method === 'GET') {
      const release = this.storedRelease(Number(match[1]));
      if (!release) return this.json(response, 404, { message: 'Not Found' });
      return this.page(
        response,
        url,
        release.assets.map((asset) => asset.api),
      );
    }
    if ((match = /^\/releases\/assets\/(\d+)$/.exec(route))) {
      const found = this.findAsset(Number(match[1]));
      if (!found) return this.json(response, 404, { message: 'Not Found' });
      const [release, asset] = found;
      if (method === 'GET') {
        if (!String(request.headers.accept).includes('application/octet-stream')) return this.json(response, 200, asset.api);
        if (this.options.redirectDownloads === false) return this.serveBytes(request, response, asset.api.id, fault);
        response.writeHead(302, { location: `${this.url}/storage/${asset.api.id}/${encodeURIComponent(asset.api.name)}` });
        return void response.end();
      }
      if (method === 'DELETE') {
        const event = this.begin('delete', asset.api.name, release);
        release.assets = release.assets.filter((candidate) => candidate !== asset);
        this.forgetFile(asset.file);
        await rm(asset.file, { force: true });
        this.end(event, release);
        response.writeHead(204);
        return void response.end();
      }
      if (method === 'PATCH') {
        const name = (body as { name?: string }).name;
        if (name && release.assets.some((candidate) => candidate !== asset && candidate.api.name === name)) {
          return this.json(response, 422, { message: 'Validation Failed', errors: [{ resource: 'ReleaseAsset', code: 'already_exists', field: 'name' }] });
        }
        const event = this.begin('rename', `${asset.api.name} -> ${name}`, release);
        if (name) {
          asset.api.name = name;
          asset.api.browser_download_url = `${this.url}/${this.owner}/${this.repo}/releases/download/${release.api.tag_name}/${encodeURIComponent(name)}`;
        }
        asset.api.updated_at = new Date().toISOString();
        this.end(event, release);
        return this.json(response, 200, asset.api);
      }
    }
    if ((match = /^\/git\/refs?\/heads\/(.+)$/.exec(route)) && method === 'GET') {
      const sha = this.branches.get(match[1]!);
      if (!sha) return this.json(response, 404, { message: 'Not Found' });
      const ref = `refs/heads/${match[1]!}`;
      return this.json(response, 200, {
        ref,
        node_id: `REF_${ref}`,
        url: `${this.url}/repos/${this.owner}/${this.repo}/git/${ref}`,
        object: { type: 'commit', sha, url: '' },
      });
    }
    if ((match = /^\/git\/refs?\/tags\/(.+)$/.exec(route))) {
      const tag = match[1]!;
      if (method === 'GET') {
        const ref = this.refs.get(tag);
        return ref ? this.json(response, 200, this.refJson(tag, ref)) : this.json(response, 404, { message: 'Not Found' });
      }
      if (method === 'PATCH') {
        if (!this.refs.has(tag)) return this.json(response, 422, { message: 'Reference does not exist' });
        const event = this.begin('update-ref', tag, undefined);
        this.refs.set(tag, { type: 'commit', sha: (body as { sha: string }).sha });
        this.end(event, undefined);
        return this.json(response, 200, this.refJson(tag, this.refs.get(tag)!));
      }
    }
    if (route === '/git/refs' && method === 'POST') {
      const fields = body as { ref: string; sha: string };
      const tag = fields.ref.replace(/^refs\/tags\//, '');
      if (this.refs.has(tag)) return this.json(response, 422, { message: 'Reference already exists' });
      const event = this.begin('create-ref', tag, undefined);
      this.refs.set(tag, { type: 'commit', sha: fields.sha });
      this.end(event, undefined);
      return this.json(response, 201, this.refJson(tag, this.refs.get(tag)!));
    }
    if ((match = /^\/git\/tags\/([0-9a-f]+)$/.exec(route)) && method === 'GET') {
      const commit = this.annotatedTags.get(match[1]!);
      if (!commit) return this.json(response, 404, { message: 'Not Found' });
      return this.json(response, 200, { sha: match[1], tag: 'annotated', message: '', object: { type: 'commit', sha: commit, url: '' } });
    }
    return this.json(response, 404, { message: `Not Found: ${method} ${route}` });
  }

  private authorized(header: string | undefined): boolean {
    return header === `token ${this.token}` || header === `Bearer ${this.token}`;
  }

  private takeFault(method: string, path: string): Fault | undefined {
    const index = this.faults.findIndex((fault) => (!fault.method || fault.method === method) && (!fault.path || path.includes(fault.path)));
    if (index < 0) return undefined;
    return this.faults.splice(index, 1)[0];
  }

  private async upload(request: IncomingMessage, response: ServerResponse, releaseId: number, name: string, fault: Fault | undefined): Promise<void> {
    const release = this.storedRelease(releaseId);
    if (!release) {
      request.resume();
      return this.json(response, 404, { message: 'Not Found' });
    }
    if (!name || release.assets.some((asset) => asset.api.name === name)) {
      request.resume();
      return this.json(response, 422, {
        message: 'Validation Failed',
        errors: [{ resource: 'ReleaseAsset', code: 'already_exists', field: 'name' }],
      });
    }
    const declared = Number(request.headers['content-length']);
    if (!Number.isFinite(declared)) {
      request.resume();
      return this.json(response, 411, { message: 'Length Required' });
    }
    const event = this.begin('upload', name, release);
    // Like GitHub, the asset exists (state `new`, holding its name) from the first byte.
    const asset = this.newAsset(release, name, String(request.headers['content-type'] ?? 'application/octet-stream'));
    const out = createWriteStream(asset.file);
    const hash = createHash('sha256');
    let received = 0;
    let dropped = false;
    try {
      for await (const chunk of request as AsyncIterable<Buffer>) {
        received += chunk.length;
        hash.update(chunk);
        if (!out.write(chunk)) await once(out, 'drain');
        if (fault?.kind === 'reset' && received >= fault.afterBytes) {
          dropped = true;
          request.socket.destroy();
          break;
        }
      }
    } catch {
      dropped = true;
    }
    await new Promise<void>((resolve) => out.end(() => resolve()));
    asset.api.size = received;
    if (dropped || received !== declared) {
      this.end(event, release);
      if (!response.destroyed) response.destroy();
      return;
    }
    if (fault?.kind === 'status' && fault.leaveHalfMade) {
      this.end(event, release);
      return this.json(response, fault.status, fault.body ?? { message: 'Error uploading asset' });
    }
    asset.api.state = 'uploaded';
    asset.api.digest = `sha256:${hash.digest('hex')}`;
    this.end(event, release);
    return this.json(response, 201, asset.api);
  }

  private async serveBytes(request: IncomingMessage, response: ServerResponse, id: number, fault: Fault | undefined): Promise<void> {
    const found = this.findAsset(id);
    if (!found) return this.json(response, 404, { message: 'Not Found' });
    const asset = found[1];
    if (fault?.kind === 'status') {
      for (const [key, value] of Object.entries(fault.headers ?? {})) response.setHeader(key, value);
      return this.json(response, fault.status, fault.body ?? { message: `injected ${fault.status}` });
    }
    const fd = this.openFile(asset.file);
    const { size } = fstatSync(fd);
    let start = 0;
    let end = size; // exclusive
    const header = String(request.headers.range ?? '');
    // Several ranges in one request (zsync asks so): a multipart/byteranges answer, as nginx gives.
    const ranges = /^bytes=\d+-\d+(,\s*\d+-\d+)+$/.test(header)
      ? header
          .slice('bytes='.length)
          .split(',')
          .map((part) => part.trim().split('-').map(Number) as [number, number])
      : undefined;
    if (ranges) return this.serveRanges(response, asset.file, size, ranges);
    const range = /^bytes=(\d+)-(\d*)$/.exec(header);
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(size, Number(range[2]) + 1) : size;
      if (start >= size || start >= end) {
        response.writeHead(416, { 'content-range': `bytes */${size}` });
        return void response.end();
      }
      response.writeHead(206, {
        'content-type': 'application/octet-stream',
        'content-length': String(end - start),
        'content-range': `bytes ${start}-${end - 1}/${size}`,
      });
    } else {
      response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size), 'accept-ranges': 'bytes' });
    }
    let sent = 0;
    const limit = fault?.kind === 'reset' || fault?.kind === 'truncate' ? fault.afterBytes : Infinity;
    const chunkBytes = fault?.kind === 'slow' ? (fault.chunkBytes ?? 1024) : 64 * 1024;
    for (let at = start; at < end; ) {
      const chunk = Buffer.allocUnsafe(Math.min(chunkBytes, end - at));
      const read = readSync(fd, chunk, 0, chunk.length, at);
      if (read === 0) break;
      at += read;
      let piece = chunk.subarray(0, Math.max(0, Math.min(read, limit - sent)));
      if (fault?.kind === 'corrupt' && sent === 0 && piece.length > 0) {
        piece = Buffer.from(piece);
        piece[0] = piece[0]! ^ 0xff;
      }
      sent += piece.length;
      this.bytesServed += piece.length;
      this.bytesServedOf.set(asset.api.name, (this.bytesServedOf.get(asset.api.name) ?? 0) + piece.length);
      await this.pacer?.take(piece.length);
      if (piece.length && !response.write(piece)) await once(response, 'drain');
      if (sent >= limit) break;
      if (fault?.kind === 'slow') await sleep(fault.delayMs);
      if (this.options.bytesPerSecond) await sleep((piece.length / this.options.bytesPerSecond) * 1000);
    }
    if (fault?.kind === 'reset') {
      response.socket?.resetAndDestroy();
      return;
    }
    if (fault?.kind === 'truncate') {
      // Ends the connection cleanly but short of the declared length.
      response.socket?.end();
      return;
    }
    response.end();
  }

  private async serveRanges(response: ServerResponse, file: string, size: number, ranges: ReadonlyArray<readonly [number, number]>): Promise<void> {
    const boundary = 'pipeline-byteranges';
    const parts: Buffer[] = [];
    const handle = await open(file, 'r');
    try {
      for (const [first, last] of ranges) {
        const end = Math.min(size - 1, last);
        if (first > end) continue;
        const bytes = Buffer.alloc(end - first + 1);
        await handle.read(bytes, 0, bytes.length, first);
        parts.push(Buffer.from(`\r\n--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes ${first}-${end}/${size}\r\n\r\n`), bytes);
      }
    } finally {
      await handle.close();
    }
    parts.push(Buffer.from(`\r\n--${boundary}--\r\n`));
    const body = Buffer.concat(parts);
    response.writeHead(206, { 'content-type': `multipart/byteranges; boundary=${boundary}`, 'content-length': String(body.length) });
    for (let at = 0; at < body.length; at += 64 * 1024) {
      const piece = body.subarray(at, at + 64 * 1024);
      this.bytesServed += piece.length;
      await this.pacer?.take(piece.length);
      if (!response.write(piece)) await once(response, 'drain');
    }
    response.end();
  }

  private page(response: ServerResponse, url: URL, items: ApiAsset[]): void {
    const perPage = Math.min(this.options.maxPerPage ?? 100, Number(url.searchParams.get('per_page')) || this.options.defaultPerPage || 30);
    const page = Math.max(1, Number(url.searchParams.get('page')) || 1);
    const last = Math.max(1, Math.ceil(items.length / perPage));
    const link = (n: number, rel: string): string => {
      const next = new URL(url.href);
      next.searchParams.set('page', String(n));
      next.searchParams.set('per_page', String(perPage));
      return `<${next.href}>; rel="${rel}"`;
    };
    const links: string[] = [];
    if (page < last) links.push(link(page + 1, 'next'), link(last, 'last'));
    if (page > 1) links.push(link(1, 'first'), link(page - 1, 'prev'));
    if (links.length) response.setHeader('link', links.join(', '));
    this.json(response, 200, items.slice((page - 1) * perPage, page * perPage));
  }

  private newAsset(release: StoredRelease, name: string, contentType: string): StoredAsset {
    const id = this.nextId++;
    const now = new Date().toISOString();
    const asset: StoredAsset = {
      file: join(this.dir, String(id)),
      api: {
        url: `${this.url}/repos/${this.owner}/${this.repo}/releases/assets/${id}`,
        browser_download_url: `${this.url}/${this.owner}/${this.repo}/releases/download/${release.api.tag_name}/${encodeURIComponent(name)}`,
        id,
        node_id: `RA_${id}`,
        name,
        label: null,
        state: 'new',
        content_type: contentType,
        size: 0,
        digest: null,
        download_count: 0,
        created_at: now,
        updated_at: now,
        uploader: user,
      },
    };
    release.assets.push(asset);
    return asset;
  }

  private storedRelease(id: number): StoredRelease | undefined {
    return this.releases.find((release) => release.api.id === id);
  }

  private findAsset(id: number): [StoredRelease, StoredAsset] | undefined {
    for (const release of this.releases) {
      const asset = release.assets.find((candidate) => candidate.api.id === id);
      if (asset) return [release, asset];
    }
    return undefined;
  }

  private releaseJson(release: StoredRelease): ApiRelease {
    return { ...release.api, assets: release.assets.map((asset) => asset.api as components['schemas']['release-asset']) };
  }

  private refJson(tag: string, ref: { type: string; sha: string }): ApiRef {
    return {
      ref: `refs/tags/${tag}`,
      node_id: `REF_${tag}`,
      url: `${this.url}/repos/${this.owner}/${this.repo}/git/refs/tags/${tag}`,
      object: { type: ref.type, sha: ref.sha, url: '' },
    };
  }

  private snapshot(release: StoredRelease | undefined): AssetRecord[] {
    return (release?.assets ?? []).map((asset) => ({
      id: asset.api.id,
      name: asset.api.name,
      size: asset.api.size,
      state: asset.api.state,
      digest: asset.api.digest ?? null,
    }));
  }

  private begin(kind: MutationEvent['kind'], target: string, release: StoredRelease | undefined): MutationEvent {
    const snapshot = this.snapshot(release);
    const at = performance.now();
    const event: MutationEvent = { seq: this.seq++, kind, target, releaseTag: release?.api.tag_name, before: snapshot, after: snapshot, at, endAt: at };
    this.events.push(event);
    return event;
  }

  private end(event: MutationEvent, release: StoredRelease | undefined): void {
    event.after = this.snapshot(release);
    event.endAt = performance.now();
  }

  private json(response: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
    response.end(text);
  }
}

async function readJson(request: IncomingMessage): Promise<unknown> {
  let text = '';
  for await (const chunk of request) text += String(chunk);
  if (!text) return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return {};
  }
}

// Image fixtures for the release tests: a temp project root with images/{name}/ files and
// an ImageCatalog over it whose cache-key inputs a test can change.

export interface FixtureImage {
  readonly name: string;
  readonly size: number;
}

export interface ImageFixture {
  readonly root: string;
  /** The `release:` settings it was made with, as a config declares them. */
  readonly decl: ReleaseDecl;
  readonly catalog: import('../../tasks/store/catalog.ts').ImageCatalog;
  /** Inputs behind each image's current key; mutate to simulate a template or base change. */
  readonly sources: Map<string, { base: { path: string; sha256: string }; files: Record<string, string> }>;
  /** Rewrites an image with fresh random bytes of `size`, its .sha256 and .cache-key. */
  writeImage(name: string, size: number): Promise<string>;
  cleanup(): Promise<void>;
}

/**
 * `size` bytes that upload and download like an image: a self-contained qcow2 (512-byte
 * clusters, made by qemu-img) followed by random bytes, which QEMU ignores. Below the
 * smallest such qcow2, plain random bytes.
 */
function qcow2OfSize(size: number): Buffer {
  const header = smallQcow2();
  if (size < header.length) return randomBytes(size);
  return Buffer.concat([header, randomBytes(size - header.length)]);
}

let smallQcow2Bytes: Buffer | undefined;
function smallQcow2(): Buffer {
  if (!smallQcow2Bytes) {
    const dir = mkdtempSync(join(tmpdir(), 'pipeline-qcow2-'));
    try {
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', join(dir, 'small.qcow2'), '1M']);
      smallQcow2Bytes = readFileSync(join(dir, 'small.qcow2'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return smallQcow2Bytes;
}

export async function createImageFixture(images: readonly FixtureImage[], release: ReleaseDecl & { readonly tag: string }): Promise<ImageFixture> {
  const { mkdir, writeFile } = await import('node:fs/promises');
  const root = await mkdtemp(join(tmpdir(), 'pipeline-images-'));
  const sources = new Map<string, { base: { path: string; sha256: string }; files: Record<string, string> }>();
  const sha = (text: string): string => createHash('sha256').update(text).digest('hex');
  const keyOf = (name: string): string => sha(JSON.stringify(sources.get(name)));
  const imagePath = (name: string): string => join(root, 'images', name, `${name}.qcow2`);
  const writeImage = async (name: string, size: number): Promise<string> => {
    await mkdir(join(root, 'images', name), { recursive: true });
    const bytes = qcow2OfSize(size);
    await writeFile(imagePath(name), bytes);
    const digest = createHash('sha256').update(bytes).digest('hex');
    await writeFile(`${imagePath(name)}.sha256`, `${digest}  ${name}.qcow2\n`);
    await writeFile(
      join(root, 'images', name, 'image-version.txt'),
      name.startsWith('pve') ? 'DEBIAN_VERSION=13.2\nPVE_VERSION=9.1\n' : 'DEBIAN_VERSION=12.13\n',
    );
    await writeFile(join(root, 'images', name, '.cache-key'), `${keyOf(name)}\n`);
    return digest;
  };
  for (const image of images) {
    sources.set(image.name, {
      base: { path: `cache/${image.name}-base.qcow2`, sha256: sha(`base ${image.name}`) },
      files: { [`templates/${image.name}/template.pkr.hcl`]: sha(`template ${image.name}`), 'shared/scripts/cleanup-common.sh': sha('cleanup') },
    });
    await writeImage(image.name, image.size);
  }
  const currentKey = async (name: string) => {
    const current = sources.get(name);
    if (!current) throw new Error(`unknown image ${name}`);
    return { cacheKey: keyOf(name), sources: structuredClone(current) };
  };
  const catalog: import('../../tasks/store/catalog.ts').ImageCatalog = {
    names: images.map((image) => image.name),
    root,
    imagePath,
    checksumPath: (name) => `${imagePath(name)}.sha256`,
    versionsPath: (name) => join(root, 'images', name, 'image-version.txt'),
    cacheKeyPath: (name) => join(root, 'images', name, '.cache-key'),
    sourcesPath: (name) => join(root, 'images', name, '.sources.json'),
    currentKey,
    // No upstream here: the bases are what `sources` says.
    inputsToBuild: currentKey,
    buildSettings: (name) => ({ baseUrl: `https://images.example/${name}-base.qcow2`, template: `templates/${name}/template.pkr.hcl`, accelerator: 'kvm' }),
    publishDir: join(root, 'publish'),
    release: storeSettings(release, release.tag),
  };
  return { root, decl: release, catalog, sources, writeImage, cleanup: () => rm(root, { recursive: true, force: true }) };
}
