// Runs in Chromium (bundled by test/browser/browser.test.ts with the library mapped to the built
// /ovgpu.js, so the page uses the public browser entry). Each check returns its max error against
// a CPU reference or a fixture, computed here; the Node side asserts the tolerances.
import { ClipModel, OwlVitDetector, Tensor, decodeSafetensors, kernels, openGpu, preprocessClip, preprocessOwlVit, type Gpu } from '../../../src/browser.js';

export interface Check {
  name: string;
  /** Max |got - ref| / max(1, max |ref|). */
  error: number;
  ms: number;
  note?: string;
}

// DOM globals, typed loosely: the project compiles without DOM typings.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const dom = globalThis as any;

function rand(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

function relError(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (got.length !== ref.length) return Infinity;
  let scale = 1;
  for (let i = 0; i < ref.length; i++) scale = Math.max(scale, Math.abs(ref[i]!));
  let err = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i]! - ref[i]!);
    err = Math.max(err, Number.isNaN(d) ? Infinity : d);
  }
  return err / scale;
}

async function timed(name: string, f: () => Promise<{ error: number; note?: string }>): Promise<Check> {
  const t0 = performance.now();
  try {
    const r = await f();
    return { name, ...r, ms: performance.now() - t0 };
  } catch (err) {
    return { name, error: Infinity, ms: performance.now() - t0, note: String((err as Error)?.stack ?? err) };
  }
}

export async function adapter(): Promise<{ description: string; profile: string; features: string[] }> {
  const gpu = await openGpu();
  const r = { description: `${gpu.info.vendor} ${gpu.info.architecture} ${gpu.info.device} ${gpu.info.description}`.trim(), profile: gpu.profile, features: [...gpu.features] };
  gpu.close();
  return r;
}

