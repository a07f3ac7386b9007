// The programs the task kinds start (packer, qemu-img, ssh-keygen, git), faked in process and
// given to the production TaskContext as its ProcessRunner, as Ninja's build_test.cc gives
// its Builder a FakeCommandRunner. Each program is the test's code: it answers as the real
// one would (exit code, output lines) and writes the files the real one would write. The
// files are real, in the test's temp directory; only the processes are not.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { ExecFailure } from '../../../src/exec.ts';
import { StatCache } from '../../../src/hasher.ts';
import { createTaskContext, type OwnedTaskContext } from '../../../src/task-context.ts';
import type { ExecOptions, ExecResult, ProcessRunner } from '../../../src/types.ts';

/** A fake program: its answer to `args` (exit code 0 and no output unless it says otherwise). */
export type FakeProgram = (args: readonly string[], options: ExecOptions) => Partial<ExecResult> | Promise<Partial<ExecResult>>;

export interface Call {
  readonly file: string;
  readonly args: readonly string[];
  readonly cwd: string | undefined;
}

export class FakePrograms {
  /** Every program started, in order. */
  readonly calls: Call[] = [];

  constructor(private readonly programs: Readonly<Record<string, FakeProgram>>) {}

  /** What a TaskContext starts programs with; a program the test did not give is not found, as the shell says. */
  readonly run: ProcessRunner = async (file, args, signal, options) => {
    signal.throwIfAborted();
    this.calls.push({ file, args: [...args], cwd: options.cwd });
    const program = this.programs[file];
    const answer = program ? await program(args, options) : { exitCode: 127, stderr: `/bin/sh: 1: exec: ${file}: not found` };
    const result: ExecResult = { exitCode: answer.exitCode ?? 0, stdout: answer.stdout ?? '', stderr: answer.stderr ?? '' };
    for (const line of `${result.stdout}\n${result.stderr}`.split(/\r?\n|\r/)) if (line.trim()) options.onLine?.(line);
    signal.throwIfAborted();
    if (result.exitCode !== 0 && !options.nothrow) throw new ExecFailure(`${file} exited with code ${result.exitCode}`, result);
    return result;
  };

  /** Each call as `program first-argument`: the sequence a test compares. */
  commands(): string[] {
    return this.calls.map((call) => `${call.file} ${call.args[0] ?? ''}`.trimEnd());
  }

  /** The arguments of the calls to `file` whose first argument is `first`. */
  argsOf(file: string, first: string): ReadonlyArray<readonly string[]> {
    return this.calls.filter((call) => call.file === file && call.args[0] === first).map((call) => call.args);
  }
}

/** A temp directory for one test, removed when it ends. */
export function tempRoot(t: ExecutionContext): string {
  const root = mkdtempSync(join(tmpdir(), 'pipeline-kind-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  return root;
}

/** The production TaskContext of node `id`, rooted at `root`, starting programs through `programs`; its log closes when the test ends. */
export async function kindContext(t: ExecutionContext, root: string, programs: FakePrograms, id = 'unit:node'): Promise<OwnedTaskContext> {
  mkdirSync(join(root, 'logs'), { recursive: true });
  const context = createTaskContext({
    id,
    root,
    logFile: join(root, 'logs', `${id.replace(/[^\w.-]/g, '_')}.log`),
    signal: new AbortController().signal,
    hasher: await StatCache.open(),
    runProcess: programs.run,
  });
  t.teardown(() => context.close());
  return context;
}

/** `-var name=value` arguments of a packer command line, by name. */
export function packerVariables(args: readonly string[]): Record<string, string> {
  const variables: Record<string, string> = {};
  args.forEach((arg, index) => {
    if (args[index - 1] !== '-var') return;
    const at = arg.indexOf('=');
    variables[arg.slice(0, at)] = arg.slice(at + 1);
  });
  return variables;
}

/** What the fake qemu-img says of an image file. */
export interface ImageFacts {
  readonly compressedClusters: number;
  readonly compressionType?: string;
  readonly backingFile?: string;
}

/**
 * qemu-img as the task kinds use it: `--version`, `info` and `check` answer from `facts`
 * (a file it was not told of is an uncompressed qcow2), and `convert` copies its source to
 * its destination and reports progress, or fails with `convertFails`.
 */
export class FakeQemuImg {
  readonly facts = new Map<string, ImageFacts>();
  convertFails: string | undefined;

  readonly program: FakeProgram = (args) => {
    const path = args.at(-1)!;
    const facts = this.facts.get(path) ?? { compressedClusters: 0 };
    switch (args[0]) {
      case '--version':
        return { stdout: 'qemu-img version 7.2.0 (Debian 1:7.2+dfsg-7)\n' };
      case 'info':
        return {
          stdout: JSON.stringify({
            format: 'qcow2',
            'virtual-size': 2 ** 30,
            filename: path,
            ...(facts.backingFile !== undefined ? { 'backing-filename': facts.backingFile } : {}),
            'format-specific': { type: 'qcow2', data: { 'compression-type': facts.compressionType ?? 'zlib' } },
          }),
        };
      case 'check':
        return { stdout: JSON.stringify({ 'compressed-clusters': facts.compressedClusters }) };
      case 'convert': {
        if (this.convertFails !== undefined) return { exitCode: 1, stderr: `    (12.00/100%)\rqemu-img: ${this.convertFails}\n` };
        const [source, dest] = args.slice(-2) as [string, string];
        copyFileSync(source, dest);
        const type = args.find((arg) => arg.startsWith('compression_type='))?.slice('compression_type='.length) ?? 'zlib';
        this.facts.set(dest, { compressedClusters: 8, compressionType: type });
        return { stdout: '    (0.00/100%)\r    (50.00/100%)\r    (100.00/100%)\n' };
      }
      default:
        return { exitCode: 1, stderr: `qemu-img: unknown command ${args[0]}` };
    }
  };
}
