// The package's entry: what a pipeline.config.ts imports. `defineConfig` here is the image
// pipeline's (`defineImagePipeline`); the engine entry's is `defineStepsConfig`.
export { defineImagePipeline as defineConfig, defineImagePipeline, type PipelineConfig, type BaseDecl, type ImageDecl } from './tasks/config.ts';
export type { ReleaseDecl } from './tasks/store/backends.ts';
export type { StepDecl, TaskContext } from './src/index.ts';
