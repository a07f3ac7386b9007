// The base-image download: fetch a Debian cloud image into cache/ with a byte progress
// bar, resume a partial file with HTTP Range (the transfer: resumable-transfer.ts), verify
// it against the upstream SHA512SUMS and only then rename it into place. A probe reads the
// (small) checksum list on every run so the engine re-downloads exactly when upstream
// moved on.
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Failure, isFailure, type NodeDef, type NodeId, type NodeRecord, type ProbeContext, type ProbeResult, type TaskContext } from '../src/index.ts';
import { readInOrder } from './store/file-reads.ts';
import { getFollowingRedirects } from './store/http/http-get.ts';
import { errorText, Interrupted, isAbortOf, REQUEST_HEADERS, statusLine, transfer, type TransferOutcome } from './resumable-transfer.ts';

export interface DownloadSpec {
  /** Node id, e.g. `trixie:download`. */
  readonly id: NodeId;
  /** The image: http(s) or file: URL. */
  readonly url: string;
  /** The upstream SHA512SUMS list that names the image. */
  readonly checksumsUrl: string;
  /** Destination relative to the root, e.g. `cache/debian-13-generic-amd64.qcow2`. */
  readonly file: string;
  readonly deps?: readonly NodeId[];
  /** Transfer attempts per run; each retry resumes the partial file (default 4). */
  readonly attempts?: number;
  /** First retry delay, doubled per attempt (default 1000 ms). */
  readonly retryDelayMs?: number;
  /** How long the probe waits for the checksum list before calling upstream unreachable. */
  readonly probeTimeoutMs?: number;
}

export const NOTE_UNREACHABLE = 'upstream unreachable; using cached file';
export const NOTE_OFFLINE = 'offline: upstream not checked; using cached file';
/**
 * The probe value when upstream could not be asked and no run recorded its SHA-512: the
 * cached file is used unverified, and the first run that reaches upstream checks it.
 */
export const UNVERIFIED = 'unverified';

const DEFAULT_ATTEMPTS = 4;
const DEFAULT_RETRY_DELAY_MS = 1_000;
const DEFAULT_PROBE_TIMEOUT_MS = 20_000;
/** A checksum list is a few KiB; anything far bigger is not one. */
const MAX_CHECKSUM_LIST_BYTES = 4 * 1024 * 1024;
/** Marks a probe value recorded by a `--refresh-base` run (see `probe`). */
const REFRESH_MARK = ' refresh@';

/**
 * Upstream's SHA-512 that a download node's last run verified its file against, from what
 * it recorded; undefined when it used the file unverified (offline, upstream unreachable).
 */
export function verifiedSha512(record: NodeRecord | undefined): string | undefined {
  const sha512 = record?.probe?.split(REFRESH_MARK)[0];
  return sha512 !== undefined && /^[0-9a-f]{128}$/.test(sha512) ? sha512 : undefined;
}

export function downloadNode(spec: DownloadSpec): NodeDef {
  return {
    id: spec.id,
    kind: 'download',
    description: `download ${spec.url}`,
    deps: spec.deps ?? [],
    params: { url: spec.url, checksumsUrl: spec.checksumsUrl, file: spec.file },
    outputs: [spec.file],
    // The build's cache key is the SHA-256 of this file: computed in the same read as the output hash.
    sha256Outputs: [spec.file],
    pool: 'network',
    // --force rebuilds images, it does not re-fetch an unchanged upstream image (--refresh-base does).
    honorsForce: false,
    probe: (context) => probeUpstream(spec, context),
    // A cached file with no stamp (another tool filled cache/, or .pipeline/ was lost)
    // is taken as the download when it is upstream's image: one local read, no transfer.
    async adopt({ root, flags, probe, signal }) {
      if (probe === undefined) return undefined; // its upstream is made by a dependency still to run
      if (flags.refreshBase === true) return { adopt: false, reason: 're-download requested (--refresh-base)' };
      if (probe.value === UNVERIFIED) {
        return {
          adopt: true,
          reason: `${spec.file} as cached, not verified against upstream (${flags.offline === true ? 'offline' : 'upstream unreachable'})`,
        };
      }
      const actual = await sha512File(resolve(root, spec.file), signal);
      if (actual === probe.value) return { adopt: true, reason: `${spec.file} matches upstream's SHA-512` };
      return { adopt: false, reason: `${spec.file} differs from upstream's SHA-512` };
    },
    async describeRun() {
      return `would download ${spec.url} -> ${spec.file}`;
    },
    run: (ctx) => runDownload(spec, ctx),
  };
}

