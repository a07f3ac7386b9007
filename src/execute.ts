// Execution of a plan (plan.ts), as Ninja's `Builder` runs its `Plan`: stale nodes start as
// soon as their dependencies finish, bounded by --jobs and pools. A node planned before
// its dependencies ran is assessed again once they have, so a dependency rebuilt to
// identical output lets it stay fresh (early cutoff), and its setup checks run only if it
// must run.
import { existsSync, mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assess, type StaleVerdict, type Verdict } from './assess.ts';
import { type FailureKind, toFailure } from './failure.ts';
import { logStem } from './file-stem.ts';
import { hashOutputs } from './fingerprint.ts';
import type { Graph } from './graph.ts';
import { Limits } from './limits.ts';
import { assessContext, type PlanEntry, type PlanOptions, type RemoteHit, runProbe } from './plan.ts';
import { checkSetup, setupFailureOf } from './preflight.ts';
import type { Reason } from './reason.ts';
import { forgetRecord, recordAdoption, recordRun } from './record.ts';
import { reasonText } from './report/reason-text.ts';
import { stampsDir } from './stamp.ts';
import { createTaskContext, type OwnedTaskContext } from './task-context.ts';
import type { NodeDef, NodeId, ProbeResult, ProcessRunner } from './types.ts';

/** `adopted`: outputs another tool made, checked by the node's kind and recorded as ours. */
export type NodeStatus = 'ran' | 'fresh' | 'adopted' | 'failed' | 'skipped' | 'cancelled';

export interface NodeResult {
  readonly id: NodeId;
  readonly status: NodeStatus;
  /** Why it ran, or why it was fresh, skipped or failed. */
  readonly reason: Reason;
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

export interface RunOptions extends PlanOptions {
  readonly logDir: string;
  readonly jobs: number;
  readonly pools: Readonly<Record<string, number>>;
  readonly keepGoing: boolean;
  /** What tasks start programs with (TaskContext.exec); default `execFile`. */
  readonly runProcess?: ProcessRunner;
}

const LOG_TAIL_LINES = 20;
const INTERRUPTED: Reason = Object.freeze({ code: 'interrupted' });
const EARLIER_FAILURE: Reason = Object.freeze({ code: 'earlier-failure' });

/** Runs the planned nodes (see `plan`; `preflight` should have passed). */
export function execute(graph: Graph, options: RunOptions, planned: readonly PlanEntry[]): Promise<NodeResult[]> {
  return new Execution(graph, options, planned).run();
}

class Execution {
  private readonly entries: ReadonlyMap<NodeId, PlanEntry>;
  private readonly limits: Limits;
  /** Output digests of finished nodes; undefined for those that failed or did not run. */
  private readonly outputs = new Map<NodeId, string | undefined>();
  private readonly results = new Map<NodeId, NodeResult>();
  private readonly finished = new Map<NodeId, Promise<NodeResult>>();
  /** Aborted by a failure without --keep-going: nodes not yet started are skipped. */
  private readonly stopStarting = new AbortController();
  /** Aborted by the caller's signal: running nodes are stopped, the rest cancelled. */
  private readonly runAbort = new AbortController();

  constructor(
    private readonly graph: Graph,
    private readonly options: RunOptions,
    private readonly planned: readonly PlanEntry[],
  ) {
    this.entries = new Map(planned.map((entry) => [entry.id, entry] as const));
    this.limits = new Limits(options.jobs, options.pools);
  }

  async run(): Promise<NodeResult[]> {
    const { signal } = this.options;
    const onOuterAbort = (): void => this.runAbort.abort(signal.reason);
    signal.addEventListener('abort', onOuterAbort, { once: true });
    mkdirSync(stampsDir(this.options.stateDir), { recursive: true });
    for (const { id } of this.planned) this.finished.set(id, this.settledFresh(id) ?? this.runNodeSafely(id));
    try {
      await Promise.all(this.finished.values());
    } finally {
      signal.removeEventListener('abort', onOuterAbort);
    }
    return this.planned.map(({ id }) => this.results.get(id)!);
  }

