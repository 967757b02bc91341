// Exit 0 and print the adapter when Dawn finds a usable WebGPU adapter with a device; exit 1 otherwise.
// Runs without a build so that scripts/setup can call it before anything else exists.
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
const gpu = create([]);
try {
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error('no adapter');
  const device = await adapter.requestDevice();
  const i = adapter.info;
  console.log(`[setup] WebGPU adapter: ${i.vendor} ${i.architecture} ${i.device} (${i.description})${i.isFallbackAdapter ? ' [fallback]' : ''}`);
  device.destroy();
  process.exit(0);
} catch (err) {
  console.log(`[setup] no WebGPU adapter: ${err?.message ?? err}`);
  process.exit(1);
}
