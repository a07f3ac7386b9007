// Runs the closure of the selected targets: stale nodes start as soon as their
// dependencies finish, bounded by --jobs and pools; a node planned before its
// dependencies ran is assessed again once they have, so a dependency rebuilt to identical
// output lets it stay fresh (early cutoff), and its setup checks run only if it must run.
import { existsSync, mkdirSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { writeFileAtomic } from './atomic.ts';
import {
  assess,
  assessDetached,
  fileExists,
  quickAssessor,
  fingerprintOf,
  hashOutputs,
  outputDigestOf,
  readStamp,
  removeStamp,
  writeStamp,
  type AssessContext,
  type Verdict,
} from './fingerprint.ts';
import { logStem } from './file-stem.ts';
import type { Graph } from './graph.ts';
import { Limits } from './limits.ts';
import type { Mutable } from './mutable.ts';
import type { RunObserver } from './observer.ts';
import { createTaskContext } from './task-context.ts';
import { Failure, isFailure, toFailure, type FailureKind, type FileHasher, type NodeDef, type NodeId, type ProbeResult, type RemoteLookup } from './types.ts';
import { readStampIndex, type StampSnapshot } from './stamp-index.ts';
import { resolveUnder } from './under-root.ts';

/** `adopted`: outputs another tool made, checked by the node's kind and recorded as ours. */
export type NodeStatus = 'ran' | 'fresh' | 'adopted' | 'failed' | 'skipped' | 'cancelled';

export interface NodeResult {
  readonly id: NodeId;
  readonly status: NodeStatus;
  /** Why it ran, or why it was fresh, skipped or failed. */
  readonly reason: string;
  readonly durationMs: number;
  readonly bytesHashed: number;
  readonly startedAt?: number;
  readonly finishedAt?: number;
  readonly error?: string;
  /** What kind of failure `error` is (failed and cancelled nodes). */
  readonly failureKind?: FailureKind;
  readonly logFile?: string;
  readonly logTail?: readonly string[];
  readonly note?: string;
}

export type { RunObserver } from './observer.ts';

export interface RunOptions {
  readonly root: string;
  readonly stateDir: string;
  readonly logDir: string;
  readonly hasher: FileHasher;
  readonly jobs: number;
  readonly pools: Readonly<Record<string, number>>;
  readonly force: boolean;
  readonly keepGoing: boolean;
  readonly flags: Readonly<Record<string, boolean | string | undefined>>;
  readonly signal: AbortSignal;
  readonly observer?: RunObserver;
  /** The stamp index, read by the caller (which refreshes it after the run); else plan reads it. */
  readonly stampIndex?: StampSnapshot;
}

export interface PlanEntry {
  readonly id: NodeId;
  readonly verdict: Verdict;
  readonly note?: string;
  readonly bytesHashed: number;
  /** The probe's value this run (probed once: at planning, or before running when pending). */
  readonly probeValue?: string;
  /** The probe failed: the node fails with this without running. */
  readonly probeError?: Failure;
  /**
   * A remote cache vouches for the node's outputs: it is fresh, or fetches them (`fetch`),
   * without its dependencies, which this run does not wait for.
   */
  readonly detached?: boolean;
  /** The remote copy the node fetches instead of running (its verdict is stale). */
  readonly fetch?: RemoteHit;
}

export type RemoteHit = Extract<RemoteLookup, { hit: true }>;

const LOG_TAIL_LINES = 20;

async function runProbe(node: NodeDef, options: RunOptions): Promise<ProbeResult | undefined> {
  if (!node.probe) return undefined;
  const previous = (await readStamp(options.stateDir, node.id))?.manifest.probe;
  return node.probe({ root: options.root, flags: options.flags, signal: options.signal, previous });
}

function assessContext(
  options: RunOptions,
  node: NodeDef,
  extra: Pick<AssessContext, 'depOutputs' | 'probe' | 'account'> & Partial<Pick<AssessContext, 'unsettledFiles' | 'inputDigests' | 'recorded'>>,
): AssessContext {
  return {
    root: options.root,
    stateDir: options.stateDir,
    hasher: options.hasher,
    forced: options.force && node.honorsForce !== false,
    flags: options.flags,
    signal: options.signal,
    depOutputs: extra.depOutputs,
    probe: extra.probe,
    account: extra.account,
    unsettledFiles: extra.unsettledFiles,
    inputDigests: extra.inputDigests,
    recorded: extra.recorded,
  };
}

/**
 * Assesses every node of the closure, level by level. A node whose dependencies may run
 * is assessed on what is its own (stale when it will run whatever they produce, pending
 * otherwise); the runner assesses it again once they have run. The entries are the nodes
 * the run needs for `selected` (default: the whole closure): the closure less the
 * dependencies only detached nodes have.
 */
export async function plan(graph: Graph, closure: readonly NodeId[], options: RunOptions, selected?: readonly NodeId[]): Promise<PlanEntry[]> {
  const inputDigests = checkInputFiles(graph, closure, options.root, options.hasher);
  const recorded = (options.stampIndex ?? readStampIndex(options.stateDir))?.recorded;
  const outputs = new Map<NodeId, string | undefined>();
  const unsettledFiles = new Set<string>();
  const byId = new Map<NodeId, PlanEntry>();
  const quickAssess = await quickAssessor();
  const planNode = async (id: NodeId): Promise<void> => {
    const node = graph.node(id);
    const account = { bytes: 0 };
    // A probe may read what a dependency makes: with dependencies still to run, it is
    // evaluated now only when its kind says it reads nothing of theirs.
    const waiting = node.deps.some((dep) => outputs.get(dep) === undefined);
    let probe: ProbeResult | undefined;
    if (node.probe && (!waiting || node.probeIndependent === true)) {
      try {
        options.observer?.nodePhase?.(id, 'probe', 'begin');
        probe = await runProbe(node, options);
        options.observer?.nodePhase?.(id, 'probe', 'end');
      } catch (error) {
        // Setup problems (no token, bad URL) stop the run before any work, with exit 2.
        if (isFailure(error, ...SETUP_KINDS)) throw error.prefixed(id);
        const failure = toFailure(error, options.signal);
        const verdict: Verdict = { fresh: false, pending: false, reason: `upstream check failed: ${failure.message}` };
        outputs.set(id, undefined);
        byId.set(id, { id, verdict, bytesHashed: 0, probeError: failure });
        return;
      }
    }
    const context = assessContext(options, node, { depOutputs: outputs, probe, account, unsettledFiles, inputDigests, recorded });
    // The quick check only looks up stats and the stamp; hashing is the slow path's.
    let verdict = quickAssess(node, context);
    if (!verdict) {
      options.observer?.nodePhase?.(id, 'hash', 'begin');
      verdict = await assess(node, context);
      options.observer?.nodePhase?.(id, 'hash', 'end');
    }
    const notes = probe?.note ? [probe.note] : [];
    // A remote copy of what the inputs make now stands in for the dependencies' work.
    let detached = false;
    let fetch: RemoteHit | undefined;
    if (node.remoteCache && !verdict.fresh && !context.forced) {
      const lookup = await node.remoteCache.lookup({ root: options.root, flags: options.flags, signal: options.signal });
      if (lookup.note) notes.push(lookup.note);
      if (lookup.hit) {
        detached = true;
        verdict = await assessDetached(node, context, lookup);
        if (!verdict.fresh) fetch = lookup;
      }
    }
    outputs.set(id, verdict.fresh ? verdict.outputDigest : undefined);
    // Field by field, not with conditional spreads: this runs for every node of every plan.
    const entry: Mutable<PlanEntry> = { id, verdict, bytesHashed: account.bytes };
    if (notes.length > 0) entry.note = notes.join('; ');
    if (probe) entry.probeValue = probe.value;
    if (detached) entry.detached = detached;
    if (fetch) entry.fetch = fetch;
    byId.set(id, entry);
  };
  // Nodes of one depth depend only on shallower ones: each level is assessed concurrently
  // (stamp reads, stats and upstream probes overlap), the levels in order.
  for (const level of depthLevels(graph, closure)) {
    await Promise.all(level.map(planNode));
    for (const id of level) if (outputs.get(id) === undefined) for (const file of graph.node(id).outputs ?? []) unsettledFiles.add(file);
  }
  const needed = neededNodes(graph, closure, selected ?? closure, byId);
  return closure.filter((id) => needed.has(id)).map((id) => byId.get(id)!);
}

/**
 * The selected nodes and what they need: a detached node (its outputs come from a remote
 * cache) needs none of its dependencies, so a base download that only fetched images
 * depend on is left out of the run.
 */
function neededNodes(graph: Graph, closure: readonly NodeId[], selected: readonly NodeId[], entries: ReadonlyMap<NodeId, PlanEntry>): Set<NodeId> {
  const needed = new Set(selected);
  for (const id of [...closure].reverse()) {
    if (!needed.has(id) || entries.get(id)?.detached) continue;
    for (const dep of graph.node(id).deps) needed.add(dep);
  }
  return needed;
}

/** The closure grouped by depth (a node is one deeper than its deepest dependency). */
function depthLevels(graph: Graph, closure: readonly NodeId[]): NodeId[][] {
  const depth = new Map<NodeId, number>();
  const levels: NodeId[][] = [];
  for (const id of closure) {
    const level = Math.max(-1, ...graph.node(id).deps.map((dep) => depth.get(dep) ?? -1)) + 1;
    depth.set(id, level);
    (levels[level] ??= []).push(id);
  }
  return levels;
}

/**
 * A declared input file that is missing is a setup error before anything runs, even for a
 * node whose dependencies are stale, unless some node of the closure produces it. The
 * same stat answers, through the stat cache, what the file holds: the digests returned
 * (of files no node of the closure writes) are what planning takes them to be, so a
 * no-op run stats each input once.
 */
function checkInputFiles(graph: Graph, closure: readonly NodeId[], root: string, hasher: FileHasher): Map<string, string> {
  const produced = new Set<string>();
  for (const id of closure) for (const file of graph.node(id).outputs ?? []) produced.add(file);
  const digests = new Map<string, string>();
  for (const id of closure) {
    for (const file of graph.node(id).files ?? []) {
      if (produced.has(file) || digests.has(file)) continue;
      const path = resolveUnder(root, file);
      let digest: string | undefined;
      try {
        digest = hasher.known?.(path)?.xxh;
      } catch {
        // Missing, or not a readable regular file: assessing the node says what is wrong.
      }
      if (digest !== undefined) digests.set(file, digest);
      else if (!existsSync(path)) throw new Failure('config', `${id}: input file ${file} does not exist`);
    }
  }
  return digests;
}

/** Failures that mean "fix the machine or the input": found before a node starts, they end the run with exit 2. */
const SETUP_KINDS = ['setup', 'auth', 'config', 'usage'] as const satisfies readonly FailureKind[];

/** Runs the setup checks of one node that is about to run; a failure names the node and why it runs. */
async function checkSetup(node: NodeDef, reason: string, options: Pick<RunOptions, 'root' | 'flags' | 'observer' | 'signal'>): Promise<void> {
  if (node.preflight) options.observer?.nodePhase?.(node.id, 'preflight', 'begin');
  try {
    await node.preflight?.({ root: options.root, flags: options.flags, signal: options.signal });
  } catch (error) {
    if (!isFailure(error)) throw error;
    throw new Failure(error.kind, `${error.message} (why it runs: ${reason})`, { cause: error, ...(error.code !== undefined ? { code: error.code } : {}) });
  }
  if (node.preflight) options.observer?.nodePhase?.(node.id, 'preflight', 'end');
}

/**
 * Setup checks of the nodes the plan calls stale, before any work; the first failure is
 * thrown. Pending nodes are checked when they turn out to run (see `execute`).
 */
export async function preflight(
  graph: Graph,
  entries: readonly PlanEntry[],
  options: Pick<RunOptions, 'root' | 'flags' | 'observer' | 'signal'>,
): Promise<void> {
  for (const entry of entries) {
    // A fetch checks its own setup if it falls back to running the node.
    if (entry.verdict.fresh || entry.verdict.pending || entry.fetch) continue;
    try {
      await checkSetup(graph.node(entry.id), entry.verdict.reason, options);
    } catch (error) {
      if (isFailure(error)) throw error.prefixed(entry.id);
      throw error;
    }
  }
}

/**
 * The failure that ended a run for a setup reason found before a node started (a pending
 * node's setup check, or its probe): the run exits as if it had been found up front.
 */
export function setupFailureOf(results: readonly NodeResult[]): Failure | undefined {
  const stopped = results.find(
    (result) => result.status === 'failed' && result.startedAt === undefined && (SETUP_KINDS as readonly string[]).includes(result.failureKind ?? ''),
  );
  return stopped ? new Failure(stopped.failureKind!, `${stopped.id}: ${stopped.error ?? stopped.reason}`) : undefined;
}

/** Runs the planned nodes (see `plan`; `preflight` should have passed). */
export async function execute(graph: Graph, options: RunOptions, initial: readonly PlanEntry[]): Promise<NodeResult[]> {
  const initialVerdicts = new Map(initial.map((entry) => [entry.id, entry] as const));
  const closure = initial.map((entry) => entry.id);

  const limits = new Limits(options.jobs, options.pools);
  const outputs = new Map<NodeId, string | undefined>();
  const results = new Map<NodeId, NodeResult>();
  const finished = new Map<NodeId, Promise<NodeResult>>();
  const stopStarting = new AbortController();
  const runAbort = new AbortController();
  const onOuterAbort = (): void => runAbort.abort(options.signal.reason);
  options.signal.addEventListener('abort', onOuterAbort, { once: true });
  mkdirSync(join(options.stateDir, 'stamps'), { recursive: true });

  const finish = (result: NodeResult): NodeResult => {
    results.set(result.id, result);
    options.observer?.nodeFinished?.(result);
    // A machine that is not ready stops the run whatever --keep-going says, as it would
    // have before any work had it been known then.
    if (result.status === 'failed' && (!options.keepGoing || setupFailureOf([result]))) stopStarting.abort();
    return result;
  };

  const runNode = async (id: NodeId): Promise<NodeResult> => {
    const node = graph.node(id);
    const first = initialVerdicts.get(id)!;
    const deps = first.detached ? [] : node.deps;
    const unfinished = deps.filter((dep) => !results.has(dep));
    if (unfinished.length > 0) options.observer?.nodeWaiting?.(id, { dependencies: unfinished });
    const depResults = await Promise.all(deps.map((dep) => finished.get(dep)!));
    const blocked = depResults.find((dep) => dep.status !== 'ran' && dep.status !== 'fresh' && dep.status !== 'adopted');
    if (blocked) {
      const status: NodeStatus = blocked.status === 'cancelled' || runAbort.signal.aborted ? 'cancelled' : 'skipped';
      return finish({
        id,
        status,
        reason: `dependency ${blocked.id} ${blocked.status === 'failed' ? 'failed' : `was ${blocked.status}`}`,
        durationMs: 0,
        bytesHashed: 0,
      });
    }
    if (runAbort.signal.aborted) return finish({ id, status: 'cancelled', reason: 'interrupted', durationMs: 0, bytesHashed: 0 });
    if (stopStarting.signal.aborted) return finish({ id, status: 'skipped', reason: 'an earlier node failed', durationMs: 0, bytesHashed: 0 });

    const account = { bytes: 0 };
    account.bytes += first.bytesHashed;
    if (first.probeError !== undefined) {
      return finish({
        id,
        status: 'failed',
        reason: first.verdict.reason,
        error: first.probeError.message,
        failureKind: first.probeError.kind,
        durationMs: 0,
        bytesHashed: 0,
      });
    }
    // Planned while a dependency was still to run: assess again now that all have.
    const plannedBlind = deps.some((dep) => !initialVerdicts.get(dep)!.verdict.fresh);
    const depsRan = depResults.some((dep) => dep.status === 'ran');
    let verdict = first.verdict;
    let note = first.note;
    if (plannedBlind) {
      let probe: ProbeResult | undefined = first.probeValue !== undefined ? { value: first.probeValue, ...(note ? { note } : {}) } : undefined;
      // Probed at planning but dependencies ran since (a build can take an hour): what it
      // reads outside may have moved, so read it again.
      if (node.probe && (probe === undefined || depsRan)) {
        options.observer?.nodePhase?.(id, 'probe', 'begin');
        probe = await runProbe(node, options);
        options.observer?.nodePhase?.(id, 'probe', 'end');
        note = probe?.note;
      }
      options.observer?.nodePhase?.(id, 'hash', 'begin');
      verdict = await assess(node, assessContext(options, node, { depOutputs: outputs, probe, account }));
      options.observer?.nodePhase?.(id, 'hash', 'end');
    }
    if (verdict.fresh) {
      outputs.set(id, verdict.outputDigest);
      const extra = { durationMs: 0, bytesHashed: account.bytes, ...(note ? { note } : {}) };
      if (verdict.adopt) {
        await recordAdoption(node, verdict, options);
        return finish({ id, status: 'adopted', reason: verdict.reason, ...extra });
      }
      const reason = depsRan && first.verdict.fresh === false ? 'dependencies rebuilt with identical output' : verdict.reason;
      return finish({ id, status: 'fresh', reason, ...extra });
    }
    const reason = verdict.reason;
    if (!first.verdict.fresh && first.verdict.pending) {
      // Pending until now, so not checked with the others before the run: check it before
      // it starts any work.
      try {
        await checkSetup(node, reason, { ...options, signal: runAbort.signal });
      } catch (error) {
        const failure = toFailure(error, runAbort.signal);
        return finish({ id, status: 'failed', reason, error: failure.message, failureKind: failure.kind, durationMs: 0, bytesHashed: account.bytes });
      }
    }
    options.observer?.nodeQueued?.(id, reason);
    const pool = first.fetch ? first.fetch.pool : node.pool;
    const release = await limits.acquire(pool, (slot) => options.observer?.nodeWaiting?.(id, { slot }));
    try {
      if (runAbort.signal.aborted) return finish({ id, status: 'cancelled', reason: 'interrupted', durationMs: 0, bytesHashed: account.bytes });
      if (stopStarting.signal.aborted) return finish({ id, status: 'skipped', reason: 'an earlier node failed', durationMs: 0, bytesHashed: account.bytes });
      const result = await runStale(node, verdict, reason, account, options, runAbort.signal, outputs, first.fetch);
      const notes = [note, result.note].filter((text) => text !== undefined);
      return finish(notes.length > 0 ? { ...result, note: notes.join('; ') } : result);
    } finally {
      release();
    }
  };

  const runNodeSafely = (id: NodeId): Promise<NodeResult> =>
    runNode(id).catch((error: unknown) => {
      const failure = toFailure(error, runAbort.signal);
      const status = runAbort.signal.aborted ? 'cancelled' : 'failed';
      return finish({
        id,
        status,
        reason: 'could not be assessed',
        error: failure.message,
        failureKind: status === 'cancelled' ? 'cancelled' : failure.kind,
        durationMs: 0,
        bytesHashed: 0,
      });
    });
  /**
   * A node the plan found fresh whose dependencies all finished fresh: nothing to wait for
   * or assess again, so it finishes here, in order, as `runNode` would finish it. On a
   * no-op run every node does, with no promise chain per node.
   */
  const settledFresh = (id: NodeId): Promise<NodeResult> | undefined => {
    const entry = initialVerdicts.get(id)!;
    const { verdict } = entry;
    if (!verdict.fresh || verdict.adopt || entry.probeError !== undefined || runAbort.signal.aborted || stopStarting.signal.aborted) return undefined;
    const deps = entry.detached ? [] : graph.node(id).deps;
    if (!deps.every((dep) => results.get(dep)?.status === 'fresh')) return undefined;
    outputs.set(id, verdict.outputDigest);
    const note = entry.note ? { note: entry.note } : {};
    return Promise.resolve(finish({ id, status: 'fresh', reason: verdict.reason, durationMs: 0, bytesHashed: entry.bytesHashed, ...note }));
  };
  for (const id of closure) finished.set(id, settledFresh(id) ?? runNodeSafely(id));
  try {
    await Promise.all(finished.values());
  } finally {
    options.signal.removeEventListener('abort', onOuterAbort);
  }
  return closure.map((id) => results.get(id)!);
}

async function runStale(
  node: NodeDef,
  verdict: Extract<Verdict, { fresh: false }>,
  reason: string,
  account: { bytes: number },
  options: RunOptions,
  signal: AbortSignal,
  outputs: Map<NodeId, string | undefined>,
  fetch?: RemoteHit,
): Promise<NodeResult> {
  const startedAt = Date.now();
  const logFile = join(options.logDir, `${logStem(node.id, node.logName)}.${timestamp(startedAt)}.log`);
  options.observer?.nodeStarted?.(node.id, reason);
  const context = createTaskContext({
    id: node.id,
    root: options.root,
    logFile,
    signal,
    hasher: options.hasher,
    force: options.force && node.honorsForce !== false,
    flags: options.flags,
    onStatus: (text) => options.observer?.nodeStatus?.(node.id, text),
    onLog: (line) => options.observer?.nodeLog?.(node.id, line),
    onProgress: (done, total, unit) => options.observer?.nodeProgress?.(node.id, done, total, unit),
    onBeginCommit: () => forgetRecord(node, options),
  });
  const base = { id: node.id, reason, startedAt };
  try {
    // Phases a failure interrupts end with the node (observers close them at its end).
    options.observer?.nodePhase?.(node.id, 'run', 'begin');
    const fetched = fetch ? await fetch.fetch(context) : undefined;
    const outcome = fetch ? undefined : await node.run(context);
    signal.throwIfAborted();
    options.observer?.nodePhase?.(node.id, 'run', 'end');
    // A multi-GB output takes seconds to hash: show it like any other byte progress.
    options.observer?.nodePhase?.(node.id, 'hash', 'begin');
    let hashing: string | undefined;
    const hashed = await hashOutputs(node, { root: options.root, hasher: options.hasher, account, observe: true }, (path, done, total) => {
      if (hashing !== path) options.observer?.nodeStatus?.(node.id, `hashing ${(hashing = path)}`);
      options.observer?.nodeProgress?.(node.id, done, total);
    });
    if (typeof hashed === 'string') throw new Error(`finished without producing its outputs: ${hashed}`);
    options.observer?.nodePhase?.(node.id, 'hash', 'end');
    options.observer?.nodePhase?.(node.id, 'record', 'begin');
    let manifest = verdict.manifest!;
    let fingerprint = verdict.fingerprint!;
    if (node.probe) {
      // The node may have changed what it probes (an upload puts the remote checksum in
      // place): record the state it left, so the next run finds it fresh.
      const after = await runProbe(node, options);
      if (after && after.value !== manifest.probe) {
        manifest = { ...manifest, probe: after.value };
        fingerprint = await fingerprintOf(manifest);
      }
    }
    const outputDigest = await outputDigestOf(hashed, fingerprint);
    await writeStamp(options.stateDir, node.id, {
      version: 1,
      fingerprint,
      manifest,
      outputs: hashed,
      outputDigest,
      finishedAt: new Date().toISOString(),
    });
    // A fetch that fell back to running the node made its outputs from the inputs here.
    const key = fetched?.fetched === false && node.key ? await node.key.compute(options.hasher, options.root) : verdict.key;
    if (node.key && key !== undefined) {
      // Written last: its presence with the right value is what marks the build good.
      const keyPath = resolve(options.root, node.key.path);
      await mkdir(dirname(keyPath), { recursive: true });
      await writeFileAtomic(keyPath, `${key}\n`);
    }
    outputs.set(node.id, outputDigest);
    options.observer?.nodePhase?.(node.id, 'record', 'end');
    await context.close();
    const finishedAt = Date.now();
    const logged = await fileExists(logFile);
    const said = fetched?.fetched === false ? fetched.note : outcome ? outcome.note : undefined;
    const note = said !== undefined ? { note: said } : {};
    return { ...base, status: 'ran', durationMs: finishedAt - startedAt, finishedAt, bytesHashed: account.bytes, ...(logged ? { logFile } : {}), ...note };
  } catch (error) {
    await context.removeTemps();
    await context.close();
    const finishedAt = Date.now();
    const cancelled = signal.aborted;
    const logTail = await tail(logFile);
    return {
      ...base,
      status: cancelled ? 'cancelled' : 'failed',
      reason: cancelled ? 'interrupted' : reason,
      durationMs: finishedAt - startedAt,
      finishedAt,
      bytesHashed: account.bytes,
      error: cancelled ? 'interrupted' : toFailure(error).message,
      failureKind: cancelled ? 'cancelled' : toFailure(error).kind,
      ...(logTail.length > 0 ? { logFile, logTail } : {}),
    };
  }
}

/** Outputs that another tool built with a matching key file: record them as ours. */
async function recordAdoption(node: NodeDef, verdict: Extract<Verdict, { adopt: true }>, options: RunOptions): Promise<void> {
  const hashed = await hashOutputs(node, { root: options.root, hasher: options.hasher, account: { bytes: 0 } });
  if (typeof hashed === 'string') return;
  await writeStamp(options.stateDir, node.id, {
    version: 1,
    fingerprint: verdict.fingerprint,
    manifest: verdict.manifest,
    outputs: hashed,
    outputDigest: verdict.outputDigest,
    finishedAt: new Date().toISOString(),
  });
}

async function forgetRecord(node: NodeDef, options: RunOptions): Promise<void> {
  await removeStamp(options.stateDir, node.id);
  if (node.key) await rm(resolve(options.root, node.key.path), { force: true });
}

async function tail(path: string): Promise<string[]> {
  try {
    const lines = (await readFile(path, 'utf8')).split('\n').filter((line) => line.length > 0);
    return lines.slice(-LOG_TAIL_LINES);
  } catch {
    return [];
  }
}

function timestamp(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace('T', '-').replace(/\..*$/, '');
}
