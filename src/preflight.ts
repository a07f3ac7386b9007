// Setup checks (packer installed, a token set) of the nodes a run will run, before they
// start any work: a machine that is not ready fails the run with one line and exit 2, as
// a bad command line does, rather than halfway through.
import type { NodeResult } from './execute.ts';
import { Failure, type FailureKind, isFailure } from './failure.ts';
import type { Graph } from './graph.ts';
import type { PlanEntry, PlanOptions } from './plan.ts';
import type { Reason } from './reason.ts';
import { reasonText } from './report/reason-text.ts';
import type { NodeDef } from './types.ts';

/** Failures that mean "fix the machine or the input": found before a node starts, they end the run with exit 2. */
export const SETUP_KINDS = ['setup', 'auth', 'config', 'usage'] as const satisfies readonly FailureKind[];

type CheckOptions = Pick<PlanOptions, 'root' | 'flags' | 'observer' | 'signal'>;

/** Runs the setup checks of one node that is about to run; a failure names the node and why it runs. */
export async function checkSetup(node: NodeDef, reason: Reason, options: CheckOptions): Promise<void> {
  if (!node.preflight) return;
  options.observer?.nodePhase?.(node.id, 'preflight', 'begin');
  try {
    await node.preflight({ root: options.root, flags: options.flags, signal: options.signal });
  } catch (error) {
    if (!isFailure(error)) throw error;
    throw new Failure(error.kind, `${error.message} (why it runs: ${reasonText(reason)})`, {
      cause: error,
      ...(error.code !== undefined ? { code: error.code } : {}),
    });
  }
  options.observer?.nodePhase?.(node.id, 'preflight', 'end');
}

/**
 * Setup checks of the nodes the plan calls stale, before any work; the first failure is
 * thrown. Pending nodes are checked when they turn out to run (see execute.ts).
 */
export async function preflight(graph: Graph, entries: readonly PlanEntry[], options: CheckOptions): Promise<void> {
  for (const entry of entries) {
    // A fetch checks its own setup if it falls back to running the node.
    if (entry.verdict.fresh || entry.verdict.pending || entry.fetch) continue;
    try {
      await checkSetup(graph.node(entry.id), entry.verdict.reason, options);
    } catch (error) {
      if (isFailure(error)) throw error.prefixed(entry.id);
      throw error;
    }
  }
}

/**
 * The failure that ended a run for a setup reason found before a node started (a pending
 * node's setup check, or its probe): the run exits as if it had been found up front.
 */
export function setupFailureOf(results: readonly NodeResult[]): Failure | undefined {
  const stopped = results.find(
    (result) => result.status === 'failed' && result.startedAt === undefined && (SETUP_KINDS as readonly string[]).includes(result.failureKind ?? ''),
  );
  return stopped ? new Failure(stopped.failureKind!, `${stopped.id}: ${stopped.error ?? reasonText(stopped.reason)}`) : undefined;
}
