// First-call latency with and without warmUp (#15): the random tiny OWL-ViT (TINY_OWLVIT, the demo
// model) detecting 2 queries, in headless Chromium (dist/browser.js in a page on 127.0.0.1, a fresh
// browser and profile per run, so no pipeline or shader cache survives) and in Node (dist/index.js,
// a fresh device per run). Per run: warmUp ms (0 without), the first detect, a second detect with
// new queries. Run `npm run build` first, then `node bench/first-call.mjs [runs]`; prints a
// Markdown table for bench/RESULTS.md.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import puppeteer from 'puppeteer-core';

const runs = Number(process.argv[2] ?? 2);
// As test/util/chromium.ts (TypeScript, which plain Node cannot import).
const chromium = process.env.CHROMIUM ?? '/usr/bin/chromium';
const args = ['--enable-unsafe-webgpu', ...(process.getuid?.() === 0 ? ['--no-sandbox'] : [])];

/** One run's timings; `m` is the ovgpu module (Node or browser build). */
const measure = `async (m, warm) => {
  const gpu = await m.openGpu();
  const det = await m.OwlVitDetector.load(gpu, m.randomModel('owlvit', m.TINY_OWLVIT));
  const image = { pixelValues: new Float32Array(3 * 256 * 256), originalSize: [256, 256] };
  const t0 = performance.now();
  if (warm) await det.warmUp({ queries: 2 });
  const t1 = performance.now();
  await det.detect([image], ['a cat', 'a dog']);
  const t2 = performance.now();
  await det.detect([image], ['a cow', 'a pig']);
  const t3 = performance.now();
  det.dispose();
  gpu.close();
  return { warmUp: t1 - t0, first: t2 - t1, second: t3 - t2 };
}`;

async function inChromium(warm) {
  const js = readFileSync('dist/browser.js');
  const server = createServer((req, res) => {
    const isJs = req.url === '/browser.js';
    res.writeHead(200, { 'content-type': isJs ? 'text/javascript' : 'text/html' });
    res.end(isJs ? js : '<!doctype html><link rel="icon" href="data:,"><body></body>');
  }).listen(0, '127.0.0.1');
  await new Promise((r) => server.on('listening', r));
  const browser = await puppeteer.launch({ executablePath: chromium, headless: true, args, protocolTimeout: 0 });
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    return { ...(await page.evaluate(`import('/browser.js').then((m) => (${measure})(m, ${warm}))`)), where: `${await browser.version()} (${(await page.evaluate('navigator.gpu.requestAdapter().then((a) => a.info.description || a.info.architecture)')) || 'WebGPU'})` };
  } finally {
    await browser.close();
    server.close();
  }
}

async function inNode(warm) {
  const m = await import('../dist/index.js');
  return { ...(await eval(measure)(m, warm)), where: 'Node (Dawn, lavapipe)' };
}

const rows = [];
for (const run of [inChromium, inNode]) for (let i = 0; i < runs; i++) for (const warm of [false, true]) rows.push({ warm, ...(await run(warm)) });
console.log('| where | warmUp({ queries: 2 }) ms | first detect ms | second detect ms |');
console.log('|---|--:|--:|--:|');
for (const r of rows) console.log(`| ${r.where} | ${r.warm ? r.warmUp.toFixed(0) : 'none'} | ${r.first.toFixed(0)} | ${r.second.toFixed(0)} |`);
