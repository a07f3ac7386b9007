// The live tree on a TTY, drawn by listr2. The runner drives execution; listr2 only
// renders: each node that may run is a listr2 task whose body waits for the node's end.
// listr2 would spin every task it has started, so its spinner is off (`lazy`) and this
// reporter draws its own: a node that works spins, a node that waits says what for and
// does not, and only a working node has a bar. listr2 takes most of a second to load
// and draw its first frame, so the first line (checking the nodes) is drawn here at
// once, while listr2 loads beside the plan.
import type { ListrDefaultRenderer, ListrSimpleRenderer, ListrTaskWrapper } from 'listr2';
import type { NodePhase, Wait } from '../observer.ts';
import type { NodeResult } from '../execute.ts';
import type { PlanEntry } from '../plan.ts';
import type { NodeId, ProgressUnit } from '../types.ts';
import { Activities } from './activity.ts';
import { formatDuration } from './format.ts';
import { reasonText } from './reason-text.ts';
import { failureLines, summaryLine, type Reporter } from './reporter.ts';

type Task = ListrTaskWrapper<unknown, ListrDefaultRenderer, ListrSimpleRenderer>;

interface LiveNode {
  task?: Task;
  title?: string;
  output?: string;
  settle?: (result: NodeResult) => void;
  result?: NodeResult;
}

/** Redraws at most this often: spinner frames and progress. */
const FRAME_MS = 100;
const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const WAITING = '◼';

/** A stream the tree draws on (the terminal): the checking line, then listr2's frames. */
export interface Terminal {
  write(text: string): unknown;
}

export class TreeReporter implements Reporter {
  private readonly activities = new Activities();
  private readonly live = new Map<NodeId, LiveNode>();
  private readonly listr = import('listr2');
  private rendering: Promise<unknown> = Promise.resolve();
  private checking?: { readonly count: number; readonly startedAt: number; readonly tick: NodeJS.Timeout };
  private frame: NodeJS.Timeout | undefined;
  private freshCount = 0;

  constructor(
    /** Lines printed once the tree is drawn (notes, failures, the summary). */
    private readonly write: (line: string) => void,
    private readonly terminal: Terminal,
  ) {}

  /** The first line, at once: a plan takes seconds when it probes upstream or hashes. */
  planning(closure: readonly NodeId[]): void {
    const draw = (): void => void this.terminal.write(`\r\x1b[K${spinnerFrame()} checking ${closure.length} nodes`);
    draw();
    this.checking = { count: closure.length, startedAt: Date.now(), tick: setInterval(draw, FRAME_MS) };
  }

  /** Ends the checking line for good, before listr2 draws below it. */
  private checked(outcome: 'checked' | 'stopped'): void {
    if (!this.checking) return;
    const { count, startedAt, tick } = this.checking;
    clearInterval(tick);
    delete this.checking;
    const text = outcome === 'checked' ? `✔ checked ${count} nodes (${formatDuration(Date.now() - startedAt)})` : `✖ checking ${count} nodes: stopped`;
    this.terminal.write(`\r\x1b[K${text}\n`);
  }

  start(plan: readonly PlanEntry[]): void {
    this.checked('checked');
    const mayRun = plan.filter((entry) => !entry.verdict.fresh);
    this.freshCount = plan.length - mayRun.length;
    const notes = plan.filter((entry) => entry.note);
    if (mayRun.length === 0 && notes.length === 0) return;
    for (const entry of mayRun) this.live.set(entry.id, {});
    for (const entry of notes) this.write(`${entry.id}: ${entry.note}`);
    if (mayRun.length === 0) return;
    this.rendering = this.listr.then(({ Listr, ListrDefaultRendererLogLevels }) => {
      this.frame = setInterval(() => this.redrawAll(), FRAME_MS);
      const list = new Listr(
        mayRun.map((entry) => ({
          title: this.titleOf(entry.id),
          task: (_context: unknown, task: Task) => this.follow(entry.id, task),
        })),
        {
          concurrent: true,
          exitOnError: false,
          registerSignalListeners: false,
          renderer: 'default',
          rendererOptions: {
            collapseSubtasks: false,
            showErrorMessage: true,
            collapseErrors: false,
            formatOutput: 'truncate',
            lazy: true,
            // No icon of listr2's on a started task: the title carries the spinner or the waiting mark.
            icon: { [ListrDefaultRendererLogLevels.PENDING]: '' },
          },
        },
      );
      return list.run().catch(() => undefined);
    });
  }

