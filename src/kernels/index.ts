// The kernels namespace users import: eager functions, kernel descriptions and CPU references.
export * from './program.js';
export { runKernel, getPipeline, pipelineKey } from './runtime.js';
export * from './elementwise.js';
export * from './copy.js';
export * from './reduce.js';
export * from './losses.js';
export * from './gather.js';
export * from './layerNorm.js';
export * from './softmax.js';
export * from './softmaxBackward.js';
export * from './patchEmbed.js';
export * from './boxes.js';
export * from './roiAlign.js';
export * from './regionWordSimilarity.js';
export * from './nms.js';
export * from './matmul.js';
export * from './attention.js';
export * from './matmulBackward.js';
