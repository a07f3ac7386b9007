// The package's entry: what a pipeline.config.ts imports.
export { defineConfig, type PipelineConfig, type BaseDecl, type ImageDecl } from './tasks/config.ts';
export type { ReleaseDecl } from './tasks/store/backends.ts';
export type { StepDecl } from './src/config.ts';
export type { TaskContext } from './src/types.ts';
