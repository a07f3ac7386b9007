// Configs: `defineStepsConfig` (the engine entry's config function) for generic steps with
// typed references, and loading a config file (TypeScript compiled once and cached, or
// plain JS) into a validated EngineConfig.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, isPlainStepsConfig } from './config-plain-check.ts';
// Static: every run with a TypeScript config asks it for the compiled file, and a dynamic
// import is a chain of thread-pool round trips (esbuild itself loads only to compile).
import { compiledConfig, locateSyntaxError, optionalDependency } from './config-cache.ts';
import type { Mutable } from './mutable.ts';
import { type ConfigContext, Failure, isFailure, type EngineConfig, type FileHasher, type NodeDef, type TaskContext } from './types.ts';

/**
 * A step the user declares. `Ref` is the union of every declared name, so a dependency
 * on something that does not exist is a compile error in a TypeScript config.
 */
export interface StepDecl<Ref extends string> {
  readonly description?: string;
  readonly deps?: readonly Ref[];
  /** Globs relative to the config's directory whose contents are inputs. */
  readonly inputs?: readonly string[];
  /** Exact input files; a missing one is an error. */
  readonly files?: readonly string[];
  readonly outputs?: readonly string[];
  /** Environment variables whose values are inputs. */
  readonly env?: readonly string[];
  readonly pool?: string;
  /** A program and its arguments, run from the config's directory without a shell. */
  readonly command?: readonly [string, ...string[]];
  /** Or a function; its source text is part of the fingerprint. */
  readonly run?: (context: TaskContext) => Promise<void>;
}

export interface StepsConfig<N extends string> {
  readonly steps: { readonly [K in N]: StepDecl<NoInfer<N>> };
  readonly aliases?: Readonly<Record<string, readonly NoInfer<N>[]>>;
  readonly pools?: Readonly<Record<string, number>>;
  readonly defaultTarget?: NoInfer<N> | string;
}

/** Turns user steps into engine nodes (the kind `command` or `function`). */
export function stepNodes(steps: Readonly<Record<string, StepDecl<string>>>): NodeDef[] {
  return Object.entries(steps).map(([id, step]) => stepNode(id, step));
}

export function stepNode(id: string, step: StepDecl<string>): NodeDef {
  if (!step.command === !step.run) throw new Failure('config', `step "${id}" needs exactly one of command or run`);
  const command = step.command;
  const run = step.run;
  // Field by field, not with conditional spreads: a 1,000-step config makes a thousand
  // of these at every start, in code that runs once and so is never optimised.
  const node: Mutable<NodeDef> = {
    id,
    kind: command ? 'command' : 'function',
    deps: step.deps ? [...step.deps] : [],
    params: command ? { command: [...command] } : { source: String(run) },
    run: command
      ? async (context) => {
          const [file, ...args] = command;
          await context.exec(file, args);
        }
      : run!,
  };
  if (step.description !== undefined) node.description = step.description;
  if (step.inputs) node.inputs = step.inputs;
  if (step.files) node.files = step.files;
  if (step.outputs) node.outputs = step.outputs;
  if (step.env) node.env = step.env;
  if (step.pool !== undefined) node.pool = step.pool;
  return node;
}

/** A config computed from where it lives: `export default (({ root }) => config)`. */
export type EngineConfigFactory = (context: ConfigContext) => EngineConfig | Promise<EngineConfig>;

/**
 * A config of generic steps only. An ordinary declaration (plain objects and arrays) is
 * checked by hand here. Anything else is checked with zod when the config file is loaded
 * (`loadConfig`), which is asynchronous, so that zod is loaded only for such a config: the
 * config returned carries the declaration for that check, under a key spreads keep.
 */
export function defineStepsConfig<const N extends string>(config: StepsConfig<N>): EngineConfig {
  if (isPlainStepsConfig(config)) return stepsEngineConfig(config);
  try {
    return Object.assign(stepsEngineConfig(config), { [UNCHECKED_DECLARATION]: { declaration: config } });
  } catch (error) {
    // Most likely something zod refuses: it words the error when the config is loaded.
    return Object.assign({ nodes: [] }, { [UNCHECKED_DECLARATION]: { declaration: config, buildError: error } });
  }
}

