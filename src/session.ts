// A loaded project: config, graph, state directories and the stat cache, plus running
// targets under the tree lock with the chosen renderer.
import { availableParallelism } from 'node:os';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { loadConfig } from './config.ts';
import { ownRunDir, removeAbandonedRunDirs, removeAbandonedTemps } from './debris.ts';
import { Graph, withFamilyTargets } from './graph.ts';
import { StatCache } from './hasher.ts';
import { acquireLock, type LockOptions } from './lock.ts';
import type { Reporter } from './report/reporter.ts';
import { execute, type NodeResult, type RunOptions } from './execute.ts';
import { plan, type PlanEntry } from './plan.ts';
import { preflight, setupFailureOf } from './preflight.ts';
import { recordOf } from './stamp.ts';
import { readStampIndex, refreshStampIndex, type StampSnapshot } from './stamp-index.ts';
import { isFailure, type EngineConfig, type NodeId } from './types.ts';
import { resolveUnder } from './under-root.ts';

/** The engine's own files in a project: stamps, the stat cache, the lock. */
const STATE_DIR = '.pipeline';

export interface RunSettings {
  readonly force: boolean;
  readonly keepGoing: boolean;
  readonly jobs: number;
  readonly wait: boolean;
  readonly flags: Readonly<Record<string, boolean | string | undefined>>;
  readonly signal: AbortSignal;
}

export class Session {
  private constructor(
    readonly configFile: string,
    readonly root: string,
    readonly config: EngineConfig,
    readonly hasher: StatCache,
  ) {}

  static async open(configFile: string): Promise<Session> {
    const root = dirname(configFile);
    const stateDir = join(root, STATE_DIR);
    const hasher = await StatCache.open(join(stateDir, 'stat-cache.json'));
    const config = await loadConfig(configFile, { root, hasher, recordOf: (id) => recordOf(stateDir, id) });
    const session = new Session(configFile, root, config, hasher);
    try {
      session.graphFor([]); // validates references and cycles now, before any work
    } catch (error) {
      if (isFailure(error, 'config')) throw error.prefixed(configFile);
      throw error;
    }
    return session;
  }

  get stateDir(): string {
    return join(this.root, STATE_DIR);
  }

  /** The config's own graph, built once: a 1,000-node graph takes milliseconds to check. */
  private baseGraph: Graph | undefined;

  /** The graph, extended by the nodes of any family targets (`upload:v1.2`) named. */
  graphFor(targets: readonly string[]): Graph {
    this.baseGraph ??= new Graph(this.config.nodes, { ...(this.config.aliases ?? {}) });
    return withFamilyTargets(this.baseGraph, this.config, targets);
  }

  /** The graph for these targets, the nodes they name, and their closure in topological order. */
  private select(targets: readonly string[]): { graph: Graph; selected: NodeId[]; closure: NodeId[] } {
    const graph = this.graphFor(targets);
    const selected = graph.resolveTargets(targets, this.familyUsages());
    return { graph, selected, closure: graph.closure(selected) };
  }

  familyUsages(): string[] {
    return Object.values(this.config.families ?? {}).map((family) => family.usage);
  }

  runOptions(settings: RunSettings, reporter?: Reporter): RunOptions {
    return {
      root: this.root,
      stateDir: this.stateDir,
      logDir: join(this.root, 'logs'),
      hasher: this.hasher,
      jobs: settings.jobs > 0 ? settings.jobs : availableParallelism(),
      pools: this.config.pools ?? {},
      force: settings.force,
      keepGoing: settings.keepGoing,
      flags: settings.flags,
      signal: settings.signal,
      ...(reporter ? { observer: reporter } : {}),
    };
  }

  async plan(targets: readonly string[], settings: RunSettings): Promise<{ graph: Graph; entries: PlanEntry[] }> {
    const { graph, selected, closure } = this.select(targets);
    const entries = await plan(graph, closure, this.runOptions(settings), selected);
    await this.hasher.save();
    return { graph, entries };
  }

  /**
   * Runs targets under the tree lock; the stat cache is saved whatever happens. A setup
   * failure (before any work, or of a pending node that turned out to run) is thrown, after
   * the reporter has shown what did run.
   */
  async run(
    targets: readonly string[],
    settings: RunSettings,
    reporter: Reporter,
    lockNotes: Pick<LockOptions, 'onWait' | 'onTakeover'>,
  ): Promise<NodeResult[]> {
    const { graph, selected, closure } = this.select(targets);
    const lock = await acquireLock(join(this.stateDir, 'lock'), { wait: settings.wait, signal: settings.signal, ...lockNotes });
    let stampIndex: StampSnapshot | undefined;
    try {
      stampIndex = readStampIndex(this.stateDir);
      // A stamps directory the index found clean, and unchanged since, holds no debris.
      await this.removeDebris(graph, { stamps: stampIndex?.clean !== true });
      const options = this.runOptions(settings, reporter);
      const started = Date.now();
      reporter.planning?.(closure);
      const startPlan = await plan(graph, closure, stampIndex ? { ...options, stampIndex } : options, selected);
      await preflight(graph, startPlan, options);
      reporter.start(startPlan);
      const results = await execute(graph, options, startPlan);
      await reporter.finish(results, Date.now() - started);
      // A pending node that turned out to run on a machine not ready for it: the same
      // one-line error and exit code as had it been known before the run.
      const setupFailure = setupFailureOf(results);
      if (setupFailure) throw setupFailure;
      return results;
    } finally {
      await this.hasher.save();
      // Still under the lock: the stamps this run wrote go into the index the next plan
      // reads. The index is only a cache: failing to write it fails nothing.
      await refreshStampIndex(this.stateDir, stampIndex, settings.signal).catch(() => undefined);
      rmSync(ownRunDir(this.stateDir), { recursive: true, force: true }); // usually absent: one failed lstat
      await lock.release();
    }
  }

  /**
   * What runs killed before they could clean up left in the tree: temp files beside the
   * nodes' outputs and in the state dir, and their scratch dirs (which may hold keys).
   * Under the lock, so no run of this tree is writing; other processes' are recognised by pid.
   */
  private async removeDebris(graph: Graph, sweep: { stamps: boolean }): Promise<void> {
    const dirs = [this.stateDir, join(this.stateDir, 'config')];
    if (sweep.stamps) dirs.push(join(this.stateDir, 'stamps'));
    for (const node of graph.nodes.values()) for (const output of node.outputs ?? []) dirs.push(dirname(resolveUnder(this.root, output)));
    await removeAbandonedTemps(dirs);
    await removeAbandonedRunDirs(this.stateDir);
  }
}
