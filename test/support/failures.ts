// Asserting on failures by kind, the way the CLI and --json read them.
import type { ExecutionContext } from 'ava';
import { isFailure, type Failure, type FailureKind } from '../../src/failure.ts';

/** Awaits `promise`, which must reject with a Failure of `kind`; returns it. */
export async function throwsFailure(t: ExecutionContext, promise: Promise<unknown>, kind: FailureKind, message?: RegExp): Promise<Failure> {
  const error = await t.throwsAsync(promise);
  if (!isFailure(error, kind)) {
    t.fail(`expected a ${kind} Failure, got ${error?.name}: ${error?.message}`);
    throw error;
  }
  if (message) t.regex(error.message, message);
  return error;
}