function stepsEngineConfig(config: StepsConfig<string>): EngineConfig {
  // Frozen, so that what the shape check would find is settled here: nothing can be
  // added to or replaced in it (its nodes are typed read-only).
  const nodes = Object.freeze(stepNodes(config.steps));
  MADE_BY_STEP_NODE.add(nodes);
  return {
    nodes,
    ...(config.aliases ? { aliases: config.aliases } : {}),
    ...(config.pools ? { pools: config.pools } : {}),
    ...(config.defaultTarget ? { defaultTarget: config.defaultTarget } : {}),
  };
}

/**
 * Node lists `stepNode` made from a checked declaration: the loaded config's shape check
 * skips their nodes (a thousand steps cost it milliseconds at every start).
 */
const MADE_BY_STEP_NODE = new WeakSet<object>();

/** Symbol.for, so that two copies of the engine (compiled and source) agree on it. */
const UNCHECKED_DECLARATION = Symbol.for('pipeline.uncheckedStepsDeclaration');

interface UncheckedDeclaration {
  readonly declaration: unknown;
  readonly buildError?: unknown;
}

/** Checks with zod a declaration `defineStepsConfig` left unchecked; throws its one-line `config` Failure. */
async function checkDeferredDeclaration(config: unknown): Promise<void> {
  if (config === null || typeof config !== 'object' || !(UNCHECKED_DECLARATION in config)) return;
  const { declaration, buildError } = (config as Record<symbol, UncheckedDeclaration>)[UNCHECKED_DECLARATION]!;
  const [{ z }, { checkConfigShape, configSchemas }] = await Promise.all([import('zod'), import('./config-validate.ts')]);
  checkConfigShape(configSchemas(z).stepsConfig, declaration);
  if (buildError !== undefined) throw buildError;
}

export const DEFAULT_CONFIG_FILES = ['pipeline.config.ts', 'pipeline.config.mts', 'pipeline.config.js', 'pipeline.config.mjs'];

/** Finds the config: the given file, or the first default name in the directory. */
export async function findConfig(cwd: string, given: string | undefined): Promise<string> {
  if (given) {
    const path = resolve(cwd, given);
    if (!(await exists(path))) throw new Failure('usage', `config file ${given} not found (check --config)`);
    return path;
  }
  for (const name of DEFAULT_CONFIG_FILES) {
    const path = resolve(cwd, name);
    if (await exists(path)) return path;
  }
  throw new Failure('usage', `no ${DEFAULT_CONFIG_FILES[0]} in ${cwd}; run from the project root or pass --config FILE`);
}

/**
 * Imports a config file (finding its compilation through the context's stat cache) and
 * checks its shape; every error names the file. A config that is a factory is given the
 * context (`context.root` is the file's directory).
 */
export async function loadConfig(file: string, context: ConfigContext): Promise<EngineConfig> {
  let loaded: unknown;
  try {
    const module = await importConfig(file, context.hasher);
    loaded = module.default;
    // A config compiled as CommonJS arrives wrapped once more.
    if (loaded !== null && typeof loaded === 'object' && 'default' in loaded && !('nodes' in loaded)) loaded = (loaded as { default: unknown }).default;
  } catch (error) {
    if (isFailure(error, 'config', 'usage')) throw inConfigFile(file, error);
    // Node and tsx report a syntax error without a usable line and column: esbuild finds it.
    if (error instanceof SyntaxError || /^Transform failed/.test(firstLine(error))) {
      const located = await locateSyntaxError(file);
      if (located) throw located;
    }
    throw new Failure('config', `${file}: cannot load: ${firstLine(error)}`);
  }
  if (loaded === undefined) throw new Failure('config', `${file}: no default export (export default defineConfig({...}))`);
  if (typeof loaded === 'function') {
    // A config that needs its root (absolute paths for commands) is a factory.
    try {
      loaded = await (loaded as EngineConfigFactory)(context);
    } catch (error) {
      throw inConfigFile(file, error);
    }
  }
  try {
    await checkDeferredDeclaration(loaded);
  } catch (error) {
    throw inConfigFile(file, error);
  }
  const problem = shapeProblem(loaded);
  if (problem !== undefined) throw new Failure('config', `${file}: ${problem}`);
  return loaded as EngineConfig;
}

/** What went wrong making the config, as a one-line `config` Failure that names the file. */
function inConfigFile(file: string, error: unknown): Failure {
  if (isFailure(error, 'config', 'usage')) return error.message.startsWith(file) ? error : new Failure('config', `${file}: ${error.message}`);
  return new Failure('config', `${file}: ${firstLine(error)}`);
}

