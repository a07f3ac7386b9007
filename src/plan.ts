// Planning: a verdict for every node of the selected targets' closure before anything
// runs (Ninja's `Plan`, apart from its `Builder`: execute.ts). --dry-run, explain and
// `plan --json` print the plan; a run executes it.
import { existsSync } from 'node:fs';
import { type AssessContext, assess, assessDetached, type Verdict } from './assess.ts';
import { Failure, isFailure, toFailure } from './failure.ts';
import type { Graph } from './graph.ts';
import type { Mutable } from './mutable.ts';
import type { RunObserver } from './observer.ts';
import { SETUP_KINDS } from './preflight.ts';
import { quickAssessor, type RecordedLookup } from './quick-check.ts';
import type { Reason } from './reason.ts';
import { readStamp } from './stamp.ts';
import { readStampIndex, type StampSnapshot } from './stamp-index.ts';
import type { FileHasher, NodeDef, NodeId, ProbeResult, RemoteLookup } from './types.ts';
import { resolveUnder } from './under-root.ts';

/** What planning reads and who hears about it. */
export interface PlanOptions {
  readonly root: string;
  readonly stateDir: string;
  readonly hasher: FileHasher;
  readonly force: boolean;
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

/** Evaluates the node's probe, telling it the value its last successful run recorded. */
export async function runProbe(node: NodeDef, options: Pick<PlanOptions, 'root' | 'stateDir' | 'flags' | 'signal'>): Promise<ProbeResult | undefined> {
  if (!node.probe) return undefined;
  const previous = readStamp(options.stateDir, node.id)?.manifest.probe;
  return node.probe({ root: options.root, flags: options.flags, signal: options.signal, previous });
}

/** The context `assess` reads for a node: the run's settings and what is known so far. */
export function assessContext(
  options: PlanOptions,
  node: NodeDef,
  known: Pick<AssessContext, 'depOutputs' | 'probe' | 'account'> & Partial<Pick<AssessContext, 'unsettledFiles' | 'inputDigests' | 'recorded'>>,
): AssessContext {
  return {
    root: options.root,
    stateDir: options.stateDir,
    hasher: options.hasher,
    forced: options.force && node.honorsForce !== false,
    flags: options.flags,
    signal: options.signal,
    depOutputs: known.depOutputs,
    probe: known.probe,
    account: known.account,
    unsettledFiles: known.unsettledFiles,
    inputDigests: known.inputDigests,
    recorded: known.recorded,
  };
}

/** What planning has learnt so far, shared by the nodes of one plan. */
interface Planning {
  readonly graph: Graph;
  readonly options: PlanOptions;
  /** Output digests of nodes planned fresh; undefined for those that will or may run. */
  readonly outputs: Map<NodeId, string | undefined>;
  /** Outputs of nodes that will or may run: their content is not known yet. */
  readonly unsettledFiles: Set<string>;
  readonly inputDigests: ReadonlyMap<string, string>;
  readonly recorded: RecordedLookup | undefined;
  readonly quickAssess: Awaited<ReturnType<typeof quickAssessor>>;
}

/**
 * Assesses every node of the closure, level by level. A node whose dependencies may run
 * is assessed on what is its own (stale when it will run whatever they produce, pending
 * otherwise); the runner assesses it again once they have run. The entries are the nodes
 * the run needs for `selected` (default: the whole closure): the closure less the
 * dependencies only detached nodes have.
 */
export async function plan(graph: Graph, closure: readonly NodeId[], options: PlanOptions, selected?: readonly NodeId[]): Promise<PlanEntry[]> {
  const planning: Planning = {
    graph,
    options,
    outputs: new Map(),
    unsettledFiles: new Set(),
    inputDigests: checkInputFiles(graph, closure, options.root, options.hasher),
    recorded: (options.stampIndex ?? readStampIndex(options.stateDir))?.recorded,
    quickAssess: await quickAssessor(),
  };
  const byId = new Map<NodeId, PlanEntry>();
  // Nodes of one depth depend only on shallower ones: each level is assessed concurrently
  // (stamp reads, stats and upstream probes overlap), the levels in order.
  for (const level of depthLevels(graph, closure)) {
    const entries = await Promise.all(level.map((id) => planNode(planning, id)));
    for (const entry of entries) {
      byId.set(entry.id, entry);
      planning.outputs.set(entry.id, entry.verdict.fresh ? entry.verdict.outputDigest : undefined);
      if (!entry.verdict.fresh) for (const file of graph.node(entry.id).outputs ?? []) planning.unsettledFiles.add(file);
    }
  }
  const needed = neededNodes(graph, closure, selected ?? closure, byId);
  return closure.filter((id) => needed.has(id)).map((id) => byId.get(id)!);
}

async function planNode(planning: Planning, id: NodeId): Promise<PlanEntry> {
  const { options, outputs } = planning;
  const node = planning.graph.node(id);
  const account = { bytes: 0 };
  const probed = node.probe ? await probeAtPlanning(node, planning) : NOT_PROBED;
  if ('probeError' in probed) return { id, verdict: { fresh: false, pending: false, reason: probed.reason }, bytesHashed: 0, probeError: probed.probeError };
  const { probe } = probed;
  const { unsettledFiles, inputDigests, recorded } = planning;
  const context = assessContext(options, node, { depOutputs: outputs, probe, account, unsettledFiles, inputDigests, recorded });
  // The quick check only looks up stats and the stamp; hashing is the slow path's.
  let verdict = planning.quickAssess(node, context);
  if (!verdict) {
    options.observer?.nodePhase?.(id, 'hash', 'begin');
    verdict = await assess(node, context);
    options.observer?.nodePhase?.(id, 'hash', 'end');
  }
  const notes = probe?.note ? [probe.note] : [];
  // A remote copy of what the inputs make now stands in for the dependencies' work.
  let fetch: RemoteHit | undefined;
  let detached = false;
  if (node.remoteCache && !verdict.fresh && !context.forced) {
    const lookup = await node.remoteCache.lookup({ root: options.root, flags: options.flags, signal: options.signal });
    if (lookup.note) notes.push(lookup.note);
    if (lookup.hit) {
      detached = true;
      verdict = await assessDetached(node, context, lookup);
      if (!verdict.fresh) fetch = lookup;
    }
  }
  // Field by field, not with conditional spreads: this runs for every node of every plan.
  const entry: Mutable<PlanEntry> = { id, verdict, bytesHashed: account.bytes };
  if (notes.length > 0) entry.note = notes.join('; ');
  if (probe) entry.probeValue = probe.value;
  if (detached) entry.detached = detached;
  if (fetch) entry.fetch = fetch;
  return entry;
}

type Probed = { readonly probe: ProbeResult | undefined } | { readonly probeError: Failure; readonly reason: Reason };

const NOT_PROBED: Probed = { probe: undefined };

/**
 * The node's probe, evaluated now unless it may read what a dependency still to run makes
 * (then the runner evaluates it before the node runs). A probe that fails for a setup
 * reason (no token, a bad URL) stops the plan; any other failure fails the node alone.
 */
async function probeAtPlanning(node: NodeDef, planning: Planning): Promise<Probed> {
  const { options, outputs } = planning;
  const waiting = node.deps.some((dep) => outputs.get(dep) === undefined);
  if (waiting && node.probeIndependent !== true) return NOT_PROBED;
  try {
    options.observer?.nodePhase?.(node.id, 'probe', 'begin');
    const probe = await runProbe(node, options);
    options.observer?.nodePhase?.(node.id, 'probe', 'end');
    return { probe };
  } catch (error) {
    // Setup problems stop the run before any work, with exit 2.
    if (isFailure(error, ...SETUP_KINDS)) throw error.prefixed(node.id);
    const failure = toFailure(error, options.signal);
    return { probeError: failure, reason: { code: 'probe-failed', message: failure.message } };
  }
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
