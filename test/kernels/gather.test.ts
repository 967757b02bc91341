import { describe, expect, it } from 'vitest';
import { Tensor, kernels } from '../../src/index.js';
import { gatherReference } from '../../src/kernels/gather.js';
import { forEachProfile } from '../util/gpu.js';
import { randomArray } from '../util/random.js';

forEachProfile((_, getGpu) => {
  describe('gather', () => {
    it('picks rows by index, zero rows for out-of-range indices, any index shape', async () => {
      const gpu = await getGpu();
      const table = randomArray(11 * 7, 3);
      const t = Tensor.from(gpu, table, [11, 7]);
      for (const [idx, shape] of [[[0], [1]], [[10, 3, 3, -1, 11, 5], [2, 3]], [[4, 4, 4, 4], [4]]] as [number[], number[]][]) {
        const i = Tensor.from(gpu, idx, shape, 'i32');
        const y = await kernels.gather(gpu, t, i);
        expect(y.shape).toEqual([...shape, 7]);
        expect(Array.from(await y.read())).toEqual(gatherReference(table, 7, idx));
        i.dispose();
        y.dispose();
      }
      t.dispose();
    });

    it('rejects bad arguments before dispatching', async () => {
      const gpu = await getGpu();
      const t = Tensor.from(gpu, new Float32Array(12), [3, 4]);
      const f = Tensor.from(gpu, [1], [1]);
      const flat = Tensor.from(gpu, new Float32Array(12), [12]);
      const idx = Tensor.from(gpu, [1], [1], 'i32');
      const before = gpu.stats();
      await expect(kernels.gather(gpu, t, f)).rejects.toThrow(/gather: indices must be i32, got f32/);
      await expect(kernels.gather(gpu, flat, idx)).rejects.toThrow(/table must be \[rows, width\], got \[12\]/);
      expect(gpu.stats().submits).toBe(before.submits);
      for (const x of [t, f, flat, idx]) x.dispose();
    });
  });
});
