// Child processes for tasks: argument arrays quoted by zx (never a string-built shell
// command), each in its own process group so an abort kills the whole tree (packer's
// plugins, qemu) and a terminal Ctrl-C reaches only `pipeline`, which cleans up.
//
// A pipeline killed with SIGKILL cleans up nothing, and its children's groups would live
// on. A watchdog guards them: a tiny shell, started with the first child, that reads the
// process groups to guard from a pipe whose other end only the pipeline holds. When the
// pipeline dies however it dies, the kernel closes that end; the watchdog reads EOF and
// kills every group still listed (TERM, then KILL).
import { existsSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { ProcessPromise } from 'zx';
import type { Exec, ExecOptions, ExecResult } from './types.ts';

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

/** The engine's ProcessRunner: the program in its own process group, killed with it on abort. */
export async function execFile(file: string, args: readonly string[], boundTo: AbortSignal, options: ExecOptions = {}): Promise<ExecResult> {
  const signal = options.signal ? AbortSignal.any([boundTo, options.signal]) : boundTo;
  signal.throwIfAborted();
  const onLine = options.onLine;
  // Loaded on first use: a run where everything is fresh starts no process and skips zx's
  // start-up cost.
  const { $ } = await import('zx');
  // An abort while zx loaded fired before the listener below exists: it would never stop the child.
  signal.throwIfAborted();
  const shell = $({
    cwd: options.cwd ?? process.cwd(),
    env: { ...process.env, ...options.env },
    // zx's default shell is bash, and bash sources ~/.bashrc when its stdin is a socket
    // (Node's pipes are) and SHLVL is unset, as under systemd, cron and some CI agents: a
    // pyenv or conda init there then runs before every command, took over a minute under
    // load, and was beyond Ctrl-C's reach. /bin/sh reads no startup file, and `exec`
    // leaves the command itself as the process (group leader) we signal.
    shell: '/bin/sh',
    prefix: 'exec ',
    postfix: '',
    quote: posixQuote,
    quiet: true,
    verbose: false,
    nothrow: true,
    detached: true,
    ...(options.input !== undefined ? { input: options.input } : {}),
  });
  const child: ProcessPromise = shell`${file} ${[...args]}`;
  const group = child.pid;
  if (group !== undefined) guardGroup(group);
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
    if (group !== undefined) releaseGroup(group);
  }
}

/** `execFile` bound to `signal`: the Exec of code that runs programs outside a task (a preflight, a command). */
export function boundExec(signal: AbortSignal): Exec {
  return (file, args, options) => execFile(file, args, signal, options);
}

/** Seconds between the watchdog's TERM and KILL: packer gets to stop its plugins. */
const WATCHDOG_GRACE_SECONDS = 2;

/** `+PGID` guards a group, `-PGID` releases it; EOF kills what is guarded. No reads but the pipe. */
const WATCHDOG_SCRIPT = `trap '' INT TERM HUP
groups=' '
while IFS= read -r line; do
  case $line in
    +*) groups="$groups\${line#+} " ;;
    -*) kept=' '; for g in $groups; do [ "$g" = "\${line#-}" ] || kept="$kept$g "; done; groups=$kept ;;
  esac
done
[ "$groups" = ' ' ] && exit 0
for g in $groups; do kill -s TERM -- "-$g" 2>/dev/null; done
tries=${WATCHDOG_GRACE_SECONDS * 10}
while [ $tries -gt 0 ]; do
  alive=
  for g in $groups; do kill -s 0 -- "-$g" 2>/dev/null && alive=1; done
  [ -z "$alive" ] && exit 0
  sleep 0.1
  tries=$((tries - 1))
done
for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
exit 0`;

let watchdog: Socket | undefined;

function watchdogPipe(): Socket | undefined {
  if (watchdog && !watchdog.destroyed) return watchdog;
  // Loaded here, not at start-up: a run where everything is fresh starts no process.
  const { spawn } = process.getBuiltinModule('node:child_process');
  // Its own process group: a Ctrl-C at the terminal must not take it down with the pipeline's.
  const child = spawn('/bin/sh', ['-c', WATCHDOG_SCRIPT], { detached: true, stdio: ['pipe', 'ignore', 'ignore'] });
  child.on('error', () => undefined);
  const pipe = child.stdin as Socket | null;
  if (!pipe) return undefined;
  pipe.on('error', () => undefined); // the watchdog was killed: nothing more to guard with
  // Neither the watchdog nor its pipe keeps the pipeline alive; the pipe closes as the process ends.
  child.unref();
  pipe.unref();
  watchdog = pipe;
  return pipe;
}

function guardGroup(group: number): void {
  watchdogPipe()?.write(`+${group}\n`);
}

function releaseGroup(group: number): void {
  if (watchdog && !watchdog.destroyed) watchdog.write(`-${group}\n`);
}

/**
 * One argument as POSIX sh reads it. zx's own quote writes bash's `$'…'`, which sh does not
 * know; inside single quotes nothing is special but the quote itself.
 */
export function posixQuote(arg: string): string {
  if (/^[\w/.,:=@%+-]+$/.test(arg)) return arg;
  return `'${arg.replaceAll("'", `'\\''`)}'`;
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

/**
 * Whether a process exists (one owned by another user counts: kill says EPERM). A zombie
 * does not: it holds nothing, and in a container whose PID 1 never reaps it stays forever.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = fields.charAt(fields.lastIndexOf(')') + 2);
    return state !== 'Z' && state !== 'X';
  } catch {
    // Gone since kill(0), or no /proc (not Linux), where kill(0) is all there is to go by.
    return !existsSync('/proc/self/stat');
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
