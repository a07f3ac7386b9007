// `--profile FILE`: the run as Chrome trace events (the JSON object format that Perfetto,
// chrome://tracing and Chromium DevTools' Performance panel open). One track per pool
// slot (`packer #1`, `job #2`): a slice per node that ran, holding a slice per phase (run,
// hash, record). What happens outside a slot (checking a node before it runs: probe,
// hash, preflight) goes on `checking` tracks.
import { rm, stat, writeFile } from 'node:fs/promises';
import { siblingTempPath, writeFileAtomic } from '../atomic.ts';
import { Failure } from '../failure.ts';
import type { NodePhase } from '../observer.ts';
import type { NodeResult } from '../execute.ts';
import type { Reason } from '../reason.ts';
import type { NodeId } from '../types.ts';
import { reasonText } from './reason-text.ts';
import type { Reporter } from './reporter.ts';

/** A Chrome trace event; `ts` and `dur` are microseconds. */
export interface TraceEvent {
  readonly name: string;
  readonly ph: 'X' | 'M';
  readonly pid: number;
  readonly tid: number;
  readonly ts?: number;
  readonly dur?: number;
  readonly cat?: string;
  readonly args?: Readonly<Record<string, unknown>>;
}

export interface TraceFile {
  readonly traceEvents: readonly TraceEvent[];
  readonly displayTimeUnit: 'ms';
}

const PID = 1;
/** Tracks of work outside a slot; pools and jobs get their own. */
const CHECKING = 'checking';

interface OpenSlice {
  readonly name: string;
  readonly start: number;
  readonly args: Record<string, unknown>;
}

interface NodeTrack {
  readonly lane: { readonly group: string; readonly index: number; readonly name: string };
  readonly node: OpenSlice;
  phase?: OpenSlice;
}

/** A finished slice, on the track named `lane`. */
interface Slice extends OpenSlice {
  readonly lane: string;
  readonly cat: 'node' | 'phase';
  readonly end: number;
}

export class ProfileReporter implements Reporter {
  private readonly origin = performance.now();
  private readonly slices: Slice[] = [];
  /** Lanes in use, by group (`packer`, `job`, `checking`): index -> busy. */
  private readonly lanes = new Map<string, boolean[]>();
  private readonly open = new Map<NodeId, NodeTrack>();

  constructor(
    private readonly file: string,
    private readonly title: string,
    /** The pool a node runs in (undefined: only --jobs bounds it). */
    private readonly poolOf: (id: NodeId) => string | undefined,
  ) {}

  /**
   * A reporter for `--profile given`, once a trace could be written there: the check runs
   * before the run starts, so a path that cannot take the trace costs no work. A usage
   * Failure (one line, exit 2) names the flag, the path and what is wrong.
   */
  static async open(given: string, file: string, title: string, poolOf: (id: NodeId) => string | undefined): Promise<ProfileReporter> {
    const problem = await unwritable(file);
    if (problem !== undefined) throw new Failure('usage', `--profile ${given}: ${problem}; give a file in a writable directory`);
    return new ProfileReporter(file, title, poolOf);
  }

  start(): void {}

  nodePhase(id: NodeId, phase: NodePhase, edge: 'begin' | 'end'): void {
    const now = this.now();
    if (edge === 'begin') {
      // A phase outside a slot (before the node starts) gets a checking track for its length.
      const track = this.open.get(id) ?? this.openTrack(id, CHECKING, now);
      this.closePhase(track, now);
      track.phase = { name: phase, start: now, args: { node: id } };
      return;
    }
    const track = this.open.get(id);
    if (!track || track.phase?.name !== phase) return;
    this.closePhase(track, now);
    if (track.lane.group === CHECKING) this.closeTrack(id, now);
  }

  nodeStarted(id: NodeId, reason: Reason): void {
    const now = this.now();
    if (this.open.get(id)?.lane.group === CHECKING) this.closeTrack(id, now);
    this.openTrack(id, this.poolOf(id) ?? 'job', now, { reason: reasonText(reason) });
  }

