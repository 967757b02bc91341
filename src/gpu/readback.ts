import type { Gpu } from './gpu.js';

const MAP_READ = 0x01;
const COPY_DST = 0x08;

/**
 * The first `bytes` bytes of `source` (a COPY_SRC buffer) copied to the host: one submit through a
 * staging buffer that is destroyed afterwards. Errors name `op`.
 */
export async function readBuffer(gpu: Gpu, source: GPUBuffer, bytes: number, op: string): Promise<ArrayBuffer> {
  const staging = gpu.createBuffer({ size: bytes, usage: MAP_READ | COPY_DST }, op);
  try {
    await gpu.scoped(op, () => {
      const encoder = gpu.device.createCommandEncoder({ label: op });
      encoder.copyBufferToBuffer(source, 0, staging, 0, bytes);
      gpu.submit([encoder.finish()]);
    });
    return await gpu.mapRead(op, staging, bytes);
  } finally {
    gpu.destroyBuffer(staging);
  }
}
