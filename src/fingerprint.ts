// Everything that can change a node's output, and the one answer to "is it fresh, and if
// not, why": --dry-run, explain, --json and the runner all read `assess`.
//
// A node's manifest lists its kind, parameters, input file contents, declared
// environment, probe value and the output digests of its dependencies (so a dependency
// rebuilt to identical bytes does not make it stale: early cutoff). Its fingerprint is
// the xxh64 of that manifest. The stamp records fingerprint, manifest and output hashes.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { writeFileAtomic } from './atomic.ts';
import { stringHasher, xxhString } from './hasher.ts';
import { Failure } from './failure.ts';
import { boundedStem } from './file-stem.ts';
import type { FileHasher, Json, KeyFile, NodeDef, NodeId, ProbeResult } from './types.ts';
import { resolveUnder } from './under-root.ts';

export interface Manifest {
  kind: string;
  params: string;
  files: Record<string, string>;
  env: Record<string, string>;
  deps: Record<string, string>;
  probe?: string;
}

export interface Stamp {
  version: 1;
  /** The node's id: its file name holds only a digest of a long one. Absent in stamps of older versions. */
  id?: NodeId;
  fingerprint: string;
  manifest: Manifest;
  outputs: Record<string, string>;
  outputDigest: string;
  finishedAt: string;
}

/**
 * What the quick check needs of a node's stamp: its fingerprint and output digest, and
 * its record, the manifest and output digests in one exact text (`recordOfStamp`).
 */
export type RecordedStamp = readonly [fingerprint: string, outputDigest: string, record: string];

/** Recorded stamps by node id, as a plan read them at once (stamp-index.ts). */
export interface RecordedLookup {
  get(id: NodeId): RecordedStamp | undefined;
}

/**
 * A node's verdict. Fresh: nothing to do (`adopt`: outputs another tool made, checked and
 * taken as ours, recorded when the run reaches the node). Stale: it will run, for
 * `reason`. Pending: it waits on dependencies that will run, and whether it runs depends
 * on what they produce. A stale verdict reached before its dependencies ran carries no
 * manifest: the runner assesses the node again once they have. A fresh one the quick
 * check settled carries none either: only an adoption's manifest is recorded.
 */
export type Verdict =
  | { fresh: true; reason: string; outputDigest: string; fingerprint: string; adopt: false; manifest?: Manifest }
  | { fresh: true; reason: string; outputDigest: string; fingerprint: string; adopt: true; manifest: Manifest }
  | { fresh: false; reason: string; fingerprint?: string; manifest?: Manifest; pending: boolean; key?: string };

/** The verdict as one word, as `--dry-run --json` and `plan --json` print it. */
export type VerdictStatus = 'fresh' | 'adopted' | 'stale' | 'pending';

export function verdictStatus(verdict: Verdict): VerdictStatus {
  if (verdict.fresh) return verdict.adopt ? 'adopted' : 'fresh';
  return verdict.pending ? 'pending' : 'stale';
}

export interface AssessContext {
  readonly root: string;
  readonly stateDir: string;
  readonly hasher: FileHasher;
  /** Output digests of dependencies; `undefined` means the dependency has yet to run. */
  readonly depOutputs: ReadonlyMap<NodeId, string | undefined>;
  /**
   * Files that nodes still to run will write (their declared outputs). Before the
   * dependencies have run, an input among these is theirs to change, not the node's own.
   */
  readonly unsettledFiles?: ReadonlySet<string>;
  /**
   * Digests of input files taken when planning began (files no node of the run writes):
   * used instead of a second stat of each. Absent once nodes have run.
   */
  readonly inputDigests?: ReadonlyMap<string, string>;
  /**
   * The stamps as they were when planning began, when the stamp index still described
   * them, for the quick check; absent otherwise. `assess` reads the stamp files.
   */
  readonly recorded?: RecordedLookup;
  readonly forced: boolean;
  /** The probe's answer this run; undefined when the node has none or it was not evaluated. */
  readonly probe: ProbeResult | undefined;
  readonly flags: Readonly<Record<string, boolean | string | undefined>>;
  readonly signal: AbortSignal;
  readonly account: { bytes: number };
}

