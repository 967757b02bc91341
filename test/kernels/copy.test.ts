import { describe, expect, it } from 'vitest';
import { Tensor, kernels } from '../../src/index.js';
import { sliceView, stridedCopyReference, transposeView } from '../../src/kernels/copy.js';
import { forEachProfile, requireF16 } from '../util/gpu.js';
import { randomArray } from '../util/random.js';

forEachProfile((_, getGpu) => {
  describe('copy kernels (transpose, slice, concat)', () => {
    for (const dtype of ['f32', 'f16', 'i32', 'u32'] as const) {
      it(`transpose matches the reference on awkward shapes (${dtype})`, async (ctx) => {
        const gpu = await getGpu();
        if (dtype === 'f16') requireF16(ctx, gpu);
        const cases: [number[], number[]][] = [[[], []], [[1], [0]], [[3, 5], [1, 0]], [[3, 37], [1, 0]], [[2, 40], [0, 1]], [[5, 3, 33], [1, 0, 2]], [[2, 3, 7], [2, 0, 1]], [[2, 17, 4, 3], [0, 2, 1, 3]], [[2, 1, 3, 1, 2, 1, 2, 3], [7, 6, 5, 4, 3, 2, 1, 0]]];
        for (const [shape, perm] of cases) {
          const n = shape.reduce((a, b) => a * b, 1);
          const data = dtype === 'f32' || dtype === 'f16' ? randomArray(n, 7) : Int32Array.from({ length: n }, (_, i) => i * 7 + 1);
          const x = Tensor.from(gpu, data, shape, dtype);
          const host = await x.read();
          const y = await kernels.transpose(gpu, x, perm);
          expect(y.shape).toEqual(perm.map((p) => shape[p]));
          expect(Array.from(await y.read())).toEqual(stridedCopyReference(host, transposeView(shape, perm)));
          x.dispose();
          y.dispose();
        }
      });
    }

    it('slice handles negative and missing ends like Python', async () => {
      const gpu = await getGpu();
      const data = randomArray(4 * 9 * 5, 1);
      const x = Tensor.from(gpu, data, [4, 9, 5]);
      for (const [starts, ends] of [[[1, 2], [3, -1]], [[0, 1, 4]], [[-2, 0, 0], [undefined, 9, 1]], [[0, 5], [4, 2]]] as [number[], (number | undefined)[]?][]) {
        const y = await kernels.slice(gpu, x, starts, ends);
        const view = sliceView([4, 9, 5], starts, ends);
        expect(y.shape).toEqual(view.shape);
        expect(Array.from(await y.read())).toEqual(stridedCopyReference(data, view));
        y.dispose();
      }
      x.dispose();
    });

    it('concat along each axis', async () => {
      const gpu = await getGpu();
      const a = randomArray(2 * 3 * 4, 1);
      const b = randomArray(2 * 5 * 4, 2);
      const ta = Tensor.from(gpu, a, [2, 3, 4]);
      const tb = Tensor.from(gpu, b, [2, 5, 4]);
      const y = await kernels.concat(gpu, [ta, tb, ta], 1);
      expect(y.shape).toEqual([2, 11, 4]);
      const ref: number[] = [];
      for (let i = 0; i < 2; i++) ref.push(...a.slice(i * 12, i * 12 + 12), ...b.slice(i * 20, i * 20 + 20), ...a.slice(i * 12, i * 12 + 12));
      expect(Array.from(await y.read())).toEqual(ref);
      const z = await kernels.concat(gpu, [ta, ta], 0);
      expect(Array.from(await z.read())).toEqual([...a, ...a]);
      for (const t of [ta, tb, y, z]) t.dispose();
    });

    it('rejects bad arguments before dispatching', async () => {
      const gpu = await getGpu();
      const a = Tensor.from(gpu, new Float32Array(6), [2, 3]);
      const b = Tensor.from(gpu, new Float32Array(8), [2, 4]);
      const h = Tensor.from(gpu, new Int32Array(6), [2, 3], 'i32');
      const before = gpu.stats();
      await expect(kernels.transpose(gpu, a, [0, 2])).rejects.toThrow(/transpose: perm \[0, 2\] is not a permutation of 2 dimensions/);
      await expect(kernels.concat(gpu, [a, b], 0)).rejects.toThrow(/concat: input 1 of shape \[2, 4\] must match \[2, 3\] except along axis 0/);
      await expect(kernels.concat(gpu, [a, h], 0)).rejects.toThrow(/concat: input 1 is i32, expected f32/);
      await expect(kernels.concat(gpu, [a], 2)).rejects.toThrow(/axis 2 out of range for rank 2/);
      await expect(kernels.slice(gpu, a, [0, 0, 0])).rejects.toThrow(/3 starts for a tensor of rank 2/);
      expect(gpu.stats()).toEqual(before);
      for (const t of [a, b, h]) t.dispose();
    });
  });
});
