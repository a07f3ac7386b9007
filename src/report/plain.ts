// Plain timestamped lines for logs and CI: one line per event, progress throttled so a
// multi-GB transfer prints a handful of lines, not thousands. `quiet` keeps only failures
// and the summary; `verbose` adds every line the tasks log.
import type { NodePhase, Wait } from '../observer.ts';
import type { NodeResult } from '../execute.ts';
import type { PlanEntry } from '../plan.ts';
import type { Reason } from '../reason.ts';
import type { NodeId, ProgressUnit } from '../types.ts';
import { Activities } from './activity.ts';
import { formatDuration } from './format.ts';
import { reasonText } from './reason-text.ts';
import { failureLines, summaryLine, type Reporter } from './reporter.ts';

const PROGRESS_EVERY_MS = 5_000;
/** Above this many fresh nodes, they are counted rather than listed. */
const LIST_FRESH_UP_TO = 50;

export interface PlainOptions {
  readonly quiet?: boolean;
  readonly verbose?: boolean;
}

export class PlainReporter implements Reporter {
  private readonly activities = new Activities();
  private readonly printedAt = new Map<NodeId, number>();
  private listFresh = true;
  private plannedNotes = new Map<NodeId, string | undefined>();

  constructor(
    private readonly write: (line: string) => void,
    private readonly options: PlainOptions = {},
  ) {}

  private line(text: string): void {
    const time = new Date().toISOString().slice(11, 19);
    this.write(`${time} ${text}`);
  }

  /** A line that --quiet leaves out. */
  private note(text: string): void {
    if (!this.options.quiet) this.line(text);
  }

  planning(closure: readonly NodeId[]): void {
    this.note(`checking ${closure.length} nodes`);
  }

  start(plan: readonly PlanEntry[]): void {
    this.listFresh = plan.length <= LIST_FRESH_UP_TO;
    for (const entry of plan) if (entry.note) this.note(`  ${entry.id}: ${entry.note}`);
    this.plannedNotes = new Map(plan.map((entry) => [entry.id, entry.note]));
  }

  nodeWaiting(id: NodeId, wait: Wait): void {
    this.activities.waiting(id, wait);
    // Waiting for dependencies is the order of the graph; a full pool is worth a line.
    if ('slot' in wait) this.note(`… ${id} ${this.activities.waitText(id)}`);
  }

  nodePhase(id: NodeId, phase: NodePhase, edge: 'begin' | 'end'): void {
    this.activities.phase(id, phase, edge);
  }

  nodeStarted(id: NodeId, reason: Reason): void {
    this.activities.started(id);
    this.printedAt.set(id, Date.now());
    this.note(`▶ ${id} (${reasonText(reason)})`);
  }

  nodeStatus(id: NodeId, text: string): void {
    this.activities.status(id, text);
  }

  nodeLog(id: NodeId, line: string): void {
    if (this.options.verbose) this.line(`  ${id} | ${line}`);
  }

  nodeProgress(id: NodeId, done: number, total: number | undefined, unit?: ProgressUnit): void {
    const bar = this.activities.progress(id, done, total, unit);
    const now = Date.now();
    if (now - (this.printedAt.get(id) ?? 0) >= PROGRESS_EVERY_MS) {
      this.printedAt.set(id, now);
      this.note(`  ${id} ${bar.label}: ${bar.meter.describe(false)}`);
    }
  }

  nodeFinished(result: NodeResult): void {
    this.activities.finished(result.id);
    this.printedAt.delete(result.id);
    switch (result.status) {
      case 'ran':
        this.note(`✔ ${result.id} (${formatDuration(result.durationMs)})`);
        // What the run found out (a fetch that fell back to building), unless the plan said it.
        if (result.note && result.note !== this.plannedNotes.get(result.id)) this.line(`  ${result.id}: ${result.note}`);
        break;
      case 'fresh':
        if (this.listFresh) this.note(`= ${result.id} fresh${result.reason.code === 'up-to-date' ? '' : ` (${reasonText(result.reason)})`}`);
        break;
      case 'adopted':
        this.line(`= ${result.id} ${reasonText(result.reason)}`);
        break;
      case 'failed':
        for (const line of failureLines(result)) this.line(`✖ ${line}`);
        break;
      case 'skipped':
        this.note(`- ${result.id} skipped (${reasonText(result.reason)})`);
        break;
      case 'cancelled':
        this.note(`✖ ${result.id} cancelled`);
        break;
    }
  }

  async finish(results: readonly NodeResult[], wallMs: number): Promise<void> {
    this.line(summaryLine(results, wallMs));
  }
}
