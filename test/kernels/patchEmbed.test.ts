import { describe, expect, it } from 'vitest';
import { Tensor, kernels, type DType, type Gpu } from '../../src/index.js';
import { patchEmbedBackwardReference, patchEmbedKernel, patchEmbedReference } from '../../src/kernels/patchEmbed.js';
import { gradFixture } from '../util/grad.js';
import { forEachProfile, requireF16 } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { randomArray } from '../util/random.js';
import { fixtureTensor, loadFixture } from '../util/fixtures.js';

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

interface Case {
  pixels: [number, number, number, number];
  p: number;
  d: number;
}

async function runCase(gpu: Gpu, c: Case, seed: number, dtype: DType, scaleTol: number) {
  const [, channels, h, w] = c.pixels;
  const tokens = 1 + (h / c.p) * (w / c.p);
  const shapes = [c.pixels, [c.d, channels, c.p, c.p], [c.d], [tokens, c.d]];
  const ts = shapes.map((s, i) => Tensor.from(gpu, randomArray(size(s), seed + i, 1), s, dtype));
  const [px, wt, cls, pos] = ts as [Tensor, Tensor, Tensor, Tensor];
  const [pxs, wts, clss, poss] = await Promise.all(ts.map((t) => t.read()));
  const y = await kernels.patchEmbed(gpu, px, wt, cls, pos, { patchSize: c.p });
  expect(y.shape).toEqual([c.pixels[0], tokens, c.d]);
  expect(y.dtype).toBe(dtype);
  const report = expectClose(await y.read(), patchEmbedReference(pxs!, c.pixels, wts!, clss!, poss!, c.p), {
    scaleTol,
    label: `patchEmbed ${dtype} ${c.pixels} p=${c.p} D=${c.d}`,
  });
  for (const t of [...ts, y]) t.dispose();
  return report;
}

