// Child processes for tasks: argument arrays quoted by zx (never a string-built shell
// command), each in its own process group so an abort kills the whole tree (packer's
// plugins, qemu) and a terminal Ctrl-C reaches only `pipeline`, which cleans up.
import type { ProcessPromise } from 'zx';
import type { ExecOptions, ExecResult } from './types.ts';

const KILL_GRACE_MS = 5_000;

export class ExecFailure extends Error {
  override readonly name = 'ExecFailure';
  constructor(
    message: string,
    readonly result: ExecResult,
  ) {
    super(message);
  }
}

export async function execFile(
  file: string,
  args: readonly string[],
  signal: AbortSignal,
  options: ExecOptions & { defaultOnLine?: (line: string) => void } = {},
): Promise<ExecResult> {
  signal.throwIfAborted();
  const onLine = options.onLine ?? options.defaultOnLine;
  // Loaded on first use: a run where everything is fresh starts no process and skips zx's
  // start-up cost.
  const { $ } = await import('zx');
  const shell = $({
    cwd: options.cwd ?? process.cwd(),
    env: { ...process.env, ...options.env },
    quiet: true,
    verbose: false,
    nothrow: true,
    detached: true,
    ...(options.input !== undefined ? { input: options.input } : {}),
  });
  const child: ProcessPromise = shell`${file} ${[...args]}`;
  if (onLine) forwardLines(child, onLine);

  const stop = (): void => {
    void killTree(child);
  };
  signal.addEventListener('abort', stop, { once: true });
  try {
    const output = await child;
    const result: ExecResult = { exitCode: output.exitCode ?? 1, stdout: output.stdout, stderr: output.stderr };
    signal.throwIfAborted();
    if (result.exitCode !== 0 && !options.nothrow) {
      const detail = lastLine(result.stderr) ?? lastLine(result.stdout) ?? `exit code ${result.exitCode}`;
      throw new ExecFailure(`${file} exited with code ${result.exitCode}: ${detail}`, result);
    }
    return result;
  } finally {
    signal.removeEventListener('abort', stop);
  }
}

async function killTree(child: ProcessPromise): Promise<void> {
  const pid = child.pid;
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // exited after SIGTERM
    }
  }, KILL_GRACE_MS);
  timer.unref();
  await child.catch(() => undefined);
  clearTimeout(timer);
}

/** Whether a process exists (one owned by another user counts: kill says EPERM). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function forwardLines(child: ProcessPromise, onLine: (line: string) => void): void {
  for (const stream of [child.stdout, child.stderr]) {
    let pending = '';
    stream.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      const lines = pending.split(/\r?\n|\r/);
      pending = lines.pop() ?? '';
      for (const line of lines) if (line.length > 0) onLine(line);
    });
    stream.on('end', () => {
      if (pending.length > 0) onLine(pending);
      pending = '';
    });
  }
}

function lastLine(text: string): string | undefined {
  const lines = text.trim().split('\n');
  const last = lines[lines.length - 1]?.trim();
  return last ? last : undefined;
}
