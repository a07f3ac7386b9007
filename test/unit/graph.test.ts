// The graph (src/graph.ts) in process: it does no I/O, so every rule is checked on node
// definitions alone: what a config may declare, how targets resolve, and the order runs use.
import test from 'ava';
import { Graph, withFamilyTargets } from '../../src/graph.ts';
import { isFailure, type NodeDef } from '../../src/types.ts';

function node(id: string, deps: string[] = []): NodeDef {
  return { id, kind: 'test', deps, run: async () => undefined };
}

function configError(t: import('ava').ExecutionContext, make: () => unknown, message: RegExp): void {
  const error = t.throws(make);
  t.true(isFailure(error, 'config'), String(error));
  t.regex(error!.message, message);
}

test('a node declared twice, an unknown dependency (with the nearest name) and a bad alias are config errors', (t) => {
  configError(t, () => new Graph([node('a'), node('a')]), /^node "a" is declared twice$/);
  configError(
    t,
    () => new Graph([node('build'), node('test', ['biuld'])]),
    /^node "test" depends on "biuld", which is not declared \(did you mean "build"\?\)$/,
  );
  configError(t, () => new Graph([node('a'), node('b', ['zzz-unrelated'])]), /which is not declared$/);
  configError(t, () => new Graph([node('a')], { all: ['a', 'b'] }), /^alias "all" names "b", which is not declared$/);
  configError(t, () => new Graph([node('a')], { a: ['a'] }), /^target "a" is both a node and an alias$/);
});

test('a cycle is a config error that names it, from and back to one node', (t) => {
  configError(t, () => new Graph([node('a', ['c']), node('b', ['a']), node('c', ['b'])]), /^dependency cycle: a -> c -> b -> a$/);
  configError(t, () => new Graph([node('self', ['self'])]), /^dependency cycle: self -> self$/);
});

test('the closure holds the selected nodes and all they depend on, each once, dependencies first', (t) => {
  const graph = new Graph([node('base'), node('left', ['base']), node('right', ['base']), node('top', ['left', 'right']), node('other')]);
  const order = graph.closure(['top']);
  t.deepEqual([...order].sort(), ['base', 'left', 'right', 'top']);
  for (const id of order) for (const dep of graph.node(id).deps) t.true(order.indexOf(dep) < order.indexOf(id), `${dep} before ${id}`);
  t.deepEqual(graph.closure(['left', 'left', 'base']), ['base', 'left']);
  t.deepEqual(graph.dependents.get('base'), ['left', 'right']);
});

test('targets resolve through aliases, once each; an unknown one is a usage error naming the valid ones and the nearest', (t) => {
  const graph = new Graph([node('a'), node('b'), node('c')], { all: ['a', 'b'], both: ['b', 'c'] });
  t.deepEqual(graph.resolveTargets(['all', 'both', 'a']), ['a', 'b', 'c']);
  t.deepEqual(graph.targetNames(), ['a', 'all', 'b', 'both', 'c']);
  const error = t.throws(() => graph.resolveTargets(['bth'], ['upload:{tag}']));
  t.true(isFailure(error, 'usage'));
  t.is(error!.message, 'unknown target "bth" (did you mean "both"?); valid targets: a, all, b, both, c, upload:{tag}');
});

test("names of Object's own properties are targets like any other: unknown unless declared", (t) => {
  const graph = new Graph([node('a')], { all: ['a'] });
  for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
    const error = t.throws(() => graph.resolveTargets([name]));
    t.true(isFailure(error, 'usage'), `${name}: ${String(error)}`);
  }
  const declared = new Graph([node('constructor')], { toString: ['constructor'] });
  t.deepEqual(declared.resolveTargets(['toString']), ['constructor']);
});

test('a family target adds the nodes it expands to and becomes an alias of those it selects; other targets leave the graph as it was', (t) => {
  const nodes = [node('build'), node('upload', ['build'])];
  const base = new Graph(nodes, { all: ['build'] });
  const expanded: string[] = [];
  const config = {
    nodes,
    families: {
      upload: {
        usage: 'upload:{tag}',
        description: 'upload to a tag',
        expand(tag: string) {
          expanded.push(tag);
          return tag === 'latest' ? { nodes: [], targets: ['upload'] } : { nodes: [node(`upload@${tag}`, ['build'])], targets: [`upload@${tag}`] };
        },
      },
    },
  };
  t.is(withFamilyTargets(base, config, ['all', 'build', 'constructor:x', 'nofamily:x']), base);
  const graph = withFamilyTargets(base, config, ['upload:v2', 'upload:latest']);
  t.deepEqual(expanded, ['v2', 'latest']);
  t.deepEqual(graph.resolveTargets(['upload:v2']), ['upload@v2']);
  t.deepEqual(graph.resolveTargets(['upload:latest', 'all']), ['upload', 'build']);
  t.deepEqual(graph.closure(['upload@v2']), ['build', 'upload@v2']);
});
