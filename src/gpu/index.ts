export { openGpu, Gpu } from './gpu.js';
export type { OpenGpuOptions, GpuInfo, GpuStats } from './gpu.js';
export { GpuError, check } from './errors.js';
