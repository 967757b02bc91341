export { openGpu, Gpu, detectProfile } from './gpu.js';
export type { OpenGpuOptions, GpuInfo, GpuStats, GpuProfile } from './gpu.js';
export { GpuError, check } from './errors.js';