/** Every kernel family against its CPU reference, on small awkward shapes. */
export async function kernelChecks(): Promise<Check[]> {
  const gpu = await openGpu();
  const t = (data: Float32Array | Int32Array, shape: number[], dtype: 'f32' | 'i32' = 'f32') => Tensor.from(gpu, data, shape, dtype);
  const read = async (x: Tensor) => x.read();
  const checks: Check[] = [];
  const k = kernels;
  checks.push(await timed('matmul 37x29 · 29x23 + bias, gelu', async () => {
    const a = rand(37 * 29, 1), b = rand(29 * 23, 2), bias = rand(23, 3);
    const y = await k.matmul(gpu, t(a, [37, 29]), t(b, [29, 23]), { bias: t(bias, [23]), activation: 'gelu' });
    return { error: relError(await read(y), k.matmulReference(a, b, 37, 23, 29, { bias, activation: 'gelu' })) };
  }));
  checks.push(await timed('attention B2 L7 H2 D8, causal', async () => {
    const [B, L, H, D] = [2, 7, 2, 8];
    const [q, kk, v] = [4, 5, 6].map((s) => rand(B * L * H * D, s));
    const y = await k.attention(gpu, t(q!, [B, L, H * D]), t(kk!, [B, L, H * D]), t(v!, [B, L, H * D]), { heads: H, mask: 'causal' });
    return { error: relError(await read(y), k.attentionReference(q!, kk!, v!, { batch: B, length: L, heads: H, headDim: D, mask: 'causal' })) };
  }));
  checks.push(await timed('layerNorm 13x48', async () => {
    const x = rand(13 * 48, 7), w = rand(48, 8), b = rand(48, 9);
    const y = await k.layerNorm(gpu, t(x, [13, 48]), t(w, [48]), t(b, [48]));
    return { error: relError(await read(y), k.layerNormReference(x, 48, w, b)) };
  }));
  checks.push(await timed('softmax 9x50', async () => {
    const x = rand(9 * 50, 10, 8);
    const y = await k.softmax(gpu, t(x, [9, 50]));
    return { error: relError(await read(y), k.softmaxReference(x, 50)) };
  }));
  checks.push(await timed('elementwise quick_gelu, add (broadcast), l2norm', async () => {
    const x = rand(6 * 33, 11, 3), b = rand(33, 12);
    const g = await k.elementwise(gpu, [t(x, [6, 33])], { op: 'quick_gelu' });
    const s = await k.elementwise(gpu, [t(x, [6, 33]), t(b, [33])], { op: 'add' });
    const n = await k.elementwise(gpu, [t(x, [6, 33])], { op: 'l2norm' });
    return {
      error: Math.max(
        relError(await read(g), k.elementwiseReference(x, [6, 33], { op: 'quick_gelu' })),
        relError(await read(s), k.elementwiseReference(x, [6, 33], { op: 'add' }, b, [33])),
        relError(await read(n), k.elementwiseReference(x, [6, 33], { op: 'l2norm' })),
      ),
    };
  }));
  checks.push(await timed('sum over axis 1 of 5x17x3', async () => {
    const x = rand(5 * 17 * 3, 13);
    const y = await k.sum(gpu, t(x, [5, 17, 3]), [1]);
    return { error: relError(await read(y), k.reduceReference(x, [5, 17, 3], { op: 'sum', axes: [1] })) };
  }));
  checks.push(await timed('gather 11 rows of 40x24', async () => {
    const table = rand(40 * 24, 14);
    const idx = Int32Array.from([3, 0, 39, 7, 7, 12, 1, 25, 38, 2, 19]);
    const y = await k.gather(gpu, t(table, [40, 24]), t(idx, [11], 'i32'));
    return { error: relError(await read(y), k.gatherReference(table, 24, idx)) };
  }));
  checks.push(await timed('transpose [3,5,7] → [2,0,1]', async () => {
    const x = rand(105, 15);
    const y = await k.transpose(gpu, t(x, [3, 5, 7]), [2, 0, 1]);
    const ref = new Float32Array(105);
    for (let a = 0; a < 3; a++) for (let b = 0; b < 5; b++) for (let c = 0; c < 7; c++) ref[c * 15 + a * 5 + b] = x[a * 35 + b * 7 + c]!;
    return { error: relError(await read(y), ref) };
  }));
  checks.push(await timed('patchEmbed 2x3x32x32 p8 D16', async () => {
    const px = rand(2 * 3 * 32 * 32, 16), w = rand(16 * 3 * 64, 17), cls = rand(16, 18), pos = rand(17 * 16, 19);
    const y = await k.patchEmbed(gpu, t(px, [2, 3, 32, 32]), t(w, [16, 3, 8, 8]), t(cls, [16]), t(pos, [17, 16]), { patchSize: 8 });
    return { error: relError(await read(y), k.patchEmbedReference(px, [2, 3, 32, 32], w, cls, pos, 8)) };
  }));
  checks.push(await timed('roiAlign 7x7, 4 boxes on 1x6x13x17', async () => {
    const x = rand(6 * 13 * 17, 20);
    const boxes = Float32Array.from([0, 1, 1, 9, 7, 0, 0.5, 2.25, 16, 12.5, 0, -3, -2, 4, 5, 0, 3, 3, 3.5, 9]);
    const options = { outputSize: 7, spatialScale: 1, samplingRatio: 2, aligned: true };
    const y = await k.roiAlign(gpu, t(x, [1, 6, 13, 17]), t(boxes, [4, 5]), options);
    return { error: relError(await read(y), k.roiAlignReference(x, [1, 6, 13, 17], boxes, options)) };
  }));
  checks.push(await timed('nms 64 boxes IoU 0.5', async () => {
    const r = rand(64 * 4, 21, 1);
    const boxes = new Float32Array(64 * 4);
    for (let i = 0; i < 64; i++) {
      const x = 50 * (r[4 * i]! + 1), y = 50 * (r[4 * i + 1]! + 1);
      boxes.set([x, y, x + 10 + 20 * Math.abs(r[4 * i + 2]!), y + 10 + 20 * Math.abs(r[4 * i + 3]!)], 4 * i);
    }
    const scores = rand(64, 22);
    const kept = await k.nms(gpu, t(boxes, [64, 4]), t(scores, [64]), { iouThreshold: 0.5 });
    const ref = k.nmsReference(boxes, scores, { iouThreshold: 0.5 });
    return { error: kept.length === ref.length && ref.every((v, i) => kept[i] === v) ? 0 : Infinity, note: `kept ${kept.length}` };
  }));
  checks.push(await timed('regionWordSimilarity 2x16x24 · 3x24', async () => {
    const regions = rand(2 * 16 * 24, 23), words = rand(3 * 24, 24);
    const { logits } = await k.regionWordSimilarity(gpu, t(regions, [2, 16, 24]), t(words, [1, 3, 24]), { logitScale: 2 });
    return { error: relError(await read(logits), k.regionWordSimilarityReference(regions, words, [2, 16, 3, 24], { logitScale: 2 })) };
  }));
  gpu.close();
  return checks;
}

async function fetchTensors(url: string) {
  const r = await fetch(url);
  return decodeSafetensors(new Uint8Array(await r.arrayBuffer()), url);
}

