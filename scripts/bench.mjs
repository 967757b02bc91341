// `npm run bench -- <suite...> [options]`: bundles bench/main.ts (WGSL inlined as text, as the
// build does) into a temporary directory under node_modules/.cache, where Node still finds the
// external packages, and runs it with the arguments passed through. Options: see bench/main.ts.
import { build } from 'esbuild';
import { nodeBundle } from './esbuild-options.mjs';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cache = join(root, 'node_modules', '.cache');
mkdirSync(cache, { recursive: true });
const dir = mkdtempSync(join(cache, 'ovgpu-bench-'));
let status = 1;
try {
  await build({
    entryPoints: [join(root, 'bench', 'main.ts')],
    outfile: join(dir, 'main.mjs'),
    ...nodeBundle,
    // esbuild and puppeteer-core: for --browser, which bundles the page and drives Chromium.
    external: [...nodeBundle.external, '@tensorflow/*', 'onnxruntime-node', 'onnxruntime-web', 'onnxruntime-web/*', 'esbuild', 'puppeteer-core'],
    sourcemap: 'inline',
  });
  const run = spawnSync(process.execPath, ['--enable-source-maps', join(dir, 'main.mjs'), ...process.argv.slice(2)], {
    cwd: root,
    stdio: 'inherit',
    env: { XDG_RUNTIME_DIR: '/tmp', ...process.env },
  });
  status = run.status ?? 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.exit(status);
