// Release and asset operations on one repository: metadata through octokit, bodies through
// http-transfer with retries that re-open the byte range and clear half-made assets first.
// Answers that another writer can cause (the release created meanwhile, a name taken, an
// asset already deleted) are results, not errors: the callers converge on them.
import { setTimeout as sleep } from 'node:timers/promises';
import type { components } from '@octokit/openapi-types';
import { Failure } from '../../../src/index.ts';
import { assertSafeFileName } from '../names.ts';
import { describeFailure, GitHubFailure, toGitHubFailure, type GitHubClient } from './client.ts';
import { downloadRange, TransferError, uploadRange } from '../http/http-transfer.ts';

export type Release = components['schemas']['release'];
/** GitHub also reports `new` for an asset whose upload never finished. */
export type ReleaseAsset = Omit<components['schemas']['release-asset'], 'state'> & { state: string };
/** What a download needs of an asset: its id (with a token) or its public URL (without one). */
export type DownloadableAsset = Pick<ReleaseAsset, 'id' | 'name' | 'size'> & { readonly browser_download_url?: string };

export const LATEST_RELEASE_TITLE = 'Latest Images';

/**
 * How long the storage URL an asset's download redirected to is read again directly: one
 * round trip a ranged read instead of two, and no API request (GitHub's are pre-signed for
 * a few minutes; one that has expired is dropped and the asset's URL asked again).
 */
const STORAGE_URL_MS = 60_000;
/** What a storage URL that expired (or whose object went away) answers. */
const EXPIRED_STATUSES = new Set([401, 403, 404, 410]);

export class ReleaseApi {
  /** Per asset id, the storage URL its last download was redirected to, and when. */
  private readonly storageUrls = new Map<number, { readonly url: string; readonly at: number }>();

  constructor(readonly client: GitHubClient) {}

  private get where() {
    return { owner: this.client.owner, repo: this.client.repo };
  }

  private async call<T>(what: string, action: () => Promise<T>): Promise<T> {
    try {
      return await action();
    } catch (error) {
      throw toGitHubFailure(error, what, this.client);
    }
  }

  /** The release with this tag (never GitHub's "latest release"), or undefined when there is none. */
  async findRelease(tag: string): Promise<Release | undefined> {
    try {
      const { data } = await this.client.octokit.request('GET /repos/{owner}/{repo}/releases/tags/{tag}', { ...this.where, tag });
      return data;
    } catch (error) {
      const failure = toGitHubFailure(error, `read release ${tag}`, this.client);
      if (!(failure instanceof GitHubFailure) || failure.status !== 404) throw failure;
    }
    // Tell a missing release from a repository that does not exist (or the token cannot see).
    try {
      await this.client.octokit.request('GET /repos/{owner}/{repo}', this.where);
    } catch (error) {
      const failure = toGitHubFailure(error, `find repository ${this.client.owner}/${this.client.repo}`, this.client);
      if (failure instanceof GitHubFailure && failure.status === 404) {
        const repo = `${this.client.owner}/${this.client.repo}`;
        throw new Failure(
          'setup',
          this.client.anonymous
            ? `GitHub repository ${repo} not found, or it is private: check GITHUB_REPOSITORY (or release.repo); a private repository needs a token (GITHUB_TOKEN, GH_TOKEN or \`gh auth login\`)`
            : `GitHub repository ${repo} not found, or the token cannot see it: check GITHUB_REPOSITORY (or release.repo) and the token's access`,
          { code: 404 },
        );
      }
      throw failure;
    }
    return undefined;
  }

  async requireRelease(tag: string): Promise<Release> {
    const release = await this.findRelease(tag);
    if (!release) throw new GitHubFailure(`release ${tag} not found in ${this.client.owner}/${this.client.repo}`, 404);
    return release;
  }

  /**
   * Finds the release, creating it as a prerelease titled "Latest Images" when missing. When
   * another writer creates it first GitHub answers 422 already_exists: read it again.
   */
  async ensureRelease(tag: string): Promise<Release> {
    for (let attempt = 1; ; attempt++) {
      const existing = await this.findRelease(tag);
      if (existing) return existing;
      this.client.requireToken(`create release ${tag}`);
      try {
        const { data } = await this.client.octokit.request('POST /repos/{owner}/{repo}/releases', {
          ...this.where,
          tag_name: tag,
          name: LATEST_RELEASE_TITLE,
          prerelease: true,
          body: 'Images built by pipeline.',
        });
        return data;
      } catch (error) {
        const failure = toGitHubFailure(error, `create release ${tag}`, this.client);
        if (!(failure instanceof GitHubFailure) || failure.status !== 422 || attempt >= 5) throw failure;
        // Created by another writer a moment ago; GitHub may take a moment to serve it by tag.
        await sleep(attempt * 100);
      }
    }
  }

