// Read-only views of a project: `explain`, `graph`, `--dry-run` and `plan --json`. They
// read the same verdicts the runner acts on.
import { verdictStatus, type VerdictStatus } from './assess.ts';
import type { Graph } from './graph.ts';
import type { PlanEntry } from './plan.ts';
import { dryRunOutput, explainOutput, formatOutput, planOutput } from './report/contract.ts';
import { reasonText } from './report/reason-text.ts';
import type { RunSettings, Session } from './session.ts';
import type { Json, NodeDef, NodeId } from './types.ts';

function verdictText(entry: PlanEntry): string {
  const reason = reasonText(entry.verdict.reason);
  switch (verdictStatus(entry.verdict)) {
    case 'fresh':
      return `fresh (${reason})`;
    case 'adopted':
      return `would be ${reason}`;
    case 'stale':
      return `stale: ${reason}`;
    case 'pending':
      return `pending: ${reason}`;
  }
}

const DRY_RUN_MARK: Record<VerdictStatus, string> = { fresh: '=', adopted: '+', stale: '▶', pending: '?' };

export async function explainTarget(session: Session, target: string, settings: RunSettings, json: boolean, out: (line: string) => void): Promise<number> {
  const { graph, entries } = await session.plan([target], settings);
  const selected = new Set(graph.resolveTargets([target], session.familyUsages()));
  if (json) {
    out(formatOutput(explainOutput(target, [...selected], entries, graph)));
    return 0;
  }
  const byId = new Map(entries.map((entry) => [entry.id, entry] as const));
  for (const id of selected) {
    const node = graph.node(id);
    const entry = byId.get(id)!;
    out(`${id}  (kind ${node.kind}${node.pool ? `, pool ${node.pool}` : ''})`);
    if (node.description) out(`  ${node.description}`);
    out(`  status: ${verdictText(entry)}`);
    if (entry.note) out(`  note: ${entry.note}`);
    describeNode(node, out);
    if (node.caveat) out(`  caveat: ${node.caveat}`);
  }
  const upstream = entries.filter((entry) => !selected.has(entry.id));
  if (upstream.length > 0) {
    out('depends on:');
    for (const entry of upstream) out(`  ${entry.id}: ${verdictText(entry)}`);
  }
  return 0;
}

function describeNode(node: NodeDef, out: (line: string) => void): void {
  if (node.deps.length > 0) out(`  deps: ${node.deps.join(', ')}`);
  const files = [...(node.files ?? [])];
  if (files.length > 0) out(`  input files: ${files.join(', ')}`);
  if (node.inputs && node.inputs.length > 0) out(`  input globs: ${node.inputs.join(', ')}`);
  if (node.env && node.env.length > 0) out(`  environment: ${node.env.join(', ')}`);
  if (node.probe) out('  also checks upstream state each run');
  if (node.outputs && node.outputs.length > 0) out(`  outputs: ${node.outputs.join(', ')}`);
  if (node.key) out(`  key file: ${node.key.path}`);
}

/** A view of the targets' plan, printed as lines or as the contract's JSON. */
export interface PlanView {
  readonly session: Session;
  readonly targets: readonly string[];
  readonly settings: RunSettings;
  readonly json: boolean;
  readonly out: (line: string) => void;
}

export async function printDryRun({ session, targets, settings, json, out }: PlanView): Promise<number> {
  const { graph, entries } = await session.plan(targets, settings);
  const details = await wouldRun(session, graph, entries, settings);
  if (json) out(formatOutput(dryRunOutput(entries, details)));
  else printVerdicts(entries, details, 'dry run', out);
  return 0;
}

/** `plan`: the verdicts as `--dry-run` prints them, then the jobs the config makes of them (a CI matrix); `--json` is the contract's `plan`. */
export async function printPlan({ session, targets, settings, json, out }: PlanView): Promise<number> {
  const { graph, entries } = await session.plan(targets, settings);
  const output = planOutput(entries, session.config.planJobs?.bind(session.config));
  if (json) {
    out(formatOutput(output));
    return 0;
  }
  printVerdicts(entries, await wouldRun(session, graph, entries, settings), 'plan', out);
  if (output.jobs !== undefined) {
    const rows = jobRows(output.jobs);
    out(rows.length === 0 ? 'jobs: none' : 'jobs (pipeline plan --json gives them as a CI matrix):');
    for (const row of rows) out(`  ${row}`);
  }
  return 0;
}

/** What each node that may run would do, as its kind describes it (a fetch's reason already says). */
async function wouldRun(session: Session, graph: Graph, entries: readonly PlanEntry[], settings: RunSettings): Promise<Map<NodeId, string | undefined>> {
  const details = new Map<NodeId, string | undefined>();
  for (const entry of entries) {
    if (entry.verdict.fresh || entry.fetch) continue;
    const describe = graph.node(entry.id).describeRun;
    details.set(entry.id, describe ? await describe({ root: session.root, flags: settings.flags, signal: settings.signal }) : undefined);
  }
  return details;
}

function printVerdicts(entries: readonly PlanEntry[], details: ReadonlyMap<NodeId, string | undefined>, what: string, out: (line: string) => void): void {
  for (const entry of entries) {
    out(`${DRY_RUN_MARK[verdictStatus(entry.verdict)]} ${entry.id}: ${verdictText(entry)}`);
    const detail = details.get(entry.id);
    if (detail) out(`    ${verdictStatus(entry.verdict) === 'pending' ? `if it runs: ${detail}` : detail}`);
    if (entry.note) out(`    note: ${entry.note}`);
  }
  const count = (status: VerdictStatus): number => entries.filter((entry) => verdictStatus(entry.verdict) === status).length;
  const parts = [`${count('stale')} of ${entries.length} would run`];
  if (count('pending') > 0) parts.push(`${count('pending')} more depending on what their dependencies produce`);
  if (count('adopted') > 0) parts.push(`${count('adopted')} would be adopted`);
  out(`${parts.join(', ')} (${what}: nothing was changed)`);
}

/** A config's jobs as lines: one per matrix entry (`image=pve-9 target=pve-9:upload`), else the JSON. */
function jobRows(jobs: Json): string[] {
  const include = jobs !== null && typeof jobs === 'object' && !Array.isArray(jobs) ? jobs.include : undefined;
  if (!Array.isArray(include)) return [JSON.stringify(jobs)];
  return include.map((job) =>
    job !== null && typeof job === 'object' && !Array.isArray(job)
      ? Object.entries(job)
          .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
          .join(' ')
      : JSON.stringify(job),
  );
}

/** The graph of the `selected` nodes (a closure: every dependency is among them), in mermaid or dot. */
export function describeGraph(graph: Graph, selected: readonly NodeId[], format: 'mermaid' | 'dot'): string {
  const nodes = selected.map((id) => graph.node(id));
  if (format === 'dot') {
    const lines = ['digraph pipeline {', '  rankdir=LR;'];
    for (const node of nodes) lines.push(`  ${JSON.stringify(node.id)};`);
    for (const node of nodes) for (const dep of node.deps) lines.push(`  ${JSON.stringify(dep)} -> ${JSON.stringify(node.id)};`);
    lines.push('}');
    return lines.join('\n');
  }
  const ids = new Map(nodes.map((node, index) => [node.id, `n${index}`] as const));
  const lines = ['flowchart LR'];
  for (const node of nodes) lines.push(`  ${ids.get(node.id)}["${node.id}"]`);
  for (const node of nodes) for (const dep of node.deps) lines.push(`  ${ids.get(dep)} --> ${ids.get(node.id)}`);
  return lines.join('\n');
}
