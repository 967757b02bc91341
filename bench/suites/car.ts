// `car` suite: CaR segmentation of one 448×448 image with 5 queries (issue 13's shapes) on a
// ViT-B/16-shaped CLIP with random weights (--quick: the tiny CLIP), threshold 0 so every stage runs
// all 5 queries; seconds per image for each step (proposals, visual prompts, classification, dense
// CRF) summed over the stages and per stage, the CRF's pixels per second, and the once-per-image blur.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CarSegmenter } from '../../src/models/car/segmenter.js';
import { gaussianBlurU8 } from '../../src/models/car/draw.js';
import { TINY_CLIP, vitB32, writeRandomModel } from '../../src/models/random.js';
import type { ClipConfig } from '../../src/models/clip/config.js';
import { matches, type BenchRow } from '../harness.js';
import type { Suite } from '../main.js';
import { failedRow, onceRow } from './common.js';

export const carSuite: Suite = async (ctx) => {
  const { gpu, log } = ctx;
  const b32 = vitB32('clip');
  // The random checkpoints carry a tokenizer only with the byte vocabulary, so the text tower keeps
  // B/32's shape with that vocabulary (the embedding table's size does not change the timings).
  const bytes = { vocabSize: TINY_CLIP.text!.vocabSize, eosTokenId: TINY_CLIP.text!.eosTokenId };
  const config: ClipConfig = ctx.quick ? { ...TINY_CLIP, text: { ...TINY_CLIP.text!, contextLength: 77 } } : { ...b32, vision: { ...b32.vision!, patchSize: 16 }, text: { ...b32.text!, ...bytes } };
  const name = ctx.quick ? 'tiny CLIP (quick)' : 'ViT-B/16';
  const [size, nq] = [448, 5];
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  const label = (step: string) => `${name} ${size}×${size}, ${nq} queries per stage: ${step}`;
  const rgb = Uint8Array.from({ length: size * size * 3 }, (_, i) => {
    const p = Math.floor(i / 3);
    const [x, y] = [p % size, Math.floor(p / size)];
    return (x - 200) ** 2 + (y - 240) ** 2 < 90 ** 2 ? 200 - (i % 3) * 50 : (x * 7 + y * 3 + (i % 3) * 40) % 256;
  });
  const image = { data: rgb, width: size, height: size, channels: 3 as const };
  if (matches(ctx.filter, 'car', label('visual-prompt blur'))) {
    const rgba = new Uint8Array(size * size * 4);
    for (let i = 0; i < size * size; i++) rgba.set(rgb.subarray(i * 3, i * 3 + 3), i * 4);
    const t0 = performance.now();
    gaussianBlurU8(rgba, size, size, 4);
    rows.push(onceRow('car', label('visual-prompt blur (15×15 Gaussian, CPU, once per image)'), performance.now() - t0, { shape: `[${size}, ${size}, 3]` }));
  }
  const dir = mkdtempSync(join(tmpdir(), 'ovgpu-bench-car-'));
  let car: CarSegmenter | undefined;
  try {
    writeRandomModel(dir, 'clip', config, 1);
    car = await CarSegmenter.load(gpu, dir);
    const queries = ['a red car', 'a dog', 'the sky', 'a person', 'a tree'];
    const options = { threshold: 0, background: ['ground', 'sky'], prompts: 'circle,blur' };
    // Warm-up: compiles every plan of both stages and of the CRF.
    await car.segment(image, queries, options);
    const t0 = performance.now();
    const r = await car.segment(image, queries, options);
    const total = performance.now() - t0;
    const stages = r.iterations;
    for (const step of ['proposals', 'prompts', 'classification', 'crf'] as const) {
      const ms = r.timings[step];
      const per = step === 'crf' ? `${nq} masks, once` : `${(ms / stages / 1000).toFixed(2)} s per stage, ${stages} stages`;
      rows.push(onceRow('car', label(`${step} (${per})`), ms, { shape: step === 'crf' ? `${nq} × [${size}, ${size}]` : `${nq} queries` }));
    }
    rows.push(onceRow('car', label(`whole segment() call, ${stages} stages + CRF`), total));
    const pixelsPerSecond = (nq * size * size) / (r.timings.crf / 1000);
    notes.push(`${label('dense CRF')}: ${(pixelsPerSecond / 1e6).toFixed(3)} Mpixel/s (${nq} masks × ${size}² px, 2 labels, 10 mean-field iterations)`);
    notes.push(`${label('seconds per image')}: ${(total / 1000).toFixed(1)} s (${stages} stages)`);
    log(`${label('whole')}: ${(total / 1000).toFixed(1)} s; CRF ${(pixelsPerSecond / 1e6).toFixed(3)} Mpixel/s`);
  } catch (err) {
    rows.push(failedRow('car', label('segment'), err));
  } finally {
    car?.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
  notes.push('car rows: wall ms, one timed call after a warm-up call (plans compiled); step times summed over the stages');
  return { rows, notes };
};