  private finish(result: NodeResult): NodeResult {
    this.results.set(result.id, result);
    this.options.observer?.nodeFinished?.(result);
    // A machine that is not ready stops the run whatever --keep-going says, as it would
    // have before any work had it been known then.
    if (result.status === 'failed' && (!this.options.keepGoing || setupFailureOf([result]))) this.stopStarting.abort();
    return result;
  }

  /**
   * A node the plan found fresh whose dependencies all finished fresh: nothing to wait for
   * or assess again, so it finishes here, in order, as `runNode` would finish it. On a
   * no-op run every node does, with no promise chain per node.
   */
  private settledFresh(id: NodeId): Promise<NodeResult> | undefined {
    const entry = this.entries.get(id)!;
    const { verdict } = entry;
    if (!verdict.fresh || verdict.adopt || entry.probeError !== undefined || this.runAbort.signal.aborted || this.stopStarting.signal.aborted) return undefined;
    const deps = entry.detached ? [] : this.graph.node(id).deps;
    if (!deps.every((dep) => this.results.get(dep)?.status === 'fresh')) return undefined;
    this.outputs.set(id, verdict.outputDigest);
    const note = entry.note ? { note: entry.note } : {};
    return Promise.resolve(this.finish({ id, status: 'fresh', reason: verdict.reason, durationMs: 0, bytesHashed: entry.bytesHashed, ...note }));
  }

  private runNodeSafely(id: NodeId): Promise<NodeResult> {
    return this.runNode(id).catch((error: unknown) => {
      const failure = toFailure(error, this.runAbort.signal);
      const cancelled = this.runAbort.signal.aborted;
      return this.finish({
        id,
        status: cancelled ? 'cancelled' : 'failed',
        reason: { code: 'assess-failed' },
        error: failure.message,
        failureKind: cancelled ? 'cancelled' : failure.kind,
        durationMs: 0,
        bytesHashed: 0,
      });
    });
  }

  private async runNode(id: NodeId): Promise<NodeResult> {
    const node = this.graph.node(id);
    const entry = this.entries.get(id)!;
    const deps = entry.detached ? [] : node.deps;
    const unfinished = deps.filter((dep) => !this.results.has(dep));
    if (unfinished.length > 0) this.options.observer?.nodeWaiting?.(id, { dependencies: unfinished });
    const depResults = await Promise.all(deps.map((dep) => this.finished.get(dep)!));
    const notStarting = this.notStarting(id, depResults, 0);
    if (notStarting) return this.finish(notStarting);
    if (entry.probeError !== undefined) {
      const { message, kind } = entry.probeError;
      return this.finish({ id, status: 'failed', reason: entry.verdict.reason, error: message, failureKind: kind, durationMs: 0, bytesHashed: 0 });
    }
    const account = { bytes: entry.bytesHashed };
    const depsRan = depResults.some((dep) => dep.status === 'ran');
    const { verdict, note } = await this.currentVerdict(node, entry, depsRan, account);
    const noted = note ? { note } : {};
    if (verdict.fresh) {
      this.outputs.set(id, verdict.outputDigest);
      const extra = { durationMs: 0, bytesHashed: account.bytes, ...noted };
      if (verdict.adopt) {
        await recordAdoption(node, verdict, this.options);
        return this.finish({ id, status: 'adopted', reason: verdict.reason, ...extra });
      }
      const reason: Reason = depsRan && !entry.verdict.fresh ? { code: 'dependencies-unchanged' } : verdict.reason;
      return this.finish({ id, status: 'fresh', reason, ...extra });
    }
    if (!entry.verdict.fresh && entry.verdict.pending) {
      // Pending until now, so not checked with the others before the run: check it before
      // it starts any work.
      try {
        await checkSetup(node, verdict.reason, { ...this.options, signal: this.runAbort.signal });
      } catch (error) {
        const failure = toFailure(error, this.runAbort.signal);
        return this.finish({
          id,
          status: 'failed',
          reason: verdict.reason,
          error: failure.message,
          failureKind: failure.kind,
          durationMs: 0,
          bytesHashed: account.bytes,
        });
      }
    }
    return this.runWhenFree(node, verdict, account, { ...noted, ...(entry.fetch ? { fetch: entry.fetch } : {}) });
  }

