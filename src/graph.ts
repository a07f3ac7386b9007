// The task graph: nodes and edges, validation (unknown dependencies, cycles), target
// selection and closure, and topological order. Pure: no I/O.
import { nearest } from './suggest.ts';
import { type EngineConfig, Failure, type NodeDef, type NodeId } from './types.ts';

export class Graph {
  readonly nodes: ReadonlyMap<NodeId, NodeDef>;
  /** For each node, the nodes that depend on it. */
  readonly dependents: ReadonlyMap<NodeId, readonly NodeId[]>;

  constructor(
    nodes: readonly NodeDef[],
    readonly aliases: Readonly<Record<string, readonly NodeId[]>> = {},
  ) {
    const byId = new Map<NodeId, NodeDef>();
    for (const node of nodes) {
      if (byId.has(node.id)) throw new Failure('config', `node "${node.id}" is declared twice`);
      byId.set(node.id, node);
    }
    const dependents = new Map<NodeId, NodeId[]>();
    for (const node of nodes) {
      for (const dep of node.deps) {
        if (!byId.has(dep)) {
          const hint = nearest(dep, [...byId.keys()]);
          throw new Failure('config', `node "${node.id}" depends on "${dep}", which is not declared${hint ? ` (did you mean "${hint}"?)` : ''}`);
        }
        let list = dependents.get(dep);
        if (!list) dependents.set(dep, (list = []));
        list.push(node.id);
      }
    }
    for (const [alias, targets] of Object.entries(aliases)) {
      if (byId.has(alias)) throw new Failure('config', `target "${alias}" is both a node and an alias`);
      for (const target of targets) {
        if (!byId.has(target)) throw new Failure('config', `alias "${alias}" names "${target}", which is not declared`);
      }
    }
    this.nodes = byId;
    this.dependents = dependents;
    const cycle = findCycle(byId);
    if (cycle) throw new Failure('config', `dependency cycle: ${cycle.join(' -> ')}`);
  }

  /** Every name a user may give as a target, sorted: node ids and aliases. */
  targetNames(): string[] {
    return [...this.nodes.keys(), ...Object.keys(this.aliases)].sort();
  }

  /** Resolves target names to node ids; an unknown name is a `usage` Failure with a suggestion. */
  resolveTargets(targets: readonly string[], extraNames: readonly string[] = []): NodeId[] {
    const selected: NodeId[] = [];
    for (const target of targets) {
      if (this.nodes.has(target)) selected.push(target);
      else if (Object.hasOwn(this.aliases, target)) selected.push(...this.aliases[target]!);
      else {
        const known = [...this.targetNames(), ...extraNames];
        const hint = nearest(target, known);
        throw new Failure('usage', `unknown target "${target}"${hint ? ` (did you mean "${hint}"?)` : ''}; valid targets: ${known.join(', ')}`);
      }
    }
    return [...new Set(selected)];
  }

  /** The selected nodes and everything they depend on, in topological order. */
  closure(selected: readonly NodeId[]): NodeId[] {
    const order: NodeId[] = [];
    const seen = new Set<NodeId>();
    const visit = (id: NodeId): void => {
      if (seen.has(id)) return;
      seen.add(id);
      for (const dep of this.node(id).deps) visit(dep);
      order.push(id);
    };
    for (const id of selected) visit(id);
    return order;
  }

  node(id: NodeId): NodeDef {
    const node = this.nodes.get(id);
    if (!node) throw new Error(`internal: no node ${id}`);
    return node;
  }
}

/**
 * The config's graph (`base`) with the nodes of the family targets among `targets`
 * (`upload:v1.2` expands to new nodes, and becomes an alias of those it selects); `base`
 * itself when none is named, as in most runs.
 */
export function withFamilyTargets(base: Graph, config: Pick<EngineConfig, 'nodes' | 'aliases' | 'families'>, targets: readonly string[]): Graph {
  const extra: NodeDef[] = [];
  let aliases: Record<string, readonly NodeId[]> | undefined;
  for (const target of targets) {
    if (base.nodes.has(target) || Object.hasOwn(aliases ?? base.aliases, target)) continue;
    const split = target.indexOf(':');
    const name = target.slice(0, split);
    const family = split > 0 && config.families && Object.hasOwn(config.families, name) ? config.families[name] : undefined;
    if (!family) continue;
    const expanded = family.expand(target.slice(split + 1));
    for (const node of expanded.nodes) if (!base.nodes.has(node.id)) extra.push(node);
    aliases ??= { ...base.aliases };
    aliases[target] = expanded.targets;
  }
  if (!aliases) return base;
  return new Graph([...config.nodes, ...extra], aliases);
}

/** Returns one cycle as a path that starts and ends at the same node, or undefined. */
function findCycle(nodes: ReadonlyMap<NodeId, NodeDef>): NodeId[] | undefined {
  const state = new Map<NodeId, 'visiting' | 'done'>();
  const path: NodeId[] = [];
  const visit = (id: NodeId): NodeId[] | undefined => {
    const current = state.get(id);
    if (current === 'done') return undefined;
    if (current === 'visiting') return [...path.slice(path.indexOf(id)), id];
    state.set(id, 'visiting');
    path.push(id);
    for (const dep of nodes.get(id)?.deps ?? []) {
      const cycle = visit(dep);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(id, 'done');
    return undefined;
  };
  for (const id of [...nodes.keys()].sort()) {
    const cycle = visit(id);
    if (cycle) return cycle;
  }
  return undefined;
}
