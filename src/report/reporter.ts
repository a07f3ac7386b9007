// What every renderer implements: the runner's observer, plus the start (the plan is
// known) and end (the results) of a run.
import type { NodeResult, PlanEntry, RunObserver } from '../runner.ts';

export interface Reporter extends RunObserver {
  start(plan: readonly PlanEntry[]): void;
  finish(results: readonly NodeResult[], wallMs: number): Promise<void>;
}

export interface RunSummary {
  readonly ran: number;
  readonly fresh: number;
  /** Fresh by adoption: outputs another tool made, checked and recorded as ours. */
  readonly adopted: number;
  readonly failed: number;
  readonly skipped: number;
  readonly cancelled: number;
  readonly bytesHashed: number;
}

export function summarize(results: readonly NodeResult[]): RunSummary {
  const count = (status: NodeResult['status']): number => results.filter((result) => result.status === status).length;
  return {
    ran: count('ran'),
    fresh: count('fresh'),
    adopted: count('adopted'),
    failed: count('failed'),
    skipped: count('skipped'),
    cancelled: count('cancelled'),
    bytesHashed: results.reduce((sum, result) => sum + result.bytesHashed, 0),
  };
}

export function summaryLine(summary: RunSummary, wallMs: number, format: (ms: number) => string): string {
  const parts = [`${summary.ran} ran`, `${summary.fresh} fresh`];
  if (summary.adopted) parts.push(`${summary.adopted} adopted`);
  if (summary.failed) parts.push(`${summary.failed} failed`);
  if (summary.skipped) parts.push(`${summary.skipped} skipped`);
  if (summary.cancelled) parts.push(`${summary.cancelled} cancelled`);
  return `${parts.join(', ')} in ${format(wallMs)}`;
}

/** The lines printed for a failed node: its error, its log's tail and where the log is. */
export function failureLines(result: NodeResult): string[] {
  const lines = [`${result.id} failed: ${result.error ?? result.reason}`];
  if (result.logTail && result.logTail.length > 0) {
    lines.push(`--- last ${result.logTail.length} lines of ${result.logFile} ---`);
    lines.push(...result.logTail.map((line) => `  ${line}`));
  }
  return lines;
}