/**
 * The probe value is upstream's SHA-512 of the image, so the node is stale exactly when
 * upstream published a new one. Without the network the previous value stands (or
 * UNVERIFIED when none was recorded), so an offline run is a no-op.
 */
async function probeUpstream(spec: DownloadSpec, context: ProbeContext): Promise<ProbeResult> {
  const cachedPath = resolve(context.root, spec.file);
  const refresh = context.flags.refreshBase === true;
  if (context.flags.offline === true) {
    if (refresh) throw new Failure('task', `--refresh-base needs the network; drop --offline`);
    if (!(await isFile(cachedPath))) {
      throw new Failure('task', `--offline, but ${spec.file} is not cached; run once with network access`);
    }
    return { value: context.previous ?? UNVERIFIED, note: NOTE_OFFLINE };
  }
  let upstream: string;
  try {
    upstream = await fetchUpstreamSha512(spec, withTimeout(context.signal, spec.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS));
  } catch (error) {
    if (!(error instanceof Unreachable) || context.signal.aborted) throw error;
    if (!(await isFile(cachedPath))) {
      throw new Failure('task', `cannot reach ${spec.checksumsUrl} (${error.message}) and ${spec.file} is not cached`);
    }
    return { value: context.previous ?? UNVERIFIED, note: NOTE_UNREACHABLE };
  }
  // --refresh-base must make the node stale although upstream is unchanged: a value no
  // earlier run recorded does that. Later runs keep returning the recorded value while
  // upstream stays put, so the refresh costs no extra work afterwards.
  if (refresh) return { value: `${upstream}${REFRESH_MARK}${Date.now()}`, note: 're-download requested (--refresh-base)' };
  if (context.previous?.startsWith(`${upstream}${REFRESH_MARK}`)) return { value: context.previous };
  if (context.previous === UNVERIFIED) return { value: upstream, note: `${spec.file} was used unverified; checking it against upstream` };
  return { value: upstream };
}

async function runDownload(spec: DownloadSpec, ctx: TaskContext): Promise<void> {
  const dest = resolve(ctx.root, spec.file);
  const cached = await isFile(dest);
  if (ctx.flags.offline === true) {
    if (!cached) throw new Failure('task', `--offline, but ${spec.file} is not cached; run once with network access`);
    ctx.log(NOTE_OFFLINE);
    return;
  }
  let expected: string;
  try {
    expected = await fetchUpstreamSha512(spec, ctx.signal);
  } catch (error) {
    if (!(error instanceof Unreachable) || ctx.signal.aborted) throw error;
    if (!cached) throw new Failure('task', `cannot reach ${spec.checksumsUrl} (${error.message}) and ${spec.file} is not cached`);
    ctx.log(NOTE_UNREACHABLE);
    return;
  }
  if (cached && ctx.flags.refreshBase !== true) {
    // Upstream moved on since the last run, or the cached file was used unverified: it
    // may already be upstream's image (copied in by hand), and one local read is cheaper
    // than a download.
    ctx.status('checking cached file against upstream SHA512SUMS');
    const actual = await sha512File(dest, ctx.signal, (done, total) => ctx.progress(done, total));
    if (actual === expected) {
      ctx.log(`${spec.file} matches upstream SHA-512; no download needed`);
      return;
    }
    ctx.log(`${spec.file} differs from upstream; downloading ${spec.url}`);
  }
  await downloadVerified(ctx, spec, dest, expected);
}

/**
 * Re-fetches the upstream checksum list and the image, whatever is cached, and returns
 * the new SHA-512. For the build task when packer reports a checksum mismatch (upstream
 * replaced the image under it).
 */
export async function redownload(ctx: TaskContext, spec: Omit<DownloadSpec, 'id' | 'deps'>): Promise<string> {
  const expected = await fetchUpstreamSha512(spec, ctx.signal).catch((error: unknown) => {
    if (error instanceof Unreachable) throw new Failure('task', `cannot reach ${spec.checksumsUrl}: ${error.message}`);
    throw error;
  });
  // No beginCommit: the context is the build's, whose stamp is not ours to drop.
  await downloadVerified(ctx, spec, resolve(ctx.root, spec.file), expected, { ownsOutput: false });
  return expected;
}

// ---------------------------------------------------------------------------------------
// Upstream checksum list

/** The network (or the mirror) failed, as opposed to the request being wrong. */
class Unreachable extends Error {
  override readonly name = 'Unreachable';
}

/** Upstream's SHA-512 for the image, from its checksum list. */
export async function fetchUpstreamSha512(spec: Pick<DownloadSpec, 'url' | 'checksumsUrl' | 'file'>, signal: AbortSignal): Promise<string> {
  return sha512InList(await fetchChecksumList(spec.checksumsUrl, signal), spec);
}

