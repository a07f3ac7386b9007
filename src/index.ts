// The engine's public surface, for configs made of generic steps and for task kinds. Its
// config function is `defineStepsConfig`: `defineConfig` is the package entry's, for images.
export {
  defineStepsConfig,
  stepNode,
  stepNodes,
  DEFAULT_CONFIG_FILES,
  type StepDecl,
  type StepsConfig,
  type EngineConfigFactory,
} from './config.ts';
export * from './types.ts';
// Debris a killed run leaves: scratch dirs and temp files recognised by their writer's pid.
export { makeScratchDir, removeAbandonedTemps, toolTempDir } from './debris.ts';
export { fsyncPath, siblingTempPath, writeFileAtomic } from './atomic.ts';
// Strict config checks with zod for task kinds' own config shapes: schemas are made from
// the caller's `z`, so this index never loads zod.
export { checkConfigShape, configSchemas, type Holds, type SameShape } from './config-validate.ts';
// The JSON contract's envelope, for a config's commands that print their own result under --json.
export { commandOutput, errorOutput, formatOutput, FORMAT_VERSION, type CommandOutput, type Envelope } from './report/contract.ts';
// What the image task kinds (tasks/) use of the engine beyond a config's needs: running
// programs, the stat cache, a task context for work done outside a run, and the report's
// wording.
export { boundExec, execFile, processAlive } from './exec.ts';
// A lock file naming its holder, taken over when the holder is gone (the tree's lock; a download's partial file).
export { acquireLock, type Lock } from './lock.ts';
export { StatCache } from './hasher.ts';
// The SHA-256 worker thread, for a download that hashes what it wrote off the main thread.
export { type FileSha256Job, Sha256Thread } from './sha256-thread.ts';
export { createTaskContext } from './task-context.ts';
export { formatBytes } from './report/format.ts';
export { nearest } from './suggest.ts';
// Commands that run before there is a config (`pipeline init`).
export type { StarterCommand, StarterIO } from './starter-command.ts';
