// `npm run bench -- kernels --browser`: the kernels suite in headless Chromium (WebGPU on
// SwiftShader where there is no GPU). bench/page.ts is bundled for the browser with esbuild, served
// on 127.0.0.1 and run in a page driven by puppeteer-core; its rows come back to Node, which
// writes them as the Node run's are written. Peers (TF.js, ONNX Runtime) run in Node only.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';
import puppeteer from 'puppeteer-core';
import { browserBundle } from '../scripts/esbuild-options.mjs';
import { chromiumArgs, findChromium, NO_CHROMIUM } from '../test/util/chromium.js';
import { serveStatic } from '../test/util/static-server.js';
import type { PageSuiteResult } from './page.js';

export interface ChromiumSuiteResult extends PageSuiteResult {
  /** e.g. 'HeadlessChrome/141.0.7390.54'. */
  browser: string;
}

/** Runs the kernels suite in a fresh headless Chromium; `log` gets the page's progress lines. */
export async function kernelsInChromium(options: Parameters<typeof import('./page.js').kernelsSuite>[0], log: (line: string) => void): Promise<ChromiumSuiteResult> {
  const chromium = findChromium();
  if (!chromium) throw new Error(NO_CHROMIUM);
  const dir = mkdtempSync(join(tmpdir(), 'ovgpu-bench-page-'));
  try {
    // The peers' Node-only modules are imported lazily by the harness and never called in the page.
    await build({ ...browserBundle, entryPoints: [resolve('bench/page.ts')], outfile: join(dir, 'bench.js'), external: ['webgpu', 'onnxruntime-node', 'onnxruntime-web', 'onnxruntime-web/*', '@tensorflow/*'] });
    writeFileSync(join(dir, 'index.html'), '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>ovgpu bench</title><body></body>');
    const server = await serveStatic({ '/': dir });
    // Developer features: timestamp queries unquantized (Chromium rounds them to 100 µs otherwise).
    const args = [...chromiumArgs(), '--enable-webgpu-developer-features'];
    const browser = await puppeteer.launch({ executablePath: chromium, headless: true, args, protocolTimeout: 0 });
    try {
      const page = await browser.newPage();
      page.on('console', (m) => log(m.text()));
      page.on('pageerror', (err) => log(`page error: ${err}`));
      await page.goto(`${server.url}/index.html`);
      // A string, so that no bundler or test runner rewrites the page's import().
      const result = (await page.evaluate(`import('/bench.js').then((m) => m.kernelsSuite(${JSON.stringify(options)}))`)) as PageSuiteResult;
      return { ...result, browser: await browser.version() };
    } finally {
      await browser.close();
      await server.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
