// The package's entry: what a pipeline.config.ts imports. `defineConfig` here is the image
// pipeline's (`defineImagePipeline`); the engine entry's is `defineStepsConfig`.
export { defineImagePipeline as defineConfig, defineImagePipeline, type PipelineConfig, type BaseDecl, type ImageDecl } from './tasks/config.ts';
// Types from the files that declare them, away from any backend's or the engine's code: a
// config's tsc may run without @types/node.
export type { ReleaseDecl } from './tasks/store/release-decl.ts';
export type { StepDecl } from './src/config.ts';
export type { TaskContext } from './src/types.ts';
