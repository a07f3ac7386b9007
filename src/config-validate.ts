// Strict checking of what a config declares, with zod: an unknown key at any level is an
// error with the nearest known key ("did you mean"), a wrong type names the key's path and
// the type expected. A plain-JS config has no compiler to catch these, and a TypeScript
// one may be compiled without type checking, so the check runs when the config is made
// (for a steps config the hand check in config-plain-check.ts cannot vouch for, when it
// is loaded: see `defineStepsConfig`). Only the first problem is reported: one line, as every
// config error.
//
// This module never loads zod itself: the schemas are made from the `z` a caller passes
// (`configSchemas(z)`), so the engine's index can export them and a steps config that the
// hand check passes still never loads zod. The types in config.ts are the source of
// truth; the schemas are held to them at compile time (`SameShape` below).
import type { z } from 'zod';
import type { StepDecl, StepsConfig } from './config.ts';
import { describe } from './config-plain-check.ts';
import { Failure } from './failure.ts';
import { nearest } from './suggest.ts';

type Zod = typeof z;

/** The engine's config schemas, made with the caller's zod. */
export function configSchemas(z: Zod) {
  const stringList = z.array(z.string());
  /** A function value, kept as it is (zod's own `z.function()` would wrap it). */
  const functionValue = <Fn extends (...args: never[]) => unknown>() =>
    z.custom<Fn>((value) => typeof value === 'function', { message: 'expected a function' });
  /** One step a user declares (StepDecl in config.ts). */
  const step = z
    .object({
      description: z.string(),
      deps: stringList,
      inputs: stringList,
      files: stringList,
      outputs: stringList,
      env: stringList,
      pool: z.string(),
      command: z.array(z.string()).nonempty(),
      run: functionValue<NonNullable<StepDecl<string>['run']>>(),
    })
    .partial()
    .strict();
  const pools = z.record(z.string(), z.number().int().positive());
  const aliases = z.record(z.string(), stringList);
  /** What `defineStepsConfig` takes (StepsConfig in config.ts). */
  const stepsConfig = z
    .object({
      steps: z.record(z.string(), step),
      aliases: aliases.optional(),
      pools: pools.optional(),
      defaultTarget: z.string().optional(),
    })
    .strict();
  return { step, pools, aliases, stepsConfig };
}

type Schemas = ReturnType<typeof configSchemas>;

/**
 * True when a schema accepts exactly the values of a type: what it outputs is the type,
 * key for key (read-only modifiers aside: a schema's output is a copy).
 */
export type SameShape<Schema extends z.ZodTypeAny, Type> =
  (<T>() => T extends Writable<z.output<Schema>> ? 1 : 2) extends <T>() => T extends Writable<Type> ? 1 : 2 ? true : false;

type Writable<T> = T extends (...args: never[]) => unknown ? T : T extends object ? { -readonly [K in keyof T]: Writable<T[K]> } : T;

/** Compiles only when its argument is `true`. */
export type Holds<Check extends true> = Check;

/** The step and steps-config schemas accept what StepDecl and StepsConfig declare, no more, no less. */
export type ConfigSchemasMatchTheTypes = [Holds<SameShape<Schemas['step'], StepDecl<string>>>, Holds<SameShape<Schemas['stepsConfig'], StepsConfig<string>>>];

/**
 * Throws a one-line `config` Failure for the first thing in `value` that `schema` refuses:
 * `publishdir: unknown key (did you mean publishDir?)`, `publishDir: expected a string, not 42`.
 * Returns nothing: the caller keeps its own object (zod's output is a copy).
 */
export function checkConfigShape(schema: z.ZodTypeAny, value: unknown): void {
  const result = schema.safeParse(value);
  if (result.success) return;
  throw new Failure('config', describeIssue(firstIssue(result.error.issues, value), schema, value));
}

/**
 * The issue to report. zod lists an object's missing keys before its unknown ones, but a
 * required key that is missing beside an unknown key is most likely misspelt there
 * (`imagse:` for `images:`): the unknown key, with its "did you mean", says what to fix.
 */
