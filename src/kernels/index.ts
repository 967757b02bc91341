// The kernels namespace users import: eager functions, kernel descriptions and CPU references.
export * from './program.js';
export { runKernel, getPipeline, pipelineKey } from './runtime.js';
export * from './elementwise.js';
export * from './copy.js';
export * from './gather.js';
export * from './attention.js';