  async listAssets(releaseId: number): Promise<ReleaseAsset[]> {
    return this.call('list release assets', () =>
      this.client.octokit.paginate('GET /repos/{owner}/{repo}/releases/{release_id}/assets', {
        ...this.where,
        release_id: releaseId,
        per_page: 100,
      }),
    );
  }

  /** One asset by id, or undefined when it no longer exists (a listing can miss changes made while it paged). */
  async getAsset(id: number): Promise<ReleaseAsset | undefined> {
    try {
      const { data } = await this.client.octokit.request('GET /repos/{owner}/{repo}/releases/assets/{asset_id}', { ...this.where, asset_id: id });
      return data;
    } catch (error) {
      const failure = toGitHubFailure(error, `read asset ${id}`, this.client);
      if (failure instanceof GitHubFailure && failure.status === 404) return undefined;
      throw failure;
    }
  }

  /** Deletes an asset; `gone` when another writer deleted it first (which is what we wanted). */
  async deleteAsset(asset: Pick<ReleaseAsset, 'id' | 'name'>): Promise<'deleted' | 'gone'> {
    this.client.requireToken(`delete asset ${asset.name}`);
    try {
      await this.client.octokit.request('DELETE /repos/{owner}/{repo}/releases/assets/{asset_id}', { ...this.where, asset_id: asset.id });
      return 'deleted';
    } catch (error) {
      const failure = toGitHubFailure(error, `delete asset ${asset.name}`, this.client);
      if (failure instanceof GitHubFailure && failure.status === 404) return 'gone';
      throw failure;
    }
  }

  /**
   * Renames an asset. GitHub cannot rename onto a name another asset holds (422
   * already_exists: `taken`); `gone` when the asset itself was deleted meanwhile.
   */
  async renameAsset(asset: Pick<ReleaseAsset, 'id' | 'name'>, name: string): Promise<'renamed' | 'taken' | 'gone'> {
    this.client.requireToken(`rename asset ${asset.name}`);
    try {
      await this.client.octokit.request('PATCH /repos/{owner}/{repo}/releases/assets/{asset_id}', { ...this.where, asset_id: asset.id, name });
      return 'renamed';
    } catch (error) {
      const failure = toGitHubFailure(error, `rename asset ${asset.name} to ${name}`, this.client);
      if (failure instanceof GitHubFailure && failure.status === 422) return 'taken';
      if (failure instanceof GitHubFailure && failure.status === 404) return 'gone';
      throw failure;
    }
  }

  async updateReleaseBody(release: Pick<Release, 'id' | 'tag_name'>, body: string): Promise<void> {
    this.client.requireToken(`update release ${release.tag_name}`);
    await this.call(`update release ${release.tag_name}`, () =>
      this.client.octokit.request('PATCH /repos/{owner}/{repo}/releases/{release_id}', { ...this.where, release_id: release.id, body }),
    );
  }