function firstIssue(issues: readonly z.ZodIssue[], value: unknown): z.ZodIssue {
  const first = issues[0]!;
  if (first.code !== 'invalid_type' || valueAt(value, first.path) !== undefined) return first;
  const parent = first.path.slice(0, -1).join('\0');
  return issues.find((issue) => issue.code === 'unrecognized_keys' && issue.path.join('\0') === parent) ?? first;
}

function describeIssue(issue: z.ZodIssue, schema: z.ZodTypeAny, value: unknown): string {
  const at = (path: readonly (string | number)[]): string => (path.length === 0 ? 'the config' : path.join('.'));
  switch (issue.code) {
    case 'unrecognized_keys': {
      const key = issue.keys[0]!;
      const known = keysAt(schema, issue.path);
      const guess = nearest(key, known);
      const hint = guess !== undefined ? `did you mean ${guess}?` : known.length > 0 ? `known keys: ${known.join(', ')}` : 'remove it';
      return `${at([...issue.path, key])}: unknown key (${hint})`;
    }
    case 'invalid_type': {
      const found = valueAt(value, issue.path);
      if (found === undefined) return `${at(issue.path)}: missing (expected ${typeName(issue.expected)})`;
      return `${at(issue.path)}: expected ${typeName(issue.expected)}, not ${describe(found)}`;
    }
    case 'too_small':
      if (issue.type === 'array') return `${at(issue.path)}: expected at least ${Number(issue.minimum)} item(s), not ${describe(valueAt(value, issue.path))}`;
      return `${at(issue.path)}: expected a positive number, not ${describe(valueAt(value, issue.path))}`;
    case 'custom':
      if (issue.message === 'expected a function') return `${at(issue.path)}: expected a function, not ${describe(valueAt(value, issue.path))}`;
      return `${at(issue.path)}: ${issue.message}`;
    default:
      return `${at(issue.path)}: ${issue.message.charAt(0).toLowerCase()}${issue.message.slice(1)}, not ${describe(valueAt(value, issue.path))}`;
  }
}

/** The keys the object schema at `path` allows (for "did you mean"). */
function keysAt(schema: z.ZodTypeAny, path: readonly (string | number)[]): string[] {
  let current: z.ZodTypeAny | undefined = schema;
  for (const segment of path) {
    current = unwrap(current);
    const def = current._def as ZodDef;
    if (def.typeName === 'ZodObject') current = (current as z.AnyZodObject).shape[String(segment)] as z.ZodTypeAny | undefined;
    else if (def.typeName === 'ZodRecord') current = def.valueType;
    else if (def.typeName === 'ZodArray') current = def.type;
    else return [];
    if (current === undefined) return [];
  }
  current = unwrap(current);
  return (current._def as ZodDef).typeName === 'ZodObject' ? Object.keys((current as z.AnyZodObject).shape) : [];
}

/** What this module reads of a schema's definition, by zod's type names (so that it never loads zod). */
interface ZodDef {
  readonly typeName?: string;
  readonly innerType?: z.ZodTypeAny;
  readonly schema?: z.ZodTypeAny;
  readonly valueType?: z.ZodTypeAny;
  readonly type?: z.ZodTypeAny;
}

function unwrap(schema: z.ZodTypeAny): z.ZodTypeAny {
  let current = schema;
  for (;;) {
    const def = current._def as ZodDef;
    if ((def.typeName === 'ZodOptional' || def.typeName === 'ZodNullable' || def.typeName === 'ZodDefault') && def.innerType) current = def.innerType;
    else if (def.typeName === 'ZodEffects' && def.schema) current = def.schema;
    else return current;
  }
}

function valueAt(value: unknown, path: readonly (string | number)[]): unknown {
  let current = value;
  for (const segment of path) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<string | number, unknown>)[segment];
  }
  return current;
}

function typeName(type: string): string {
  switch (type) {
    case 'object':
      return 'an object';
    case 'array':
      return 'an array';
    case 'integer':
      return 'an integer';
    default:
      return `a ${type}`;
  }
}
