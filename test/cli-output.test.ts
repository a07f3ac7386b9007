// Commands mean what they say, and print what they are asked to: `graph` draws its
// targets' closure and rejects unknown ones, a bad flag is one clean line, --verbose
// streams the tasks' logs, --quiet prints only failures and the summary, and --profile
// checks its path before the run, then writes a Chrome trace whose slices nest, one track
// per pool slot.
import test from 'ava';
import { makeProject } from './support/engine-project.ts';
import type { TraceEvent, TraceFile } from '../src/report/profile.ts';

const CONFIG = `
import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  pools: { vm: 1 },
  steps: {
    fetch: { outputs: ['out/fetch.txt'], command: ['sh', '-c', 'mkdir -p out; echo fetched > out/fetch.txt'] },
    'a:build': { deps: ['fetch'], pool: 'vm', outputs: ['out/a.txt'], command: ['sh', '-c', 'echo "building a"; echo "a: step 2"; sleep 0.3; echo a > out/a.txt'] },
    'b:build': { deps: ['fetch'], pool: 'vm', outputs: ['out/b.txt'], command: ['sh', '-c', 'echo "building b"; sleep 0.3; echo b > out/b.txt'] },
    'a:publish': { deps: ['a:build'], outputs: ['out/a.pub'], command: ['sh', '-c', 'cp out/a.txt out/a.pub'] },
    lonely: { outputs: ['out/lonely.txt'], command: ['sh', '-c', 'mkdir -p out; echo alone > out/lonely.txt'] },
    broken: { command: ['sh', '-c', 'echo "the last words"; exit 4'] },
  },
  aliases: { all: ['a:publish', 'b:build', 'lonely'] },
  defaultTarget: 'all',
});
`;

test('graph draws what its targets select and what they depend on, nothing else', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  const one = await project.run(['graph', 'a:publish', '--format', 'dot']);
  t.is(one.code, 0, one.stderr);
  t.deepEqual(
    one.stdout.split('\n').filter((line) => line.includes('->')),
    ['  "fetch" -> "a:build";', '  "a:build" -> "a:publish";'],
  );
  t.notRegex(one.stdout, /b:build|lonely|broken/);

  const alias = await project.run(['graph', 'all']);
  t.is(alias.code, 0, alias.stderr);
  for (const id of ['fetch', 'a:build', 'b:build', 'a:publish', 'lonely']) t.true(alias.stdout.includes(`["${id}"]`), id);
  t.false(alias.stdout.includes('broken'));

  const whole = await project.run(['graph']);
  t.true(whole.stdout.includes('["broken"]'), 'no target: the whole graph');
});

test('graph with an unknown target is exit 2 with the valid ones and the nearest', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  const typo = await project.run(['graph', 'a:pubish']);
  t.is(typo.code, 2);
  t.is(typo.stdout, '');
  t.regex(typo.stderr, /^pipeline: unknown target "a:pubish" \(did you mean "a:publish"\?\); valid targets: a:build, a:publish, all, /);
  const nonsense = await project.run(['graph', 'nonsense']);
  t.is(nonsense.code, 2);
  t.regex(nonsense.stderr, /unknown target "nonsense"/);
});