  /** Why the node does not start (a dependency did not finish well, Ctrl-C, an earlier failure), or undefined when it may. */
  private notStarting(id: NodeId, depResults: readonly NodeResult[], bytesHashed: number): NodeResult | undefined {
    const blocked = depResults.find((dep) => dep.status !== 'ran' && dep.status !== 'fresh' && dep.status !== 'adopted');
    if (blocked) {
      const status = blocked.status === 'cancelled' || this.runAbort.signal.aborted ? 'cancelled' : 'skipped';
      const code = blocked.status === 'failed' ? 'dependency-failed' : blocked.status === 'cancelled' ? 'dependency-cancelled' : 'dependency-skipped';
      return { id, status, reason: { code, id: blocked.id }, durationMs: 0, bytesHashed: 0 };
    }
    if (this.runAbort.signal.aborted) return { id, status: 'cancelled', reason: INTERRUPTED, durationMs: 0, bytesHashed };
    if (this.stopStarting.signal.aborted) return { id, status: 'skipped', reason: EARLIER_FAILURE, durationMs: 0, bytesHashed };
    return undefined;
  }

  /**
   * The node's verdict now that its dependencies have finished: the plan's, unless it was
   * planned while one was still to run (then assessed again, its probe read again if the
   * dependencies ran since, as a build can take an hour and upstream may have moved).
   */
  private async currentVerdict(
    node: NodeDef,
    entry: PlanEntry,
    depsRan: boolean,
    account: { bytes: number },
  ): Promise<{ verdict: Verdict; note: string | undefined }> {
    const deps = entry.detached ? [] : node.deps;
    const plannedBlind = deps.some((dep) => !this.entries.get(dep)!.verdict.fresh);
    if (!plannedBlind) return { verdict: entry.verdict, note: entry.note };
    const { observer } = this.options;
    let note = entry.note;
    let probe: ProbeResult | undefined = entry.probeValue !== undefined ? { value: entry.probeValue, ...(note ? { note } : {}) } : undefined;
    if (node.probe && (probe === undefined || depsRan)) {
      observer?.nodePhase?.(node.id, 'probe', 'begin');
      probe = await runProbe(node, this.options);
      observer?.nodePhase?.(node.id, 'probe', 'end');
      note = probe?.note;
    }
    observer?.nodePhase?.(node.id, 'hash', 'begin');
    const verdict = await assess(node, assessContext(this.options, node, { depOutputs: this.outputs, probe, account }));
    observer?.nodePhase?.(node.id, 'hash', 'end');
    return { verdict, note };
  }

  /** Runs the stale node once a slot of its pool (and of --jobs) is free. */
  private async runWhenFree(
    node: NodeDef,
    verdict: StaleVerdict,
    account: { bytes: number },
    extra: { readonly note?: string; readonly fetch?: RemoteHit },
  ): Promise<NodeResult> {
    const { observer } = this.options;
    observer?.nodeQueued?.(node.id, verdict.reason);
    const pool = extra.fetch ? extra.fetch.pool : node.pool;
    const release = await this.limits.acquire(pool, (slot) => observer?.nodeWaiting?.(node.id, { slot }));
    try {
      const notStarting = this.notStarting(node.id, [], account.bytes);
      if (notStarting) return this.finish(notStarting);
      const result = await this.runTask(node, verdict, account, extra.fetch);
      const notes = [extra.note, result.note].filter((text) => text !== undefined);
      return this.finish(notes.length > 0 ? { ...result, note: notes.join('; ') } : result);
    } finally {
      release();
    }
  }

