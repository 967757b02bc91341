import { describe, expect, it } from 'vitest';
import { Tensor, kernels } from '../../src/index.js';
import { softmaxKernel, softmaxReference } from '../../src/kernels/softmax.js';
import { forEachProfile, requireF16 } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { randomArray } from '../util/random.js';

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const tol = (n: number) => (n > 1024 ? 1e-4 : 1e-5);

forEachProfile((_, getGpu) => {
  describe('softmax', () => {
    it('matches the reference on awkward shapes (rows of 1, 7, 50, 130, 1025; batch 3; 300 rows)', async () => {
      const gpu = await getGpu();
      // Few rows (a workgroup per row on CPU adapters) and many (an invocation per row, workgroups of
      // 8 to 64 rows, the last one partly empty: 15 and 300 rows).
      for (const [s, shape] of [[1], [3, 1], [7], [3, 5, 13], [3, 130], [2, 1025], [300, 50]].entries()) {
        const n = shape[shape.length - 1]!;
        const x = randomArray(size(shape), 10 + s, 8);
        const tx = Tensor.from(gpu, x, shape);
        const y = await kernels.softmax(gpu, tx);
        expect(y.shape).toEqual(shape);
        expectClose(await y.read(), softmaxReference(x, n), { scaleTol: tol(n), label: `softmax ${shape}` });
        tx.dispose();
        y.dispose();
      }
    });

    it('does not overflow for logits near 100 (f32 and f16 storage)', async (ctx) => {
      const gpu = await getGpu();
      const shape = [4, 50];
      // exp(105) is above f32's maximum: only a max-subtracted softmax survives this.
      const x = randomArray(size(shape), 3, 5).map((v) => 100 + v);
      const tx = Tensor.from(gpu, x, shape);
      const y = await kernels.softmax(gpu, tx);
      const got = await y.read();
      expect(got.every(Number.isFinite)).toBe(true);
      expectClose(got, softmaxReference(x, 50), { scaleTol: 1e-5, label: 'logits ~100' });
      for (const t of [tx, y]) t.dispose();
      requireF16(ctx, gpu);
      const th = Tensor.from(gpu, x, shape, 'f16');
      const yh = await kernels.softmax(gpu, th);
      expect(yh.dtype).toBe('f16');
      expectClose(await yh.read(), softmaxReference(await th.read(), 50), { scaleTol: 1e-2, label: 'f16 logits ~100' });
      for (const t of [th, yh]) t.dispose();
    });

    it('adds a mask broadcast as a suffix of x: [L, L] causal -inf, [H, L, L] additive, [L] row mask', async () => {
      const gpu = await getGpu();
      const [B, H, L] = [2, 3, 7];
      const shape = [B, H, L, L];
      const x = randomArray(size(shape), 21, 6);
      const causal = Float32Array.from({ length: L * L }, (_, i) => (i % L <= Math.floor(i / L) ? 0 : -Infinity));
      const masks: [number[], Float32Array][] = [
        [[L, L], causal],
        [[H, L, L], randomArray(H * L * L, 22, 4)],
        [[L], Float32Array.from({ length: L }, (_, j) => (j === 3 ? -Infinity : -0.5 * j))],
        [shape, randomArray(size(shape), 23, 4)],
      ];
      const tx = Tensor.from(gpu, x, shape);
      for (const [mShape, m] of masks) {
        const tm = Tensor.from(gpu, m, mShape);
        const y = await kernels.softmax(gpu, tx, { mask: tm });
        const got = await y.read();
        expect(got.every(Number.isFinite)).toBe(true);
        expectClose(got, softmaxReference(x, L, m), { scaleTol: 1e-5, label: `mask ${mShape}` });
        for (const t of [tm, y]) t.dispose();
      }
      tx.dispose();
    });

    it('a NaN in x or in the mask makes its whole row NaN (as PyTorch), other rows untouched; few rows and many', async () => {
      const gpu = await getGpu();
      for (const rows of [4, 300]) {
        const L = 7;
        const x = randomArray(rows * L, 41, 3);
        x[L + 3] = NaN; // row 1
        const m = new Float32Array(rows * L);
        m[3 * L] = NaN; // row 3, through the mask
        const tx = Tensor.from(gpu, x, [rows, L]);
        const tm = Tensor.from(gpu, m, [rows, L]);
        const y = await kernels.softmax(gpu, tx, { mask: tm });
        const got = await y.read();
        const ref = softmaxReference(x, L, m);
        for (const r of [1, 3]) expect(Array.from(got.subarray(r * L, (r + 1) * L)).every(Number.isNaN), `row ${r} of ${rows}`).toBe(true);
        for (const r of [1, 3]) expect(Array.from(ref.subarray(r * L, (r + 1) * L)).every(Number.isNaN)).toBe(true);
        const keep = [...Array(rows).keys()].filter((r) => r !== 1 && r !== 3).flatMap((r) => [...Array(L).keys()].map((j) => r * L + j));
        expectClose(keep.map((i) => got[i]!), keep.map((i) => ref[i]!), { scaleTol: 1e-5, label: `NaN rows, ${rows} rows` });
        for (const t of [tx, tm, y]) t.dispose();
      }
    });

    it('rows masked with -Infinity: no NaN where any element is finite, zeros where none is', async () => {
      const gpu = await getGpu();
      const L = 5;
      const x = randomArray(4 * L, 31, 3);
      // Row 0 fully masked, row 1 all but one, row 2 unmasked, row 3 masked except the ends.
      const m = [
        [-Infinity, -Infinity, -Infinity, -Infinity, -Infinity],
        [-Infinity, -Infinity, 0, -Infinity, -Infinity],
        [0, 0, 0, 0, 0],
        [0, -Infinity, -Infinity, -Infinity, 0],
      ].flat();
      const tx = Tensor.from(gpu, x, [4, L]);
      const tm = Tensor.from(gpu, m, [4, L]);
      const y = await kernels.softmax(gpu, tx, { mask: tm });
      const got = await y.read();
      expect(Array.from(got.subarray(0, L))).toEqual([0, 0, 0, 0, 0]);
      expect(Array.from(got.subarray(L, 2 * L))).toEqual([0, 0, 1, 0, 0]);
      expectClose(got, softmaxReference(x, L, m), { scaleTol: 1e-6, label: '-inf rows' });
      // x itself at -Infinity (no mask) behaves the same.
      const tinf = Tensor.from(gpu, [-Infinity, -Infinity, -Infinity, 2, -Infinity, 2], [2, 3]);
      const yinf = await kernels.softmax(gpu, tinf);
      expect(Array.from(await yinf.read())).toEqual([0, 0, 0, 0.5, 0, 0.5]);
      for (const t of [tx, tm, y, tinf, yinf]) t.dispose();
    });

    it('f16 storage with a mask matches the reference within 1e-2', async (ctx) => {
      const gpu = await getGpu();
      requireF16(ctx, gpu);
      const shape = [3, 4, 33];
      const tx = Tensor.from(gpu, randomArray(size(shape), 41, 6), shape, 'f16');
      const tm = Tensor.from(gpu, randomArray(4 * 33, 42, 3), [4, 33], 'f16');
      const y = await kernels.softmax(gpu, tx, { mask: tm });
      expectClose(await y.read(), softmaxReference(await tx.read(), 33, await tm.read()), { scaleTol: 1e-2, label: 'f16 mask' });
      for (const t of [tx, tm, y]) t.dispose();
    });

    it('rejects bad arguments before dispatching', async () => {
      const gpu = await getGpu();
      const x = Tensor.from(gpu, new Float32Array(24), [2, 3, 4]);
      const bad: [number[], RegExp][] = [
        [[4, 3], /softmax: mask of shape \[4, 3\] must be a trailing part of x's shape \[2, 3, 4\] \(at least its last dimension\)/],
        [[3], /mask of shape \[3\] must be a trailing part/],
        [[1, 2, 3, 4], /mask of shape \[1, 2, 3, 4\] must be a trailing part/],
        [[], /mask of shape \[\] must be a trailing part/],
      ];
      const masks = bad.map(([s]) => Tensor.from(gpu, new Float32Array(size(s)), s));
      const m16 = Tensor.from(gpu, new Float32Array(4), [4], 'f16');
      const xi = Tensor.from(gpu, new Int32Array(4), [4], 'i32');
      const scalar = Tensor.from(gpu, [1], []);
      const before = gpu.stats();
      for (const [i, [, re]] of bad.entries()) await expect(kernels.softmax(gpu, x, { mask: masks[i] })).rejects.toThrow(re);
      await expect(kernels.softmax(gpu, x, { mask: m16 })).rejects.toThrow(/softmax: mask must be f32 like x, got f16/);
      await expect(kernels.softmax(gpu, xi)).rejects.toThrow(/softmax: x must be f32 or f16, got i32/);
      await expect(kernels.softmax(gpu, scalar)).rejects.toThrow(/softmax: x must have at least one dimension/);
      const info = { shape: x.shape, dtype: x.dtype };
      expect(() => softmaxKernel.outputs([info], { mask: true })).toThrow(/softmax: expected inputs \[x, mask\], got 1 inputs/);
      expect(() => softmaxKernel.outputs([info, info], {})).toThrow(/softmax: expected inputs \[x\], got 2 inputs/);
      expect(gpu.stats()).toEqual(before);
      for (const t of [x, ...masks, m16, xi, scalar]) t.dispose();
    });
  });
});
