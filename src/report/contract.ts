// The JSON contract: what every `--json` output looks like, as types and the builders that
// make them. schema/pipeline-output.v1.schema.json is the same contract for readers (a
// test validates every kind of output against it); change both together, and bump
// FORMAT_VERSION when a field is removed or changes meaning.
import type { FailureKind } from '../failure.ts';
import { verdictStatus } from '../assess.ts';
import type { NodeResult } from '../execute.ts';
import type { Graph } from '../graph.ts';
import type { PlanEntry } from '../plan.ts';
import type { Reason } from '../reason.ts';
import type { Json, NodeId } from '../types.ts';
import { reasonText } from './reason-text.ts';

export const FORMAT_VERSION = 1;

/** Every status a node can have in any output (a run's, or a plan's). */
export type NodeStatusJson = 'ran' | 'fresh' | 'adopted' | 'stale' | 'pending' | 'failed' | 'skipped' | 'cancelled';
export type PlanStatusJson = Extract<NodeStatusJson, 'fresh' | 'adopted' | 'stale' | 'pending'>;

/** What every output starts with: the contract's version, the command, and whether it exits 0. */
export interface Envelope<Command extends string> {
  readonly formatVersion: typeof FORMAT_VERSION;
  readonly command: Command;
  /** True exactly when the command exits 0. */
  readonly ok: boolean;
}

/**
 * A config's command's result: the envelope around the fields the command defines, its
 * `command` the command's name and subcommand as an error names it (`deploy-status`). The
 * command declares its shape as a variant of the schema; the engine only vouches for the
 * envelope.
 */
export type CommandOutput<Command extends string = string, Fields extends object = object> = Envelope<Command> & Fields;

/** Fields a command may not set: the envelope's own. */
interface NoEnvelopeFields {
  readonly formatVersion?: never;
  readonly command?: never;
  readonly ok?: never;
}

interface NodeJsonBase {
  readonly id: NodeId;
  /** Why, in words (`reasonText`). */
  readonly reason: string;
  /** Why, as a value: `{ code: 'input-changed', path }` (src/reason.ts). */
  readonly why: Reason;
  readonly bytesHashed: number;
  readonly note?: string;
}

export interface RunNodeJson
  extends NodeJsonBase,
    Pick<NodeResult, 'durationMs' | 'startedAt' | 'finishedAt' | 'error' | 'failureKind' | 'logFile' | 'logTail'> {
  readonly status: NodeResult['status'] | 'adopted';
}

export interface PlanNodeJson extends NodeJsonBase {
  readonly status: PlanStatusJson;
  readonly wouldRun?: string;
}

export interface ExplainNodeJson extends NodeJsonBase {
  readonly status: PlanStatusJson;
  readonly kind: string;
  readonly pool?: string;
  readonly description?: string;
  readonly deps: readonly NodeId[];
  readonly files: readonly string[];
  readonly inputs: readonly string[];
  readonly env: readonly string[];
  readonly probesUpstream: boolean;
  readonly outputs: readonly string[];
  readonly keyFile?: string;
  readonly caveat?: string;
}

export interface RunCounts {
  readonly ran: number;
  readonly fresh: number;
  readonly adopted: number;
  readonly failed: number;
  readonly skipped: number;
  readonly cancelled: number;
  readonly bytesHashed: number;
}

export interface RunOutput extends Envelope<'run'>, RunCounts {
  readonly wallMs: number;
  readonly nodes: readonly RunNodeJson[];
}

export interface DryRunOutput extends Envelope<'dry-run'> {
  readonly stale: readonly NodeId[];
  readonly nodes: readonly PlanNodeJson[];
}

export interface PlanOutput extends Envelope<'plan'> {
  readonly stale: readonly NodeId[];
  readonly nodes: readonly PlanNodeJson[];
  readonly jobs?: Json;
}

export interface ExplainOutput extends Envelope<'explain'> {
  readonly target: string;
  readonly targets: readonly NodeId[];
  readonly nodes: readonly ExplainNodeJson[];
}

export interface ErrorOutput extends Envelope<string> {
  readonly ok: false;
  readonly error: string;
  readonly failureKind: FailureKind;
  readonly code?: string | number;
}

export type Output = RunOutput | DryRunOutput | PlanOutput | ExplainOutput | ErrorOutput | CommandOutput;

/** One output on stdout: the whole object, pretty-printed, nothing else. */
export function formatOutput(output: Output): string {
  return JSON.stringify(output, null, 2);
}

