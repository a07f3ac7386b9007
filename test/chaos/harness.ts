// The chaos suite's machinery, shared by `npm run chaos` (scripts/chaos.ts, the long run)
// and the short seeded slice in `npm test` (test/chaos-slice.test.ts): a seeded random
// source, a scope that stands in for a test's teardown, and one kill of a real `pipeline`
// process at a random moment.
import type { ExecutionContext } from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CliResult, Project } from '../support/engine-project.ts';

/** mulberry32: small, fast and the same sequence for the same seed on every machine. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

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
}

/** Starts `pipeline ARGS`, sends `signal` after `delayMs` unless it has exited, and waits for it. */
export async function runAndInterrupt(
  project: Project,
  args: readonly string[],
  env: Readonly<Record<string, string>>,
  signal: KillSignal,
  delayMs: number,
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
  if (!exited) {
    sentAt = Date.now();
    running.child.kill(signal);
  }
  const result = await running.done;
  const now = Date.now();
  return { signal, sentAtMs: sentAt === undefined ? undefined : sentAt - started, result, exitMs: sentAt === undefined ? undefined : now - sentAt, elapsedMs: now - started };
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
