// No-op benchmark: how long `pipeline` takes to say "nothing to do" on a large tree, and
// how many bytes it reads doing so (must be 0), against `make -q` on the equivalent
// Makefile and against simply hashing the one big input with `sha256sum`.
//
//   node --import=tsx bench/noop.ts [--runs N] [--big-mib M]
//
// The synthetic project (in a temp dir, removed afterwards): 50 chains of 19 command nodes
// (each with its own small input file and its predecessor's output), 49 merge nodes
// reducing the 50 chain tails pairwise to one, a final node (1,000 command nodes in all),
// plus one node whose input is a 1 GiB file of random bytes. Disk use: ~1 GiB.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BIN, fmt, median, REPO, timed } from './support.ts';

const CONFIG_MODULE = join(REPO, 'dist', 'src', 'index.js');

const CHAINS = 50;
const CHAIN_LENGTH = 19;

interface Step {
  deps: string[];
  files?: string[];
  outputs: string[];
  command: [string, ...string[]];
}

/** The project's steps, shared by the config and the Makefile so both describe one graph. */
function makeSteps(): { steps: Record<string, Step>; inputs: string[]; top: string[] } {
  const steps: Record<string, Step> = {};
  const inputs: string[] = [];
  const tails: string[] = [];
  for (let c = 0; c < CHAINS; c++) {
    let previous: string | undefined;
    for (let i = 0; i < CHAIN_LENGTH; i++) {
      const id = `c${c}-${i}`;
      const input = `in/${id}.txt`;
      inputs.push(input);
      steps[id] = {
        deps: previous ? [previous] : [],
        files: [input],
        outputs: [`out/${id}.txt`],
        command: ['sh', '-c', `cat ${input}${previous ? ` out/${previous}.txt` : ''} > out/${id}.txt`],
      };
      previous = id;
    }
    tails.push(previous!);
  }
  const queue = [...tails];
  let merges = 0;
  while (queue.length > 1) {
    const a = queue.shift()!;
    const b = queue.shift()!;
    const id = `m${merges++}`;
    steps[id] = { deps: [a, b], outputs: [`out/${id}.txt`], command: ['sh', '-c', `cat out/${a}.txt out/${b}.txt | wc -c > out/${id}.txt`] };
    queue.push(id);
  }
  steps.done = { deps: [queue[0]!], outputs: ['out/done.txt'], command: ['sh', '-c', `cp out/${queue[0]}.txt out/done.txt`] };
  steps.big = { deps: [], files: ['big.bin'], outputs: ['out/big.txt'], command: ['sh', '-c', 'ls -l big.bin > out/big.txt'] };
  return { steps, inputs, top: ['done', 'big'] };
}

