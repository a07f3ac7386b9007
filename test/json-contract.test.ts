// One JSON contract: every kind of `--json` output the CLI prints (a run, with failed,
// skipped and fresh nodes; a dry run; plan; explain; the image config's commands: release
// check and remove, images list and download, verify; a command's error of each kind) is
// validated against schema/pipeline-output.v1.schema.json, and the schema rejects what the
// contract forbids, so passing it means something. `release note` and `release retag`
// need a store with descriptions and tags: test/github-commands.test.ts and
// test/release-phase.test.ts validate theirs against a loopback GitHub.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { FAILURE_KINDS } from '../src/failure.ts';
import { errorOutput, FORMAT_VERSION } from '../src/report/contract.ts';
import { releaseCheckOutput } from '../tasks/release-output.ts';
import { makeProject, type CliResult } from './support/engine-project.ts';
import { outputSchema, validateOutput } from './support/output-schema.ts';
import { makeImageProject } from './support/image-project.ts';

/** Asserts that a CLI run printed exactly one JSON object on stdout and that it fits the schema. */
function valid(t: import('ava').ExecutionContext, run: CliResult, command: string): Record<string, unknown> {
  const output = JSON.parse(run.stdout) as Record<string, unknown>;
  t.true(validateOutput(output), `${command}: ${JSON.stringify(validateOutput.errors, null, 2)}\n${run.stdout}`);
  t.is(output.command, command);
  t.is(output.formatVersion, FORMAT_VERSION);
  return output;
}

const CONFIG = `
import { defineStepsConfig } from '@engine';
export default defineStepsConfig({
  steps: {
    upper: { files: ['input.txt'], outputs: ['out/upper.txt'], command: ['sh', '-c', 'mkdir -p out && tr a-z A-Z < input.txt > out/upper.txt'] },
    count: { deps: ['upper'], outputs: ['out/count.txt'], command: ['sh', '-c', 'wc -c < out/upper.txt > out/count.txt'] },
    broken: { command: ['sh', '-c', 'echo about to fail; exit 3'] },
    after: { deps: ['broken'], command: ['true'] },
  },
  aliases: { good: ['count'], all: ['count', 'after'] },
  defaultTarget: 'good',
});
`;

test('a run, a dry run, plan and explain: each fits the schema, with its statuses and counts', async (t) => {
  const project = await makeProject(t, { config: CONFIG, files: { 'input.txt': 'hello\n' } });

  const dry = await project.run(['good', '--dry-run', '--json']);
  t.is(dry.code, 0, dry.stderr);
  const dryOutput = valid(t, dry, 'dry-run');
  t.deepEqual(dryOutput.stale, ['upper', 'count']);
  t.true(dryOutput.ok);

  const plan = await project.run(['plan', '--json', 'good']);
  t.is(plan.code, 0, plan.stderr);
  t.deepEqual(valid(t, plan, 'plan').stale, ['upper', 'count']);

  const run = await project.run(['good', '--json']);
  t.is(run.code, 0, run.stderr);
  t.like(valid(t, run, 'run'), { ok: true, ran: 2, fresh: 0, failed: 0 });

  const again = await project.run(['good', '--json']);
  t.like(valid(t, again, 'run'), { ok: true, ran: 0, fresh: 2 });

  // An edited input: upper is stale; whether count runs depends on what upper produces.
  await project.write('input.txt', 'hello again\n');
  const pending = await project.run(['good', '--dry-run', '--json']);
  const pendingOutput = valid(t, pending, 'dry-run') as { stale: string[]; nodes: Array<{ id: string; status: string }> };
  t.deepEqual(pendingOutput.stale, ['upper']);
  t.deepEqual(
    pendingOutput.nodes.map((node) => [node.id, node.status]),
    [
      ['upper', 'stale'],
      ['count', 'pending'],
    ],
  );
  await project.write('input.txt', 'hello\n');

  const explain = await project.run(['explain', 'count', '--json']);
  t.is(explain.code, 0, explain.stderr);
  const explained = valid(t, explain, 'explain') as { targets: string[]; nodes: Array<{ id: string; status: string; deps: string[]; files: string[] }> };
  t.deepEqual(explained.targets, ['count']);
  t.deepEqual(
    explained.nodes.map((node) => [node.id, node.status, node.deps]),
    [
      ['upper', 'fresh', []],
      ['count', 'fresh', ['upper']],
    ],
  );
  t.deepEqual(explained.nodes[0]!.files, ['input.txt']);
});

