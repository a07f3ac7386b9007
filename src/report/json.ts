// `--json`: one summary object on stdout for machines; nothing else is printed there.
import type { NodeResult, PlanEntry } from '../runner.ts';
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
    ...(result.logFile !== undefined ? { logFile: result.logFile } : {}),
    ...(result.note !== undefined ? { note: result.note } : {}),
  };
}

export class JsonReporter implements Reporter {
  constructor(private readonly write: (text: string) => void) {}

  start(_plan: readonly PlanEntry[]): void {}

  async finish(results: readonly NodeResult[], wallMs: number): Promise<void> {
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