test('an unknown or misused flag is one clean line naming it, exit 2', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  const cases: Array<[string[], RegExp]> = [
    [['--forse'], /^pipeline: unknown flag --forse \(did you mean --force\?\); see pipeline --help$/],
    [['-x'], /^pipeline: unknown flag -x; see pipeline --help$/],
    [['--force=yes'], /^pipeline: --force takes no value \(got "yes"\)$/],
    [['--jobs'], /^pipeline: --jobs needs a value; see pipeline --help$/],
    [['--jobs', '-3'], /^pipeline: --jobs needs a value, not "-3" \(write --jobs=-3 if that is the value\)$/],
    [['--verbose', '--quiet'], /^pipeline: --verbose and --quiet contradict each other: give one$/],
    [['--dry-run', '--profile', 'trace.json'], /^pipeline: --profile records a run; --dry-run runs nothing$/],
  ];
  for (const [args, expected] of cases) {
    const run = await project.run(args);
    t.is(run.code, 2, args.join(' '));
    t.regex(run.stderr.trimEnd(), expected, args.join(' '));
    t.is(run.stderr.trimEnd().split('\n').length, 1, 'one line');
    t.is((run.stderr.match(/"/g) ?? []).length % 2, 0, `balanced quotes: ${run.stderr}`);
  }
  t.false(project.exists('out'), 'no bad flag ran anything');
});

test('--verbose streams each task log line under its node; the plain view does not', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  const verbose = await project.run(['a:build', '--verbose']);
  t.is(verbose.code, 0, verbose.stderr);
  const lines = verbose.stderr.split('\n').map((line) => line.slice('00:00:00 '.length));
  t.true(lines.includes('  a:build | building a'), verbose.stderr);
  t.true(lines.includes('  a:build | a: step 2'));
  t.true(lines.indexOf('▶ a:build (never built)') < lines.indexOf('  a:build | building a'));
  t.true(lines.indexOf('  a:build | a: step 2') < lines.findIndex((line) => line.startsWith('✔ a:build')));

  const plain = await project.run(['a:build', '--force']);
  t.is(plain.code, 0, plain.stderr);
  t.notRegex(plain.stderr, /building a/);
});

test('--quiet prints only the failures and the summary', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  const ok = await project.run(['all', '--quiet']);
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stderr, /^\d\d:\d\d:\d\d 5 ran, 0 fresh in \S+\n$/);
  t.is(ok.stdout, '');

  const failed = await project.run(['broken', 'lonely', '-q', '--keep-going', '--force']);
  t.is(failed.code, 1);
  const lines = failed.stderr
    .trimEnd()
    .split('\n')
    .map((line) => line.slice('00:00:00 '.length));
  t.deepEqual(lines.slice(0, 3), [
    '✖ broken failed: sh exited with code 4: the last words',
    `✖ --- last 1 lines of ${lines[1]!.slice('✖ --- last 1 lines of '.length)}`,
    '✖   the last words',
  ]);
  t.regex(lines[1]!, /^✖ --- last 1 lines of .*logs\/broken\.\S+\.log ---$/);
  t.regex(lines.at(-1)!, /^1 ran, 0 fresh, 1 failed in /);
  t.is(lines.length, 4, failed.stderr);
});

test('--profile to a path that cannot take the trace is one line, exit 2, before anything runs', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  await project.write('taken/.keep', '');
  await project.write('a-file', '');
  const cases: Array<[string, RegExp]> = [
    ['missing/trace.json', /^pipeline: --profile missing\/trace\.json: its directory does not exist; give a file in a writable directory$/],
    ['a-file/trace.json', /^pipeline: --profile a-file\/trace\.json: a part of its path is not a directory; give a file in a writable directory$/],
    ['taken', /^pipeline: --profile taken: is a directory; give a file in a writable directory$/],
  ];
  for (const [path, expected] of cases) {
    const run = await project.run(['all', '--profile', path]);
    t.is(run.code, 2, path);
    t.regex(run.stderr.trimEnd(), expected);
    t.is(run.stderr.trimEnd().split('\n').length, 1, 'one line');
  }
  // Under --json, stdout is the contract's error object, never "ok": true.
  const json = await project.run(['all', '--profile', 'missing/trace.json', '--json']);
  t.is(json.code, 2);
  t.like(JSON.parse(json.stdout), { ok: false, failureKind: 'usage' });
  t.false(project.exists('out'), 'nothing ran');
});