test('a failed node carries its kind and log tail; its dependent is skipped; ok is false', async (t) => {
  const project = await makeProject(t, { config: CONFIG, files: { 'input.txt': 'hello\n' } });
  const run = await project.run(['all', '--keep-going', '--json']);
  t.is(run.code, 1, run.stderr);
  const output = valid(t, run, 'run') as { ok: boolean; failed: number; skipped: number; nodes: Array<Record<string, unknown>> };
  t.false(output.ok);
  t.like(output, { failed: 1, skipped: 1, ran: 2 });
  const broken = output.nodes.find((node) => node.id === 'broken')!;
  t.like(broken, { status: 'failed', failureKind: 'task' });
  t.regex(String(broken.error), /exited with code 3/);
  t.deepEqual(broken.logTail, ['about to fail']);
  t.like(
    output.nodes.find((node) => node.id === 'after'),
    { status: 'skipped', why: { code: 'dependency-failed', id: 'broken' } },
  );
});

test('a command that fails as a whole prints the error shape with its kind, under every command', async (t) => {
  const project = await makeProject(t, { config: CONFIG, files: { 'input.txt': 'hello\n' } });
  const cases: Array<{ args: string[]; command: string; kind: string }> = [
    { args: ['uper', '--json'], command: 'run', kind: 'usage' },
    { args: ['--dry-run', 'uper', '--json'], command: 'dry-run', kind: 'usage' },
    { args: ['plan', '--json', 'uper'], command: 'plan', kind: 'usage' },
    { args: ['explain', 'uper', '--json'], command: 'explain', kind: 'usage' },
    { args: ['--json', '--forse'], command: 'run', kind: 'usage' },
    { args: ['--json', '--config', 'missing.config.ts'], command: 'run', kind: 'usage' },
  ];
  for (const { args, command, kind } of cases) {
    const run = await project.run(args);
    t.is(run.code, 2, `pipeline ${args.join(' ')}: ${run.stderr}`);
    t.like(valid(t, run, command), { ok: false, failureKind: kind }, args.join(' '));
    t.is(run.stderr.trim().split('\n').length, 1, `one line on stderr too: ${run.stderr}`);
  }
  await project.write('pipeline.config.ts', CONFIG.replace("deps: ['upper']", "deps: ['uper']"));
  const config = await project.run(['--json']);
  t.is(config.code, 2);
  t.like(valid(t, config, 'run'), { ok: false, failureKind: 'config' });
});

test('plan --json of the image config carries its CI job matrix', async (t) => {
  const project = await makeImageProject(t);
  const plan = await project.run(['plan', '--json', 'publish']);
  t.is(plan.code, 0, plan.stderr);
  const output = valid(t, plan, 'plan') as { jobs: { include: Array<{ image: string; target: string }> } };
  t.deepEqual(
    output.jobs.include.map((job) => job.target),
    ['debian-12:upload', 'debian-13:upload', 'pve-9:upload'],
  );
});