const KEY_PATTERN = /^[0-9a-f]{64}$/;
const UPSTREAM_CHANGED = 'upstream changed';

export async function assess(node: NodeDef, context: AssessContext): Promise<Verdict> {
  const waitingOn = node.deps.filter((dep) => context.depOutputs.get(dep) === undefined);
  if (waitingOn.length > 0) return assessBeforeDeps(node, context, waitingOn);
  const manifest = await buildManifest(node, context);
  // The key of the inputs as they are now, before any run: what a run records, so inputs
  // edited while it runs leave the node stale rather than keyed to what it did not build.
  const key = node.key ? await node.key.compute(countingHasher(context.hasher, context.account), context.root) : undefined;
  const stale = async (reason: string): Promise<Verdict> => ({
    fresh: false,
    pending: false,
    reason,
    fingerprint: await fingerprintOf(manifest),
    manifest,
    ...(key !== undefined ? { key } : {}),
  });

  if (context.forced) return stale('forced (--force)');
  const stamp = stampOf(context.stateDir, node.id);

  if (node.key) {
    const recorded = await readRecordedKey(node.key, context.root);
    if (typeof recorded !== 'string') return stale(recorded.problem);
    if (key !== recorded) {
      const why = stamp ? manifestDifference(stamp.manifest, manifest) : undefined;
      return stale(why ?? `${node.key.path} does not match the inputs (inputs changed)`);
    }
  }
  if (!stamp) {
    const adoption = await checkAdoption(node, context, []);
    if (adoption.outcome !== 'adopt') return stale(adoption.outcome === 'refuse' ? adoption.reason : 'its outputs could not be checked');
    const fingerprint = await fingerprintOf(manifest);
    return { fresh: true, adopt: true, reason: adoption.reason, fingerprint, manifest, outputDigest: await outputDigestOf(adoption.outputs, fingerprint) };
  }
  // A stamp holds the fingerprint of the manifest written beside it, so a manifest equal
  // to the recorded one has the recorded fingerprint: hashing it again (canonical JSON of
  // every input's digest) is the one cost a no-op run would pay for nothing.
  if (!sameManifest(stamp.manifest, manifest) && stamp.fingerprint !== (await fingerprintOf(manifest))) {
    const difference = manifestDifference(stamp.manifest, manifest) ?? 'fingerprint changed';
    return stale(difference === UPSTREAM_CHANGED && context.probe?.note ? context.probe.note : difference);
  }
  const outputs = await hashOutputs(node, context);
  if (typeof outputs === 'string') return stale(outputs);
  const modified = modifiedOutput(stamp, outputs);
  if (modified) return stale(modified);
  return { fresh: true, adopt: false, reason: 'up to date', fingerprint: stamp.fingerprint, manifest, outputDigest: stamp.outputDigest };
}

/**
 * `assess` for a node whose answer is "up to date" by what is known at once: its recorded
 * stamp in the stamp index, and the stat cache's digests of its inputs and outputs and its
 * dependencies' outputs, all equal to what the stamp recorded. A no-op run settles nearly
 * every node this way, without building a manifest, hashing it, reading a stamp file or
 * making a promise. The function returned answers undefined whenever anything needs more
 * (no stamp index, a file to read, a glob, a key file, a dependency still to run, any
 * difference at all): `assess` decides those, and its answer for the nodes this one
 * settles would be the same.
 */
export async function quickAssessor(): Promise<(node: NodeDef, context: AssessContext) => Verdict | undefined> {
  const hashText = await stringHasher();
  return (node, context) => {
    if (context.forced || node.key || (node.inputs && node.inputs.length > 0)) return undefined;
    const recorded = context.recorded?.get(node.id);
    if (!recorded) return undefined;
    const current = currentRecord(node, context, hashText);
    if (current === undefined || current !== recorded[2]) return undefined;
    // The recorded manifest is the current one, so its fingerprint is the stamp's.
    return { fresh: true, adopt: false, reason: 'up to date', fingerprint: recorded[0], outputDigest: recorded[1] };
  };
}

/**
 * A stamp's manifest and output digests as one text that equals another exactly when both
 * hold the same values. Each string is framed by its length, so no value can be taken for
 * a separator, and each list's entries are sorted, so the order a record was written in
 * does not matter (object keys that look like numbers do not keep it). Undefined when the
 * stamp has anything this version does not write: its node is then always assessed in full.
 */