test('--profile writes Chrome trace events: a track per pool slot, node slices holding their phases', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  const run = await project.run(['all', '--profile', 'trace.json', '--json']);
  t.is(run.code, 0, run.stderr);
  const trace = JSON.parse(await project.read('trace.json')) as TraceFile;
  t.is(trace.displayTimeUnit, 'ms');
  const threads = new Map(trace.traceEvents.filter((event) => event.name === 'thread_name').map((event) => [event.tid, String(event.args!.name)] as const));
  const slices = trace.traceEvents.filter((event) => event.ph === 'X');
  for (const event of trace.traceEvents) {
    t.is(typeof event.name, 'string');
    t.is(event.pid, 1);
    t.true(Number.isInteger(event.tid));
    if (event.ph === 'X') t.true(Number.isInteger(event.ts) && Number.isInteger(event.dur) && event.dur! >= 0 && threads.has(event.tid), JSON.stringify(event));
    else t.is(event.ph, 'M');
  }

  const nodeSlices = (id: string): TraceEvent[] =>
    slices.filter((slice) => slice.cat === 'node' && slice.name === id && !threads.get(slice.tid)!.startsWith('checking'));
  // The vm pool has one slot: both builds ran on its one track, one after the other.
  const builds = [...nodeSlices('a:build'), ...nodeSlices('b:build')].sort((x, y) => x.ts! - y.ts!);
  t.deepEqual(
    builds.map((slice) => threads.get(slice.tid)),
    ['vm #1', 'vm #1'],
  );
  t.true(builds[0]!.ts! + builds[0]!.dur! <= builds[1]!.ts!, 'no overlap on a slot');
  for (const id of ['fetch', 'a:publish', 'lonely']) t.regex(threads.get(nodeSlices(id)[0]!.tid)!, /^job #\d+$/, id);
  t.false(
    [...threads.values()].some((name) => name.startsWith('vm #2')),
    'one track per slot of the pool',
  );

  // Every phase slice lies inside a node slice of its track; a node that ran has run, hash and record.
  const phases = slices.filter((slice) => slice.cat === 'phase');
  for (const phase of phases) {
    const parent = slices.find(
      (slice) => slice.cat === 'node' && slice.tid === phase.tid && slice.ts! <= phase.ts! && phase.ts! + phase.dur! <= slice.ts! + slice.dur!,
    );
    t.truthy(parent, `${phase.name} of ${String(phase.args?.node)} nests in a node slice`);
    t.is(parent?.name, String(phase.args?.node));
  }
  const phasesOf = (node: TraceEvent): string[] =>
    phases.filter((phase) => phase.tid === node.tid && phase.ts! >= node.ts! && phase.ts! + phase.dur! <= node.ts! + node.dur!).map((phase) => phase.name);
  t.deepEqual(phasesOf(nodeSlices('a:build')[0]!), ['run', 'hash', 'record']);
  t.true(
    phases.some((phase) => phase.name === 'hash' && threads.get(phase.tid)!.startsWith('checking')),
    'planning hashes on checking tracks',
  );
  // Slices on one track never partly overlap (Perfetto and chrome://tracing need them nested).
  const crossing: string[] = [];
  for (const a of slices) {
    for (const b of slices) {
      if (a === b || a.tid !== b.tid) continue;
      const [aEnd, bEnd] = [a.ts! + a.dur!, b.ts! + b.dur!];
      const apart = aEnd <= b.ts! || bEnd <= a.ts!;
      const nested = (a.ts! <= b.ts! && bEnd <= aEnd) || (b.ts! <= a.ts! && aEnd <= bEnd);
      if (!apart && !nested) crossing.push(`${a.name} / ${b.name} on ${threads.get(a.tid)}`);
    }
  }
  t.deepEqual(crossing, []);
});

test('a reader that closes the pipe early (| head) ends nothing: the run finishes, exit 0, no EPIPE trace', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  const running = project.start(['lonely', '--json']);
  running.child.stdout.destroy(); // as `head -c 0` would: nothing reads what the run prints
  const run = await running.done;
  t.is(run.code, 0, run.stderr);
  t.notRegex(run.stderr, /EPIPE|Unhandled/);
  t.is(await project.read('out/lonely.txt'), 'alone\n');
});

test('a reader slower than the run gets all of a --json larger than the pipe holds, and the exit code', async (t) => {
  // The CLI leaves at once after its output is flushed: what the pipe (here a socket pair
  // of a few hundred KiB) had not taken yet must still arrive, and a failure is exit 1.
  const ids = Array.from({ length: 2500 }, (_, i) => `s${i}-${'x'.repeat(200)}`);
  const config = `
import { defineStepsConfig } from '@engine';
const ids = ${JSON.stringify(ids)};
export default defineStepsConfig({
  steps: {
    ...Object.fromEntries(ids.map((id) => [id, { run: async () => {} }])),
    broken: { run: async () => { throw new Error('broken on purpose'); } },
  },
  aliases: { all: [...ids, 'broken'] },
});
`;
  const project = await makeProject(t, { config });
  const running = project.start(['all', '--json', '--keep-going']);
  running.child.stdout.pause();
  await new Promise((resolve) => setTimeout(resolve, 3_000));
  running.child.stdout.resume();
  const run = await running.done;
  t.is(run.code, 1, run.stderr);
  t.true(run.stdout.length > 512 * 1024, `${run.stdout.length} bytes`);
  t.is(run.json?.nodes.length, 2501);
  t.is(run.json?.failed, 1);
});