forEachProfile((_, getGpu) => {
  describe('patchEmbed', () => {
    it('matches the reference on awkward shapes (batch 3, non-square, D not a multiple of 4, rows not a multiple of 8)', async () => {
      const cases: Case[] = [
        { pixels: [3, 3, 6, 9], p: 3, d: 5 },
        { pixels: [1, 3, 8, 8], p: 4, d: 13 },
        { pixels: [2, 3, 32, 24], p: 8, d: 130 },
        { pixels: [1, 1, 5, 5], p: 5, d: 1 },
        { pixels: [2, 2, 7, 14], p: 7, d: 4 },
      ];
      for (const [i, c] of cases.entries()) await runCase(await getGpu(), c, 100 + 10 * i, 'f32', 1e-5);
    });

    it('matches the reference with p = 32 (K = 3072, ViT-B/32 patches)', async () => {
      await runCase(await getGpu(), { pixels: [2, 3, 64, 32], p: 32, d: 7 }, 200, 'f32', 1e-4);
    });

    it('f16 storage matches the reference within 1e-2', async (ctx) => {
      const gpu = await getGpu();
      requireF16(ctx, gpu);
      await runCase(gpu, { pixels: [2, 3, 16, 12], p: 4, d: 9 }, 300, 'f16', 1e-2);
    });

    it('composed with layerNorm (pre_layrnorm) reproduces clip_tiny vision_ln_pre_out', async () => {
      const gpu = await getGpu();
      const weights = loadFixture('clip_tiny', 'weights_hf.safetensors');
      const io = loadFixture('clip_tiny', 'io.safetensors');
      const upload = (file: typeof weights, name: string) => {
        const t = fixtureTensor(file, name);
        return Tensor.from(gpu, t.data, t.shape);
      };
      const pixels = upload(io, 'pixel_values');
      const weight = upload(weights, 'vision_model.embeddings.patch_embedding.weight');
      const cls = upload(weights, 'vision_model.embeddings.class_embedding');
      const pos = upload(weights, 'vision_model.embeddings.position_embedding.weight');
      const lnW = upload(weights, 'vision_model.pre_layrnorm.weight');
      const lnB = upload(weights, 'vision_model.pre_layrnorm.bias');
      const tokens = await kernels.patchEmbed(gpu, pixels, weight, cls, pos, { patchSize: weight.shape[2]! });
      const ln = await kernels.layerNorm(gpu, tokens, lnW, lnB);
      const expected = fixtureTensor(io, 'vision_ln_pre_out');
      expect(ln.shape).toEqual(expected.shape);
      expectClose(await ln.read(), expected.data, { scaleTol: 1e-4, label: 'vision_ln_pre_out' });
      for (const t of [pixels, weight, cls, pos, lnW, lnB, tokens, ln]) t.dispose();
    });

    it('rejects bad arguments before dispatching', async () => {
      const gpu = await getGpu();
      const make = (shape: number[], dtype: DType = 'f32') => Tensor.from(gpu, new Float32Array(size(shape)), shape, dtype);
      const px = make([2, 3, 8, 12]);
      const w = make([5, 3, 4, 4]);
      const cls = make([5]);
      const pos = make([7, 5]);
      const bad = {
        px225: make([2, 3, 9, 12]),
        px3d: make([3, 8, 12]),
        pxSmall: make([1, 3, 2, 4]),
        pxI32: make([2, 3, 8, 12], 'i32'),
        wChannels: make([5, 1, 4, 4]),
        wPatch: make([5, 3, 3, 3]),
        w2d: make([5, 48]),
        cls6: make([6]),
        pos8: make([8, 5]),
        pos1d: make([35]),
        w16: make([5, 3, 4, 4], 'f16'),
        cls16: make([5], 'f16'),
        pos16: make([7, 5], 'f16'),
      };
      const before = gpu.stats();
      const run = (pixels: Tensor, weight: Tensor, c: Tensor, p: Tensor, patchSize = 4) => kernels.patchEmbed(gpu, pixels, weight, c, p, { patchSize });
      await expect(run(bad.px225, w, cls, pos)).rejects.toThrow(/patchEmbed: pixels height 9 and width 12 must be positive multiples of patchSize 4/);
      await expect(run(bad.pxSmall, w, cls, pos)).rejects.toThrow(/pixels height 2 and width 4 must be positive multiples of patchSize 4/);
      await expect(run(bad.px3d, w, cls, pos)).rejects.toThrow(/patchEmbed: pixels must be \[B, C, H, W\], got \[3, 8, 12\]/);
      await expect(run(bad.pxI32, w, cls, pos)).rejects.toThrow(/patchEmbed: pixels must be f32 or f16, got i32/);
      await expect(run(px, bad.wChannels, cls, pos)).rejects.toThrow(/patchEmbed: weight must be \[D, 3, 4, 4\], got \[5, 1, 4, 4\]/);
      await expect(run(px, bad.wPatch, cls, pos)).rejects.toThrow(/weight must be \[D, 3, 4, 4\], got \[5, 3, 3, 3\]/);
      await expect(run(px, bad.w2d, cls, pos)).rejects.toThrow(/weight must be \[D, 3, 4, 4\], got \[5, 48\]/);
      await expect(run(px, w, bad.cls6, pos)).rejects.toThrow(/patchEmbed: classEmbedding must be \[5\], got \[6\]/);
      await expect(run(px, w, cls, bad.pos8)).rejects.toThrow(/patchEmbed: positionEmbedding must be \[7, 5\] \(1 \+ \(8\/4\)·\(12\/4\) tokens\), got \[8, 5\]/);
      await expect(run(px, w, cls, bad.pos1d)).rejects.toThrow(/positionEmbedding must be \[7, 5\] .*got \[35\]/);
      await expect(run(px, bad.w16, cls, pos)).rejects.toThrow(/patchEmbed: weight must be f32 like pixels, got f16/);
      await expect(run(px, w, bad.cls16, pos)).rejects.toThrow(/patchEmbed: classEmbedding must be f32 like pixels, got f16/);
      await expect(run(px, w, cls, bad.pos16)).rejects.toThrow(/patchEmbed: positionEmbedding must be f32 like pixels, got f16/);
      for (const patchSize of [0, 2.5, NaN]) {
        await expect(run(px, w, cls, pos, patchSize)).rejects.toThrow(/patchEmbed: patchSize must be a positive integer/);
      }
      const infos = [px, w, cls].map((t) => ({ shape: t.shape, dtype: t.dtype }));
      expect(() => patchEmbedKernel.outputs(infos, { patchSize: 4 })).toThrow(/patchEmbed: expected inputs \[pixels, weight, classEmbedding, positionEmbedding\], got 3 inputs/);
      expect(gpu.stats()).toEqual(before);
      for (const t of [px, w, cls, pos, ...Object.values(bad)]) t.dispose();
    });
  });
  describe('patchEmbedBackward', () => {
    it('matches the reference on awkward shapes, blocked (p % 4 == 0) or not (d pixels, weight, class and position embeddings)', async () => {
      const gpu = await getGpu();
      const cases: Case[] = [
        { pixels: [3, 3, 6, 9], p: 3, d: 5 },
        { pixels: [2, 3, 32, 24], p: 8, d: 13 },
        { pixels: [1, 3, 8, 12], p: 4, d: 6 },
        { pixels: [1, 1, 5, 5], p: 5, d: 1 },
      ];
      for (const [k, c] of cases.entries()) {
        const [, channels, h, w] = c.pixels;
        const tokens = 1 + (h / c.p) * (w / c.p);
        const data = [c.pixels, [c.d, channels, c.p, c.p], [c.pixels[0], tokens, c.d]].map((s, i) => randomArray(size(s), 400 + 10 * k + i, 1));
        const [px, wt, dy] = [Tensor.from(gpu, data[0]!, c.pixels), Tensor.from(gpu, data[1]!, [c.d, channels, c.p, c.p]), Tensor.from(gpu, data[2]!, [c.pixels[0], tokens, c.d])];
        const g = await kernels.patchEmbedBackward(gpu, px, wt, dy, { patchSize: c.p });
        const ref = patchEmbedBackwardReference(data[0]!, c.pixels, data[1]!, data[2]!, c.p);
        expect([g.pixels.shape, g.weight.shape, g.classEmbedding.shape, g.positionEmbedding.shape]).toEqual([c.pixels, wt.shape, [c.d], [tokens, c.d]]);
        for (const key of ['pixels', 'weight', 'classEmbedding', 'positionEmbedding'] as const) {
          expectClose(await g[key].read(), ref[key], { scaleTol: 1e-5, label: `${key} ${c.pixels} p=${c.p}` });
        }
        for (const t of [px, wt, dy, ...Object.values(g)]) t.dispose();
      }
    });

    it('matches PyTorch autograd: the patch_embed fixture (incl. 24x40)', async () => {
      const gpu = await getGpu();
      const fx = gradFixture('patch_embed');
      expect(fx.cases).toHaveLength(2);
      for (const c of fx.cases) {
        const up = (n: string) => Tensor.from(gpu, fx.tensor(`${c.name}.${n}`).data, fx.tensor(`${c.name}.${n}`).shape);
        const [px, wt, cls, pos, dy] = ['px', 'W', 'cls', 'pos', 'dY'].map(up) as [Tensor, Tensor, Tensor, Tensor, Tensor];
        const patchSize = c.params.patch as number;
        const y = await kernels.patchEmbed(gpu, px, wt, cls, pos, { patchSize });
        expectClose(await y.read(), fx.tensor(`${c.name}.Y_f64`).data, { scaleTol: 1e-5, label: `${c.name} Y` });
        const g = await kernels.patchEmbedBackward(gpu, px, wt, dy, { patchSize });
        for (const [key, name] of [['pixels', 'px'], ['weight', 'W'], ['classEmbedding', 'cls'], ['positionEmbedding', 'pos']] as const) {
          expectClose(await g[key].read(), fx.tensor(`${c.name}.grad_${name}_f64`).data, { scaleTol: 1e-4, label: `${c.name} grad_${name}` });
        }
        for (const t of [px, wt, cls, pos, dy, y, ...Object.values(g)]) t.dispose();
      }
    });

    it('rejects bad arguments before dispatching', async () => {
      const gpu = await getGpu();
      const make = (shape: number[], dtype: DType = 'f32') => Tensor.from(gpu, new Float32Array(size(shape)), shape, dtype);
      const [px, w, dy, dyBad, dy16] = [make([2, 3, 8, 12]), make([5, 3, 4, 4]), make([2, 7, 5]), make([2, 8, 5]), make([2, 7, 5], 'f16')];
      const before = gpu.stats();
      await expect(kernels.patchEmbedBackward(gpu, px, w, dyBad, { patchSize: 4 })).rejects.toThrow(/patchEmbedBackward: dy must be \[2, 7, 5\] \(the tokens' shape\), got \[2, 8, 5\]/);
      await expect(kernels.patchEmbedBackward(gpu, px, w, dy16, { patchSize: 4 })).rejects.toThrow(/patchEmbedBackward: dy must be f32 like pixels, got f16/);
      await expect(kernels.patchEmbedBackward(gpu, px, w, dy, { patchSize: 5 })).rejects.toThrow(/patchEmbed: pixels height 8 and width 12 must be positive multiples of patchSize 5/);
      expect(gpu.stats()).toEqual(before);
      for (const t of [px, w, dy, dyBad, dy16]) t.dispose();
    });
  });
});
