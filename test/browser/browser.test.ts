// The library in real Chromium (headless, WebGPU on SwiftShader), driven by puppeteer-core over a
// static server on 127.0.0.1: the browser bundle is built as `npm run build` builds it, checked to
// import nothing (no Node built-ins, no bare specifiers), and a page imports it to run every
// kernel family against its CPU reference, the tiny CLIP and OWL-ViT fixtures end to end (models
// loaded from URLs), and the image paths (Blob, ImageBitmap, <img>, <canvas>, URL, bytes).
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { build, type Plugin } from 'esbuild';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { browserBundle } from '../../scripts/esbuild-options.mjs';
import { preprocessClip, preprocessOwlVit } from '../../src/index.js';
import { fixturePath, FIXTURES } from '../util/fixtures.js';
import { serveStatic, type StaticServer } from '../util/static-server.js';
import { chromiumArgs, findChromium, NO_CHROMIUM } from '../util/chromium.js';
import type * as Suite from './page/suite.js';

const chromium = findChromium();
const skipWithout = (ctx: TestContext) => ctx.skip(!chromium, NO_CHROMIUM);
const dir = mkdtempSync(join(tmpdir(), 'ovgpu-browser-'));
let server: StaticServer;
let browser: Browser | undefined;
let page: Page;
let bundleText = '';
let bundleImports: string[] = [];

// The page suite imports ../../../src/browser.js for its types; at run time that is the built bundle.
const libraryAsBundle: Plugin = {
  name: 'library-as-bundle',
  setup(b) {
    b.onResolve({ filter: /src\/browser\.js$/ }, () => ({ path: '/ovgpu.js', external: true }));
  },
};

