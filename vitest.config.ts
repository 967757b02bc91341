import { readFileSync } from 'node:fs';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  plugins: [
    {
      // WGSL sources are imported as strings, as esbuild's text loader does in the build.
      name: 'wgsl-text',
      load(id) {
        if (id.endsWith('.wgsl')) return `export default ${JSON.stringify(readFileSync(id, 'utf8'))};`;
        return null;
      },
    },
  ],
  test: {
    include: ['test/**/*.test.ts'],
    // Tests import modules directly, not through src/index.ts: install the Node platform for them.
    setupFiles: ['test/util/platform.ts'],
    // Dawn in forked processes; two at a time matches the 2-core CI machine and lavapipe's threads.
    pool: 'forks',
    maxWorkers: 2,
    // Mesa warns on every process start without it.
    env: { XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' },
    // The JSON report lets .ci/run print a plain "N passed, N failed" line.
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results.json' },
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
