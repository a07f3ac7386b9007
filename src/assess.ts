// The one answer to "is this node fresh, and if not, why": --dry-run, explain, --json and
// the runner all read `assess` (and the quick check in quick-check.ts, which agrees with it).
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import {
  buildManifest,
  fingerprintOf,
  hashOutputs,
  isMissing,
  type Manifest,
  type ManifestContext,
  manifestDifference,
  outputDigestOf,
  sameManifest,
} from './fingerprint.ts';
import type { RecordedLookup } from './quick-check.ts';
import { type Reason, UP_TO_DATE } from './reason.ts';
import { readStamp, type Stamp } from './stamp.ts';
import type { FileHasher, KeyFile, NodeDef, NodeId, RemoteLookup } from './types.ts';

/**
 * A node's verdict. Fresh: nothing to do (`adopt`: outputs another tool made, checked and
 * taken as ours, recorded when the run reaches the node). Stale: it will run, for
 * `reason`. Pending: it waits on dependencies that will run, and whether it runs depends
 * on what they produce. A stale verdict reached before its dependencies ran carries no
 * manifest: the runner assesses the node again once they have. A fresh one the quick
 * check settled carries none either: only an adoption's manifest is recorded.
 */
export type Verdict =
  | { fresh: true; reason: Reason; outputDigest: string; fingerprint: string; adopt: false; manifest?: Manifest }
  | { fresh: true; reason: Reason; outputDigest: string; fingerprint: string; adopt: true; manifest: Manifest }
  | { fresh: false; reason: Reason; fingerprint?: string; manifest?: Manifest; pending: boolean; key?: string };

export type StaleVerdict = Extract<Verdict, { fresh: false }>;

/** The verdict as one word, as `--dry-run --json` and `plan --json` print it. */
export type VerdictStatus = 'fresh' | 'adopted' | 'stale' | 'pending';

export function verdictStatus(verdict: Verdict): VerdictStatus {
  if (verdict.fresh) return verdict.adopt ? 'adopted' : 'fresh';
  return verdict.pending ? 'pending' : 'stale';
}

export interface AssessContext extends ManifestContext {
  readonly stateDir: string;
  /**
   * Files that nodes still to run will write (their declared outputs). Before the
   * dependencies have run, an input among these is theirs to change, not the node's own.
   */
  readonly unsettledFiles?: ReadonlySet<string>;
  /**
   * The stamps as they were when planning began, when the stamp index still described
   * them, for the quick check; absent otherwise. `assess` reads the stamp files.
   */
  readonly recorded?: RecordedLookup;
  readonly forced: boolean;
  readonly flags: Readonly<Record<string, boolean | string | undefined>>;
  readonly signal: AbortSignal;
}

const KEY_PATTERN = /^[0-9a-f]{64}$/;
const FORCED: Reason = Object.freeze({ code: 'forced' });
const NEVER_BUILT: Reason = Object.freeze({ code: 'never-built' });