/** The text of a checksum list (SHA512SUMS), for a caller that asks it of several images. */
export function fetchChecksumList(url: string, signal: AbortSignal): Promise<string> {
  return fetchText(url, signal);
}

/** The base's SHA-512 in `list`, the text of its `checksumsUrl`; a `task` Failure when the list has none. */
export function sha512InList(list: string, spec: Pick<DownloadSpec, 'url' | 'checksumsUrl' | 'file'>): string {
  const names = [...new Set([upstreamName(spec.url), basename(spec.file)])];
  const digest = findSha512(list, names);
  if (!digest) throw new Failure('task', `${spec.checksumsUrl} has no SHA-512 line for ${names.join(' or ')}`);
  return digest;
}

/** Finds the SHA-512 for one of `names` in GNU (`hex  name`) or BSD (`SHA512 (name) = hex`) format. */
export function findSha512(list: string, names: readonly string[]): string | undefined {
  const wanted = new Set(names);
  for (const raw of list.split('\n')) {
    const line = raw.trim();
    const gnu = /^([0-9a-fA-F]{128})\s+\*?(?:\.\/)?(.+)$/.exec(line);
    if (gnu?.[1] && gnu[2] && wanted.has(gnu[2])) return gnu[1].toLowerCase();
    const bsd = /^SHA512 \((?:\.\/)?(.+)\) = ([0-9a-fA-F]{128})$/.exec(line);
    if (bsd?.[1] && bsd[2] && wanted.has(bsd[1])) return bsd[2].toLowerCase();
  }
  return undefined;
}

function upstreamName(url: string): string {
  const path = new URL(url).pathname;
  return decodeURIComponent(path.slice(path.lastIndexOf('/') + 1));
}

/** A connection error is tried once more (a kept-alive socket the server just closed). */
async function fetchText(url: string, signal: AbortSignal): Promise<string> {
  try {
    return await fetchTextOnce(url, signal);
  } catch (error) {
    if (!(error instanceof Unreachable) || signal.aborted) throw error;
    return fetchTextOnce(url, signal);
  }
}

async function fetchTextOnce(url: string, signal: AbortSignal): Promise<string> {
  if (url.startsWith('file:')) {
    try {
      return await readFile(fileURLToPath(url), { encoding: 'utf8', signal });
    } catch (error) {
      throw new Failure('task', `cannot read ${url}: ${errorText(error)}`);
    }
  }
  let status = 0;
  let tooLarge = false;
  const chunks: Buffer[] = [];
  let received = 0;
  try {
    const result = await getFollowingRedirects({
      url: new URL(url),
      headers: REQUEST_HEADERS,
      signal,
      onResponse: (response) => {
        status = response.status;
        if (status < 200 || status >= 300) return undefined;
        if (Number(response.headers['content-length'] ?? 0) > MAX_CHECKSUM_LIST_BYTES) {
          tooLarge = true;
          return undefined;
        }
        return (chunk) => {
          received += chunk.length;
          if (received > MAX_CHECKSUM_LIST_BYTES) throw new Failure('task', `${url} is over ${MAX_CHECKSUM_LIST_BYTES} bytes; that is not a checksum list`);
          chunks.push(Buffer.from(chunk));
        };
      },
    });
    if (status >= 200 && status < 300 && !tooLarge && !result.complete) throw new Error(`the answer from ${url} was cut short`);
  } catch (error) {
    if (isFailure(error)) throw error;
    if (isAbortOf(signal, error)) throw signal.reason ?? error;
    throw new Unreachable(errorText(error));
  }
  if (status >= 500) throw new Unreachable(`HTTP ${statusLine(status)} from ${url}`);
  if (status < 200 || status >= 300) throw new Failure('task', `HTTP ${statusLine(status)} from ${url}`);
  if (tooLarge) throw new Failure('task', `${url} is over ${MAX_CHECKSUM_LIST_BYTES} bytes; that is not a checksum list`);
  return Buffer.concat(chunks).toString('utf8');
}

// ---------------------------------------------------------------------------------------
// Verified downloads (the transfer itself: resumable-transfer.ts)

/**
 * Per destination, in this process: the downloads writing it now or waiting to, and the
 * SHA-512 the last of them verified. The base's download node and a build that fetches
 * the base itself (a remote-cache fallback, a checksum mismatch) can want the same file at
 * once in one run; they take turns at its partial file, and one that waited takes what
 * the one before it verified rather than fetching it again. (Two runs in one tree are
 * kept apart by the engine lock.)
 */
const writers = new Map<string, { turn: Promise<void>; queued: number; verified?: string }>();

