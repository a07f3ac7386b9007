// The chaos suite's machinery, shared by `npm run chaos` (scripts/chaos.ts, the long run)
// and the short seeded slice in `npm test` (test/chaos-slice.test.ts): a seeded random
// source, a scope that stands in for a test's teardown, and one kill of a real `pipeline`
// process at a random moment.
import type { ExecutionContext } from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { markedProcesses } from '../support/chaos.ts';
import type { CliResult, Project, RunningCli } from '../support/engine-project.ts';

export { seededRandom } from '../support/seeded-random.ts';

/** The seed to use: CHAOS_SEED when set (a replay), else a new one. */
export function chooseSeed(env: NodeJS.ProcessEnv = process.env): number {
  const given = env.CHAOS_SEED;
  if (given !== undefined && given !== '') {
    const seed = Number(given);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`CHAOS_SEED must be a non-negative integer, not ${JSON.stringify(given)}`);
    return seed;
  }
  return Math.floor(Math.random() * 2 ** 31);
}

/**
 * What the test-project helpers need of an ava test (teardown), for use outside ava. The
 * helpers take a heavy-test slot through it too, which a lone script always gets.
 */
export interface Scope {
  readonly t: ExecutionContext;
  close(): Promise<void>;
}

export function scope(): Scope {
  const cleanups: Array<() => unknown> = [];
  const t = { teardown: (fn: () => unknown) => void cleanups.push(fn) } as unknown as ExecutionContext;
  return {
    t,
    async close() {
      for (const fn of cleanups.reverse()) await fn();
    },
  };
}

export type KillSignal = 'SIGKILL' | 'SIGINT';

export interface Interrupted {
  readonly signal: KillSignal;
  /** Milliseconds after the start the signal was sent; undefined when the run ended first. */
  readonly sentAtMs: number | undefined;
  readonly result: CliResult;
  /** Milliseconds from the signal to the process's exit. */
  readonly exitMs: number | undefined;
  /** Milliseconds from the start to the exit. */
  readonly elapsedMs: number;
  /**
   * When a SIGINT'd run was still alive SIGINT_EXIT_BOUND_MS after the signal: what it had
   * printed and which of its processes were alive then, so a slow stop can be diagnosed.
   */
  readonly slowExit?: string;
}

/** A SIGINT must end the run, cleaned up, within this. */
export const SIGINT_EXIT_BOUND_MS = 20_000;

/** Starts `pipeline ARGS`, sends `signal` after `delayMs` unless it has exited, and waits for it. `mark`: the run's process mark. */
export async function runAndInterrupt(
  project: Project,
  args: readonly string[],
  env: Readonly<Record<string, string>>,
  signal: KillSignal,
  delayMs: number,
  mark: string,
): Promise<Interrupted> {
  const running = project.start(args, { env, timeoutMs: 300_000 });
  let exited = false;
  void running.done.then(
    () => (exited = true),
    () => (exited = true),
  );
  const started = Date.now();
  await Promise.race([sleep(delayMs), running.done.catch(() => undefined)]);
  let sentAt: number | undefined;
  let slowExit: Promise<string | undefined> = Promise.resolve(undefined);
  if (!exited) {
    sentAt = Date.now();
    running.child.kill(signal);
    if (signal === 'SIGINT') slowExit = snapshotIfStillRunning(running, mark, () => exited);
  }
  const result = await running.done;
  const now = Date.now();
  const slow = await slowExit;
  return {
    signal,
    sentAtMs: sentAt === undefined ? undefined : sentAt - started,
    result,
    exitMs: sentAt === undefined ? undefined : now - sentAt,
    elapsedMs: now - started,
    ...(slow ? { slowExit: slow } : {}),
  };
}

async function snapshotIfStillRunning(running: RunningCli, mark: string, exited: () => boolean): Promise<string | undefined> {
  await Promise.race([sleep(SIGINT_EXIT_BOUND_MS), running.done.catch(() => undefined)]);
  if (exited()) return undefined;
  const alive = await markedProcesses(mark);
  const said = running.stderrSoFar().trim().split('\n').slice(-6).join(' | ');
  return `alive after ${SIGINT_EXIT_BOUND_MS} ms: ${alive.map((process) => `${process.pid} ${process.command}`).join('; ') || 'no marked process'}; stderr so far: ${said}`;
}

/** The problems of a SIGINT'd run's stop: too slow (with what was still running), or not exit 130. */
export function sigintProblems(killed: Interrupted): string[] {
  const { result } = killed;
  const problems: string[] = [];
  // Ended by the signal itself: it came before the CLI took over SIGINT or after it was
  // done (the shell reports 130 either way), so nothing was left half-way by it.
  if (result.code !== 130 && result.code !== 0 && result.signal !== 'SIGINT') {
    problems.push(`SIGINT: exit ${result.code} (${result.signal ?? ''}), not 130: ${result.stderr.trim().split('\n').at(-1)}`);
  }
  if ((killed.exitMs ?? 0) > SIGINT_EXIT_BOUND_MS) problems.push(`SIGINT: took ${killed.exitMs} ms to exit; ${killed.slowExit ?? ''}`);
  return problems;
}

export interface TrialReport {
  readonly area: string;
  readonly trial: number;
  readonly signal: KillSignal;
  readonly sentAtMs: number | undefined;
  readonly problems: readonly string[];
  readonly durationMs: number;
}

export function describeTrial(report: TrialReport): string {
  const when = report.sentAtMs === undefined ? 'after it finished (no signal sent)' : `at ${report.sentAtMs} ms`;
  const verdict = report.problems.length === 0 ? 'ok' : `FAILED: ${report.problems.join('; ')}`;
  return `${report.area} #${report.trial}: ${report.signal} ${when}, ${(report.durationMs / 1000).toFixed(1)} s: ${verdict}`;
}
