import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GpuError, OwlVitDetector, selectImageQuery, type Gpu } from '../../src/index.js';
import { readSafetensors } from '../../src/io/safetensors.js';
import { useGpu } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { fixturePath, fixtureTensor, loadFixture } from '../util/fixtures.js';
import { writeSafetensors } from '../util/write-safetensors.js';

const getGpu = useGpu();
const DIR = fixturePath('owlvit_tiny');
const input = (name: string) => fixtureTensor(loadFixture('owlvit_tiny', 'inputs.safetensors'), name).data;
const want = (name: string) => fixtureTensor(loadFixture('owlvit_tiny', 'expected.safetensors'), name).data;
const f32 = (name: string) => want(name) as Float32Array;

const B = 2;
const N = 16;
const Q = 3;
const PADDED = { image: 1, query: 2 }; // input_ids row 5 starts with 0
const pixelValues = () => input('pixel_values') as Float32Array;
const inputIds = () => input('input_ids') as Int32Array;
const targetSizes = () => {
  const s = input('target_sizes') as Int32Array;
  return [[s[0]!, s[1]!], [s[2]!, s[3]!]] as [number, number][];
};
const predictInputs = () => ({ pixelValues: pixelValues(), pixelShape: [B, 3, 32, 32], inputIds: inputIds(), idsShape: [B * Q, 16], attentionMask: input('attention_mask') });
const guidedInputs = () => ({ pixelValues: pixelValues(), pixelShape: [B, 3, 32, 32], queryPixelValues: input('query_pixel_values') as Float32Array, queryShape: [1, 3, 32, 32] });

/** Logits with the padded query's column checked apart: it is exactly -1e6, and would set the scale of the rest. */
function checkLogits(got: Float32Array, tol: number): string {
  const ref = f32('logits');
  const isPadded = (i: number) => Math.floor(i / (N * Q)) === PADDED.image && i % Q === PADDED.query;
  const idx = [...ref.keys()];
  expect(idx.filter(isPadded).map((i) => got[i])).toEqual(new Array(N).fill(-1e6));
  expect(idx.filter(isPadded).map((i) => ref[i])).toEqual(new Array(N).fill(-1e6));
  const live = idx.filter((i) => !isPadded(i));
  return expectClose(live.map((i) => got[i]!), live.map((i) => ref[i]!), { scaleTol: tol, label: 'logits' }).message;
}

describe('OwlVitDetector on owlvit_tiny', () => {
  let gpu: Gpu;
  let det: OwlVitDetector;
  let baseline: ReturnType<Gpu['stats']>;
  beforeAll(async () => {
    gpu = await getGpu();
    baseline = gpu.stats();
    det = await OwlVitDetector.load(gpu, DIR);
  });

  it('predict matches OwlViTForObjectDetection.forward (f32, 1e-4 of scale)', async () => {
    expect(det.config).toMatchObject({ gridSize: 4, embedDim: 48, vision: { width: 64, imageSize: 32, patchSize: 8 }, text: { width: 48, contextLength: 16 } });
    expect(det.unusedWeights).toEqual([]);
    const out = await det.predict(predictInputs());
    const r = (label: string, got: Float32Array, ref: string) => expectClose(got, f32(ref), { scaleTol: 1e-4, label }).message;
    for (const m of [
      checkLogits(out.logits, 1e-4),
      r('pred_boxes', out.predBoxes, 'pred_boxes'),
      r('class_embeds', out.classEmbeds, 'class_embeds'),
      r('image_embeds', out.imageEmbeds, 'image_embeds'),
      r('text_embeds', out.textEmbeds, 'text_embeds'),
    ]) console.log(m);
  });
});