beforeAll(async () => {
  const lib = await build({ ...browserBundle, entryPoints: ['src/browser.ts'], outfile: join(dir, 'ovgpu.js'), metafile: true });
  bundleText = readFileSync(join(dir, 'ovgpu.js'), 'utf8');
  bundleImports = Object.values(lib.metafile!.outputs).flatMap((o) => o.imports.map((i) => i.path));
  await build({ ...browserBundle, entryPoints: ['test/browser/page/suite.ts'], outfile: join(dir, 'suite.js'), plugins: [libraryAsBundle] });
  writeFileSync(join(dir, 'index.html'), '<!doctype html><meta charset="utf-8"><title>ovgpu tests</title><body></body>');
  server = await serveStatic({
    '/': dir,
    '/fixtures/': FIXTURES,
    '/clip/config.json': fixturePath('clip_tiny', 'config.json'),
    '/clip/model.safetensors': fixturePath('clip_tiny', 'weights_hf.safetensors'),
    '/image.png': resolve('test/fixtures/preprocess/rgb_61x97.png'),
    '/demo/ovgpu.js': join(dir, 'ovgpu.js'),
    '/demo/': resolve('examples/web'),
  });
  if (!chromium) return;
  browser = await puppeteer.launch({ executablePath: chromium, headless: true, args: chromiumArgs() });
  page = await browser.newPage();
  page.on('pageerror', (err) => console.error('page error:', err));
  await page.goto(`${server.url}/index.html`);
}, 300_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Calls an export of the page suite inside the page. */
function inPage<K extends keyof typeof Suite>(name: K, ...args: unknown[]): Promise<Awaited<ReturnType<(typeof Suite)[K]>>> {
  // A string, so that vitest does not rewrite the page's import().
  return page.evaluate(`import('/suite.js').then((m) => m[${JSON.stringify(name)}](...${JSON.stringify(args)}))`) as never;
}

function expectChecks(checks: Suite.Check[], tol: number): void {
  for (const c of checks) {
    c.error ??= Infinity; // JSON carries Infinity (a thrown check) as null
    console.log(`chromium: ${c.name}: error ${c.error.toExponential(2)} in ${c.ms.toFixed(0)} ms${c.note ? ` (${c.note.split('\n')[0]})` : ''}`);
    expect(c.error, `${c.name}${c.note ? `: ${c.note}` : ''}`).toBeLessThanOrEqual(tol);
  }
}

describe('browser bundle', () => {
  it('imports nothing: no Node built-ins, no bare specifiers, no sharp or Dawn', () => {
    expect(bundleImports).toEqual([]);
    // No import or export statement is left, nor a require() or import() of a module name.
    expect(bundleText).not.toMatch(/^\s*(import|export)\b[^;]*\bfrom\s*["']/m);
    expect(bundleText).not.toMatch(/\b(require|import)\(\s*["'](node:|sharp|webgpu|[a-z@])/);
    // The shaders are inlined.
    expect(bundleText).toContain('@compute');
    // What `npm run build` wrote, when it has run, is the same bundle.
    if (existsSync('dist/browser.js')) expect(readFileSync('dist/browser.js', 'utf8').replace(/\/\/# sourceMappingURL=.*\n?$/, '')).toBe(bundleText.replace(/\/\/# sourceMappingURL=.*\n?$/, ''));
  });
});

describe('in Chromium', () => {
  it('opens a WebGPU adapter through navigator.gpu', async (ctx) => {
    skipWithout(ctx);
    const a = await inPage('adapter');
    console.log(`chromium adapter: ${a.description} (profile ${a.profile}; ${a.features.join(', ')})`);
    expect(a.description.length).toBeGreaterThan(0);
  });

  it('every kernel family matches its CPU reference', async (ctx) => {
    skipWithout(ctx);
    expectChecks(await inPage('kernelChecks'), 1e-4);
  });

  it('the tiny CLIP and OWL-ViT fixtures, loaded from URLs, match the reference outputs', async (ctx) => {
    skipWithout(ctx);
    expectChecks(await inPage('modelChecks', server.url), 1e-4);
  });

  it('images from Blob, ImageBitmap, <img>, <canvas>, URL and bytes preprocess as the same RGBA does in Node', async (ctx) => {
    skipWithout(ctx);
    const results = await inPage('imageChecks', `${server.url}/image.png`);
    const by = new Map(results.map((r) => [r.name, r]));
    for (const r of results.filter((x) => !['rgba', 'clip24', 'owl40'].includes(x.name))) {
      expect(r.error, r.name).toBeLessThanOrEqual(1e-6);
      expect([r.width, r.height], r.name).toEqual([61, 97]);
    }
    // Node, on the RGBA pixels the page decoded: the same numbers within 1e-6.
    const rgba = by.get('rgba')!;
    const pixels = { data: Uint8Array.from(rgba.rgba), width: rgba.width, height: rgba.height };
    const clip = await preprocessClip(pixels, { size: 24 });
    const owl = await preprocessOwlVit(pixels, { size: 40 });
    const diff = (a: ArrayLike<number>, b: number[]) => Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i]!)));
    expect(diff(clip.data, by.get('clip24')!.rgba)).toBeLessThanOrEqual(1e-6);
    expect(diff(owl.data, by.get('owl40')!.rgba)).toBeLessThanOrEqual(1e-6);
    // And the PNG decoded by sharp in Node gives the pixels the browser decoded.
    const fromFile = await preprocessClip(resolve('test/fixtures/preprocess/rgb_61x97.png'), { size: 24 });
    expect(diff(fromFile.data, by.get('clip24')!.rgba)).toBeLessThanOrEqual(1e-6);
  });

  it('without WebGPU, openGpu says so and how to enable it (not the Node setup advice)', async (ctx) => {
    skipWithout(ctx);
    const message = await inPage('noAdapterMessage');
    expect(message).toMatch(/navigator\.gpu is undefined.*--enable-unsafe-webgpu/);
    expect(message).not.toMatch(/scripts\/setup|Vulkan driver/);
    await page.reload();
  });
});

describe('the demo page (examples/web)', () => {
  it('shows the adapter, loads the random demo model with progress, and draws detections for a picked image', async (ctx) => {
    skipWithout(ctx);
    const demo = await browser!.newPage();
    try {
      await demo.goto(`${server.url}/demo/index.html`);
      await demo.waitForFunction("document.getElementById('adapter').textContent !== '…'");
      expect(await demo.$eval('#adapter', (e) => e.textContent)).toMatch(/swiftshader|profile/i);
      await demo.click('#load');
      await demo.waitForFunction("/loaded|failed/.test(document.getElementById('status').textContent)", { timeout: 120_000 });
      expect(await demo.$eval('#status', (e) => e.textContent)).toMatch(/^loaded owlvit/);
      expect(await demo.$eval('#progress', (e) => (e as unknown as { value: number }).value)).toBe(1);
      const input = await demo.$('#image');
      await (input as unknown as { uploadFile(p: string): Promise<void> }).uploadFile(resolve('test/fixtures/preprocess/rgb_61x97.png'));
      await demo.waitForFunction("!document.getElementById('detect').disabled");
      await demo.$eval('#threshold', (e) => ((e as unknown as { value: string }).value = '0'));
      await demo.click('#detect');
      await demo.waitForFunction("/detect/.test(document.getElementById('status').textContent)", { timeout: 120_000 });
      const text = await demo.$eval('#status', (e) => e.textContent);
      console.log(`chromium demo: ${text}`);
      expect(text).toMatch(/^detect: \d+ ms .*, [1-9]\d* detections/);
      expect(await demo.$$eval('#results tr', (rows) => rows.length)).toBeGreaterThan(1);
    } finally {
      await demo.close();
    }
  });
});
