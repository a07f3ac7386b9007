// A throwaway project for engine tests: a temp directory with a config file and input
// files, and the real `pipeline` CLI run in it as a child process. Tests read what a
// user sees: exit code, stdout, stderr, the `--json` summary, files on disk.
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { heavySlot } from './heavy-slots.ts';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = join(REPO, 'bin', 'pipeline.js');
/**
 * What a config in a temp dir imports `defineStepsConfig` from: the package's compiled engine
 * entry (`@vmpipeline/pipeline/engine`), by absolute path so no install is needed. The CLI runs the
 * same compiled files, so config and CLI share one module instance.
 */
export const CONFIG_MODULE = join(REPO, 'dist', 'src', 'index.js');
/** The package's compiled public entry (`import { defineConfig } from '@vmpipeline/pipeline'`). */
export const PACKAGE_ENTRY = join(REPO, 'dist', 'index.js');

/** A node of any `--json` output (schema/pipeline-output.v1.schema.json has the exact shapes). */
export interface NodeJson {
  id: string;
  /** A run's statuses, and a dry run's (`stale`, `pending`, `adopted` when it would be). */
  status: 'ran' | 'fresh' | 'adopted' | 'stale' | 'pending' | 'failed' | 'skipped' | 'cancelled';
  reason: string;
  /** The reason as a value (src/reason.ts): what tests compare. */
  why: { code: string } & Record<string, unknown>;
  durationMs: number;
  bytesHashed: number;
  startedAt?: number;
  finishedAt?: number;
  error?: string;
  failureKind?: string;
  logFile?: string;
  wouldRun?: string;
}

/** Any `--json` output: a run's or dry run's, or a command's error. */
export interface SummaryJson {
  formatVersion: number;
  command: string;
  ok: boolean;
  wallMs: number;
  ran: number;
  fresh: number;
  adopted: number;
  failed: number;
  skipped: number;
  cancelled: number;
  bytesHashed: number;
  nodes: NodeJson[];
  /** Dry run and plan: the ids a run would run. */
  stale?: string[];
  /** A command that failed as a whole. */
  error?: string;
  failureKind?: string;
}

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** stdout parsed as JSON, when it is JSON. */
  readonly json: SummaryJson | undefined;
}

export interface RunOptions {
  /** Extra environment (merged over the test process's). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly timeoutMs?: number;
}

export interface Project {
  readonly root: string;
  /** Runs `pipeline ARGS…` in the project and waits for it to exit. */
  run(args: readonly string[], options?: RunOptions): Promise<CliResult>;
  /** Starts `pipeline ARGS…` without waiting; `done` settles when it exits. */
  start(args: readonly string[], options?: RunOptions): RunningCli;
  path(relative: string): string;
  write(relative: string, content: string | Uint8Array): Promise<void>;
  read(relative: string): Promise<string>;
  exists(relative: string): boolean;
  /** Every file under a directory of the project (relative paths, recursive). */
  files(relative?: string): Promise<string[]>;
  /** Polls until the file exists. */
  waitFor(relative: string, timeoutMs?: number): Promise<void>;
}

export interface RunningCli {
  readonly child: ChildProcessWithoutNullStreams;
  readonly done: Promise<CliResult>;
  /** stderr received so far. */
  stderrSoFar(): string;
}

export interface ProjectOptions {
  /** The config file's source; the module specifier `'@engine'` in it becomes the engine's config module path. */
  readonly config: string;
  /** Default `pipeline.config.ts`. */
  readonly configName?: string;
  /** Input files to create, by relative path. */
  readonly files?: Readonly<Record<string, string | Uint8Array>>;
  /**
   * Writes `{"type":"module"}` next to the config (default true), as a project using
   * `pipeline` has. Without it a `.ts` config still loads (it is compiled to an ES module).
   */
  readonly packageJson?: boolean;
}

/**
 * Makes a project in a fresh temp directory, removed when the test ends. The test runs
 * CLI processes, so it first takes a heavy-test slot (see heavy-slots.ts): the CLI's
 * timeout below counts from a start with the machine shared by a bounded number of tests.
 */
