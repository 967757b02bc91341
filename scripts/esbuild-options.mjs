// esbuild options shared by the build and the benchmarks: one Node ESM bundle with WGSL sources
// inlined as text, the runtime dependencies left external.
export const nodeBundle = {
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  loader: { '.wgsl': 'text' },
  external: ['webgpu', 'sharp', '@petamoriken/float16', 'entities', 'protobufjs'],
  logLevel: 'warning',
};
