// The engine's public surface, for configs made of generic steps and for task kinds.
export { defineConfig, stepNode, stepNodes, type StepDecl, type StepsConfig, type EngineConfigFactory } from './config.ts';
export * from './types.ts';
