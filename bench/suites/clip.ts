// `clip` suite: ViT-B/32-shaped CLIP with random weights written to a temporary folder as HF
// checkpoints (the image tower alone is a 351 MB f32 file): weight load time, image tower
// images/s at batch 1 and 8, gradCAM seconds per image for 5 texts, and text tower sentences/s at
// batch 8, f32 and f16 weights.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClipModel } from '../../src/models/clip/model.js';
import { TINY_OWLVIT, vitB32, writeRandomModel } from '../../src/models/random.js';
import type { ClipConfig } from '../../src/models/clip/config.js';
import { poolIndices } from '../../src/models/clip/towers.js';
import { GraphBuilder } from '../../src/graph/builder.js';
import { randomArray } from '../../test/util/random.js';
import { matches, timeAsync, type BenchRow } from '../harness.js';
import type { Suite } from '../main.js';
import { callRow, failedRow, flopsOf, modelPeers, onceRow, QUICK_VISION } from './common.js';

/** Random valid ids: SOT, words, EOT (the largest id, where the text tower pools), zero padding. */
export function randomIds(batch: number, length: number, vocab: number, seed: number): Int32Array {
  const r = randomArray(batch * length, seed);
  const ids = new Int32Array(batch * length);
  for (let b = 0; b < batch; b++) {
    const words = 3 + (b % (length - 4));
    ids[b * length] = vocab - 2;
    for (let t = 1; t <= words; t++) ids[b * length + t] = Math.floor(((r[b * length + t]! + 1) / 2) * (vocab - 2));
    ids[b * length + words + 1] = vocab - 1;
  }
  return ids;
}