const TYPESCRIPT = /\.[cm]?tsx?$/;

/**
 * Imports the config as JavaScript. A TypeScript config is compiled once (config-cache.ts)
 * and the compiled module imported, so it shares the engine's module instances through
 * the package's `exports`. One that imports other TypeScript files goes through tsx's
 * loader instead (its hooks run in a worker thread on Node 20 and cost more than the
 * compile, hence the cache).
 */
async function importConfig(file: string, hasher: FileHasher): Promise<{ default?: unknown }> {
  const url = pathToFileURL(file).href;
  if (!TYPESCRIPT.test(file)) return (await import(url)) as { default?: unknown };
  const compiled = await compiledConfig(file, hasher);
  if (compiled !== undefined) return (await import(pathToFileURL(compiled).href)) as { default?: unknown };
  const { tsImport } = await optionalDependency(
    () => import('tsx/esm/api'),
    'tsx',
    'a TypeScript config that imports other TypeScript files loads through tsx',
  );
  return (await tsImport(url, import.meta.url)) as { default?: unknown };
}

/** What is wrong with a loaded config's shape (a plain-JS config has no compiler to say), or undefined. */
function shapeProblem(config: unknown): string | undefined {
  if (!isRecord(config)) return `the default export must be a config object, not ${describe(config)}`;
  if (!Array.isArray(config.nodes)) return `nodes: expected an array, not ${describe(config.nodes)}`;
  // Plain loops and no strings made unless something is wrong: this runs on every node
  // of every config at every start (but those `stepNode` made, well-formed already).
  const nodes = config.nodes as unknown[];
  const checked = MADE_BY_STEP_NODE.has(nodes);
  for (let index = 0; !checked && index < nodes.length; index++) {
    const node = nodes[index];
    const problem = nodeShapeProblem(node);
    if (problem !== undefined) return `nodes.${index}${problem}`;
  }
  if (config.aliases !== undefined) {
    if (!isRecord(config.aliases)) return `aliases: expected an object, not ${describe(config.aliases)}`;
    for (const [name, members] of Object.entries(config.aliases)) {
      if (!isStringArray(members)) return `aliases.${name}: expected an array of targets, not ${describe(members)}`;
    }
  }
  if (config.pools !== undefined) {
    if (!isRecord(config.pools)) return `pools: expected an object, not ${describe(config.pools)}`;
    for (const [name, limit] of Object.entries(config.pools)) {
      if (!Number.isInteger(limit) || (limit as number) < 1) return `pools.${name}: expected a positive integer, not ${describe(limit)}`;
    }
  }
  if (config.defaultTarget !== undefined && typeof config.defaultTarget !== 'string') {
    return `defaultTarget: expected a target name, not ${describe(config.defaultTarget)}`;
  }
  return undefined;
}

/** What is wrong with one node (`: …` or `.field: …`, to follow its index), or undefined. */
function nodeShapeProblem(node: unknown): string | undefined {
  if (!isRecord(node)) return `: expected a node object, not ${describe(node)}`;
  if (typeof node.id !== 'string' || node.id === '') return `.id: expected a non-empty string, not ${describe(node.id)}`;
  if (typeof node.kind !== 'string' || node.kind === '') return `.kind: expected a non-empty string, not ${describe(node.kind)}`;
  if (!isStringArray(node.deps)) return `.deps: expected an array of node ids, not ${describe(node.deps)}`;
  for (const key of NODE_STRING_LISTS) {
    if (node[key] !== undefined && !isStringArray(node[key])) return `.${key}: expected an array of strings, not ${describe(node[key])}`;
  }
  if (node.pool !== undefined && typeof node.pool !== 'string') return `.pool: expected a string, not ${describe(node.pool)}`;
  if (typeof node.run !== 'function') return `.run: expected a function, not ${describe(node.run)}`;
  return undefined;
}

const NODE_STRING_LISTS = ['inputs', 'files', 'outputs', 'env'] as const;

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function isStringArray(value: unknown): value is string[] {
  if (!Array.isArray(value)) return false;
  for (let i = 0; i < value.length; i++) if (typeof value[i] !== 'string') return false;
  return true;
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0] ?? '';
}

async function exists(path: string): Promise<boolean> {
  return existsSync(path); // synchronous: a thread-pool round trip costs more than the check
}