async function downloadVerified(
  ctx: TaskContext,
  spec: Pick<DownloadSpec, 'url' | 'attempts' | 'retryDelayMs'>,
  dest: string,
  expected: string,
  options: { ownsOutput?: boolean } = {},
): Promise<void> {
  const slot = writers.get(dest) ?? { turn: Promise.resolve(), queued: 0 };
  writers.set(dest, slot);
  const waited = slot.queued > 0;
  slot.queued++;
  const before = slot.turn;
  let release!: () => void;
  slot.turn = new Promise<void>((resolve) => (release = resolve));
  try {
    await before;
    ctx.signal.throwIfAborted();
    if (waited && slot.verified === expected && (await isFile(dest))) {
      if (options.ownsOutput ?? true) await ctx.beginCommit();
      ctx.log(`${dest} was downloaded and verified by another task of this run`);
      return;
    }
    slot.verified = undefined;
    await downloadVerifiedAlone(ctx, spec, dest, expected, options);
    slot.verified = expected;
  } finally {
    if (--slot.queued === 0) writers.delete(dest);
    release();
  }
}

async function downloadVerifiedAlone(
  ctx: TaskContext,
  spec: Pick<DownloadSpec, 'url' | 'attempts' | 'retryDelayMs'>,
  dest: string,
  expected: string,
  { ownsOutput = true }: { ownsOutput?: boolean } = {},
): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  // The partial file keeps a stable name across runs (so a later run resumes it) and
  // carries the expected digest, so a partial of an older upstream image is never resumed.
  const partial = join(dirname(dest), `.${basename(dest)}.${expected.slice(0, 16)}.partial`);
  await removeOtherPartials(dest, partial);
  const attempts = Math.max(1, spec.attempts ?? DEFAULT_ATTEMPTS);
  const delay = spec.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS;

  let restartedAfterMismatch = false;
  for (;;) {
    let outcome: TransferOutcome | undefined;
    for (let attempt = 1; outcome === undefined; attempt++) {
      try {
        outcome = await transfer(ctx, spec.url, partial);
      } catch (error) {
        if (!(error instanceof Interrupted) || ctx.signal.aborted || attempt >= attempts) {
          if (error instanceof Interrupted) {
            throw new Failure(
              'task',
              `download of ${spec.url} failed after ${attempt} attempts: ${error.message} (the partial file is kept; the next run resumes it)`,
            );
          }
          throw error;
        }
        const wait = delay * 2 ** (attempt - 1);
        ctx.log(`${error.message}; resuming in ${wait} ms (attempt ${attempt + 1} of ${attempts})`);
        await sleep(wait, undefined, { signal: ctx.signal });
      }
    }
    if (outcome.sha512 === expected) break;
    await rm(partial, { force: true });
    // A resumed prefix may be what is wrong (a file changed under the same name); one
    // clean download settles whether upstream itself disagrees with its checksum list.
    if (outcome.resumed && !restartedAfterMismatch) {
      restartedAfterMismatch = true;
      ctx.log(`SHA-512 mismatch after resuming; downloading ${spec.url} again from the start`);
      continue;
    }
    throw new Failure('task', `SHA-512 mismatch for ${spec.url}: expected ${expected}, got ${outcome.sha512}`);
  }
  if (ownsOutput) await ctx.beginCommit();
  await rename(partial, dest);
  ctx.log(`downloaded ${spec.url} -> ${dest} (SHA-512 verified)`);
}

async function removeOtherPartials(dest: string, keep: string): Promise<void> {
  const prefix = `.${basename(dest)}.`;
  const entries = await readdir(dirname(dest)).catch(() => [] as string[]);
  await Promise.all(
    entries
      .filter((name) => name.startsWith(prefix) && name.endsWith('.partial') && join(dirname(dest), name) !== keep)
      .map((name) => rm(join(dirname(dest), name), { force: true })),
  );
}

// ---------------------------------------------------------------------------------------
// Small helpers

/** SHA-512 of a file (what upstream publishes; the stat cache keeps SHA-256 and xxh64 only). */
export async function sha512File(path: string, signal?: AbortSignal, onProgress?: (done: number, total: number) => void): Promise<string> {
  const total = (await stat(path)).size;
  const sha = createHash('sha512');
  await readInOrder(path, {
    ...(signal ? { signal } : {}),
    each: (chunk, offset) => {
      sha.update(chunk);
      onProgress?.(offset + chunk.length, total);
    },
  });
  return sha.digest('hex');
}

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() ?? false;
}

function withTimeout(signal: AbortSignal, ms: number): AbortSignal {
  return AbortSignal.any([signal, AbortSignal.timeout(ms)]);
}
