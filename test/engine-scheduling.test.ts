// Scheduling, from the times the `--json` summary reports: parallelism bounded by --jobs
// and pools, fail-fast, --keep-going.
import test from 'ava';
import { idsWith, makeProject, nodeOf, overlaps, type NodeJson } from './support/engine-project.ts';

function sleeper(name: string, seconds: number, pool?: string): string {
  return `${name}: { outputs: ['out/${name}.txt'],${pool ? ` pool: '${pool}',` : ''} command: ['sh', '-c', 'sleep ${seconds}; mkdir -p out; echo ${name} > out/${name}.txt'] },`;
}

function config(steps: string[], extra = ''): string {
  return `
import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  steps: {
    ${steps.join('\n    ')}
  },
  ${extra}
});
`;
}

function ranNodes(nodes: readonly NodeJson[]): NodeJson[] {
  return nodes.filter((node) => node.startedAt !== undefined).sort((a, b) => a.startedAt! - b.startedAt!);
}

function overlappingPairs(nodes: readonly NodeJson[]): string[] {
  const pairs: string[] = [];
  for (let i = 0; i < nodes.length; i++) {
    for (let j = i + 1; j < nodes.length; j++) if (overlaps(nodes[i]!, nodes[j]!)) pairs.push(`${nodes[i]!.id}+${nodes[j]!.id}`);
  }
  return pairs;
}

const INDEPENDENT = config([sleeper('a', 0.8), sleeper('b', 0.8), sleeper('c', 0.8)], "aliases: { all: ['a', 'b', 'c'] },");

/** A step that finishes only once all three have started: only a parallel run completes. */
function rendezvous(name: string): string {
  const wait =
    'n=0; until [ -e started-a ] && [ -e started-b ] && [ -e started-c ]; do n=$((n+1)); [ $n -gt 1200 ] && { echo "the others never started"; exit 1; }; sleep 0.05; done';
  return `${name}: { outputs: ['out/${name}.txt'], command: ['sh', '-c', 'touch started-${name}; ${wait}; mkdir -p out; echo ${name} > out/${name}.txt'] },`;
}

test('independent nodes run at the same time', async (t) => {
  // Each node waits until all three have started, so the run succeeds only if they ran at
  // once (no wall-clock bound: a loaded machine only makes it slower).
  const project = await makeProject(t, { config: config([rendezvous('a'), rendezvous('b'), rendezvous('c')], "aliases: { all: ['a', 'b', 'c'] },") });
  const run = await project.run(['all', '--jobs', '3', '--json']);
  t.is(run.code, 0, run.stderr);
  t.is(run.json?.ran, 3);
  const nodes = ranNodes(run.json!.nodes);
  t.is(overlappingPairs(nodes).length, 3, `every pair overlaps: ${JSON.stringify(nodes)}`);
});

test('with --jobs 1 no two nodes overlap', async (t) => {
  const project = await makeProject(t, { config: INDEPENDENT });
  const run = await project.run(['all', '--jobs', '1', '--json']);
  t.is(run.code, 0, run.stderr);
  const nodes = ranNodes(run.json!.nodes);
  t.is(nodes.length, 3);
  t.deepEqual(overlappingPairs(nodes), []);
  for (let i = 1; i < nodes.length; i++) t.true(nodes[i]!.startedAt! >= nodes[i - 1]!.finishedAt!);
});

test('nodes in a pool of size 1 never overlap, whatever --jobs says, while others still run beside them', async (t) => {
  const project = await makeProject(t, {
    config: config(
      [sleeper('vm1', 0.5, 'vm'), sleeper('vm2', 0.5, 'vm'), sleeper('vm3', 0.5, 'vm'), sleeper('net1', 1.2, 'net'), sleeper('free', 1.2)],
      "aliases: { all: ['vm1', 'vm2', 'vm3', 'net1', 'free'] }, pools: { vm: 1, net: 4 },",
    ),
  });
  const run = await project.run(['all', '--jobs', '16', '--json']);
  t.is(run.code, 0, run.stderr);
  t.is(run.json?.ran, 5);
  const vms = ranNodes(run.json!.nodes.filter((node) => node.id.startsWith('vm')));
  t.is(vms.length, 3);
  t.deepEqual(overlappingPairs(vms), [], JSON.stringify(vms));
  const free = nodeOf(run.json, 'free');
  t.true(
    vms.some((vm) => overlaps(vm, free)),
    'a node outside the pool runs beside a pool member',
  );
});

