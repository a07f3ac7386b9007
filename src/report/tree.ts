// The live tree on a TTY, drawn by listr2. The runner drives execution; listr2 only
// renders: each node that may run is a listr2 task whose body waits for the node's end.
import { Listr, type ListrDefaultRenderer, type ListrSimpleRenderer, type ListrTaskWrapper } from 'listr2';
import type { NodeResult, PlanEntry } from '../runner.ts';
import type { NodeId } from '../types.ts';
import { formatDuration, ProgressMeter } from './format.ts';
import { failureLines, summarize, summaryLine, type Reporter } from './reporter.ts';

type Task = ListrTaskWrapper<unknown, ListrDefaultRenderer, ListrSimpleRenderer>;

interface LiveNode {
  task?: Task;
  meter?: ProgressMeter;
  status?: string;
  settle?: (result: NodeResult) => void;
  result?: NodeResult;
  reason: string;
}

/** Redraws of a node's output line at most this often, so progress does not flood. */
const REDRAW_MS = 100;

export class TreeReporter implements Reporter {
  private readonly live = new Map<NodeId, LiveNode>();
  private rendering: Promise<unknown> = Promise.resolve();
  private freshCount = 0;

  constructor(private readonly write: (line: string) => void) {}

  start(plan: readonly PlanEntry[]): void {
    const mayRun = plan.filter((entry) => !entry.verdict.fresh);
    this.freshCount = plan.length - mayRun.length;
    for (const entry of plan) if (entry.note) this.write(`${entry.id}: ${entry.note}`);
    if (mayRun.length === 0) return;
    for (const entry of mayRun) this.live.set(entry.id, { reason: entry.verdict.reason });
    const list = new Listr(
      mayRun.map((entry) => ({
        title: entry.id,
        task: (_context: unknown, task: Task) => this.follow(entry.id, task),
      })),
      {
        concurrent: true,
        exitOnError: false,
        registerSignalListeners: false,
        renderer: 'default',
        rendererOptions: { collapseSubtasks: false, showErrorMessage: true, collapseErrors: false, formatOutput: 'truncate' },
      },
    );
    this.rendering = list.run().catch(() => undefined);
  }

  private follow(id: NodeId, task: Task): Promise<void> {
    const node = this.live.get(id)!;
    node.task = task;
    task.output = `waiting (${node.reason})`;
    return new Promise<void>((resolve, reject) => {
      const settle = (result: NodeResult): void => {
        switch (result.status) {
          case 'ran':
            task.title = `${id} (${formatDuration(result.durationMs)})`;
            resolve();
            break;
          case 'fresh':
            task.skip(`${id}: fresh (${result.reason})`);
            resolve();
            break;
          case 'adopted':
            task.skip(`${id}: ${result.reason}`);
            resolve();
            break;
          case 'skipped':
            task.skip(`${id}: skipped (${result.reason})`);
            resolve();
            break;
          default:
            reject(new Error(result.status === 'cancelled' ? `${id}: cancelled` : `${id}: ${result.error ?? result.reason}`));
        }
      };
      if (node.result) settle(node.result);
      else node.settle = settle;
    });
  }

  nodeStarted(id: NodeId, reason: string): void {
    const node = this.live.get(id);
    if (!node) return;
    node.reason = reason;
    if (node.task) node.task.output = reason;
  }

  nodeStatus(id: NodeId, text: string): void {
    const node = this.live.get(id);
    if (!node) return;
    node.status = text;
    this.redraw(node);
  }

  nodeProgress(id: NodeId, done: number, total: number | undefined): void {
    const node = this.live.get(id);
    if (!node) return;
    node.meter ??= new ProgressMeter();
    node.meter.update(done, total);
    this.redraw(node);
  }

  private readonly lastRedraw = new WeakMap<LiveNode, number>();
  private redraw(node: LiveNode): void {
    const now = Date.now();
    if (!node.task || now - (this.lastRedraw.get(node) ?? 0) < REDRAW_MS) return;
    this.lastRedraw.set(node, now);
    const lines = [node.meter?.describe(true), node.status].filter((line): line is string => Boolean(line));
    node.task.output = lines.join('\n');
  }

  nodeFinished(result: NodeResult): void {
    // Nodes fresh from the start have no task; the summary counts them.
    const node = this.live.get(result.id);
    if (!node) return;
    node.result = result;
    node.settle?.(result);
  }

  async finish(results: readonly NodeResult[], wallMs: number): Promise<void> {
    await this.rendering;
    if (this.freshCount > 0 && this.live.size === 0) this.write(`all ${this.freshCount} nodes fresh`);
    for (const result of results) if (result.status === 'failed') for (const line of failureLines(result)) this.write(line);
    this.write(summaryLine(summarize(results), wallMs, formatDuration));
  }
}
