// The build task run for real: Debian's packer 1.6.6 on the demo templates (null source,
// shell-local), qemu-img on a small generated base image, ssh-keygen for the build key.
import { execFile as execFileCallback } from 'node:child_process';
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import { StatCache } from '../src/hasher.ts';
import { createTaskContext } from '../src/task-context.ts';
import type { NodeDef } from '../src/types.ts';
import { buildNode, type BuildNodeOptions } from '../tasks/build.ts';
import { MissingKeyInput, templateKeyFiles } from '../tasks/cache-key.ts';
import { readBuildFacts } from '../tasks/provenance/build-facts.ts';
import { throwsFailure } from './support/failures.ts';
import { heavySlot } from './support/heavy-slots.ts';
import { isFailure } from '../src/failure.ts';
import { neverAborted } from './support/signals.ts';

const execFile = promisify(execFileCallback);
const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const BASE = 'cache/base.qcow2';

/** A project root holding one demo template, the repo's shared/ and a 16 MiB base qcow2. */
async function project(t: ExecutionContext, name = 'debian-12', from = 'demo/templates'): Promise<string> {
  await heavySlot(t); // real packer and qemu-img
  const root = await mkdtemp(join(tmpdir(), 'build-task-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await cp(join(repo, from, name), join(root, 'templates', name), { recursive: true });
  await cp(join(repo, 'shared'), join(root, 'shared'), { recursive: true });
  await mkdir(join(root, 'cache'));
  await execFile('qemu-img', ['create', '-q', '-f', 'qcow2', join(root, BASE), '16M']);
  await execFile('qemu-io', ['-c', 'write -P 0x11 1M 128k', join(root, BASE)]);
  return root;
}

function node(name: string, extra: Partial<BuildNodeOptions> = {}): NodeDef {
  return buildNode({ name, baseNode: 'base:download', baseImage: BASE, ...extra });
}

interface RunOutcome {
  readonly error?: unknown;
  readonly lines: string[];
  readonly progress: Array<[number, number | undefined]>;
  readonly logFile: string;
}

/** Runs the node as the engine would: a task context, temps removed after a failure. */
async function run(root: string, def: NodeDef, options: { signal?: AbortSignal; onLine?: (line: string) => void } = {}): Promise<RunOutcome> {
  const lines: string[] = [];
  const progress: Array<[number, number | undefined]> = [];
  const logFile = join(root, 'logs', `${def.logName ?? def.id}.test.log`);
  const ctx = createTaskContext({
    id: def.id,
    root,
    logFile,
    signal: options.signal ?? new AbortController().signal,
    hasher: await StatCache.open(),
    onStatus: (line) => {
      lines.push(line);
      options.onLine?.(line);
    },
    onProgress: (done, total) => progress.push([done, total]),
  });
  try {
    await def.run(ctx);
    return { lines, progress, logFile };
  } catch (error) {
    await ctx.removeTemps();
    return { error, lines, progress, logFile };
  } finally {
    await ctx.close();
  }
}

async function qemuInfo(path: string): Promise<{ format: string; 'backing-filename'?: string }> {
  const { stdout } = await execFile('qemu-img', ['info', '--output=json', path]);
  return JSON.parse(stdout) as { format: string; 'backing-filename'?: string };
}

async function snapshot(root: string, name: string): Promise<Record<string, string>> {
  const dir = join(root, 'images', name);
  const files: Record<string, string> = {};
  for (const entry of (await readdir(dir)).sort()) files[entry] = (await readFile(join(dir, entry))).toString('base64');
  return files;
}

/** A broken variant of the template: one more step that fails at the end of the build. */
async function breakTemplate(root: string, name: string, step: string): Promise<void> {
  const file = join(root, 'templates', name, 'template.pkr.hcl');
  const text = (await readFile(file, 'utf8')).trimEnd();
  await writeFile(file, `${text.slice(0, -1)}  provisioner "shell-local" {\n    inline = [${step}]\n  }\n}\n`);
}

test('builds the image into images/{name}/ and leaves .cache-key to the engine', async (t) => {
  const root = await project(t);
  const def = node('debian-12');
  t.is(def.id, 'debian-12:build');
  t.deepEqual(def.deps, ['base:download']);
  t.is(def.pool, 'packer');
  t.deepEqual(def.outputs, ['images/debian-12/debian-12.qcow2', 'images/debian-12/image-version.txt']);
  t.deepEqual(def.sha256Outputs, ['images/debian-12/debian-12.qcow2']);
  t.is(def.key?.path, 'images/debian-12/.cache-key');
  t.deepEqual(def.files, templateKeyFiles({ name: 'debian-12' }));
  t.is(def.caveat, undefined);

  const outcome = await run(root, def);
  t.is(outcome.error, undefined, String(outcome.error));
  const info = await qemuInfo(join(root, 'images/debian-12/debian-12.qcow2'));
  t.is(info.format, 'qcow2');
  t.is(info['backing-filename'], undefined, 'the converted image must stand alone');
  t.is(await readFile(join(root, 'images/debian-12/image-version.txt'), 'utf8'), 'DEBIAN_VERSION=12.13\nPVE_VERSION=\n');
  // Beside the image: what built it, for the provenance an upload signs (tasks/provenance/build-facts.ts).
  t.deepEqual(await readdir(join(root, 'images/debian-12')), ['.provenance-facts.json', 'debian-12.qcow2', 'image-version.txt'].sort());
  const facts = await readBuildFacts(join(root, 'images/debian-12'));
  t.regex(facts?.packer?.version ?? '', /^\d+\.\d+\.\d+/, 'the packer that ran');
  t.truthy(facts?.run.builder, 'the host or workflow that ran it');

  // Packer's lines reach the log and the live status.
  const log = await readFile(outcome.logFile, 'utf8');
  t.regex(log, /null\.demo: DEBIAN_VERSION=12\.13/);
  t.true(outcome.lines.some((line) => line.includes('cleanup-common: done')));
  // Compression reports byte progress up to its total.
  const last = outcome.progress.at(-1);
  t.truthy(last && last[1] !== undefined && last[0] === last[1], JSON.stringify(outcome.progress));
});

test.serial('SSH_KEY_FILE that is not a usable key fails the build with what to fix', async (t) => {
  const root = await project(t);
  await writeFile(join(root, 'not-a-key'), 'garbage\n', { mode: 0o600 });
  const saved = process.env.SSH_KEY_FILE;
  process.env.SSH_KEY_FILE = join(root, 'not-a-key');
  t.teardown(() => {
    if (saved === undefined) delete process.env.SSH_KEY_FILE;
    else process.env.SSH_KEY_FILE = saved;
  });
  const outcome = await run(root, node('debian-12'));
  t.true(isFailure(outcome.error, 'task'));
  t.regex((outcome.error as Error).message, /SSH_KEY_FILE=.*not-a-key: cannot read the key/);
  await t.throwsAsync(readFile(join(root, 'images/debian-12/debian-12.qcow2')), { code: 'ENOENT' });
});

test("the key is the shell script's composition of the same files", async (t) => {
  const root = await project(t, 'pve-9');
  const def = node('pve-9');
  t.is(def.caveat, 'the key cannot see PVE repository state; use --force');
  const script = [
    'set -euo pipefail',
    'base=$1; shift',
    'src=$(sha256sum "$base" | cut -d" " -f1)',
    'tpl=$(cat "$@" | sha256sum | cut -d" " -f1)',
    'echo "$src:$tpl" | sha256sum | cut -d" " -f1',
  ].join('\n');
  const files = [
    'templates/pve-9/template.pkr.hcl',
    'templates/pve-9/cleanup.sh',
    'shared/scripts/cleanup-common.sh',
    'shared/scripts/detect-versions.sh',
    'shared/cloud-init/user-data.pkrtpl',
    'shared/cloud-init/meta-data',
  ];
  t.deepEqual(def.files, files);
  const { stdout } = await execFile('bash', ['-c', script, 'bash', BASE, ...files], { cwd: root });
  const hasher = await StatCache.open();
  t.is(await def.key!.compute(hasher, root), stdout.trim());

  // Reading the base image again costs nothing once the stat cache knows it.
  const before = hasher.bytesHashed;
  await def.key!.compute(hasher, root);
  t.is(hasher.bytesHashed, before);

  // Extra inputs come after the seed's six; a missing input is an error naming it.
  await writeFile(join(root, 'templates/pve-9/extra.conf'), 'extra\n');
  const extra = buildNode({ name: 'pve-9', baseNode: 'b', baseImage: BASE, extraFiles: ['templates/pve-9/extra.conf'] });
  const withExtra = await execFile('bash', ['-c', script, 'bash', BASE, ...files, 'templates/pve-9/extra.conf'], { cwd: root });
  t.is(await extra.key!.compute(hasher, root), withExtra.stdout.trim());
  await rm(join(root, 'shared/cloud-init/meta-data'));
  const error = await t.throwsAsync(def.key!.compute(hasher, root), { instanceOf: MissingKeyInput });
  t.regex(error?.message ?? '', /shared\/cloud-init\/meta-data/);
});

test('pve-9 records the PVE version', async (t) => {
  const root = await project(t, 'pve-9');
  const outcome = await run(root, node('pve-9'));
  t.is(outcome.error, undefined, String(outcome.error));
  t.is(await readFile(join(root, 'images/pve-9/image-version.txt'), 'utf8'), 'DEBIAN_VERSION=13.3\nPVE_VERSION=9.1\n');
});

test('a failing build leaves the previous image and key byte-identical', async (t) => {
  const root = await project(t);
  t.is((await run(root, node('debian-12'))).error, undefined);
  await writeFile(join(root, 'images/debian-12/.cache-key'), 'previous-key\n');
  const before = await snapshot(root, 'debian-12');

  await breakTemplate(root, 'debian-12', '"echo provisioning broke >&2", "exit 7"');
  const outcome = await run(root, node('debian-12'));
  t.true(isFailure(outcome.error, 'task'), String(outcome.error));
  t.regex((outcome.error as Error).message, /packer build failed for templates\/debian-12\/template\.pkr\.hcl/);
  t.regex(await readFile(outcome.logFile, 'utf8'), /provisioning broke/);
  t.deepEqual(await snapshot(root, 'debian-12'), before, 'no staging dir, no temp file, old bytes');
});

test('an interrupted build leaves the previous image and key byte-identical', async (t) => {
  const root = await project(t);
  t.is((await run(root, node('debian-12'))).error, undefined);
  await writeFile(join(root, 'images/debian-12/.cache-key'), 'previous-key\n');
  const before = await snapshot(root, 'debian-12');

  await breakTemplate(root, 'debian-12', '"echo long step starts", "sleep 60"');
  const abort = new AbortController();
  const started = Date.now();
  const outcome = await run(root, node('debian-12'), {
    signal: abort.signal,
    onLine: (line) => {
      if (line.includes('long step starts')) abort.abort();
    },
  });
  t.truthy(outcome.error);
  t.true(Date.now() - started < 30_000, 'the abort killed packer and its children');
  t.deepEqual(await snapshot(root, 'debian-12'), before);
});

test('a base image checksum mismatch re-downloads once and retries', async (t) => {
  const root = await project(t);
  let redownloads = 0;
  const wrong = `sha256:${'0'.repeat(64)}`;
  const def = node('debian-12', {
    baseChecksum: async (ctx) => {
      if (redownloads > 0) {
        const digest = await ctx.hasher.hash(join(ctx.root, BASE), { sha256: true });
        return `sha256:${digest.sha256}`;
      }
      return wrong;
    },
    redownloadBase: async () => {
      redownloads += 1;
    },
  });
  const outcome = await run(root, def);
  t.is(outcome.error, undefined, String(outcome.error));
  t.is(redownloads, 1);
  t.is((await qemuInfo(join(root, 'images/debian-12/debian-12.qcow2'))).format, 'qcow2');

  // Still mismatched after the re-download: one retry only, and the failure says why.
  redownloads = 0;
  const stubborn = node('debian-12', { baseChecksum: async () => wrong, redownloadBase: async () => void (redownloads += 1) });
  const failed = await run(root, stubborn);
  t.is(redownloads, 1);
  t.true(isFailure(failed.error, 'task'));
  t.regex((failed.error as Error).message, /does not match its checksum/);
});

test('preflight names a missing template file', async (t) => {
  const root = await project(t);
  await rm(join(root, 'templates/debian-12/cleanup.sh'));
  const error = await throwsFailure(t, node('debian-12').preflight!({ root, flags: {}, signal: neverAborted() }), 'setup');
  t.regex(error?.message ?? '', /templates\/debian-12\/cleanup\.sh missing/);
  t.false(error?.message.includes('\n'));
  // A missing template directory names both files in one line.
  const both = await throwsFailure(t, node('debian-12', { templatesDir: 'nowhere' }).preflight!({ root, flags: {}, signal: neverAborted() }), 'setup');
  t.regex(both?.message ?? '', /^nowhere\/debian-12\/template\.pkr\.hcl and nowhere\/debian-12\/cleanup\.sh missing/);
  t.false(both?.message.includes('\n'));
});

test('preflight passes for a demo template with the installed tools', async (t) => {
  const root = await project(t);
  await t.notThrowsAsync(node('debian-12').preflight!({ root, flags: {}, signal: neverAborted() }));
});

/** A stand-in packer that answers `packer version` with `version` (and does nothing else). */
async function packerAnswering(root: string, version: string): Promise<string> {
  const file = join(root, `packer-${version}`);
  await writeFile(file, `#!/bin/sh\necho "Packer v${version}"\n`);
  await chmod(file, 0o755);
  return file;
}

test('preflight says to install packer >= 1.7 for a template with required_plugins', async (t) => {
  const root = await project(t, 'debian-12', 'templates');
  t.true(/required_plugins/.test(await readFile(join(root, 'templates/debian-12/template.pkr.hcl'), 'utf8')));
  const old = await packerAnswering(root, '1.6.6');
  const error = await throwsFailure(t, node('debian-12', { packer: old }).preflight!({ root, flags: {}, signal: neverAborted() }), 'setup');
  t.regex(error?.message ?? '', /^packer 1\.6\.6 cannot build templates\/debian-12\/template\.pkr\.hcl .*install packer from HashiCorp's apt repository/);

  // packer 1.7 is new enough: preflight goes past the version check to the next one (KVM).
  const newer = await packerAnswering(root, '1.7.0');
  const next = await throwsFailure(
    t,
    node('debian-12', { packer: newer, kvmDevice: join(root, 'no-kvm') }).preflight!({ root, flags: {}, signal: neverAborted() }),
    'setup',
  );
  t.regex(next?.message ?? '', /no-kvm missing/);

  // The demo template declares no plugins: Debian's packer 1.6.6 builds it.
  const demo = await project(t);
  await t.notThrowsAsync(node('debian-12', { packer: old }).preflight!({ root: demo, flags: {}, signal: neverAborted() }));
});

test('preflight reports missing packer and missing /dev/kvm in one line each', async (t) => {
  const root = await project(t, 'debian-12', 'templates');
  const missing = await throwsFailure(
    t,
    node('debian-12', { packer: join(root, 'no-packer') }).preflight!({ root, flags: {}, signal: neverAborted() }),
    'setup',
  );
  t.regex(missing?.message ?? '', /packer not found .*install packer >= 1\.7/);

  // A packer new enough for required_plugins (a script answering `packer version`).
  const fakePacker = await packerAnswering(root, '1.11.2');
  const noKvm = await throwsFailure(
    t,
    node('debian-12', { packer: fakePacker, kvmDevice: join(root, 'no-kvm') }).preflight!({ root, flags: {}, signal: neverAborted() }),
    'setup',
  );
  t.regex(noKvm?.message ?? '', /no-kvm missing: enable hardware virtualisation/);
  t.false(noKvm?.message.includes('\n'));
  // tcg needs no /dev/kvm.
  await t.notThrowsAsync(
    node('debian-12', { packer: fakePacker, kvmDevice: join(root, 'no-kvm'), accelerator: 'tcg' }).preflight!({
      root,
      flags: {},
      signal: neverAborted(),
    }).catch((e: Error) => {
      if (!/xorriso/.test(e.message)) throw e; // hosts without an ISO tool stop at the next check
    }),
  );
});
