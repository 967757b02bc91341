// Build: esbuild bundles src/ (WGSL inlined as text, so nothing is looked up at run time) into
// dist/index.js and dist/cli.js for Node and dist/browser.js for pages; tsc emits the declarations.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { rmSync, chmodSync } from 'node:fs';
import { browserBundle, nodeBundle } from './esbuild-options.mjs';

rmSync('dist', { recursive: true, force: true });
await build({ ...nodeBundle, sourcemap: true, entryPoints: { index: 'src/index.ts', cli: 'src/cli.ts' }, outdir: 'dist', splitting: true, chunkNames: 'chunks/[name]-[hash]' });
chmodSync('dist/cli.js', 0o755);
await build({ ...browserBundle, sourcemap: true, entryPoints: ['src/browser.ts'], outfile: 'dist/browser.js' });
execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '--emitDeclarationOnly', '--outDir', 'dist'], { stdio: 'inherit' });
console.log('built dist/index.js, dist/cli.js, dist/browser.js, dist/index.d.ts');
