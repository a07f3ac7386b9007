// Failures are values with a kind, decided where the error happens (Wireit's `Failure`).
// The exit code, the one-line message, `--json` and the live view all read the kind;
// none of them parse prose or compare class names.

/**
 * - `usage`: a bad argument, flag or target (fix the command line)
 * - `config`: the config file is wrong (fix the file)
 * - `setup`: the machine is not ready (install a tool, create a directory, log in)
 * - `task`: a task ran and failed (its log says why)
 * - `network`: a server could not be reached or kept failing (try again later)
 * - `auth`: credentials missing, rejected or lacking a permission
 * - `not-found`: a release, asset, repository or file that should exist does not
 * - `integrity`: bytes do not match their checksum (never installed, never uploaded)
 * - `cancelled`: Ctrl-C, SIGTERM, or a run stopped by another failure
 */
export const FAILURE_KINDS = ['usage', 'config', 'setup', 'task', 'network', 'auth', 'not-found', 'integrity', 'cancelled'] as const;
export type FailureKind = (typeof FAILURE_KINDS)[number];

export interface FailureOptions extends ErrorOptions {
  /** An HTTP status or errno code that classified it, for `--json` readers. */
  readonly code?: string | number;
  /**
   * The exit code when it stops a command, instead of its kind's: a command whose exit 1 is
   * an answer (`release check`: stale) gives every failure 2, so none is taken for that answer.
   */
  readonly exitCode?: number;
}

export class Failure extends Error {
  override readonly name = 'Failure';
  readonly code: string | number | undefined;
  readonly exitCode: number | undefined;

  constructor(
    readonly kind: FailureKind,
    message: string,
    options: FailureOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = options.code;
    this.exitCode = options.exitCode;
  }

  /** The same failure with context in front (`debian-12:build: …`), kind, code and exit code kept. */
  prefixed(prefix: string): Failure {
    return new Failure(this.kind, `${prefix}: ${this.message}`, {
      cause: this,
      ...(this.code !== undefined ? { code: this.code } : {}),
      ...(this.exitCode !== undefined ? { exitCode: this.exitCode } : {}),
    });
  }
}

/**
 * Whether `error` is a Failure (of one of `kinds`, when given). By shape rather than
 * `instanceof`: a TypeScript config loaded in its own module instance throws its own copy
 * of the class.
 */
export function isFailure(error: unknown, ...kinds: FailureKind[]): error is Failure {
  if (!(error instanceof Error) || error.name !== 'Failure') return false;
  const kind = (error as { kind?: unknown }).kind;
  if (typeof kind !== 'string' || !(FAILURE_KINDS as readonly string[]).includes(kind)) return false;
  return kinds.length === 0 || kinds.includes(kind as FailureKind);
}

/** Whether `error` is the given signal's own abort (Ctrl-C), whatever shape the reason has. */
export function isCancellation(error: unknown, signal?: AbortSignal): boolean {
  if (isFailure(error, 'cancelled')) return true;
  if (signal?.aborted && (error === signal.reason || (error instanceof Error && error.name === 'AbortError'))) return true;
  return false;
}

/** The reason an interrupted run aborts with: a cancelled Failure naming the signal. */
export function cancelledBy(signalName: string): Failure {
  return new Failure('cancelled', `interrupted (${signalName})`, { code: signalName });
}

/** Any thrown value as a Failure: unknown errors are `task` failures with their message. */
export function toFailure(error: unknown, signal?: AbortSignal): Failure {
  if (isFailure(error)) return error;
  if (isCancellation(error, signal)) return new Failure('cancelled', 'interrupted', { cause: error });
  const message = error instanceof Error ? error.message : String(error);
  return new Failure('task', message, { cause: error });
}

/** Failures that mean "fix the input or the machine", reported in one line with exit 2. */
const SETUP_LIKE: ReadonlySet<FailureKind> = new Set(['usage', 'config', 'setup', 'auth', 'not-found', 'network']);

/** Exit code for a failure that stopped the command itself (not one node of a run). */
export function exitCodeFor(kind: FailureKind): number {
  if (kind === 'cancelled') return 130;
  return SETUP_LIKE.has(kind) ? 2 : 1;
}

/** Exit code for this failure stopping a command: its own, else its kind's. */
export function exitCodeOf(failure: Failure): number {
  if (failure.kind === 'cancelled') return 130;
  const own = (failure as { exitCode?: unknown }).exitCode;
  return typeof own === 'number' ? own : exitCodeFor(failure.kind);
}
