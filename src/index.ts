// The engine's public surface, for configs made of generic steps and for task kinds.
export { defineConfig, stepNode, stepNodes, type StepDecl, type StepsConfig, type EngineConfigFactory } from './config.ts';
export * from './types.ts';
// Debris a killed run leaves: scratch dirs and temp files recognised by their writer's pid.
export { makeScratchDir, removeAbandonedTemps, toolTempDir } from './debris.ts';
export { fsyncPath, siblingTempPath, writeFileAtomic } from './atomic.ts';
// The JSON contract, for commands that print their own result under --json.
export {
  errorOutput,
  formatOutput,
  releaseCheckOutput,
  FORMAT_VERSION,
  type ReleaseCheckOutput,
  type ReleaseImageSigner,
  type ReleaseImageVerdict,
} from './report/contract.ts';
// What the image task kinds (tasks/) use of the engine beyond a config's needs: running
// programs, the stat cache and stamps, a task context for work done outside a run, and
// the report's wording.
export { execFile, processAlive } from './exec.ts';
export { StatCache } from './hasher.ts';
export { readStamp } from './fingerprint.ts';
export { createTaskContext } from './task-context.ts';
export { formatBytes } from './report/format.ts';
export { nearest } from './suggest.ts';
