// The packer command line as the build task uses it: which packer is installed, what a
// template needs from it, `packer init` once per template content, `packer build` with
// the template's variables, and recognising packer's checksum-mismatch failure.
import { execFile as execFileCallback } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { type ExecResult, Failure, type TaskContext } from '../src/index.ts';

const execFileAsync = promisify(execFileCallback);

export interface PackerVersion {
  readonly major: number;
  readonly minor: number;
  readonly patch: number;
  readonly text: string;
}

/** `required_plugins` (and so `packer init`) exists from packer 1.7 on. */
export const PLUGINS_MIN_VERSION = { major: 1, minor: 7 } as const;

/** Parses `packer version` output ("Packer v1.6.6", "Packer v1.11.2\n\nYour version…"). */
export function parsePackerVersion(output: string): PackerVersion | undefined {
  const match = /Packer v(\d+)\.(\d+)\.(\d+)/.exec(output);
  if (!match) return undefined;
  return { major: Number(match[1]), minor: Number(match[2]), patch: Number(match[3]), text: `${match[1]}.${match[2]}.${match[3]}` };
}

export function supportsPlugins(version: PackerVersion): boolean {
  return version.major > PLUGINS_MIN_VERSION.major || (version.major === PLUGINS_MIN_VERSION.major && version.minor >= PLUGINS_MIN_VERSION.minor);
}

/**
 * The installed packer's version, or undefined when `packer` cannot be run. For
 * preflight, which has no task context; tasks use `ctx.exec`.
 */
export async function installedPackerVersion(packer: string, signal?: AbortSignal): Promise<PackerVersion | undefined> {
  try {
    const { stdout } = await execFileAsync(packer, ['version'], { timeout: 30_000, env: packerEnv(), ...(signal ? { signal } : {}) });
    return parsePackerVersion(stdout);
  } catch {
    signal?.throwIfAborted(); // stopped by Ctrl-C, not missing
    return undefined;
  }
}

/** What the build needs to know of a template, read from its text (HCL2). */
export interface TemplateTraits {
  /** Declares `required_plugins`: needs packer >= 1.7 and `packer init`. */
  readonly requiresPlugins: boolean;
  /** Boots a VM with the qemu builder: needs qemu and, with accelerator kvm, /dev/kvm. */
  readonly usesQemu: boolean;
  /** Builds a CD (the cloud-init seed): packer needs xorriso, mkisofs or genisoimage. */
  readonly buildsCd: boolean;
}

export function templateTraits(text: string): TemplateTraits {
  return {
    requiresPlugins: /^\s*required_plugins\s*\{/m.test(text),
    usesQemu: /^\s*source\s+"qemu"/m.test(text),
    buildsCd: /^\s*cd_(files|content)\s*=/m.test(text),
  };
}

/**
 * Environment for packer: no update check phoning home, no colour codes in the log, and
 * its temp files (panicwrap's log, shell-local's scripts) in `tmpDir` when given.
 */
export function packerEnv(root?: string, tmpDir?: string): Record<string, string> {
  return {
    ...(process.env as Record<string, string>),
    CHECKPOINT_DISABLE: '1',
    PACKER_NO_COLOR: '1',
    ...(tmpDir ? { TMPDIR: tmpDir } : {}),
    // Packer's cache (downloads, lock and port files) under the state directory, not in
    // the template folder it runs from, where it would show up as untracked files.
    ...(root && !process.env.PACKER_CACHE_DIR ? { PACKER_CACHE_DIR: resolve(root, '.pipeline', 'packer_cache') } : {}),
  };
}

/** Where `packer init` done-ness is remembered, per template content and packer version. */
function initMarker(root: string, templateText: string, version: PackerVersion): string {
  const digest = createHash('sha256').update(templateText).digest('hex');
  return resolve(root, '.pipeline', 'packer-init', `${digest}-${version.text}`);
}

/**
 * Runs `packer init` for the template unless it already ran for this exact content and
 * packer version (plugins are per user and shared by runs; init needs the network).
 */
export async function ensurePackerInit(
  ctx: TaskContext,
  options: { packer: string; templateFile: string; templateText: string; version: PackerVersion; tmpDir?: string },
): Promise<void> {
  const marker = initMarker(ctx.root, options.templateText, options.version);
  try {
    await readFile(marker);
    return;
  } catch {
    // not initialised yet for this content
  }
  ctx.status('packer init');
  const result = await ctx.exec(options.packer, ['init', options.templateFile], { env: packerEnv(ctx.root, options.tmpDir), nothrow: true });
  if (result.exitCode !== 0) {
    throw new Failure('task', `packer init failed (exit ${result.exitCode}): ${lastMeaningfulLine(result) ?? 'see the log'}`);
  }
  await mkdir(join(marker, '..'), { recursive: true });
  await writeFile(marker, `${options.templateFile}\n`);
}

/** Forgets `packer init` for a template (its plugins were removed under us). */
export async function forgetPackerInit(root: string, templateText: string, version: PackerVersion): Promise<void> {
  await rm(initMarker(root, templateText, version), { force: true });
}

/** `packer build` arguments: every variable as `-var name=value`, one argument each. */
export function packerBuildArgs(templateFile: string, variables: Readonly<Record<string, string>>): string[] {
  const args = ['build', '-force', '-color=false'];
  for (const [name, value] of Object.entries(variables)) args.push('-var', `${name}=${value}`);
  args.push(templateFile);
  return args;
}

/**
 * Runs `packer build`; every output line goes to the node's log and live status.
 * Returns the result whatever the exit code: the caller decides what a failure means.
 */
export async function runPackerBuild(
  ctx: TaskContext,
  options: { packer: string; templateFile: string; variables: Readonly<Record<string, string>>; cwd: string; tmpDir?: string },
): Promise<ExecResult> {
  ctx.status('packer build');
  return ctx.exec(options.packer, packerBuildArgs(options.templateFile, options.variables), {
    cwd: options.cwd,
    env: packerEnv(ctx.root, options.tmpDir),
    nothrow: true,
  });
}

/**
 * True when packer failed because the base image does not match its checksum: the
 * upstream image changed under the cache. go-getter says "Checksums did not match for
 * …"; packer's own wording has varied ("checksums didn't match").
 */
export function isChecksumMismatch(result: ExecResult): boolean {
  return /checksums? (did not|didn't|do not|don't) match|checksum mismatch/i.test(`${result.stdout}\n${result.stderr}`);
}

/** True when packer failed for want of `packer init` (plugins missing or removed). */
export function needsPackerInit(result: ExecResult): boolean {
  return /missing plugins?|packer init/i.test(`${result.stdout}\n${result.stderr}`);
}

/** The line of a failed run worth showing: the last error-looking line, else the last one. */
export function lastMeaningfulLine(result: ExecResult): string | undefined {
  const lines = `${result.stdout}\n${result.stderr}`
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
  const errors = lines.filter((line) => /error|errored|failed|did not match/i.test(line));
  return errors.at(-1) ?? lines.at(-1);
}