test('fail-fast: after a failure no new node starts, exit 1', async (t) => {
  const project = await makeProject(t, {
    config: config(
      [
        `bad: { command: ['sh', '-c', 'sleep 0.3; echo broken >&2; exit 3'] },`,
        sleeper('long', 1),
        sleeper('later1', 0.2),
        sleeper('later2', 0.2),
        `after: { deps: ['bad'], command: ['sh', '-c', 'touch after-ran'] },`,
      ],
      "aliases: { all: ['bad', 'long', 'later1', 'later2', 'after'] },",
    ),
  });
  const run = await project.run(['all', '--jobs', '2', '--json']);
  t.is(run.code, 1, run.stderr);
  t.is(run.json?.ok, false);
  const bad = nodeOf(run.json, 'bad');
  t.is(bad.status, 'failed');
  t.regex(bad.error ?? '', /exited with code 3: broken/);
  t.truthy(bad.logFile);
  for (const node of run.json!.nodes) {
    if (node.startedAt !== undefined) t.true(node.startedAt <= bad.finishedAt!, `${node.id} started after ${bad.id} failed`);
  }
  // The node running beside it was let finish; the queued ones never started.
  t.is(nodeOf(run.json, 'long').status, 'ran');
  t.deepEqual(idsWith(run.json, 'skipped'), ['after', 'later1', 'later2']);
  t.deepEqual(nodeOf(run.json, 'later1').why, { code: 'earlier-failure' });
  t.deepEqual(nodeOf(run.json, 'after').why, { code: 'dependency-failed', id: 'bad' });
  t.false(project.exists('after-ran'));
  t.false(project.exists('out/later1.txt'));
});

test("a failure prints the failed node's log tail on stderr", async (t) => {
  const project = await makeProject(t, {
    config: config([`bad: { command: ['sh', '-c', 'for i in 1 2 3 4 5; do echo "progress step $i"; done; echo "fatal: disk on fire" >&2; exit 7'] },`]),
  });
  const run = await project.run(['bad']);
  t.is(run.code, 1);
  t.is(run.stdout, '');
  t.regex(run.stderr, /bad failed: sh exited with code 7: fatal: disk on fire/);
  t.regex(run.stderr, /last \d+ lines of .*logs\/bad\.[0-9-]+\.log/);
  for (let i = 1; i <= 5; i++) t.true(run.stderr.includes(`progress step ${i}`), run.stderr);
  const log = /lines of (\S+\.log)/.exec(run.stderr)?.[1];
  t.truthy(log);
  t.regex(await project.read(log!.slice(project.root.length + 1)), /progress step 5\nfatal: disk on fire\n/);
});

test('--keep-going runs the independent branch and skips the dependents of the failure', async (t) => {
  const project = await makeProject(t, {
    config: config(
      [
        `bad: { command: ['sh', '-c', 'exit 1'] },`,
        `badChild: { deps: ['bad'], outputs: ['out/badChild.txt'], command: ['sh', '-c', 'mkdir -p out; touch out/badChild.txt'] },`,
        `badGrandchild: { deps: ['badChild'], command: ['sh', '-c', 'touch grandchild-ran'] },`,
        sleeper('good', 0.3),
        `goodChild: { deps: ['good'], outputs: ['out/goodChild.txt'], command: ['sh', '-c', 'cp out/good.txt out/goodChild.txt'] },`,
      ],
      "aliases: { all: ['badGrandchild', 'goodChild'] },",
    ),
  });
  const run = await project.run(['all', '--keep-going', '--jobs', '1', '--json']);
  t.is(run.code, 1, run.stderr);
  t.deepEqual(idsWith(run.json, 'failed'), ['bad']);
  t.deepEqual(idsWith(run.json, 'ran'), ['good', 'goodChild']);
  t.deepEqual(idsWith(run.json, 'skipped'), ['badChild', 'badGrandchild']);
  t.deepEqual(nodeOf(run.json, 'badChild').why, { code: 'dependency-failed', id: 'bad' });
  t.is(await project.read('out/goodChild.txt'), 'good\n');
  t.false(project.exists('out/badChild.txt'));
  t.false(project.exists('grandchild-ran'));

  // The independent branch is recorded as built: the next run only retries the failure.
  const again = await project.run(['all', '--keep-going', '--json']);
  t.deepEqual(idsWith(again.json, 'fresh'), ['good', 'goodChild']);
  t.deepEqual(idsWith(again.json, 'failed'), ['bad']);
});
