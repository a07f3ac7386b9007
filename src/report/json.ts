// `--json`: one summary object on stdout for machines; nothing else is printed there.
// Progress still goes to stderr as plain lines, so a long CI job is not silent.
import type { NodeResult, PlanEntry } from '../runner.ts';
import type { NodeId } from '../types.ts';
import { summarize, type Reporter } from './reporter.ts';

export function resultJson(result: NodeResult): Record<string, unknown> {
  return {
    id: result.id,
    status: result.status,
    reason: result.reason,
    durationMs: result.durationMs,
    bytesHashed: result.bytesHashed,
    ...(result.startedAt !== undefined ? { startedAt: result.startedAt, finishedAt: result.finishedAt } : {}),
    ...(result.error !== undefined ? { error: result.error } : {}),
    ...(result.failureKind !== undefined ? { failureKind: result.failureKind } : {}),
    ...(result.logFile !== undefined ? { logFile: result.logFile } : {}),
    ...(result.note !== undefined ? { note: result.note } : {}),
  };
}

export class JsonReporter implements Reporter {
  constructor(
    private readonly write: (text: string) => void,
    private readonly progress?: Reporter,
  ) {}

  start(plan: readonly PlanEntry[]): void {
    this.progress?.start(plan);
  }

  nodeStarted(id: NodeId, reason: string): void {
    this.progress?.nodeStarted?.(id, reason);
  }

  nodeProgress(id: NodeId, done: number, total: number | undefined): void {
    this.progress?.nodeProgress?.(id, done, total);
  }

  nodeFinished(result: NodeResult): void {
    this.progress?.nodeFinished?.(result);
  }

  async finish(results: readonly NodeResult[], wallMs: number): Promise<void> {
    await this.progress?.finish(results, wallMs);
    const summary = summarize(results);
    this.write(
      JSON.stringify(
        { ok: summary.failed === 0 && summary.cancelled === 0, wallMs, ...summary, nodes: results.map(resultJson) },
        null,
        2,
      ),
    );
  }
}