  /** Runs the node's task (or fetches its outputs from a remote cache), then records what it made. */
  private async runTask(node: NodeDef, verdict: StaleVerdict, account: { bytes: number }, fetch: RemoteHit | undefined): Promise<NodeResult> {
    const { observer } = this.options;
    const startedAt = Date.now();
    const logFile = join(this.options.logDir, `${logStem(node.id, node.logName)}.${timestamp(startedAt)}.log`);
    observer?.nodeStarted?.(node.id, verdict.reason);
    const context = this.taskContext(node, logFile);
    const base = { id: node.id, reason: verdict.reason, startedAt };
    try {
      // Phases a failure interrupts end with the node (observers close them at its end).
      observer?.nodePhase?.(node.id, 'run', 'begin');
      const fetched = fetch ? await fetch.fetch(context) : undefined;
      const outcome = fetch ? undefined : await node.run(context);
      this.runAbort.signal.throwIfAborted();
      observer?.nodePhase?.(node.id, 'run', 'end');
      // A fetch that fell back to running the node made its outputs from the inputs here.
      await this.recordMade(node, verdict, account, fetched?.fetched === false);
      await context.close();
      const finishedAt = Date.now();
      const logged = existsSync(logFile) ? { logFile } : {};
      const said = fetched?.fetched === false ? fetched.note : outcome ? outcome.note : undefined;
      const note = said !== undefined ? { note: said } : {};
      return { ...base, status: 'ran', durationMs: finishedAt - startedAt, finishedAt, bytesHashed: account.bytes, ...logged, ...note };
    } catch (error) {
      await context.removeTemps();
      await context.close();
      const finishedAt = Date.now();
      const cancelled = this.runAbort.signal.aborted;
      const failure = toFailure(error);
      const logTail = await tail(logFile);
      return {
        ...base,
        status: cancelled ? 'cancelled' : 'failed',
        reason: cancelled ? INTERRUPTED : verdict.reason,
        durationMs: finishedAt - startedAt,
        finishedAt,
        bytesHashed: account.bytes,
        error: cancelled ? 'interrupted' : failure.message,
        failureKind: cancelled ? 'cancelled' : failure.kind,
        ...(logTail.length > 0 ? { logFile, logTail } : {}),
      };
    }
  }

  /** What the node's run sees: its log, its status and progress (through the observer), the run's signal and flags. */
  private taskContext(node: NodeDef, logFile: string): OwnedTaskContext {
    const { options } = this;
    const { observer } = options;
    return createTaskContext({
      id: node.id,
      root: options.root,
      logFile,
      signal: this.runAbort.signal,
      hasher: options.hasher,
      force: options.force && node.honorsForce !== false,
      flags: options.flags,
      onStatus: (text) => observer?.nodeStatus?.(node.id, text),
      onLog: (line) => observer?.nodeLog?.(node.id, line),
      onProgress: (done, total, unit) => observer?.nodeProgress?.(node.id, done, total, unit),
      onBeginCommit: () => forgetRecord(node, options),
      ...(options.runProcess ? { runProcess: options.runProcess } : {}),
    });
  }

  /**
   * Hashes what the node made and records the run: its stamp, its probe's value and its key
   * (computed again from the inputs here when `ranHere` replaced a fetch the plan expected).
   */
  private async recordMade(node: NodeDef, verdict: StaleVerdict, account: { bytes: number }, ranHere: boolean): Promise<void> {
    const { options } = this;
    const outputs = await this.hashMadeOutputs(node, account);
    options.observer?.nodePhase?.(node.id, 'record', 'begin');
    const key = ranHere && node.key ? await node.key.compute(options.hasher, options.root) : verdict.key;
    const probe = node.probe ? await runProbe(node, options) : undefined;
    const outputDigest = await recordRun(node, { manifest: verdict.manifest!, fingerprint: verdict.fingerprint! }, outputs, { probe, key }, options);
    this.outputs.set(node.id, outputDigest);
    options.observer?.nodePhase?.(node.id, 'record', 'end');
  }

  /** The digests of what the node made; a multi-GB output takes seconds to hash, shown like any other byte progress. */
  private async hashMadeOutputs(node: NodeDef, account: { bytes: number }): Promise<Record<string, string>> {
    const { observer } = this.options;
    observer?.nodePhase?.(node.id, 'hash', 'begin');
    let hashing: string | undefined;
    const hashed = await hashOutputs(node, { root: this.options.root, hasher: this.options.hasher, account, observe: true }, (path, done, total) => {
      if (hashing !== path) observer?.nodeStatus?.(node.id, `hashing ${(hashing = path)}`);
      observer?.nodeProgress?.(node.id, done, total);
    });
    if ('missing' in hashed) throw new Error(`finished without producing its outputs: ${reasonText(hashed.missing)}`);
    observer?.nodePhase?.(node.id, 'hash', 'end');
    return hashed.digests;
  }
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
