import { describe, expect, it } from 'vitest';
import { Tensor, kernels } from '../../src/index.js';
import { softmaxBackwardKernel, softmaxBackwardReference } from '../../src/kernels/softmaxBackward.js';
import { softmaxReference } from '../../src/kernels/softmax.js';
import { forEachProfile, requireF16 } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { gradFixture } from '../util/grad.js';
import { randomArray } from '../util/random.js';

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

forEachProfile((_profile, getGpu) => {
  describe('softmaxBackward', () => {
    it('matches the reference on awkward shapes (few and many rows, long rows, masked entries)', async () => {
      const gpu = await getGpu();
      let seed = 1;
      for (const shape of [[1], [7], [3, 5], [2, 7, 50], [12, 300], [4, 3, 7, 7], [130, 1], [2, 2000]]) {
        const n = shape[shape.length - 1]!;
        // Every third logit of some rows masked (y = 0 there), as attention masks do.
        const x = randomArray(size(shape), seed++, 4).map((v, i) => (i % 3 === 1 && Math.floor(i / n) % 2 === 0 && n > 2 ? -Infinity : v));
        const y = Float32Array.from(softmaxReference(x, n));
        const dy = randomArray(size(shape), seed++, 2);
        const [ty, tdy] = [Tensor.from(gpu, y, shape), Tensor.from(gpu, dy, shape)];
        const dx = await kernels.softmaxBackward(gpu, ty, tdy);
        expect(dx.shape).toEqual(shape);
        expectClose(await dx.read(), softmaxBackwardReference(y, dy, n), { scaleTol: 1e-5, label: `softmaxBackward ${shape}` });
        for (const t of [ty, tdy, dx]) t.dispose();
      }
    });

    it('matches PyTorch autograd (float64) on the grad/ softmax fixture (-inf entries, logits ~100)', async () => {
      const gpu = await getGpu();
      const fx = gradFixture('softmax');
      for (const c of fx.cases) {
        const x = fx.tensor(`${c.name}.x`);
        const dY = fx.tensor(`${c.name}.dY`);
        const tx = Tensor.from(gpu, x.data, x.shape);
        const tdy = Tensor.from(gpu, dY.data, dY.shape);
        const y = await kernels.softmax(gpu, tx);
        expectClose(await y.read(), fx.tensor(`${c.name}.Y_f64`).data, { scaleTol: 1e-5, label: `${c.name} Y` });
        const dx = await kernels.softmaxBackward(gpu, y, tdy);
        expectClose(await dx.read(), fx.tensor(`${c.name}.grad_x_f64`).data, { scaleTol: 1e-4, label: `${c.name} grad_x` });
        for (const t of [tx, tdy, y, dx]) t.dispose();
      }
    });

    it('f16 storage matches the reference within 1e-2', async (ctx) => {
      const gpu = await getGpu();
      requireF16(ctx, gpu);
      const shape = [9, 33];
      const y = Float32Array.from(softmaxReference(randomArray(size(shape), 50, 3), 33));
      const ty = Tensor.from(gpu, y, shape, 'f16');
      const tdy = Tensor.from(gpu, randomArray(size(shape), 51), shape, 'f16');
      const dx = await kernels.softmaxBackward(gpu, ty, tdy);
      expect(dx.dtype).toBe('f16');
      expectClose(await dx.read(), softmaxBackwardReference(await ty.read(), await tdy.read(), 33), { scaleTol: 1e-2, label: 'f16' });
      for (const t of [ty, tdy, dx]) t.dispose();
    });

    it('rejects bad input before dispatching', async () => {
      const gpu = await getGpu();
      const y = Tensor.from(gpu, new Float32Array(6), [2, 3]);
      const dy = Tensor.from(gpu, new Float32Array(6), [3, 2]);
      const i = Tensor.from(gpu, new Int32Array(6), [2, 3], 'i32');
      const before = gpu.stats();
      await expect(kernels.softmaxBackward(gpu, y, dy)).rejects.toThrow(/^softmaxBackward: dy of shape \[3, 2\] must have y's shape \[2, 3\]$/);
      await expect(kernels.softmaxBackward(gpu, i, y)).rejects.toThrow(/^softmaxBackward: y must be f32 or f16, got i32$/);
      await expect(kernels.softmaxBackward(gpu, y, i)).rejects.toThrow(/^softmaxBackward: dy must be f32 like y, got i32$/);
      expect(() => softmaxBackwardKernel.outputs([y], {})).toThrow(/^softmaxBackward: expected inputs \[y, dy\], got 1 inputs$/);
      expect(gpu.stats()).toEqual(before);
      for (const t of [y, dy, i]) t.dispose();
    });
  });
});