export const clipSuite: Suite = async (ctx) => {
  const { gpu, log } = ctx;
  const full = vitB32('clip');
  const config: ClipConfig = ctx.quick ? { ...TINY_OWLVIT, vision: QUICK_VISION, text: { ...TINY_OWLVIT.text!, contextLength: 16 } } : full;
  const name = ctx.quick ? 'tiny CLIP (quick)' : 'ViT-B/32';
  const v = config.vision!;
  const t = config.text!;
  const dir = mkdtempSync(join(tmpdir(), 'ovgpu-bench-clip-'));
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  const want = (label: string) => matches(ctx.filter, 'clip', label);
  // Peers of whole towers take one trial (ORT's WebGPU EP needs seconds per ViT-B/32 forward here).
  const heavy = { ...ctx.settings, trials: 1 };
  try {
    // One checkpoint per tower: the image tower file is the "350 MB" one (87.8 M f32 parameters).
    const visionDir = join(dir, 'vision');
    const textDir = join(dir, 'text');
    writeRandomModel(visionDir, 'clip', { vision: v, embedDim: config.embedDim }, 1);
    writeRandomModel(textDir, 'clip', { text: t, embedDim: config.embedDim }, 2);
    const mb = (d: string) => (statSync(join(d, 'model.safetensors')).size / 1e6).toFixed(0);
    const dtypes = gpu.features.has('shader-f16') ? (['f32', 'f16'] as const) : (['f32'] as const);
    if (dtypes.length === 1) notes.push('no shader-f16 on this adapter: f32 rows only');
    for (const dtype of dtypes) {
      const loadLabel = `${name} image tower: load ${mb(visionDir)} MB safetensors, upload ${dtype}`;
      let clip: ClipModel | undefined;
      try {
        const t0 = performance.now();
        clip = await ClipModel.load(gpu, visionDir, { dtype });
        const ms = performance.now() - t0;
        if (want(loadLabel)) {
          rows.push(onceRow('clip', loadLabel, ms));
          log(`${loadLabel}: ${ms.toFixed(0)} ms`);
        }
        for (const b of [1, 8]) {
          const label = `${name} image tower ${v.imageSize} px ${dtype} b${b}`;
          if (!want(label)) continue;
          const pixels = randomArray(b * 3 * v.imageSize * v.imageSize, 3);
          try {
            const timing = await timeAsync(() => clip!.encodeImage(pixels, [b, 3, v.imageSize, v.imageSize]), ctx.settings);
            const shape = [b, 3, v.imageSize, v.imageSize];
            const build = (g: GraphBuilder) => g.output('embeds', clip!.buildVision(g, g.input('pixels', shape, dtype)).embeds);
            const row = callRow('clip', label, timing, { shape: `[${b}, ${config.embedDim}]`, ...flopsOf(gpu, ctx.peak, build, timing.wallMs) });
            // The peers run f32 (ORT's CPU EP has no f16 matmuls): the f16 rows compare precisions too.
            if (dtype === 'f32') row.peers = await modelPeers(ctx, build, { pixels: { data: pixels, shape, dtype: 'f32' } }, timing.wallMs, heavy);
            rows.push(row);
            notes.push(`${label}: ${((1000 * b) / timing.wallMs).toFixed(2)} images/s`);
            log(`${label}: ${timing.wallMs.toFixed(1)} ms, ${((1000 * b) / timing.wallMs).toFixed(2)} images/s`);
          } catch (err) {
            rows.push(failedRow('clip', label, err));
          }
        }
        // CaR's gradCAM: the tower up to its last block once, the last block per text with gradients.
        const camLabel = `${name} gradCAM ${v.imageSize} px ${dtype}, 5 texts (all targets, attention kept)`;
        if (want(camLabel)) {
          try {
            const pixels = { data: randomArray(3 * v.imageSize * v.imageSize, 5), shape: [1, 3, v.imageSize, v.imageSize] };
            const texts = randomArray(5 * config.embedDim, 6);
            const timing = await timeAsync(() => clip!.gradCam(pixels, texts), heavy);
            rows.push(callRow('clip', camLabel, timing, { shape: `5 maps [${v.imageSize / v.patchSize}, ${v.imageSize / v.patchSize}]` }));
            notes.push(`${camLabel}: ${(timing.wallMs / 1000).toFixed(2)} s per image`);
            log(`${camLabel}: ${(timing.wallMs / 1000).toFixed(2)} s per image`);
          } catch (err) {
            rows.push(failedRow('clip', camLabel, err));
          }
        }
      } catch (err) {
        rows.push(failedRow('clip', loadLabel, err));
      } finally {
        clip?.dispose();
      }
      const label = `${name} text tower ${dtype} b8 × ${t.contextLength} tokens`;
      if (!want(label)) continue;
      let text: ClipModel | undefined;
      try {
        text = await ClipModel.load(gpu, textDir, { dtype });
        const ids = randomIds(8, t.contextLength, t.vocabSize, 4);
        const timing = await timeAsync(() => text!.encodeText(ids, [8, t.contextLength]), ctx.settings);
        const pool = poolIndices(ids, 8, t.contextLength);
        const build = (g: GraphBuilder) => g.output('embeds', text!.buildText(g, g.input('ids', [8, t.contextLength], 'i32'), g.input('pool', [8], 'i32')).embeds);
        const row = callRow('clip', label, timing, { shape: `[8, ${config.embedDim}]`, ...flopsOf(gpu, ctx.peak, build, timing.wallMs) });
        if (dtype === 'f32') {
          row.peers = await modelPeers(ctx, build, { ids: { data: ids, shape: [8, t.contextLength], dtype: 'i32' }, pool: { data: pool, shape: [8], dtype: 'i32' } }, timing.wallMs, heavy);
        }
        rows.push(row);
        notes.push(`${label}: ${(8000 / timing.wallMs).toFixed(1)} sentences/s`);
        log(`${label}: ${timing.wallMs.toFixed(1)} ms, ${(8000 / timing.wallMs).toFixed(1)} sentences/s`);
      } catch (err) {
        rows.push(failedRow('clip', label, err));
      } finally {
        text?.dispose();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  notes.push('ms: wall time per call (host data in, embeddings read back), each call awaited');
  return { rows, notes };
};