  nodeFinished(result: NodeResult): void {
    const track = this.open.get(result.id);
    if (!track) return;
    track.node.args.status = result.status;
    if (result.error !== undefined) track.node.args.error = result.error;
    this.closeTrack(result.id, this.now());
  }

  async finish(): Promise<void> {
    await this.save();
  }

  async abandon(): Promise<void> {
    await this.save();
  }

  private async save(): Promise<void> {
    const now = this.now();
    for (const id of [...this.open.keys()]) this.closeTrack(id, now);
    // Track ids in display order (viewers that ignore thread_sort_index order by id).
    const lanes = [...new Set(this.slices.map((slice) => slice.lane))].sort(
      (a, b) => laneOrder(a) - laneOrder(b) || a.localeCompare(b, 'en', { numeric: true }),
    );
    const tidOf = new Map(lanes.map((lane, index) => [lane, index + 1] as const));
    const events: TraceEvent[] = [{ name: 'process_name', ph: 'M', pid: PID, tid: 0, args: { name: this.title } }];
    for (const [lane, tid] of tidOf) {
      events.push({ name: 'thread_name', ph: 'M', pid: PID, tid, args: { name: lane } });
      events.push({ name: 'thread_sort_index', ph: 'M', pid: PID, tid, args: { sort_index: tid } });
    }
    // Parents before children: a node and its one phase can share both ends (a check).
    const ordered = [...this.slices].sort((a, b) => a.start - b.start || b.end - a.end || (a.cat === b.cat ? 0 : a.cat === 'node' ? -1 : 1));
    for (const slice of ordered) {
      events.push({
        name: slice.name,
        cat: slice.cat,
        ph: 'X',
        pid: PID,
        tid: tidOf.get(slice.lane)!,
        ts: slice.start,
        dur: slice.end - slice.start,
        args: slice.args,
      });
    }
    const trace: TraceFile = { traceEvents: events, displayTimeUnit: 'ms' };
    try {
      await writeFileAtomic(this.file, `${JSON.stringify(trace)}\n`);
    } catch (error) {
      // Possible still when the directory changed during the run: one line, not a stack.
      throw new Failure('setup', `--profile: cannot write ${this.file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
    }
  }

  private openTrack(id: NodeId, group: string, now: number, args: Record<string, unknown> = {}): NodeTrack {
    let busy = this.lanes.get(group);
    if (!busy) this.lanes.set(group, (busy = []));
    let index = busy.indexOf(false);
    if (index < 0) index = busy.push(false) - 1;
    busy[index] = true;
    const track: NodeTrack = { lane: { group, index, name: `${group} #${index + 1}` }, node: { name: id, start: now, args } };
    this.open.set(id, track);
    return track;
  }

  private closeTrack(id: NodeId, now: number): void {
    const track = this.open.get(id)!;
    this.closePhase(track, now);
    this.slices.push({ ...track.node, lane: track.lane.name, cat: 'node', end: now });
    this.lanes.get(track.lane.group)![track.lane.index] = false;
    this.open.delete(id);
  }

  private closePhase(track: NodeTrack, now: number): void {
    if (!track.phase) return;
    this.slices.push({ ...track.phase, lane: track.lane.name, cat: 'phase', end: now });
    delete track.phase;
  }

  /** Whole microseconds since the run began, on a monotonic clock. */
  private now(): number {
    return Math.round((performance.now() - this.origin) * 1000);
  }
}

/** Slot tracks first (pools, then jobs), checking tracks last. */
function laneOrder(name: string): number {
  if (name.startsWith(`${CHECKING} `)) return 2;
  if (name.startsWith('job ')) return 1;
  return 0;
}

/** Why a trace cannot be written to `file` (as writeFileAtomic writes it: a sibling temp file renamed), or undefined. */
async function unwritable(file: string): Promise<string | undefined> {
  if ((await stat(file).catch(() => undefined))?.isDirectory()) return 'is a directory';
  const probe = siblingTempPath(file);
  try {
    await writeFile(probe, '', { flag: 'wx' });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'its directory does not exist';
    if (code === 'ENOTDIR') return 'a part of its path is not a directory';
    return `cannot write in its directory (${code ?? (error as Error).message})`;
  }
  await rm(probe, { force: true });
  return undefined;
}
