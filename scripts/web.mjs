// `npm run web`: builds the browser bundle into examples/web/ovgpu.js and serves examples/web on
// http://127.0.0.1:8000 with esbuild's server (rebuilding on change). Works offline.
import { context } from 'esbuild';
import { browserBundle } from './esbuild-options.mjs';

const port = Number(process.env.PORT ?? 8000);
const ctx = await context({ ...browserBundle, sourcemap: true, entryPoints: ['src/browser.ts'], outfile: 'examples/web/ovgpu.js' });
await ctx.watch();
const { hosts, port: bound } = await ctx.serve({ servedir: 'examples/web', host: '127.0.0.1', port });
console.log(`ovgpu demo: http://${hosts[0]}:${bound}/ (Ctrl-C to stop)`);
