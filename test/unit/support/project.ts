// A project for in-process engine tests, in the manner of Ninja's build_test.cc: nodes are
// declared in the test, and their `run` is the test's own code (the fake command runner)
// that writes their outputs and records that it ran. Planning and execution are called
// directly, as a session calls them, in a temp directory: no CLI, no child process.
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { verdictStatus } from '../../../src/assess.ts';
import { execute, type NodeResult, type RunOptions } from '../../../src/execute.ts';
import { Graph } from '../../../src/graph.ts';
import { StatCache } from '../../../src/hasher.ts';
import type { RunObserver } from '../../../src/observer.ts';
import { type PlanEntry, plan } from '../../../src/plan.ts';
import { preflight } from '../../../src/preflight.ts';
import type { Reason } from '../../../src/reason.ts';
import { readStampIndex, refreshStampIndex } from '../../../src/stamp-index.ts';
import type { NodeDef, TaskContext } from '../../../src/types.ts';

/** A node as a test declares it: what it reads, what it writes, and what its run does. */
export interface StepSpec extends Partial<Omit<NodeDef, 'id' | 'run'>> {
  /**
   * The text of each output, from what the node read (its `files` and its dependencies'
   * outputs, each `path=content`): by default the node's id and that text, so an output
   * changes exactly when something it reads does.
   */
  readonly make?: (read: string) => string;
  /** Runs instead of writing the outputs (to fail, wait for a signal, or count). */
  readonly run?: (context: TaskContext) => Promise<void>;
}

export interface RunSettings {
  readonly force?: boolean;
  readonly keepGoing?: boolean;
  readonly jobs?: number;
  readonly pools?: Readonly<Record<string, number>>;
  readonly flags?: Readonly<Record<string, boolean | string | undefined>>;
  readonly signal?: AbortSignal;
  readonly observer?: RunObserver;
}

export class UnitProject {
  /** Ids of the nodes whose run was called, in the order they were. */
  readonly ran: string[] = [];
  readonly stateDir: string;
  /** The project's stat cache, kept between runs as a session's file keeps it. */
  readonly hasher: Promise<StatCache> = StatCache.open();

  private constructor(readonly root: string) {
    this.stateDir = join(root, '.pipeline');
  }

  /** A temp directory holding `files` (path relative to the root -> text), removed when the test ends. */
  static create(t: ExecutionContext, files: Readonly<Record<string, string>> = {}): UnitProject {
    const project = new UnitProject(mkdtempSync(join(tmpdir(), 'pipeline-unit-')));
    t.teardown(() => rmSync(project.root, { recursive: true, force: true }));
    for (const [path, text] of Object.entries(files)) project.write(path, text);
    return project;
  }

  path(relative: string): string {
    return join(this.root, relative);
  }

  write(relative: string, text: string): void {
    mkdirSync(dirname(this.path(relative)), { recursive: true });
    writeFileSync(this.path(relative), text);
  }

  read(relative: string): string {
    return readFileSync(this.path(relative), 'utf8');
  }

  remove(relative: string): void {
    rmSync(this.path(relative), { force: true });
  }

  exists(relative: string): boolean {
    return statSync(this.path(relative), { throwIfNoEntry: false }) !== undefined;
  }

  /** A node whose run writes its outputs from what it reads (see `StepSpec.make`) and records that it ran. */
  node(id: string, spec: StepSpec = {}): NodeDef {
    const { make, run, ...rest } = spec;
    const node: NodeDef = {
      kind: 'test',
      deps: [],
      ...rest,
      id,
      run: async (context) => {
        this.ran.push(id);
        if (run) return run(context);
        const read = [...(node.files ?? []), ...node.deps.flatMap((dep) => this.outputsOf.get(dep) ?? [])]
          .map((path) => `${path}=${this.read(path)}`)
          .join('\n');
        for (const output of node.outputs ?? []) {
          const temp = context.tempPath(this.path(output));
          mkdirSync(dirname(temp), { recursive: true });
          writeFileSync(temp, make ? make(read) : `${id}\n${read}`);
          await context.beginCommit();
          renameSync(temp, this.path(output));
        }
      },
    };
    this.outputsOf.set(id, node.outputs ?? []);
    return node;
  }

  private readonly outputsOf = new Map<string, readonly string[]>();

  /** The plan for `targets` (all nodes when none), as `--dry-run` sees it. */
  async plan(graph: Graph, targets: readonly string[] = [...graph.nodes.keys()], settings: RunSettings = {}): Promise<PlanEntry[]> {
    const selected = graph.resolveTargets(targets);
    return plan(graph, graph.closure(selected), await this.options(settings), selected);
  }

  /**
   * Runs `targets` as a session does: the stamp index read, the plan, the setup checks,
   * the execution, the stamp index made again. A setup failure is thrown.
   */
  async run(graph: Graph, targets: readonly string[] = [...graph.nodes.keys()], settings: RunSettings = {}): Promise<NodeResult[]> {
    const selected = graph.resolveTargets(targets);
    const stampIndex = readStampIndex(this.stateDir);
    const options = await this.options(settings);
    const planned = await plan(graph, graph.closure(selected), stampIndex ? { ...options, stampIndex } : options, selected);
    await preflight(graph, planned, options);
    const results = await execute(graph, options, planned);
    await refreshStampIndex(this.stateDir, stampIndex);
    return results;
  }

  private async options(settings: RunSettings): Promise<RunOptions> {
    return {
      root: this.root,
      stateDir: this.stateDir,
      logDir: this.path('logs'),
      hasher: await this.hasher,
      jobs: settings.jobs ?? 4,
      pools: settings.pools ?? {},
      force: settings.force ?? false,
      keepGoing: settings.keepGoing ?? false,
      flags: settings.flags ?? {},
      signal: settings.signal ?? new AbortController().signal,
      ...(settings.observer ? { observer: settings.observer } : {}),
    };
  }
}

export function graphOf(nodes: readonly NodeDef[], aliases: Readonly<Record<string, readonly string[]>> = {}): Graph {
  return new Graph(nodes, aliases);
}

/** Each node's status and reason, by id: what most tests compare. */
export function verdicts(entries: readonly PlanEntry[]): Record<string, { status: string; why: Reason }> {
  return Object.fromEntries(entries.map((entry) => [entry.id, { status: verdictStatus(entry.verdict), why: entry.verdict.reason }]));
}

/** Each node's run status and reason, by id. */
export function outcomes(results: readonly NodeResult[]): Record<string, { status: string; why: Reason }> {
  return Object.fromEntries(results.map((result) => [result.id, { status: result.status, why: result.reason }]));
}
