// Plain timestamped lines for logs and CI: one line per event, progress throttled so a
// multi-GB transfer prints a handful of lines, not thousands.
import type { NodeResult, PlanEntry } from '../runner.ts';
import type { NodeId } from '../types.ts';
import { formatDuration, ProgressMeter } from './format.ts';
import { failureLines, summarize, summaryLine, type Reporter } from './reporter.ts';

const PROGRESS_EVERY_MS = 5_000;
/** Above this many fresh nodes, they are counted rather than listed. */
const LIST_FRESH_UP_TO = 50;

export class PlainReporter implements Reporter {
  private readonly meters = new Map<NodeId, { meter: ProgressMeter; printedAt: number }>();
  private listFresh = true;

  constructor(private readonly write: (line: string) => void) {}

  private line(text: string): void {
    const time = new Date().toISOString().slice(11, 19);
    this.write(`${time} ${text}`);
  }

  start(plan: readonly PlanEntry[]): void {
    this.listFresh = plan.length <= LIST_FRESH_UP_TO;
    for (const entry of plan) if (entry.note) this.line(`  ${entry.id}: ${entry.note}`);
  }

  nodeStarted(id: NodeId, reason: string): void {
    this.line(`▶ ${id} (${reason})`);
  }

  nodeProgress(id: NodeId, done: number, total: number | undefined): void {
    let state = this.meters.get(id);
    if (!state) this.meters.set(id, (state = { meter: new ProgressMeter(), printedAt: Date.now() }));
    state.meter.update(done, total);
    const now = Date.now();
    if (now - state.printedAt >= PROGRESS_EVERY_MS) {
      state.printedAt = now;
      this.line(`  ${id} ${state.meter.describe(false)}`);
    }
  }

  nodeFinished(result: NodeResult): void {
    this.meters.delete(result.id);
    switch (result.status) {
      case 'ran':
        this.line(`✔ ${result.id} (${formatDuration(result.durationMs)})`);
        break;
      case 'fresh':
        if (this.listFresh) this.line(`= ${result.id} fresh${result.reason === 'up to date' ? '' : ` (${result.reason})`}`);
        break;
      case 'adopted':
        this.line(`= ${result.id} ${result.reason}`);
        break;
      case 'failed':
        for (const line of failureLines(result)) this.line(`✖ ${line}`);
        break;
      case 'skipped':
        this.line(`- ${result.id} skipped (${result.reason})`);
        break;
      case 'cancelled':
        this.line(`✖ ${result.id} cancelled`);
        break;
    }
  }

  async finish(results: readonly NodeResult[], wallMs: number): Promise<void> {
    this.line(summaryLine(summarize(results), wallMs, formatDuration));
  }
}