export async function assess(node: NodeDef, context: AssessContext): Promise<Verdict> {
  const waitingOn = node.deps.filter((dep) => context.depOutputs.get(dep) === undefined);
  if (waitingOn.length > 0) return assessBeforeDeps(node, context, waitingOn);
  const manifest = await buildManifest(node, context);
  // The key of the inputs as they are now, before any run: what a run records, so inputs
  // edited while it runs leave the node stale rather than keyed to what it did not build.
  const key = node.key ? await node.key.compute(countingHasher(context.hasher, context.account), context.root) : undefined;
  const stale = async (reason: Reason): Promise<Verdict> => ({
    fresh: false,
    pending: false,
    reason,
    fingerprint: await fingerprintOf(manifest),
    manifest,
    ...(key !== undefined ? { key } : {}),
  });

  if (context.forced) return stale(FORCED);
  const stamp = readStamp(context.stateDir, node.id);

  if (node.key) {
    const recorded = await readRecordedKey(node.key, context.root);
    if (typeof recorded !== 'string') return stale(recorded);
    if (key !== recorded) {
      const why = stamp ? manifestDifference(stamp.manifest, manifest) : undefined;
      return stale(why ?? { code: 'key-file-mismatch', path: node.key.path });
    }
  }
  if (!stamp) {
    const adoption = await checkAdoption(node, context, []);
    if (adoption.outcome !== 'adopt') return stale(adoption.outcome === 'refuse' ? adoption.reason : { code: 'outputs-unchecked' });
    const fingerprint = await fingerprintOf(manifest);
    return { fresh: true, adopt: true, reason: adoption.reason, fingerprint, manifest, outputDigest: await outputDigestOf(adoption.outputs, fingerprint) };
  }
  // A stamp holds the fingerprint of the manifest written beside it, so a manifest equal
  // to the recorded one has the recorded fingerprint: hashing it again (canonical JSON of
  // every input's digest) is the one cost a no-op run would pay for nothing.
  if (!sameManifest(stamp.manifest, manifest) && stamp.fingerprint !== (await fingerprintOf(manifest))) {
    return stale(withProbeNote(manifestDifference(stamp.manifest, manifest) ?? { code: 'fingerprint-changed' }, context));
  }
  const outputs = await hashOutputs(node, context);
  if ('missing' in outputs) return stale(outputs.missing);
  const modified = modifiedOutput(stamp, outputs.digests);
  if (modified) return stale(modified);
  return { fresh: true, adopt: false, reason: UP_TO_DATE, fingerprint: stamp.fingerprint, manifest, outputDigest: stamp.outputDigest };
}

/** An upstream change said as the probe said it ("upstream unreachable; using cached file"), when it said anything. */
function withProbeNote(reason: Reason, context: Pick<AssessContext, 'probe'>): Reason {
  const note = context.probe?.note;
  return reason.code === 'upstream-changed' && note ? { code: 'upstream-changed', note } : reason;
}

/**
 * The verdict while some dependencies have yet to run. A node that will run whatever they
 * produce (forced, its own input changed, its own output missing or modified, its key
 * file missing) is stale, with that reason; otherwise whether it runs is up to what they
 * produce, and it is pending.
 */
async function assessBeforeDeps(node: NodeDef, context: AssessContext, waitingOn: readonly NodeId[]): Promise<Verdict> {
  const stale = (reason: Reason): Verdict => ({ fresh: false, pending: false, reason });
  const pending: Verdict = { fresh: false, pending: true, reason: { code: 'waiting-on', deps: waitingOn } };
  if (context.forced) return stale(FORCED);
  if (node.key) {
    const recorded = await readRecordedKey(node.key, context.root);
    if (typeof recorded !== 'string') return stale(recorded);
    // Whether it matches depends on the dependencies' outputs (a key covers them).
  }
  const stamp = readStamp(context.stateDir, node.id);
  if (!stamp) {
    const adoption = await checkAdoption(node, context, waitingOn);
    return adoption.outcome === 'refuse' ? stale(adoption.reason) : pending;
  }
  const own = manifestDifference(stamp.manifest, await ownManifest(node, context, stamp.manifest));
  if (own !== undefined) return stale(withProbeNote(own, context));
  const outputs = await hashOutputs(node, context);
  if ('missing' in outputs) return stale(outputs.missing);
  const modified = modifiedOutput(stamp, outputs.digests);
  return modified ? stale(modified) : pending;
}

/**
 * The verdict of a node a remote cache vouches for, decided without its dependencies
 * (they are not needed this run): fresh when its key file already holds `key`, the key of
 * the current inputs by the remote's record, and its own inputs and outputs are as
 * recorded; otherwise stale, to fetch. The manifest leaves dependencies out, so a fetched
 * node is recorded with none.
 */