export function runCounts(results: readonly NodeResult[]): RunCounts {
  const count = (status: RunNodeJson['status']): number => results.filter((result) => result.status === status).length;
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

export function runNodeJson(result: NodeResult): RunNodeJson {
  return {
    id: result.id,
    status: result.status,
    reason: reasonText(result.reason),
    why: result.reason,
    durationMs: result.durationMs,
    bytesHashed: result.bytesHashed,
    ...(result.startedAt !== undefined ? { startedAt: result.startedAt, finishedAt: result.finishedAt ?? result.startedAt } : {}),
    ...(result.error !== undefined ? { error: result.error, failureKind: result.failureKind ?? 'task' } : {}),
    ...(result.logFile !== undefined ? { logFile: result.logFile } : {}),
    ...(result.logTail !== undefined && result.status === 'failed' ? { logTail: result.logTail } : {}),
    ...(result.note !== undefined ? { note: result.note } : {}),
  };
}

export function runOutput(results: readonly NodeResult[], wallMs: number): RunOutput {
  const counts = runCounts(results);
  return {
    formatVersion: FORMAT_VERSION,
    command: 'run',
    ok: counts.failed + counts.skipped + counts.cancelled === 0,
    wallMs,
    ...counts,
    nodes: results.map(runNodeJson),
  };
}

/** Ids a run will run (status stale), in run order. */
function staleIds(entries: readonly PlanEntry[]): NodeId[] {
  return entries.filter((entry) => verdictStatus(entry.verdict) === 'stale').map((entry) => entry.id);
}

function planNodeJson(entry: PlanEntry, wouldRun: string | undefined): PlanNodeJson {
  return {
    id: entry.id,
    status: verdictStatus(entry.verdict),
    reason: reasonText(entry.verdict.reason),
    why: entry.verdict.reason,
    bytesHashed: entry.bytesHashed,
    ...(wouldRun ? { wouldRun } : {}),
    ...(entry.note ? { note: entry.note } : {}),
  };
}

export function dryRunOutput(entries: readonly PlanEntry[], wouldRun: ReadonlyMap<NodeId, string | undefined>): DryRunOutput {
  return {
    formatVersion: FORMAT_VERSION,
    command: 'dry-run',
    ok: true,
    stale: staleIds(entries),
    nodes: entries.map((entry) => planNodeJson(entry, wouldRun.get(entry.id))),
  };
}

export function planOutput(entries: readonly PlanEntry[], jobs: ((mayRun: readonly NodeId[]) => Json) | undefined): PlanOutput {
  // CI jobs cover pending nodes too: whether they run is only known once their
  // dependencies have.
  const mayRun = entries.filter((entry) => !entry.verdict.fresh).map((entry) => entry.id);
  return {
    formatVersion: FORMAT_VERSION,
    command: 'plan',
    ok: true,
    stale: staleIds(entries),
    nodes: entries.map((entry) => planNodeJson(entry, undefined)),
    ...(jobs ? { jobs: jobs(mayRun) } : {}),
  };
}

export function explainOutput(target: string, targets: readonly NodeId[], entries: readonly PlanEntry[], graph: Graph): ExplainOutput {
  return {
    formatVersion: FORMAT_VERSION,
    command: 'explain',
    ok: true,
    target,
    targets,
    nodes: entries.map((entry) => {
      const node = graph.node(entry.id);
      return {
        ...planNodeJson(entry, undefined),
        kind: node.kind,
        ...(node.pool ? { pool: node.pool } : {}),
        ...(node.description ? { description: node.description } : {}),
        deps: node.deps,
        files: node.files ?? [],
        inputs: node.inputs ?? [],
        env: node.env ?? [],
        probesUpstream: node.probe !== undefined,
        outputs: node.outputs ?? [],
        ...(node.key ? { keyFile: node.key.path } : {}),
        ...(node.caveat ? { caveat: node.caveat } : {}),
      };
    }),
  };
}

/** A config's command's result: `ok` is true exactly when the command will exit 0. */
export function commandOutput<Command extends string, Fields extends object & NoEnvelopeFields>(
  command: Command,
  ok: boolean,
  fields: Fields,
): CommandOutput<Command, Fields> {
  return { formatVersion: FORMAT_VERSION, command, ok, ...fields };
}

/** A command that failed as a whole, with the failure's kind (and code, when one classified it). */
export function errorOutput(
  command: string,
  failure: { readonly message: string; readonly kind: FailureKind; readonly code?: string | number | undefined },
): ErrorOutput {
  return {
    formatVersion: FORMAT_VERSION,
    command,
    ok: false,
    error: failure.message,
    failureKind: failure.kind,
    ...(failure.code !== undefined ? { code: failure.code } : {}),
  };
}