function makefile(steps: Record<string, Step>, top: readonly string[]): string {
  const target = (id: string): string => steps[id]!.outputs[0]!;
  const lines = ['.PHONY: all', `all: ${top.map(target).join(' ')}`, ''];
  for (const [id, step] of Object.entries(steps)) {
    lines.push(`${target(id)}: ${[...(step.files ?? []), ...step.deps.map(target)].join(' ')}`);
    lines.push(`\t${step.command[2]}`, '');
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, 'big-mib': { type: 'string', default: '1024' } } });
  const runs = Number(values.runs);
  const bigMiB = Number(values['big-mib']);
  const root = await mkdtemp(join(tmpdir(), 'pipeline-bench-noop-'));
  try {
    const { steps, inputs, top } = makeSteps();
    const commandNodes = Object.keys(steps).length - 1;
    await mkdir(join(root, 'in'), { recursive: true });
    await mkdir(join(root, 'out'), { recursive: true });
    for (const [index, input] of inputs.entries()) await writeFile(join(root, input), `input ${index}\n`);
    await writeFile(join(root, 'package.json'), '{ "type": "module" }\n');
    await writeFile(
      join(root, 'pipeline.config.ts'),
      `import { defineStepsConfig } from ${JSON.stringify(CONFIG_MODULE)};\n` +
        `export default defineStepsConfig({\n  steps: ${JSON.stringify(steps)},\n  aliases: { all: ${JSON.stringify(top)} },\n  defaultTarget: 'all',\n});\n`,
    );
    await writeFile(join(root, 'Makefile'), makefile(steps, top));
    console.error(`project: ${root} (${commandNodes} command nodes + 1 node with a ${bigMiB} MiB input)`);
    const big = await timed('sh', ['-c', `head -c ${bigMiB}M /dev/urandom > big.bin`], root);
    if (big.code !== 0) throw new Error(`making big.bin failed: ${big.stderr}`);

    console.error('building once with pipeline…');
    const build = await timed(process.execPath, [BIN, '--json'], root);
    const built = JSON.parse(build.stdout) as { ran: number; bytesHashed: number };
    if (build.code !== 0 || built.ran !== commandNodes + 1) throw new Error(`build failed (${build.code}): ${build.stderr.slice(-2000)}`);

    const makeCheck = await timed('make', ['-q'], root);
    if (makeCheck.code !== 0) throw new Error(`make -q says the tree pipeline built is not up to date (exit ${makeCheck.code})`);

    const noop: number[] = [];
    const noopWall: number[] = [];
    const makeQ: number[] = [];
    const sha: number[] = [];
    const startup: number[] = [];
    const bareNode: number[] = [];
    const bytesPerRun: number[] = [];
    // NODE_EXTRA_CA_CERTS makes every Node process parse that CA bundle before running any
    // code (about 40 ms here); make pays nothing of it. When it is set, the no-op and
    // `node -e 0` are also timed without it, as on a host that does not set it.
    const extraCerts = process.env.NODE_EXTRA_CA_CERTS ? ['NODE_EXTRA_CA_CERTS'] : [];
    const noopBare: number[] = [];
    const bareNodeBare: number[] = [];
    let fresh = 0;
    // Times on a shared machine depend on its load: say what it was while measuring.
    const loadBefore = loadavg();
    for (let i = 0; i < runs; i++) {
      const result = await timed(process.execPath, [BIN, '--json'], root);
      const summary = JSON.parse(result.stdout) as { ran: number; fresh: number; bytesHashed: number; wallMs: number };
      if (result.code !== 0 || summary.ran !== 0) throw new Error(`no-op run ran ${summary.ran} nodes`);
      bytesPerRun.push(summary.bytesHashed);
      fresh = summary.fresh;
      noop.push(result.ms);
      noopWall.push(summary.wallMs);
      const make = await timed('make', ['-q'], root);
      if (make.code !== 0) throw new Error(`make -q exit ${make.code}`);
      makeQ.push(make.ms);
      sha.push((await timed('sha256sum', ['big.bin'], root)).ms);
      startup.push((await timed(process.execPath, [BIN, '--version'], root)).ms);
      bareNode.push((await timed(process.execPath, ['-e', '0'], root)).ms);
      if (extraCerts.length > 0) {
        noopBare.push((await timed(process.execPath, [BIN, '--json'], root, extraCerts)).ms);
        bareNodeBare.push((await timed(process.execPath, ['-e', '0'], root, extraCerts)).ms);
      }
    }

    const loadAfter = loadavg();
    const bytesHashed = Math.max(...bytesPerRun);
    const rows: Array<[string, string, string]> = [
      [`pipeline --json, no-op (${fresh} fresh), process wall`, fmt(median(noop)), `bytesHashed per run: ${bytesPerRun.join(', ')}`],
      ['  of which engine wallMs (plan + run, in-process)', fmt(median(noopWall)), ''],
      ['pipeline --version', fmt(median(startup)), ''],
      ['node -e 0', fmt(median(bareNode)), ''],
      ['make -q (equivalent Makefile)', fmt(median(makeQ)), ''],
      [`sha256sum of the ${bigMiB} MiB input (page cache warm)`, fmt(median(sha)), `${((bigMiB / median(sha)) * 1000).toFixed(0)} MiB/s`],
      ['first build with pipeline (for scale)', fmt(build.ms), `bytesHashed ${built.bytesHashed}`],
    ];
    if (extraCerts.length > 0) {
      rows.push(['pipeline --json, no-op, without NODE_EXTRA_CA_CERTS', fmt(median(noopBare)), '']);
      rows.push(['node -e 0, without NODE_EXTRA_CA_CERTS', fmt(median(bareNodeBare)), '']);
    }
    const width = Math.max(...rows.map(([label]) => label.length));
    console.log(`\nno-op benchmark: ${commandNodes} command nodes + 1 node with a ${bigMiB} MiB input; median of ${runs} runs`);
    const load = (values: number[]): string => values.map((value) => value.toFixed(2)).join(', ');
    console.log(`load average (1, 5, 15 min): ${load(loadBefore)} before the runs, ${load(loadAfter)} after\n`);
    for (const [label, time, extra] of rows) console.log(`${label.padEnd(width)}  ${time.padStart(9)}  ${extra}`);
    console.log('');
    console.log(`pipeline no-op / make -q:              ${(median(noop) / median(makeQ)).toFixed(2)}x`);
    console.log(`pipeline no-op (engine only) / make -q: ${(median(noopWall) / median(makeQ)).toFixed(1)}x`);
    console.log(`pipeline no-op / sha256sum big input:  ${(median(noop) / median(sha)).toFixed(2)}x`);
    console.log(`pipeline --version / node -e 0:        ${(median(startup) / median(bareNode)).toFixed(2)}x`);
    if (extraCerts.length > 0) {
      console.log(`without NODE_EXTRA_CA_CERTS (set here: Node parses ${process.env.NODE_EXTRA_CA_CERTS} at every start):`);
      console.log(`  pipeline no-op / make -q:             ${(median(noopBare) / median(makeQ)).toFixed(2)}x`);
    }
    if (bytesHashed !== 0) {
      console.log(`FAIL: the no-op run hashed ${bytesHashed} bytes (expected 0)`);
      process.exitCode = 1;
    }
  } finally {
    if (process.env.BENCH_KEEP) console.error(`kept ${root}`);
    else await rm(root, { recursive: true, force: true });
  }
}

await main();