  private follow(id: NodeId, task: Task): Promise<void> {
    const node = this.live.get(id)!;
    node.task = task;
    this.redraw(id);
    return new Promise<void>((resolve, reject) => {
      const settle = (result: NodeResult): void => {
        switch (result.status) {
          case 'ran':
            task.title = `${id} (${formatDuration(result.durationMs)})${result.note ? `: ${result.note}` : ''}`;
            resolve();
            break;
          case 'fresh':
            task.skip(`${id}: fresh (${reasonText(result.reason)})`);
            resolve();
            break;
          case 'adopted':
            task.skip(`${id}: ${reasonText(result.reason)}`);
            resolve();
            break;
          case 'skipped':
            task.skip(`${id}: skipped (${reasonText(result.reason)})`);
            resolve();
            break;
          default:
            reject(new Error(result.status === 'cancelled' ? `${id}: cancelled` : `${id}: ${result.error ?? reasonText(result.reason)}`));
        }
      };
      if (node.result) settle(node.result);
      else node.settle = settle;
    });
  }

  nodeWaiting(id: NodeId, wait: Wait): void {
    this.activities.waiting(id, wait);
    this.redraw(id);
  }

  nodePhase(id: NodeId, phase: NodePhase, edge: 'begin' | 'end'): void {
    this.activities.phase(id, phase, edge);
  }

  nodeStarted(id: NodeId): void {
    this.activities.started(id);
    this.redraw(id);
  }

  nodeStatus(id: NodeId, text: string): void {
    this.activities.status(id, text);
  }

  nodeProgress(id: NodeId, done: number, total: number | undefined, unit?: ProgressUnit): void {
    this.activities.progress(id, done, total, unit);
  }

  nodeFinished(result: NodeResult): void {
    this.activities.finished(result.id);
    for (const id of this.live.keys()) this.redraw(id);
    // Nodes fresh from the start have no task; the summary counts them.
    const node = this.live.get(result.id);
    if (!node) return;
    node.result = result;
    node.settle?.(result);
  }

  private titleOf(id: NodeId): string {
    const activity = this.activities.get(id);
    const waiting = this.activities.waitText(id);
    if (waiting !== undefined) return `${WAITING} ${id} · ${waiting}`;
    // Neither waiting nor working yet: it has been planned and is about to be looked at again.
    if (!activity.running && activity.phase === undefined) return `${WAITING} ${id}`;
    return `${spinnerFrame()} ${id}`;
  }

  private outputOf(id: NodeId): string {
    const activity = this.activities.get(id);
    if (!activity.running && activity.phase === undefined) return '';
    const lines: string[] = [];
    if (activity.bar) lines.push(`${activity.bar.label} ${activity.bar.meter.describe(true)}`);
    if (activity.status && activity.status !== activity.bar?.label) lines.push(activity.status);
    return lines.join('\n');
  }

  private redrawAll(): void {
    for (const id of this.live.keys()) this.redraw(id);
  }

  /** Sets a node's title and output when they changed (each change makes listr2 redraw). */
  private redraw(id: NodeId): void {
    const node = this.live.get(id);
    if (!node?.task || node.result) return;
    const title = this.titleOf(id);
    const output = this.outputOf(id);
    if (title !== node.title) node.task.title = node.title = title;
    if (output !== node.output) node.task.output = node.output = output;
  }

  async abandon(): Promise<void> {
    this.checked('stopped');
    for (const [id, node] of this.live) {
      if (!node.result) this.nodeFinished({ id, status: 'cancelled', reason: { code: 'interrupted' }, durationMs: 0, bytesHashed: 0 });
    }
    await this.rendering;
    clearInterval(this.frame);
  }

  async finish(results: readonly NodeResult[], wallMs: number): Promise<void> {
    this.checked('checked');
    await this.rendering;
    clearInterval(this.frame);
    if (this.freshCount > 0 && this.live.size === 0) this.write(`all ${this.freshCount} nodes fresh`);
    for (const result of results) if (result.status === 'failed') for (const line of failureLines(result)) this.write(line);
    this.write(summaryLine(results, wallMs));
  }
}

function spinnerFrame(): string {
  return SPINNER[Math.floor(Date.now() / FRAME_MS) % SPINNER.length]!;
}