  /**
   * Uploads bytes [start, start+length) of a file as asset `name`. Every attempt first
   * deletes an asset already holding the name (a half-made `new` one from a failed
   * attempt, which would otherwise make GitHub answer 422 already_exists) and re-opens
   * the byte range, so a retry never resends a consumed stream.
   */
  async uploadAsset(options: {
    release: Pick<Release, 'id' | 'upload_url'>;
    name: string;
    path: string;
    start: number;
    length: number;
    contentType?: string;
    signal: AbortSignal;
    onProgress?: (sent: number) => void;
  }): Promise<ReleaseAsset> {
    assertSafeFileName(options.name);
    this.client.requireToken(`upload ${options.name}`);
    const url = new URL(options.release.upload_url.replace(/\{[^}]*\}$/, ''));
    url.searchParams.set('name', options.name);
    let lastError: Error | undefined;
    for (let attempt = 1; attempt <= this.client.transferAttempts; attempt++) {
      options.signal.throwIfAborted();
      // A failed attempt can leave a half-made asset holding the name (state `new`).
      if (attempt > 1) await this.deleteByName(options.release.id, options.name);
      try {
        const asset = (await uploadRange({
          url: url.href,
          authorization: this.client.authorization()!,
          path: options.path,
          start: options.start,
          length: options.length,
          signal: options.signal,
          ...(options.contentType ? { contentType: options.contentType } : {}),
          ...(options.onProgress ? { onProgress: options.onProgress } : {}),
        })) as ReleaseAsset;
        if (typeof asset?.id !== 'number' || asset.name !== options.name) {
          throw new GitHubFailure(`upload of ${options.name} returned an unexpected answer`);
        }
        return asset;
      } catch (error) {
        lastError = this.transferFailure(error, `upload ${options.name}`);
        if (!(error instanceof TransferError && error.retryable) || attempt === this.client.transferAttempts) {
          // Giving up: a half-made asset of ours would hold the name until someone cleans it.
          await this.deleteByName(options.release.id, options.name).catch(() => {});
          throw lastError;
        }
        options.onProgress?.(0);
        await sleep(attempt * attempt * this.client.retryBaseMs, undefined, { signal: options.signal });
      }
    }
    throw lastError ?? new GitHubFailure(`upload of ${options.name} failed`);
  }

  private async deleteByName(releaseId: number, name: string): Promise<void> {
    for (const stale of (await this.listAssets(releaseId)).filter((asset) => asset.name === name)) await this.deleteAsset(stale);
  }

  /**
   * Where a read of `asset` goes: the storage URL its last download was redirected to while
   * that is fresh (pre-signed, so no token goes with it), else the asset's own URL, noting
   * where it redirects.
   */
  private readSource(asset: DownloadableAsset): { url: string; authorization?: string; onRedirected?: (to: URL) => void } {
    const stored = this.storageUrls.get(asset.id);
    if (stored !== undefined && Date.now() - stored.at < STORAGE_URL_MS) return { url: stored.url };
    return {
      url: this.downloadUrl(asset),
      ...(this.client.anonymous ? {} : { authorization: this.client.authorization()! }),
      onRedirected: (to: URL) => this.storageUrls.set(asset.id, { url: to.href, at: Date.now() }),
    };
  }

  /**
   * Streams an asset's bytes [from, to) into `sink` (to: the asset's end by default),
   * resuming with a Range request after a reset or a short body. When the server cannot
   * resume, a read to the end calls `onRestart` (the caller discards what it wrote and the
   * stream starts over from byte 0); a bounded read fails.
   */
  async downloadAsset(options: {
    asset: DownloadableAsset;
    from?: number;
    to?: number;
    signal: AbortSignal;
    sink: (chunk: Buffer, offset: number) => Promise<void> | void;
    onRestart?: () => void;
  }): Promise<void> {
    const end = options.to ?? options.asset.size;
    if (end > options.asset.size || (options.from ?? 0) > end) {
      throw new GitHubFailure(`bytes ${options.from ?? 0}-${end} asked of ${options.asset.name}, which is ${options.asset.size} bytes`);
    }
    let offset = options.from ?? 0;
    let lastError: Error | undefined;
    for (let attempt = 1; attempt <= this.client.transferAttempts; attempt++) {
      if (offset >= end && (end > 0 || options.to !== undefined)) return;
      options.signal.throwIfAborted();
      const source = this.readSource(options.asset);
      try {
        await downloadRange({
          ...source,
          from: offset,
          ...(options.to !== undefined ? { to: end } : {}),
          expected: end - offset,
          signal: options.signal,
          sink: (chunk) => {
            const at = offset;
            offset += chunk.length;
            if (offset > end) throw new GitHubFailure(`${options.asset.name} sent more than bytes ${options.from ?? 0}-${end}`);
            return options.sink(chunk, at);
          },
        });
        if (offset !== end) {
          throw new GitHubFailure(`download of ${options.asset.name} gave ${offset} bytes, the release lists ${options.asset.size}`);
        }
        return;
      } catch (error) {
        // Not the transfer's: the sink's (a full disk, …) or a cancellation.
        if (!(error instanceof TransferError)) throw error;
        if (source.onRedirected === undefined && EXPIRED_STATUSES.has(error.status)) {
          // The storage URL expired or went away: the asset's own URL again, without counting an attempt.
          this.storageUrls.delete(options.asset.id);
          attempt--;
          continue;
        }
        lastError = this.transferFailure(error, `download ${options.asset.name}`);
        if (!error.retryable && error.status !== 416) throw lastError;
        if (attempt === this.client.transferAttempts) throw lastError;
        if (error.status === 416) {
          // A bounded read cannot start over from byte 0: it says so and the caller fetches otherwise.
          if (options.to !== undefined) throw lastError;
          offset = 0;
          options.onRestart?.();
        }
        await sleep(attempt * attempt * this.client.retryBaseMs, undefined, { signal: options.signal });
      }
    }
    throw lastError ?? new GitHubFailure(`download of ${options.asset.name} failed`);
  }

  /**
   * With a token, the API's asset URL (by id, so a rename mid-read changes nothing); without
   * one, the release's public download URL, which GitHub serves to anyone and does not count
   * against the 60 API requests an hour it allows an anonymous client.
   */
  private downloadUrl(asset: DownloadableAsset): string {
    if (!this.client.anonymous) return `${this.client.apiUrl}/repos/${this.client.owner}/${this.client.repo}/releases/assets/${asset.id}`;
    if (!asset.browser_download_url) throw new GitHubFailure(`asset ${asset.name} has no public download URL; reading it needs a token`);
    return asset.browser_download_url;
  }

  /** A small asset (checksum, manifest, attachment), whole, into memory. */
  async downloadBytes(asset: DownloadableAsset, signal: AbortSignal, limit = 16 * 1024 * 1024): Promise<Buffer> {
    if (asset.size > limit) throw new GitHubFailure(`asset ${asset.name} is ${asset.size} bytes, too large to be what it claims`);
    const buffer = Buffer.alloc(asset.size);
    await this.downloadAsset({
      asset,
      signal,
      sink: async (chunk, offset) => {
        if (offset + chunk.length > buffer.length) throw new GitHubFailure(`asset ${asset.name} is longer than the release lists`);
        chunk.copy(buffer, offset);
      },
    });
    return buffer;
  }

  /** A small asset (checksum, manifest) as text. */
  async downloadText(asset: DownloadableAsset, signal: AbortSignal, limit = 16 * 1024 * 1024): Promise<string> {
    return (await this.downloadBytes(asset, signal, limit)).toString('utf8');
  }

  /** A small body (text, or an attachment's bytes) as asset `name`. */
  async uploadText(options: {
    release: Pick<Release, 'id' | 'upload_url'>;
    name: string;
    text: string | Uint8Array;
    contentType?: string;
    signal: AbortSignal;
  }): Promise<ReleaseAsset> {
    // Small bodies go through a temp file so every upload shares the one streamed path.
    const { mkdtemp, writeFile, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = await mkdtemp(join(tmpdir(), 'pipeline-asset-'));
    const path = join(dir, 'body');
    try {
      const bytes = typeof options.text === 'string' ? Buffer.from(options.text, 'utf8') : options.text;
      await writeFile(path, bytes);
      return await this.uploadAsset({ ...options, path, start: 0, length: bytes.length });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  private transferFailure(error: unknown, what: string): Error {
    if (error instanceof TransferError && error.status > 0) {
      return describeFailure({ status: error.status, headers: error.headers, detail: this.client.redact(error.message) }, what, this.client);
    }
    if (error instanceof TransferError) return new GitHubFailure(this.client.redact(`${what}: ${error.message}`), 0);
    return toGitHubFailure(error, what, this.client);
  }

  // Git refs, for `release retag`.

  /** The commit a tag points at (peeling an annotated tag). */
  async tagCommit(tag: string): Promise<string> {
    const { data: ref } = await this.call(`find tag ${tag}`, () =>
      this.client.octokit.request('GET /repos/{owner}/{repo}/git/ref/{ref}', { ...this.where, ref: `tags/${tag}` }),
    );
    if (ref.object.type === 'commit') return ref.object.sha;
    const { data: annotated } = await this.call(`read annotated tag ${tag}`, () =>
      this.client.octokit.request('GET /repos/{owner}/{repo}/git/tags/{tag_sha}', { ...this.where, tag_sha: ref.object.sha }),
    );
    return annotated.object.sha;
  }

  /** Moves (or creates) `tags/{tag}` to point at `sha`. */
  async moveTag(tag: string, sha: string): Promise<void> {
    this.client.requireToken(`move tag ${tag}`);
    try {
      await this.client.octokit.request('PATCH /repos/{owner}/{repo}/git/refs/{ref}', { ...this.where, ref: `tags/${tag}`, sha, force: true });
    } catch (error) {
      const failure = toGitHubFailure(error, `move tag ${tag}`, this.client);
      if (!(failure instanceof GitHubFailure) || (failure.status !== 404 && failure.status !== 422)) throw failure;
      await this.call(`create tag ${tag}`, () =>
        this.client.octokit.request('POST /repos/{owner}/{repo}/git/refs', { ...this.where, ref: `refs/tags/${tag}`, sha }),
      );
    }
  }
}
