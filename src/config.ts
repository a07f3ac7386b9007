// Configs: `defineConfig` for generic steps with typed references, and loading a config
// file (TypeScript through tsx's loader, or plain JS) into a validated EngineConfig.
import { access } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { tsImport } from 'tsx/esm/api';
import { z } from 'zod';
import { Failure, isFailure, type EngineConfig, type NodeDef, type TaskContext } from './types.ts';

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
  return {
    id,
    kind: command ? 'command' : 'function',
    deps: [...(step.deps ?? [])],
    params: command ? { command: [...command] } : { source: String(run) },
    ...(step.description !== undefined ? { description: step.description } : {}),
    ...(step.inputs ? { inputs: step.inputs } : {}),
    ...(step.files ? { files: step.files } : {}),
    ...(step.outputs ? { outputs: step.outputs } : {}),
    ...(step.env ? { env: step.env } : {}),
    ...(step.pool !== undefined ? { pool: step.pool } : {}),
    run: command
      ? async (context) => {
          const [file, ...args] = command;
          await context.exec(file, args);
        }
      : run!,
  };
}

/** A config computed from where it lives: `export default (({ root }) => config)`. */
export type EngineConfigFactory = (context: { readonly root: string }) => EngineConfig | Promise<EngineConfig>;

/** A config of generic steps only. */
export function defineConfig<const N extends string>(config: StepsConfig<N>): EngineConfig {
  return {
    nodes: stepNodes(config.steps),
    ...(config.aliases ? { aliases: config.aliases } : {}),
    ...(config.pools ? { pools: config.pools } : {}),
    ...(config.defaultTarget ? { defaultTarget: config.defaultTarget } : {}),
  };
}

const nodeShape = z.object({
  id: z.string().min(1),
  kind: z.string().min(1),
  deps: z.array(z.string()),
  inputs: z.array(z.string()).optional(),
  files: z.array(z.string()).optional(),
  outputs: z.array(z.string()).optional(),
  env: z.array(z.string()).optional(),
  pool: z.string().optional(),
  run: z.function(),
});

const configShape = z.object({
  nodes: z.array(nodeShape.passthrough()),
  aliases: z.record(z.array(z.string())).optional(),
  pools: z.record(z.number().int().positive()).optional(),
  defaultTarget: z.string().optional(),
});

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

/** Imports a config file and checks its shape; every error names the file. */
export async function loadConfig(file: string): Promise<EngineConfig> {
  let loaded: unknown;
  try {
    const module = await importConfig(file);
    loaded = module.default;
    // A config compiled as CommonJS arrives wrapped once more.
    if (loaded !== null && typeof loaded === 'object' && 'default' in loaded && !('nodes' in loaded)) loaded = (loaded as { default: unknown }).default;
  } catch (error) {
    if (isFailure(error, 'config', 'usage')) throw new Failure('config', `${file}: ${error.message}`);
    throw new Failure('config', `${file}: cannot load: ${firstLine(error)}`);
  }
  if (loaded === undefined) throw new Failure('config', `${file}: no default export (export default defineConfig({...}))`);
  if (typeof loaded === 'function') {
    // A config that needs its root (absolute paths for commands) is a factory.
    try {
      loaded = await (loaded as EngineConfigFactory)({ root: dirname(file) });
    } catch (error) {
      throw new Failure('config', `${file}: ${firstLine(error)}`);
    }
  }
  const parsed = configShape.safeParse(loaded);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.map(String).join('.');
    throw new Failure('config', `${file}: ${where ? `${where}: ` : ''}${issue.message}`);
  }
  return loaded as EngineConfig;
}

/**
 * Imports through the loader the CLI registered, so the config shares the engine's module
 * instances. A `.ts` config outside an ES-module package compiles to CommonJS, which cannot
 * require the already-loaded engine; tsx's tsImport then loads it as an ES module (in a
 * separate module instance, which is why errors are told apart by name, not class).
 */
async function importConfig(file: string): Promise<{ default?: unknown }> {
  const url = pathToFileURL(file).href;
  try {
    return (await import(url)) as { default?: unknown };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ERR_REQUIRE_CYCLE_MODULE' && code !== 'ERR_REQUIRE_ESM' && code !== 'ERR_REQUIRE_ASYNC_MODULE') throw error;
    return (await tsImport(url, import.meta.url)) as { default?: unknown };
  }
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0] ?? '';
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
