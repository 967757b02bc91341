import { describe, expect, it } from 'vitest';
import { Tensor, kernels } from '../../src/index.js';
import { layerNormKernel, layerNormReference } from '../../src/kernels/layerNorm.js';
import { forEachProfile, requireF16 } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { randomArray } from '../util/random.js';

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
// f32 tolerance relative to the output scale; reductions over more than 1024 elements get 1e-4.
const tol = (d: number) => (d > 1024 ? 1e-4 : 1e-5);

forEachProfile((_, getGpu) => {
  describe('layerNorm', () => {
    it('matches the reference on awkward shapes (rows of 1, 7, 130, 1025; batch 3), default eps', async () => {
      const gpu = await getGpu();
      // Few rows (a workgroup per row on CPU adapters) and many (an invocation per row; 51 and 300 rows
      // leave the last workgroup partly empty).
      for (const [s, shape] of [[3, 1], [7], [2, 3, 7], [3, 17, 130], [5, 1025], [4, 768], [300, 20]].entries()) {
        const d = shape[shape.length - 1]!;
        const x = randomArray(size(shape), 10 + s, 3);
        const w = randomArray(d, 20 + s, 2);
        const b = randomArray(d, 30 + s, 1);
        const [tx, tw, tb] = [Tensor.from(gpu, x, shape), Tensor.from(gpu, w, [d]), Tensor.from(gpu, b, [d])];
        const y = await kernels.layerNorm(gpu, tx, tw, tb);
        expect(y.shape).toEqual(shape);
        expectClose(await y.read(), layerNormReference(x, d, w, b), { scaleTol: tol(d), label: `layerNorm ${shape}` });
        for (const t of [tx, tw, tb, y]) t.dispose();
      }
    });

    it('stays accurate for rows with a large offset (mean 1000, std ~1) and honours eps', async () => {
      const gpu = await getGpu();
      const w = randomArray(768, 6, 2);
      const b = randomArray(768, 7, 1);
      // 6 rows: a workgroup per row on CPU adapters; 40: one invocation runs through each whole row.
      for (const shape of [[6, 768], [40, 768]]) {
        // Uniform in [999, 1001): E[x²] - E[x]² in f32 would lose every digit of the variance here.
        const x = randomArray(size(shape), 5, 1).map((v) => 1000 + v);
        const [tx, tw, tb] = [Tensor.from(gpu, x, shape), Tensor.from(gpu, w, [768]), Tensor.from(gpu, b, [768])];
        for (const eps of [1e-5, 0.5]) {
          const y = await kernels.layerNorm(gpu, tx, tw, tb, { eps });
          // The inputs' own f32 spacing at 1000 (6e-5) bounds what any f32 kernel can do here.
          expectClose(await y.read(), layerNormReference(x, 768, w, b, eps), { scaleTol: 1e-4, label: `offset rows ${shape} eps=${eps}` });
          y.dispose();
        }
        for (const t of [tx, tw, tb]) t.dispose();
      }
    });

    it('with a residual returns { out: layerNorm(x + residual), sum: x + residual }', async () => {
      const gpu = await getGpu();
      for (const [s, shape] of [[1, 1], [3, 7], [3, 17, 130], [2, 1025]].entries()) {
        const d = shape[shape.length - 1]!;
        const x = randomArray(size(shape), 40 + s, 2);
        const r = randomArray(size(shape), 50 + s, 2);
        const w = randomArray(d, 60 + s, 2);
        const b = randomArray(d, 70 + s, 1);
        const tensors = [Tensor.from(gpu, x, shape), Tensor.from(gpu, w, [d]), Tensor.from(gpu, b, [d]), Tensor.from(gpu, r, shape)] as const;
        const { out, sum } = await kernels.layerNorm(gpu, tensors[0], tensors[1], tensors[2], { residual: tensors[3] });
        expect(out.shape).toEqual(shape);
        expect(sum.shape).toEqual(shape);
        const s64 = Float64Array.from(x, (v, i) => v + r[i]!);
        expectClose(await sum.read(), s64, { scaleTol: 1e-7, label: `sum ${shape}` });
        expectClose(await out.read(), layerNormReference(s64, d, w, b), { scaleTol: tol(d), label: `out ${shape}` });
        for (const t of [...tensors, out, sum]) t.dispose();
      }
    });

    it('f16 storage matches the reference within 1e-2, with and without residual', async (ctx) => {
      const gpu = await getGpu();
      requireF16(ctx, gpu);
      const shape = [3, 5, 77];
      const [tx, tr] = [Tensor.from(gpu, randomArray(size(shape), 80, 3), shape, 'f16'), Tensor.from(gpu, randomArray(size(shape), 81, 3), shape, 'f16')];
      const [tw, tb] = [Tensor.from(gpu, randomArray(77, 82, 2), [77], 'f16'), Tensor.from(gpu, randomArray(77, 83, 1), [77], 'f16')];
      const [x, r, w, b] = await Promise.all([tx.read(), tr.read(), tw.read(), tb.read()]);
      const y = await kernels.layerNorm(gpu, tx, tw, tb);
      expect(y.dtype).toBe('f16');
      expectClose(await y.read(), layerNormReference(x, 77, w, b), { scaleTol: 1e-2, label: 'f16' });
      const { out, sum } = await kernels.layerNorm(gpu, tx, tw, tb, { residual: tr });
      const s64 = Float64Array.from(x, (v, i) => v + r[i]!);
      expectClose(await sum.read(), s64, { scaleTol: 1e-2, label: 'f16 sum' });
      expectClose(await out.read(), layerNormReference(s64, 77, w, b), { scaleTol: 1e-2, label: 'f16 residual' });
      for (const t of [tx, tr, tw, tb, y, out, sum]) t.dispose();
    });

    it('rejects bad arguments before dispatching', async () => {
      const gpu = await getGpu();
      const x = Tensor.from(gpu, new Float32Array(12), [3, 4]);
      const w = Tensor.from(gpu, new Float32Array(4), [4]);
      const b = Tensor.from(gpu, new Float32Array(4), [4]);
      const w5 = Tensor.from(gpu, new Float32Array(5), [5]);
      const w2d = Tensor.from(gpu, new Float32Array(4), [1, 4]);
      const b16 = Tensor.from(gpu, new Float32Array(4), [4], 'f16');
      const r = Tensor.from(gpu, new Float32Array(4), [1, 4]);
      const r16 = Tensor.from(gpu, new Float32Array(12), [3, 4], 'f16');
      const xi = Tensor.from(gpu, new Int32Array(12), [3, 4], 'i32');
      const scalar = Tensor.from(gpu, [1], []);
      const empty = Tensor.from(gpu, [], [3, 0]);
      const before = gpu.stats();
      await expect(kernels.layerNorm(gpu, x, w5, b)).rejects.toThrow(/layerNorm: weight must be \[4\] \(x's last dimension\), got \[5\]/);
      await expect(kernels.layerNorm(gpu, x, w2d, b)).rejects.toThrow(/layerNorm: weight must be \[4\] \(x's last dimension\), got \[1, 4\]/);
      await expect(kernels.layerNorm(gpu, x, w, w5)).rejects.toThrow(/layerNorm: bias must be \[4\] \(x's last dimension\), got \[5\]/);
      await expect(kernels.layerNorm(gpu, x, w, b16)).rejects.toThrow(/layerNorm: bias must be f32 like x, got f16/);
      await expect(kernels.layerNorm(gpu, x, w, b, { residual: r })).rejects.toThrow(/layerNorm: residual must have x's shape \[3, 4\], got \[1, 4\]/);
      await expect(kernels.layerNorm(gpu, x, w, b, { residual: r16 })).rejects.toThrow(/layerNorm: residual must be f32 like x, got f16/);
      await expect(kernels.layerNorm(gpu, xi, w, b)).rejects.toThrow(/layerNorm: x must be f32 or f16, got i32/);
      await expect(kernels.layerNorm(gpu, scalar, w, b)).rejects.toThrow(/layerNorm: x must be \[\.\.\., D\] with D >= 1, got \[\]/);
      await expect(kernels.layerNorm(gpu, empty, w, b)).rejects.toThrow(/layerNorm: x must be \[\.\.\., D\] with D >= 1, got \[3, 0\]/);
      for (const eps of [NaN, -1, Infinity]) {
        await expect(kernels.layerNorm(gpu, x, w, b, { eps })).rejects.toThrow(/layerNorm: eps must be a finite number >= 0/);
      }
      // The graph executor calls the description directly: the input count must match the flag.
      const infos = [x, w, b].map((t) => ({ shape: t.shape, dtype: t.dtype }));
      expect(() => layerNormKernel.outputs(infos, { residual: true })).toThrow(/layerNorm: expected inputs \[x, weight, bias, residual\], got 3 inputs/);
      expect(() => layerNormKernel.outputs([...infos, infos[0]!], {})).toThrow(/layerNorm: expected inputs \[x, weight, bias\], got 4 inputs/);
      expect(gpu.stats()).toEqual(before);
      for (const t of [x, w, b, w5, w2d, b16, r, r16, xi, scalar, empty]) t.dispose();
    });
  });
});
