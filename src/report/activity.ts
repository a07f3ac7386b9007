// What each node is doing right now, from the runner's events, in the words the live
// view and the plain lines print: what a node waits for, which phase it is in, and its
// current bar (a new bar for each phase, and whenever progress restarts, so a bar never
// goes backwards and its label says what it measures).
import type { NodePhase, Wait } from '../observer.ts';
import type { NodeId, ProgressUnit } from '../types.ts';
import { ProgressMeter } from './format.ts';

export interface Bar {
  readonly label: string;
  readonly meter: ProgressMeter;
}

export interface NodeActivity {
  /** Dependencies it still waits for, or the pool slot it waits for. */
  waitingFor?: { readonly dependencies: Set<NodeId> } | { readonly slot: string };
  /** Between the runner's `nodeStarted` and the node's end. */
  running: boolean;
  phase?: NodePhase;
  /** The task's last status or log line. */
  status?: string;
  bar?: Bar;
}

/** Labels of the engine's own phases; a task's run is labelled by its status. */
const PHASE_LABELS: Record<NodePhase, string> = {
  probe: 'checking upstream',
  hash: 'hashing',
  preflight: 'checking setup',
  run: 'running',
  record: 'recording',
};

const LABEL_MAX = 48;

export class Activities {
  private readonly nodes = new Map<NodeId, NodeActivity>();
  /** For each node, the nodes that said they wait for it: a node's end touches only those. */
  private readonly waiters = new Map<NodeId, NodeId[]>();

  get(id: NodeId): NodeActivity {
    let node = this.nodes.get(id);
    if (!node) this.nodes.set(id, (node = { running: false }));
    return node;
  }

  waiting(id: NodeId, wait: Wait): void {
    const node = this.get(id);
    node.waitingFor = 'slot' in wait ? { slot: wait.slot } : { dependencies: new Set(wait.dependencies) };
    if ('slot' in wait) return;
    for (const dependency of wait.dependencies) {
      const list = this.waiters.get(dependency);
      if (list) list.push(id);
      else this.waiters.set(dependency, [id]);
    }
  }

  started(id: NodeId): void {
    const node = this.get(id);
    node.running = true;
    delete node.waitingFor;
  }

  phase(id: NodeId, phase: NodePhase, edge: 'begin' | 'end'): void {
    const node = this.get(id);
    if (edge === 'begin') {
      node.phase = phase;
      delete node.bar;
      // The engine's hashing and recording replace what the task last said.
      if (phase !== 'run') delete node.status;
    } else if (node.phase === phase) {
      delete node.phase;
    }
  }

  status(id: NodeId, text: string): void {
    this.get(id).status = text;
  }

  /** Feeds a progress sample; returns the bar it belongs to (new when it does not continue the last). */
  progress(id: NodeId, done: number, total: number | undefined, unit: ProgressUnit = 'bytes'): Bar {
    const node = this.get(id);
    if (!node.bar?.meter.continues(done, total, unit)) {
      node.bar = { label: this.barLabel(node), meter: new ProgressMeter(unit) };
    }
    node.bar.meter.update(done, total);
    return node.bar;
  }

  /** A node ended: it is no longer running, and nothing waits for it any more. */
  finished(id: NodeId): void {
    const node = this.get(id);
    node.running = false;
    delete node.waitingFor;
    delete node.bar;
    delete node.phase;
    for (const waiter of this.waiters.get(id) ?? []) {
      const other = this.nodes.get(waiter);
      if (other?.waitingFor && 'dependencies' in other.waitingFor) {
        other.waitingFor.dependencies.delete(id);
        if (other.waitingFor.dependencies.size === 0) delete other.waitingFor;
      }
    }
    this.waiters.delete(id);
  }

  /** "waiting for a packer slot", "waiting for trixie:download", or undefined when not waiting. */
  waitText(id: NodeId): string | undefined {
    const wait = this.nodes.get(id)?.waitingFor;
    if (!wait) return undefined;
    if ('slot' in wait) return wait.slot === 'job' ? 'waiting for a free job (--jobs)' : `waiting for a ${wait.slot} slot`;
    return `waiting for ${[...wait.dependencies].join(', ')}`;
  }

  private barLabel(node: NodeActivity): string {
    const label = node.status ?? PHASE_LABELS[node.phase ?? 'run'];
    return label.length > LABEL_MAX ? `${label.slice(0, LABEL_MAX - 1)}…` : label;
  }
}
