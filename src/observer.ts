// What a run tells its observers (the live view, plain lines, --json, --profile): the
// runner and the task context call these; none of them changes what runs.
import type { NodeResult } from './execute.ts';
import type { Reason } from './reason.ts';
import type { NodeId, ProgressUnit } from './types.ts';

/**
 * The engine's steps for one node: `probe` (ask upstream), `hash` (fingerprint inputs, or
 * hash outputs after a run), `preflight` (the kind's setup checks: tools, directories),
 * `run` (the task itself), `record` (stamp and key file).
 */
export type NodePhase = 'probe' | 'hash' | 'preflight' | 'run' | 'record';

/** What a node that may run is waiting for: dependencies still to finish, or a free slot. */
export type Wait =
  | { readonly dependencies: readonly NodeId[] }
  /** A slot of a named pool (`packer`), or `job` for the --jobs limit. */
  | { readonly slot: string };

export interface RunObserver {
  nodeQueued?(id: NodeId, reason: Reason): void;
  nodeWaiting?(id: NodeId, wait: Wait): void;
  /**
   * A phase begins or ends; phases of one node do not overlap. A phase a failure
   * interrupts gets no end: the node's end (or the run's) ends it.
   */
  nodePhase?(id: NodeId, phase: NodePhase, edge: 'begin' | 'end'): void;
  nodeStarted?(id: NodeId, reason: Reason): void;
  /** The short status a task set, or the last line it logged. */
  nodeStatus?(id: NodeId, text: string): void;
  /** A line of the task's log (also in its log file). */
  nodeLog?(id: NodeId, line: string): void;
  nodeProgress?(id: NodeId, done: number, total: number | undefined, unit?: ProgressUnit): void;
  nodeFinished?(result: NodeResult): void;
}