test('the image commands on a shared directory: release check and remove, images list and download, verify; each fits the schema, ok or not', async (t) => {
  const shared = await mkdtemp(join(tmpdir(), 'pipeline-shared-'));
  t.teardown(() => rm(shared, { recursive: true, force: true }));
  const project = await makeImageProject(t, `release: { dir: ${JSON.stringify(shared)}, tag: 'latest' },`);
  const uploaded = await project.run(['debian-12:upload'], { timeoutMs: 300_000 });
  t.is(uploaded.code, 0, uploaded.stderr);

  const check = await project.run(['release', 'check', '--json']);
  t.is(check.code, 1, check.stderr);
  t.like(valid(t, check, 'release-check'), { ok: false, stale: ['debian-13', 'pve-9'] });

  const list = await project.run(['images', 'list', '--json']);
  t.is(list.code, 0, list.stderr);
  const listed = valid(t, list, 'images-list') as { ok: boolean; images: Array<{ name: string; state: string; sha256?: string }> };
  t.true(listed.ok);
  t.deepEqual(
    listed.images.map((image) => [image.name, image.state]),
    [['debian-12', 'complete']],
  );

  const dir = project.path('fetched');
  const download = await project.run(['images', 'download', 'debian-12', '--dir', dir, '--json']);
  t.is(download.code, 0, download.stderr);
  t.like(valid(t, download, 'images-download'), { ok: true, dir, images: [{ name: 'debian-12', status: 'downloaded', sha256: listed.images[0]!.sha256 }] });
  const missing = await project.run(['images', 'download', 'debian-12', 'pve-9', '--dir', dir, '--json']);
  t.is(missing.code, 1, missing.stderr);
  t.like(valid(t, missing, 'images-download'), {
    ok: false,
    images: [
      { name: 'debian-12', status: 'present' },
      { name: 'pve-9', status: 'failed', kind: 'not-found' },
    ],
  });

  const verified = await project.run(['verify', 'debian-12', '--json']);
  t.is(verified.code, 0, verified.stderr);
  t.like(valid(t, verified, 'verify'), { ok: true, results: [{ name: 'debian-12', status: 'ok' }] });
  const unbuilt = await project.run(['verify', '--json']);
  t.is(unbuilt.code, 1, unbuilt.stderr);
  t.like(valid(t, unbuilt, 'verify'), {
    ok: false,
    results: [
      { name: 'debian-12', status: 'ok' },
      { name: 'debian-13', status: 'missing' },
      { name: 'pve-9', status: 'missing' },
    ],
  });

  const remove = await project.run(['release', 'remove', 'debian-12', 'pve-9', '--dry-run', '--json']);
  t.is(remove.code, 0, remove.stderr);
  t.like(valid(t, remove, 'release-remove'), { ok: true, dryRun: true, notOnRelease: ['pve-9'], manifestUpdated: ['debian-12'] });
  const notes = await project.run(['release', 'note', 'v1', '--json']);
  t.is(notes.code, 2);
  t.like(valid(t, notes, 'release-note'), { ok: false, failureKind: 'usage' });
});

test('plan without --json prints the verdicts as --dry-run does, then the jobs, and changes nothing', async (t) => {
  const project = await makeImageProject(t);
  const [plan, dry] = [await project.run(['plan', 'publish']), await project.run(['publish', '--dry-run'])];
  t.is(plan.code, 0, plan.stderr);
  const lines = plan.stdout.trimEnd().split('\n');
  const jobsAt = lines.indexOf('jobs (pipeline plan --json gives them as a CI matrix):');
  t.true(jobsAt > 0, plan.stdout);
  t.deepEqual(
    lines.slice(0, jobsAt),
    dry.stdout.trimEnd().replace('(dry run: nothing was changed)', '(plan: nothing was changed)').split('\n'),
    'the same verdicts and details as --dry-run',
  );
  t.deepEqual(lines.slice(jobsAt + 1), [
    '  image=debian-12 target=debian-12:upload',
    '  image=debian-13 target=debian-13:upload',
    '  image=pve-9 target=pve-9:upload',
  ]);
  t.false(project.exists('images'), 'a plan builds nothing');
});