export function recordOfStamp(stamp: Stamp): string | undefined {
  const { manifest, outputs } = stamp;
  if (!isRecord(manifest) || !isRecord(outputs)) return undefined;
  for (const key of Object.keys(manifest)) if (!MANIFEST_KEYS.has(key)) return undefined;
  const { kind, params, probe } = manifest;
  if (typeof kind !== 'string' || typeof params !== 'string' || (probe !== undefined && typeof probe !== 'string')) return undefined;
  const lists = [manifest.files, manifest.env, manifest.deps, outputs].map(entriesText);
  if (lists.some((list) => list === undefined)) return undefined;
  return recordHead(kind, probe, params) + lists.join('');
}

/**
 * The record (`recordOfStamp`) a stamp written now would have, from the node's definition
 * and the digests known without reading a file; undefined when one is not known. Made by
 * concatenation: it runs for every node of a no-op.
 */
function currentRecord(node: NodeDef, context: AssessContext, hashText: (text: string) => string): string | undefined {
  const files: string[] = [];
  for (const path of node.files ?? []) {
    const digest = context.inputDigests?.get(path) ?? knownDigest(context.hasher, resolveUnder(context.root, path), false);
    if (digest === undefined) return undefined;
    files.push(entryText(path, digest));
  }
  const env: string[] = [];
  for (const name of node.env ?? []) env.push(entryText(name, envDigest(name, hashText)));
  const deps: string[] = [];
  for (const dep of node.deps) {
    const output = context.depOutputs.get(dep);
    if (output === undefined) return undefined;
    deps.push(entryText(dep, output));
  }
  const outputs: string[] = [];
  for (const path of node.outputs ?? []) {
    const digest = knownDigest(context.hasher, resolveUnder(context.root, path), node.sha256Outputs?.includes(path) === true);
    if (digest === undefined) return undefined;
    outputs.push(entryText(path, digest));
  }
  return recordHead(node.kind, context.probe?.value, paramsDigest(node, hashText)) + listText(files) + listText(env) + listText(deps) + listText(outputs);
}

function recordHead(kind: string, probe: string | undefined, params: string): string {
  return framed(kind) + (probe === undefined ? '-' : `+${framed(probe)}`) + framed(params);
}

function framed(text: string): string {
  return `${text.length}:${text}`;
}

function entryText(name: string, value: string): string {
  return framed(name) + framed(value);
}

/** A list of framed entries: its length, then the entries in one order whatever order they came in. */
function listText(entries: string[]): string {
  if (entries.length < 2) return `${entries.length};${entries.length === 1 ? entries[0] : ''}`;
  return `${entries.length};${entries.sort().join('')}`;
}

/** A record of strings as a list (`listText`), or undefined when it is not one. */
function entriesText(value: unknown): string | undefined {
  if (!isRecord(value)) return undefined;
  const entries: string[] = [];
  for (const [name, text] of Object.entries(value)) {
    if (typeof text !== 'string') return undefined;
    entries.push(entryText(name, text));
  }
  return listText(entries);
}

/** What a manifest records of an environment variable: values may be secrets, so only their hash; unset differs from empty. */
function envDigest(name: string, hashText: (text: string) => string): string {
  const value = process.env[name];
  return value === undefined ? 'unset' : hashText(`=${value}`);
}

function paramsDigest(node: NodeDef, hashText: (text: string) => string): string {
  return hashText(canonicalJson(node.params ?? null));
}