export async function makeProject(t: ExecutionContext, options: ProjectOptions): Promise<Project> {
  await heavySlot(t);
  const root = await mkdtemp(join(tmpdir(), 'pipeline-engine-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const write = async (relative: string, content: string | Uint8Array): Promise<void> => {
    const path = join(root, relative);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, content);
  };
  if (options.packageJson !== false) await write('package.json', '{ "type": "module" }\n');
  await write(options.configName ?? 'pipeline.config.ts', options.config.replaceAll("'@engine'", JSON.stringify(CONFIG_MODULE)));
  for (const [path, content] of Object.entries(options.files ?? {})) await write(path, content);

  const project: Project = {
    root,
    run: (args, runOptions) => startCli(root, args, runOptions).done,
    start: (args, runOptions) => startCli(root, args, runOptions),
    path: (relative) => join(root, relative),
    write,
    read: (relative) => readFile(join(root, relative), 'utf8'),
    exists: (relative) => existsSync(join(root, relative)),
    files: (relative = '.') => listFiles(join(root, relative)),
    async waitFor(relative, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (!existsSync(join(root, relative))) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${relative}`);
        await sleep(20);
      }
    },
  };
  return project;
}

/** Runs the real CLI (`node bin/pipeline.js`) with `cwd` as the working directory. */
export function startCli(cwd: string, args: readonly string[], options: RunOptions = {}): RunningCli {
  const env: Record<string, string | undefined> = { ...process.env, CI: '1', NO_COLOR: '1', ...options.env };
  for (const [name, value] of Object.entries(env)) if (value === undefined) delete env[name];
  const child = spawn(process.execPath, [BIN, ...args], { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.end();
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timeoutMs = options.timeoutMs ?? 90_000;
  const done = new Promise<CliResult>((resolveDone, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`pipeline ${args.join(' ')} did not exit within ${timeoutMs}ms\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolveDone({ code, signal, stdout, stderr, json: parseJson(stdout) });
    });
  });
  return { child, done, stderrSoFar: () => stderr };
}

function parseJson(text: string): SummaryJson | undefined {
  try {
    return JSON.parse(text) as SummaryJson;
  } catch {
    return undefined;
  }
}

/** Every file (not directory) under `dir`, as sorted relative paths; none when it does not exist. */
async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((entry) => !entry.isDirectory())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)))
    .sort();
}

/** The node of a summary by id (throws when absent, so a test fails with a clear message). */
export function nodeOf(summary: SummaryJson | undefined, id: string): NodeJson {
  if (!summary) throw new Error('no JSON summary on stdout');
  const node = summary.nodes.find((candidate) => candidate.id === id);
  if (!node) throw new Error(`no node ${id} in ${summary.nodes.map((n) => n.id).join(', ')}`);
  return node;
}

/** Ids of the nodes with a status, sorted. */
export function idsWith(summary: SummaryJson | undefined, status: NodeJson['status']): string[] {
  if (!summary) throw new Error('no JSON summary on stdout');
  return summary.nodes
    .filter((node) => node.status === status)
    .map((node) => node.id)
    .sort();
}

/** True when two [startedAt, finishedAt] intervals share some time. */
export function overlaps(a: NodeJson, b: NodeJson): boolean {
  if (a.startedAt === undefined || b.startedAt === undefined) return false;
  return a.startedAt < b.finishedAt! && b.startedAt < a.finishedAt!;
}

/** True while a pid names a live (not zombie) process. */
export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    // A killed process whose parent has not reaped it yet (in a container, PID 1 may never
    // reap) still answers kill(0); its state in /proc says it is dead.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = fields.slice(fields.lastIndexOf(')') + 2, fields.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Waits until the pid is gone, up to a timeout; returns whether it went. */
export async function waitGone(pid: number, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isRunning(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
  return true;
}

/** Size of a file, or undefined when missing. */
export async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch {
    return undefined;
  }
}
