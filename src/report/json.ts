// `--json`: one summary object on stdout for machines, in the shape of contract.ts;
// nothing else is printed there. The CLI pairs it with plain lines on stderr, so a long
// CI job is not silent.
import type { NodeResult } from '../execute.ts';
import { formatOutput, runOutput } from './contract.ts';
import type { Reporter } from './reporter.ts';

export class JsonReporter implements Reporter {
  constructor(private readonly write: (text: string) => void) {}

  start(): void {}

  async finish(results: readonly NodeResult[], wallMs: number): Promise<void> {
    this.write(formatOutput(runOutput(results, wallMs)));
  }
}