test('release check --json: the builder the command calls fits the schema, current or stale, and so does its error', (t) => {
  const base = { path: 'cache/debian-12-generic-amd64.qcow2', sha512: 'a'.repeat(128) };
  const current = releaseCheckOutput(
    'latest',
    [{ name: 'debian-12', status: 'current', reasons: [], base }],
    'No template changes detected: images on `latest` are current',
    {
      version: 'v0.50',
      line: 'Images: See `latest` release',
      changed: true,
      dryRun: false,
    },
  );
  t.true(validateOutput(current), JSON.stringify(validateOutput.errors));
  t.like(current, { command: 'release-check', ok: true, stale: [], decision: 'No template changes detected: images on `latest` are current' });
  const stale = releaseCheckOutput(
    'latest',
    [
      { name: 'debian-12', status: 'current', reasons: [] },
      { name: 'pve-9', status: 'stale', reasons: ['template file templates/pve-9/template.pkr.hcl changed'] },
    ],
    'Rebuild needed: pve-9 (template file templates/pve-9/template.pkr.hcl changed)',
  );
  t.true(validateOutput(stale), JSON.stringify(validateOutput.errors));
  t.like(stale, { ok: false, stale: ['pve-9'] });
  t.false(
    validateOutput({ ...stale, images: [{ name: 'pve-9', status: 'stale', reasons: [], base: { path: 'x', sha512: 'not hex' } }] }),
    'a base SHA-512 is hex',
  );
  const unauthorized = errorOutput('release-check', { kind: 'auth', message: 'GitHub rejected the token (401)', code: 401 });
  t.true(validateOutput(unauthorized), JSON.stringify(validateOutput.errors));
  t.false(validateOutput({ ...current, command: 'images-list' }), 'each command has its own shape');
});

test('the schema rejects what the contract forbids, and its enums are the code’s', (t) => {
  const run = { formatVersion: 1, command: 'run', ok: true, wallMs: 1, ran: 0, fresh: 0, adopted: 0, failed: 0, skipped: 0, cancelled: 0, bytesHashed: 0 };
  const node = { id: 'a', status: 'ran', reason: 'never built', why: { code: 'never-built' }, durationMs: 1, bytesHashed: 0 };
  t.true(validateOutput({ ...run, nodes: [node] }));
  t.false(validateOutput({ ...run, nodes: [{ ...node, why: undefined }] }), 'every node says why as a value');
  t.false(validateOutput({ ...run, nodes: [{ ...node, why: { code: 'input-changed' } }] }), 'a reason carries the data its code names');
  t.false(validateOutput({ ...run, nodes: [{ ...node, why: { code: 'never built' } }] }), 'codes are the known ones');
  t.false(validateOutput({ ...run, nodes: [{ ...node, status: 'stale' }] }), 'a run has no stale nodes');
  t.false(validateOutput({ ...run, nodes: [{ ...node, status: 'failed' }] }), 'a failed node needs its error and kind');
  t.false(validateOutput({ ...run, nodes: [{ ...node, status: 'failed', error: 'x', failureKind: 'oops' }] }), 'kinds are the known ones');
  t.false(validateOutput({ ...run, formatVersion: 2, nodes: [] }), 'another format version is another schema');
  t.false(validateOutput({ ...run, nodes: [], extra: true }), 'no undeclared fields');
  t.false(validateOutput({ formatVersion: 1, command: 'run', ok: false, error: 'no kind' }), 'an error carries its kind');
  t.false(validateOutput({ formatVersion: 1, command: 'dry-run', ok: true, stale: [], nodes: [{ ...node, status: 'ran' }] }), 'a dry run ran nothing');
  t.deepEqual(outputSchema.$defs.failureKind.enum, [...FAILURE_KINDS]);
  t.deepEqual(outputSchema.$defs.status.enum, ['ran', 'fresh', 'adopted', 'stale', 'pending', 'failed', 'skipped', 'cancelled']);
});
