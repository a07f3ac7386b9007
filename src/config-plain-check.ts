// The hand check that lets an ordinary steps config skip zod, and how a config error shows
// a value. Kept apart from config-validate.ts so that a run whose config passes the check
// never loads zod, a sizeable part of a no-op run's start-up (BENCHMARKS.md). What it
// accepts is held to the types in config.ts at compile time (its key tables) and to the
// zod schema by a property test (test/unit/config-plain-check.test.ts).
import type { StepDecl, StepsConfig } from './config.ts';

/**
 * Whether `value` is certainly a steps config `configSchemas(z).stepsConfig` (config-validate.ts)
 * accepts, checked by hand: zod's check costs time per step, and loading zod more.
 * Only plain objects and arrays pass, so anything unusual is left to zod, which also
 * words the error.
 */
export function isPlainStepsConfig(value: unknown): boolean {
  if (!isPlainObject(value) || !isPlainObject(value.steps)) return false;
  for (const key of Object.keys(value)) if (!Object.hasOwn(STEPS_CONFIG_KEYS, key)) return false;
  for (const key of Object.keys(value.steps)) if (!isPlainStep(value.steps[key])) return false;
  const { aliases, pools, defaultTarget } = value;
  if (aliases !== undefined && !(isPlainObject(aliases) && Object.values(aliases).every(isStringList))) return false;
  if (pools !== undefined && !(isPlainObject(pools) && Object.values(pools).every((limit) => Number.isInteger(limit) && (limit as number) > 0))) return false;
  return defaultTarget === undefined || typeof defaultTarget === 'string';
}

/** The keys of a steps config (StepsConfig in config.ts: the compiler holds this to it). */
const STEPS_CONFIG_KEYS: { readonly [Key in keyof StepsConfig<string>]-?: true } = { steps: true, aliases: true, pools: true, defaultTarget: true };

/** What each key of a step holds (StepDecl in config.ts: the compiler holds this to it). */
const STEP_FIELDS: { readonly [Key in keyof StepDecl<string>]-?: 'strings' | 'command' | 'string' | 'function' } = {
  description: 'string',
  deps: 'strings',
  inputs: 'strings',
  files: 'strings',
  outputs: 'strings',
  env: 'strings',
  pool: 'string',
  command: 'command',
  run: 'function',
};

function isPlainStep(step: unknown): boolean {
  if (!isPlainObject(step)) return false;
  for (const key of Object.keys(step)) {
    const field = step[key];
    if (!Object.hasOwn(STEP_FIELDS, key)) return false;
    if (field === undefined) continue;
    switch (STEP_FIELDS[key as keyof typeof STEP_FIELDS]) {
      case 'strings':
        if (!isStringList(field)) return false;
        break;
      case 'command':
        if (!isStringList(field) || field.length === 0) return false;
        break;
      case 'string':
        if (typeof field !== 'string') return false;
        break;
      case 'function':
        if (typeof field !== 'function') return false;
        break;
    }
  }
  return true;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object') return false;
  const prototype = Object.getPrototypeOf(value) as unknown;
  return prototype === Object.prototype || prototype === null;
}

function isStringList(value: unknown): value is string[] {
  if (!Array.isArray(value) || Object.getPrototypeOf(value) !== Array.prototype) return false;
  for (let i = 0; i < value.length; i++) if (typeof value[i] !== 'string') return false;
  return true;
}

/** A value as an error shows it: short strings quoted, numbers as they are, else its kind. */
export function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}
