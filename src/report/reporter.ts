// What every renderer implements: the runner's observer, plus the start (the plan is
// known) and end (the results) of a run.
import type { RunObserver } from '../observer.ts';
import type { NodeResult } from '../execute.ts';
import type { PlanEntry } from '../plan.ts';
import type { NodeId } from '../types.ts';
import { runCounts } from './contract.ts';
import { formatDuration } from './format.ts';
import { reasonText } from './reason-text.ts';

export interface Reporter extends RunObserver {
  /** The run has its closure and starts checking it (before the plan, which can take seconds). */
  planning?(closure: readonly NodeId[]): void;
  start(plan: readonly PlanEntry[]): void;
  finish(results: readonly NodeResult[], wallMs: number): Promise<void>;
  /** The run stopped before it had results (its error is printed next): stop drawing. */
  abandon?(): Promise<void>;
}

export function summaryLine(results: readonly NodeResult[], wallMs: number): string {
  const counts = runCounts(results);
  const parts = [`${counts.ran} ran`, `${counts.fresh} fresh`];
  if (counts.adopted) parts.push(`${counts.adopted} adopted`);
  if (counts.failed) parts.push(`${counts.failed} failed`);
  if (counts.skipped) parts.push(`${counts.skipped} skipped`);
  if (counts.cancelled) parts.push(`${counts.cancelled} cancelled`);
  return `${parts.join(', ')} in ${formatDuration(wallMs)}`;
}

/** The lines printed for a failed node: its error, its log's tail and where the log is. */
export function failureLines(result: NodeResult): string[] {
  const lines = [`${result.id} failed: ${result.error ?? reasonText(result.reason)}`];
  if (result.logTail && result.logTail.length > 0) {
    lines.push(`--- last ${result.logTail.length} lines of ${result.logFile} ---`);
    lines.push(...result.logTail.map((line) => `  ${line}`));
  }
  return lines;
}

/** Several reporters as one (a view, the --json summary, the --profile trace): each hears every event. */
export function fanOut(reporters: readonly Reporter[]): Reporter {
  const each = (call: (reporter: Reporter) => void): void => {
    for (const reporter of reporters) call(reporter);
  };
  return {
    planning: (closure) => each((reporter) => reporter.planning?.(closure)),
    start: (plan) => each((reporter) => reporter.start(plan)),
    nodeQueued: (id, reason) => each((reporter) => reporter.nodeQueued?.(id, reason)),
    nodeWaiting: (id, wait) => each((reporter) => reporter.nodeWaiting?.(id, wait)),
    nodePhase: (id, phase, edge) => each((reporter) => reporter.nodePhase?.(id, phase, edge)),
    nodeStarted: (id, reason) => each((reporter) => reporter.nodeStarted?.(id, reason)),
    nodeStatus: (id, text) => each((reporter) => reporter.nodeStatus?.(id, text)),
    nodeLog: (id, line) => each((reporter) => reporter.nodeLog?.(id, line)),
    nodeProgress: (id, done, total, unit) => each((reporter) => reporter.nodeProgress?.(id, done, total, unit)),
    nodeFinished: (result) => each((reporter) => reporter.nodeFinished?.(result)),
    async finish(results, wallMs) {
      for (const reporter of reporters) await reporter.finish(results, wallMs);
    },
    async abandon() {
      for (const reporter of reporters) await reporter.abandon?.();
    },
  };
}