/** A digest the stat cache knows for the file as it is, or undefined (not known without reading, or not readable: `assess` says why). */
function knownDigest(hasher: FileHasher, path: string, sha256: boolean): string | undefined {
  try {
    return hasher.known?.(path, { sha256 })?.xxh;
  } catch {
    return undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * The verdict while some dependencies have yet to run. A node that will run whatever they
 * produce (forced, its own input changed, its own output missing or modified, its key
 * file missing) is stale, with that reason; otherwise whether it runs is up to what they
 * produce, and it is pending.
 */
async function assessBeforeDeps(node: NodeDef, context: AssessContext, waitingOn: readonly NodeId[]): Promise<Verdict> {
  const stale = (reason: string): Verdict => ({ fresh: false, pending: false, reason });
  const pending: Verdict = { fresh: false, pending: true, reason: `depends on what ${listed(waitingOn)} produce${waitingOn.length === 1 ? 's' : ''}` };
  if (context.forced) return stale('forced (--force)');
  if (node.key) {
    const recorded = await readRecordedKey(node.key, context.root);
    if (typeof recorded !== 'string') return stale(recorded.problem);
    // Whether it matches depends on the dependencies' outputs (a key covers them).
  }
  const stamp = stampOf(context.stateDir, node.id);
  if (!stamp) {
    const adoption = await checkAdoption(node, context, waitingOn);
    return adoption.outcome === 'refuse' ? stale(adoption.reason) : pending;
  }
  const own = manifestDifference(stamp.manifest, await ownManifest(node, context, stamp.manifest));
  if (own !== undefined) return stale(own === UPSTREAM_CHANGED && context.probe?.note ? context.probe.note : own);
  const outputs = await hashOutputs(node, context);
  if (typeof outputs === 'string') return stale(outputs);
  const modified = modifiedOutput(stamp, outputs);
  return modified ? stale(modified) : pending;
}

/**
 * The verdict of a node a remote cache vouches for, decided without its dependencies
 * (they are not needed this run): fresh when its key file already holds `key`, the key of
 * the current inputs by the remote's record, and its own inputs and outputs are as
 * recorded; otherwise stale, to fetch. The manifest leaves dependencies out, so a fetched
 * node is recorded with none.
 */
export async function assessDetached(
  node: NodeDef,
  context: AssessContext,
  remote: { readonly key?: string; readonly reason: string; readonly source: string },
): Promise<Verdict> {
  const detached: AssessContext = { ...context, depOutputs: new Map() };
  const manifest = await buildManifest(node, detached);
  const fingerprint = await fingerprintOf(manifest);
  const fetch: Verdict = {
    fresh: false,
    pending: false,
    reason: remote.reason,
    fingerprint,
    manifest,
    ...(remote.key !== undefined ? { key: remote.key } : {}),
  };
  if (!node.key || remote.key === undefined) return fetch;
  if ((await readRecordedKey(node.key, context.root)) !== remote.key) return fetch;
  const outputs = await hashOutputs(node, context);
  if (typeof outputs === 'string') return fetch;
  const reason = `${node.key.path} matches ${remote.source}`;
  const stamp = stampOf(context.stateDir, node.id);
  if (stamp) {
    const own = manifestDifference({ ...stamp.manifest, deps: {} }, manifest);
    if (own !== undefined || modifiedOutput(stamp, outputs)) return fetch;
    return { fresh: true, adopt: false, reason, fingerprint: stamp.fingerprint, manifest: stamp.manifest, outputDigest: stamp.outputDigest };
  }
  const adoption = await checkAdoption(node, detached, []);
  if (adoption.outcome !== 'adopt') return fetch;
  return {
    fresh: true,
    adopt: true,
    reason: `${adoption.reason} (${remote.source} has the same key)`,
    fingerprint,
    manifest,
    outputDigest: await outputDigestOf(adoption.outputs, fingerprint),
  };
}

type AdoptionCheck =
  | { outcome: 'adopt'; reason: string; outputs: Record<string, string> }
  | { outcome: 'refuse'; reason: string }
  /** The answer depends on what a dependency still to run produces. */
  | { outcome: 'unknown' };

/**
 * Outputs with no stamp of ours: taken as the node's when they all exist, the key file (if
 * any) matches, and the kind's own check (if any) passes. Called with the key already
 * compared when the dependencies are known, and before that with `waitingOn` naming them.
 */
async function checkAdoption(node: NodeDef, context: AssessContext, waitingOn: readonly NodeId[]): Promise<AdoptionCheck> {
  if (!node.key && !node.adopt) return { outcome: 'refuse', reason: 'never built' };
  const outputs = await hashOutputs(node, context);
  if (typeof outputs === 'string') return { outcome: 'refuse', reason: node.key ? outputs : 'never built' };
  const keyPart = node.key ? `${node.key.path} matches` : undefined;
  if (!node.adopt) return waitingOn.length > 0 ? { outcome: 'unknown' } : { outcome: 'adopt', reason: `adopted: ${keyPart}`, outputs };
  const answer = await node.adopt({
    root: context.root,
    flags: context.flags,
    signal: context.signal,
    hasher: countingHasher(context.hasher, context.account),
    probe: context.probe,
    waitingOn,
  });
  if (answer === undefined) return waitingOn.length > 0 ? { outcome: 'unknown' } : { outcome: 'refuse', reason: 'its outputs could not be checked' };
  if (!answer.adopt) return { outcome: 'refuse', reason: answer.reason };
  if (waitingOn.length > 0) return { outcome: 'unknown' };
  return { outcome: 'adopt', reason: `adopted: ${[keyPart, answer.reason].filter(Boolean).join(', ')}`, outputs };
}

/**
 * The manifest as far as it is the node's own, for comparison with the recorded one
 * before the dependencies have run: no dependency outputs, no input files a node still
 * to run will write, and the recorded probe value unless the probe was evaluated.
 */
async function ownManifest(node: NodeDef, context: AssessContext, recorded: Manifest): Promise<Manifest> {
  const unsettled = context.unsettledFiles ?? new Set<string>();
  const current = await buildManifest(node, context, { skipFiles: unsettled });
  const files = { ...current.files };
  for (const path of Object.keys(recorded.files)) if (unsettled.has(path)) files[path] = recorded.files[path]!;
  const probe = context.probe ? current.probe : recorded.probe;
  return { ...current, files, deps: {}, ...(probe !== undefined ? { probe } : {}) };
}

function modifiedOutput(stamp: Stamp, outputs: Record<string, string>): string | undefined {
  for (const [path, hash] of Object.entries(stamp.outputs)) {
    if (outputs[path] !== hash) return `output ${path} was modified`;
  }
  return undefined;
}

async function readRecordedKey(key: KeyFile, root: string): Promise<string | { problem: string }> {
  const recorded = await readKeyFile(resolve(root, key.path));
  if (recorded === undefined) return { problem: `${key.path} missing` };
  if (!KEY_PATTERN.test(recorded)) return { problem: `${key.path} corrupt` };
  return recorded;
}

function listed(ids: readonly string[]): string {
  return ids.length <= 1 ? (ids[0] ?? '') : `${ids.slice(0, -1).join(', ')} and ${ids.at(-1)}`;
}

export function fingerprintOf(manifest: Manifest): Promise<string> {
  return xxhString(canonicalJson(manifest as unknown as Json));
}

/** Hashes declared outputs; returns a reason string when one is missing. */
export async function hashOutputs(
  node: NodeDef,
  /** `observe`: after the node ran, so its `observeOutput` sees the outputs' bytes. */
  context: Pick<AssessContext, 'root' | 'hasher' | 'account'> & { readonly observe?: boolean },
  onProgress?: (path: string, done: number, total: number) => void,
): Promise<Record<string, string> | string> {
  const result: Record<string, string> = {};
  for (const path of node.outputs ?? []) {
    const absolute = resolveUnder(context.root, path);
    const sha256 = node.sha256Outputs?.includes(path) === true;
    try {
      const observer = context.observe ? node.observeOutput?.(path, absolute) : undefined;
      const digest =
        (observer ? undefined : context.hasher.known?.(absolute, { sha256 })) ??
        (await context.hasher.hash(absolute, {
          sha256,
          account: context.account,
          ...(observer ? { observe: observer } : {}),
          ...(onProgress ? { onProgress: (done: number, total: number) => onProgress(path, done, total) } : {}),
        }));
      await observer?.finish(digest);
      result[path] = digest.xxh;
    } catch (error) {
      if (isMissing(error)) return `output ${path} missing`;
      throw error;
    }
  }
  return result;
}

export async function outputDigestOf(outputs: Record<string, string>, fingerprint: string): Promise<string> {
  // A node without file outputs passes its fingerprint on, so its dependents still notice
  // when it changed.
  if (Object.keys(outputs).length === 0) return fingerprint;
  return xxhString(canonicalJson(outputs));
}

async function buildManifest(node: NodeDef, context: AssessContext, options: { skipFiles?: ReadonlySet<string> } = {}): Promise<Manifest> {
  const files: Record<string, string> = {};
  for (const path of node.files ?? []) {
    if (options.skipFiles?.has(path)) continue;
    try {
      const digest = inputDigest(context, path);
      files[path] = typeof digest === 'string' ? digest : await digest;
    } catch (error) {
      if (isMissing(error)) throw new Failure('config', `${node.id}: input file ${path} does not exist`);
      throw error;
    }
  }
  if (node.inputs && node.inputs.length > 0) {
    // Loaded on first use: image pipelines declare exact files and never glob.
    const { default: fg } = await import('fast-glob');
    const matched = await fg([...node.inputs], { cwd: context.root, onlyFiles: true, dot: false, followSymbolicLinks: true });
    matched.sort();
    for (const path of matched) if (!options.skipFiles?.has(path)) files[path] ??= await inputDigest(context, path);
  }
  const hashText = await stringHasher();
  const env: Record<string, string> = {};
  for (const name of node.env ?? []) env[name] = envDigest(name, hashText);
  const deps: Record<string, string> = {};
  for (const dep of node.deps) {
    const output = context.depOutputs.get(dep);
    if (output !== undefined) deps[dep] = output;
  }
  return {
    kind: node.kind,
    params: paramsDigest(node, hashText),
    files,
    env,
    deps,
    ...(context.probe !== undefined ? { probe: context.probe.value } : {}),
  };
}

/** An input file's xxh64: from the stat cache without a promise when it can answer. */
function inputDigest(context: AssessContext, path: string): string | Promise<string> {
  const planned = context.inputDigests?.get(path);
  if (planned !== undefined) return planned;
  const absolute = resolveUnder(context.root, path);
  return context.hasher.known?.(absolute)?.xxh ?? context.hasher.hash(absolute, { account: context.account }).then((digest) => digest.xxh);
}

/** Whether two manifests are the same value (what their canonical JSON would say, without making it). */
function sameManifest(recorded: Manifest, current: Manifest): boolean {
  for (const key of Object.keys(recorded)) if (!MANIFEST_KEYS.has(key)) return false;
  return (
    recorded.kind === current.kind &&
    recorded.params === current.params &&
    recorded.probe === current.probe &&
    sameStrings(recorded.files, current.files) &&
    sameStrings(recorded.env, current.env) &&
    sameStrings(recorded.deps, current.deps)
  );
}

const MANIFEST_KEYS = new Set(['kind', 'params', 'files', 'env', 'deps', 'probe']);

function sameStrings(recorded: Readonly<Record<string, string>> | undefined, current: Readonly<Record<string, string>>): boolean {
  if (recorded === null || typeof recorded !== 'object') return false;
  let count = 0;
  for (const key in recorded) {
    if (!Object.hasOwn(recorded, key) || recorded[key] !== current[key]) return false;
    count++;
  }
  return count === Object.keys(current).length;
}

/** The first difference between the recorded and the current manifest, said for a person. */
export function manifestDifference(before: Manifest, after: Manifest): string | undefined {
  if (before.kind !== after.kind) return `task kind changed (${before.kind} -> ${after.kind})`;
  if (before.params !== after.params) return 'parameters changed';
  for (const path of Object.keys(after.files)) {
    if (!(path in before.files)) return `input ${path} added`;
    if (before.files[path] !== after.files[path]) return `input ${path} changed`;
  }
  for (const path of Object.keys(before.files)) if (!(path in after.files)) return `input ${path} removed`;
  for (const name of new Set([...Object.keys(before.env), ...Object.keys(after.env)])) {
    if (before.env[name] !== after.env[name]) return `environment ${name} changed`;
  }
  for (const dep of Object.keys(after.deps)) {
    if (before.deps[dep] !== after.deps[dep]) return `dependency ${dep} changed its output`;
  }
  if (before.probe !== after.probe) return UPSTREAM_CHANGED;
  return undefined;
}

export const STAMP_SUFFIX = '.json';

export function stampPath(stateDir: string, id: NodeId): string {
  return join(stateDir, 'stamps', stampFileName(id));
}

/** The id, escaped to be one path component (`nodeIdOf` in stamp-index.ts reads it back), and bounded in length. */
export function stampFileName(id: NodeId): string {
  return `${boundedStem(encodeURIComponent(id), id)}${STAMP_SUFFIX}`;
}

export async function readStamp(stateDir: string, id: NodeId): Promise<Stamp | undefined> {
  return stampOf(stateDir, id);
}

/** `readStamp`, synchronous: `assess` reads a stamp per node it cannot settle at once. */
function stampOf(stateDir: string, id: NodeId): Stamp | undefined {
  return readStampFile(stampPath(stateDir, id));
}

/**
 * A stamp file's stamp, or undefined when there is none or it is unreadable (the node is
 * then stale). Synchronous: a run without the stamp index reads one small stamp per node,
 * and the promise API's open/stat/read/close round trips through the thread pool cost
 * more than the reads.
 */
export function readStampFile(path: string): Stamp | undefined {
  try {
    return parseStamp(JSON.parse(readSmallFile(path)));
  } catch {
    return undefined;
  }
}

/** The value as a stamp, or undefined when it is not one this version writes. */
export function parseStamp(value: unknown): Stamp | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  const stamp = value as Partial<Stamp>;
  if (stamp.version !== 1 || typeof stamp.fingerprint !== 'string' || !stamp.manifest || !stamp.outputs) return undefined;
  return stamp as Stamp;
}

/** Reused by every stamp read: one stamp is a few hundred bytes. */
let readBuffer = Buffer.allocUnsafe(64 * 1024);

/**
 * A small file's text: open, read, close (readFileSync also stats it first, a quarter of its
 * cost here). A read that fills less than it asked for has reached the end of a regular
 * file, so a stamp costs three system calls, not four: on a virtual machine each is tens
 * of microseconds, and a no-op run reads a stamp per node.
 */
function readSmallFile(path: string): string {
  const fd = openSync(path, 'r');
  try {
    let length = 0;
    for (;;) {
      const wanted = readBuffer.length - length;
      const read = readSync(fd, readBuffer, length, wanted, length);
      if (read < wanted) return readBuffer.toString('utf8', 0, length + read);
      // The buffer is full: the file may go on.
      length += read;
      const larger = Buffer.allocUnsafe(readBuffer.length * 2);
      readBuffer.copy(larger);
      readBuffer = larger;
    }
  } finally {
    closeSync(fd);
  }
}

export async function writeStamp(stateDir: string, id: NodeId, stamp: Stamp): Promise<void> {
  await writeFileAtomic(stampPath(stateDir, id), `${JSON.stringify({ ...stamp, id }, null, 1)}\n`);
}

export async function removeStamp(stateDir: string, id: NodeId): Promise<void> {
  await rm(stampPath(stateDir, id), { force: true });
}

async function readKeyFile(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (error) {
    if (isMissing(error)) return undefined;
    throw error;
  }
}

export async function fileExists(path: string): Promise<boolean> {
  try {
    statSync(path); // synchronous for the reason readStamp's read is
    return true;
  } catch {
    return false;
  }
}

function countingHasher(hasher: FileHasher, account: { bytes: number }): FileHasher {
  return { hash: (path, options = {}) => hasher.hash(path, { ...options, account }) };
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** JSON with sorted object keys, so equal values always hash equal. */
export function canonicalJson(value: Json): string {
  // Built by concatenation, with no arrays of parts: every node's parameters go through
  // it at every plan. The text must stay byte for byte what stamps were written with
  // (test/canonical-json.test.ts holds it to the first version): an array element with
  // no JSON form is left empty, as join() leaves it, and an object value with none is
  // written `undefined`, as a template string writes it.
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) {
    let text = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) text += ',';
      const element = canonicalJson(value[i] as Json) as string | undefined;
      if (element !== undefined) text += element;
    }
    return `${text}]`;
  }
  const keys = Object.keys(value).sort();
  let text = '{';
  for (let i = 0; i < keys.length; i++) {
    if (i > 0) text += ',';
    text += `${JSON.stringify(keys[i])}:${canonicalJson(value[keys[i]!] as Json)}`;
  }
  return `${text}}`;
}