/** The tiny CLIP and OWL-ViT fixtures end to end, models loaded from URLs. */
export async function modelChecks(base: string): Promise<Check[]> {
  const gpu = await openGpu();
  const checks: Check[] = [];
  checks.push(await timed('ClipModel clip_tiny image and text embeddings', async () => {
    const io = await fetchTensors(`${base}/fixtures/clip_tiny/io.safetensors`);
    const model = await ClipModel.load(gpu, `${base}/clip/`);
    const img = await model.encodeImage(io.get('pixel_values')!.data as Float32Array, [2, 3, 32, 32]);
    const txt = await model.encodeText(io.get('input_ids_i32')!.data as Int32Array, [3, 16]);
    const error = Math.max(relError(img, io.get('image_embeds_f64')!.data), relError(txt, io.get('text_embeds_f64')!.data), relError(model.similarity(img, txt), io.get('logits_per_image_f64')!.data));
    model.dispose();
    return { error };
  }));
  checks.push(await timed('OwlVitDetector owlvit_tiny predict and image-guided', async () => {
    const inputs = await fetchTensors(`${base}/fixtures/owlvit_tiny/inputs.safetensors`);
    const want = await fetchTensors(`${base}/fixtures/owlvit_tiny/expected.safetensors`);
    const det = await OwlVitDetector.load(gpu, `${base}/fixtures/owlvit_tiny/`);
    const pixelValues = inputs.get('pixel_values')!.data as Float32Array;
    const out = await det.predict({ pixelValues, pixelShape: [2, 3, 32, 32], inputIds: inputs.get('input_ids')!.data as Int32Array, idsShape: [6, 16] });
    const guided = await det.imageGuided({ pixelValues, pixelShape: [2, 3, 32, 32], queryPixelValues: inputs.get('query_pixel_values')!.data as Float32Array, queryShape: [1, 3, 32, 32] });
    const error = Math.max(
      relError(out.logits, want.get('logits')!.data),
      relError(out.predBoxes, want.get('pred_boxes')!.data),
      relError(guided.logits, want.get('ig_logits')!.data),
    );
    det.dispose();
    return { error };
  }));
  gpu.close();
  return checks;
}

/** Browser decoding then our preprocessing, against the same preprocessing of the page's own RGBA (what Node computes from those pixels). */
export async function imageChecks(pngUrl: string): Promise<{ name: string; error: number; width: number; height: number; rgba: number[] }[]> {
  const blob = await (await fetch(pngUrl)).blob();
  const bitmap = await dom.createImageBitmap(blob, { premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
  const canvas = new dom.OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
  ctx.drawImage(bitmap, 0, 0);
  const imageData = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
  const img = new dom.Image();
  img.src = pngUrl;
  await img.decode();
  const html = dom.document.createElement('canvas');
  html.width = bitmap.width;
  html.height = bitmap.height;
  html.getContext('2d')!.drawImage(bitmap, 0, 0);
  const ref = await preprocessClip(imageData, { size: 24 });
  const refOwl = await preprocessOwlVit(imageData, { size: 40 });
  const out: { name: string; error: number; width: number; height: number; rgba: number[] }[] = [];
  for (const [name, input] of [['Blob', blob], ['ImageBitmap', bitmap], ['HTMLImageElement', img], ['HTMLCanvasElement', html], ['URL string', pngUrl], ['bytes', new Uint8Array(await blob.arrayBuffer())]] as const) {
    const c = await preprocessClip(input, { size: 24 });
    const o = await preprocessOwlVit(input, { size: 40 });
    out.push({ name, error: Math.max(relError(c.data, ref.data), relError(o.data, refOwl.data)), width: o.originalSize[1], height: o.originalSize[0], rgba: [] as number[] });
  }
  // The decoded RGBA and the page's numbers travel back so that Node can preprocess the same pixels.
  out.push({ name: 'rgba', error: 0, width: imageData.width, height: imageData.height, rgba: Array.from(imageData.data as Uint8ClampedArray) });
  out.push({ name: 'clip24', error: 0, width: 0, height: 0, rgba: Array.from(ref.data) });
  out.push({ name: 'owl40', error: 0, width: 0, height: 0, rgba: Array.from(refOwl.data) });
  return out;
}

export async function noAdapterMessage(): Promise<string> {
  const nav = dom.navigator;
  Object.defineProperty(nav, 'gpu', { value: undefined, configurable: true });
  try {
    await openGpu();
    return 'opened';
  } catch (err) {
    return String((err as Error).message);
  }
}

export type { Gpu };
