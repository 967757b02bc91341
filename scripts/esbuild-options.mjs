// esbuild options shared by the build, the benchmarks and the browser tests. The Node ESM bundle
// has WGSL sources inlined as text and the runtime dependencies left external.
export const nodeBundle = {
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  loader: { '.wgsl': 'text' },
  external: ['webgpu', 'sharp', '@petamoriken/float16', 'entities', 'protobufjs'],
  logLevel: 'warning',
};

// The browser bundle: one self-contained ES module (every dependency bundled, WGSL inlined), so a
// page can import it straight from a static server.
export const browserBundle = {
  bundle: true,
  platform: 'browser',
  format: 'esm',
  target: 'es2022',
  loader: { '.wgsl': 'text' },
  logLevel: 'warning',
};