export async function assessDetached(node: NodeDef, context: AssessContext, remote: Extract<RemoteLookup, { hit: true }>): Promise<Verdict> {
  const detached: AssessContext = { ...context, depOutputs: new Map() };
  const manifest = await buildManifest(node, detached);
  const fingerprint = await fingerprintOf(manifest);
  const fetch: Verdict = {
    fresh: false,
    pending: false,
    reason: { code: 'remote-hit', source: remote.source, says: remote.reason },
    fingerprint,
    manifest,
    ...(remote.key !== undefined ? { key: remote.key } : {}),
  };
  if (!node.key || remote.key === undefined) return fetch;
  if ((await readRecordedKey(node.key, context.root)) !== remote.key) return fetch;
  const outputs = await hashOutputs(node, context);
  if ('missing' in outputs) return fetch;
  const stamp = readStamp(context.stateDir, node.id);
  if (stamp) {
    const own = manifestDifference({ ...stamp.manifest, deps: {} }, manifest);
    if (own !== undefined || modifiedOutput(stamp, outputs.digests)) return fetch;
    const reason: Reason = { code: 'key-matches-remote', keyFile: node.key.path, source: remote.source };
    return { fresh: true, adopt: false, reason, fingerprint: stamp.fingerprint, manifest: stamp.manifest, outputDigest: stamp.outputDigest };
  }
  const adoption = await checkAdoption(node, detached, []);
  if (adoption.outcome !== 'adopt') return fetch;
  return {
    fresh: true,
    adopt: true,
    reason: { ...adoption.reason, remote: remote.source },
    fingerprint,
    manifest,
    outputDigest: await outputDigestOf(adoption.outputs, fingerprint),
  };
}

type AdoptionCheck =
  | { outcome: 'adopt'; reason: Extract<Reason, { code: 'adopted' }>; outputs: Record<string, string> }
  | { outcome: 'refuse'; reason: Reason }
  /** The answer depends on what a dependency still to run produces. */
  | { outcome: 'unknown' };

/**
 * Outputs with no stamp of ours: taken as the node's when they all exist, the key file (if
 * any) matches, and the kind's own check (if any) passes. Called with the key already
 * compared when the dependencies are known, and before that with `waitingOn` naming them.
 */
async function checkAdoption(node: NodeDef, context: AssessContext, waitingOn: readonly NodeId[]): Promise<AdoptionCheck> {
  if (!node.key && !node.adopt) return { outcome: 'refuse', reason: NEVER_BUILT };
  const outputs = await hashOutputs(node, context);
  if ('missing' in outputs) return { outcome: 'refuse', reason: node.key ? outputs.missing : NEVER_BUILT };
  const keyFile = node.key ? { keyFile: node.key.path } : {};
  if (!node.adopt)
    return waitingOn.length > 0 ? { outcome: 'unknown' } : { outcome: 'adopt', reason: { code: 'adopted', ...keyFile }, outputs: outputs.digests };
  const answer = await node.adopt({
    root: context.root,
    flags: context.flags,
    signal: context.signal,
    hasher: countingHasher(context.hasher, context.account),
    probe: context.probe,
    waitingOn,
  });
  if (answer === undefined) return waitingOn.length > 0 ? { outcome: 'unknown' } : { outcome: 'refuse', reason: { code: 'outputs-unchecked' } };
  if (!answer.adopt) return { outcome: 'refuse', reason: { code: 'not-adopted', says: answer.reason } };
  if (waitingOn.length > 0) return { outcome: 'unknown' };
  return { outcome: 'adopt', reason: { code: 'adopted', ...keyFile, says: answer.reason }, outputs: outputs.digests };
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

function modifiedOutput(stamp: Stamp, outputs: Record<string, string>): Reason | undefined {
  for (const [path, hash] of Object.entries(stamp.outputs)) {
    if (outputs[path] !== hash) return { code: 'output-modified', path };
  }
  return undefined;
}

/** The key file's value, or why it cannot be compared (missing, or not a key). */
async function readRecordedKey(key: KeyFile, root: string): Promise<string | Reason> {
  let recorded: string;
  try {
    recorded = (await readFile(resolve(root, key.path), 'utf8')).trim();
  } catch (error) {
    if (isMissing(error)) return { code: 'key-file-missing', path: key.path };
    throw error;
  }
  return KEY_PATTERN.test(recorded) ? recorded : { code: 'key-file-corrupt', path: key.path };
}

function countingHasher(hasher: FileHasher, account: { bytes: number }): FileHasher {
  return { hash: (path, options = {}) => hasher.hash(path, { ...options, account }) };
}
