import { describe, expect, it } from 'vitest';
import { Tensor, kernels, type Gpu } from '../../src/index.js';
import { layerNormBackwardKernel, layerNormBackwardReference, type LayerNormBackwardArgs } from '../../src/kernels/layerNormBackward.js';
import { forEachProfile, requireF16 } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { gradFixture } from '../util/grad.js';
import { randomArray } from '../util/random.js';

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Random x (with `offset` added), weight, dOut (and dSum) on the GPU against the reference. */
async function checkCase(gpu: Gpu, shape: number[], seed: number, o: { offset?: number; sumGrad?: boolean; wrt?: LayerNormBackwardArgs['wrt']; eps?: number } = {}) {
  const d = shape[shape.length - 1]!;
  const x = randomArray(size(shape), seed, 2).map((v) => v + (o.offset ?? 0));
  const weight = randomArray(d, seed + 1, 1.5);
  const dOut = randomArray(size(shape), seed + 2);
  const dSum = o.sumGrad ? randomArray(size(shape), seed + 3) : undefined;
  const t = [Tensor.from(gpu, x, shape), Tensor.from(gpu, weight, [d]), Tensor.from(gpu, dOut, shape), ...(dSum ? [Tensor.from(gpu, dSum, shape)] : [])];
  const got = await kernels.layerNormBackward(gpu, t[0]!, t[1]!, t[2]!, { dSum: t[3], wrt: o.wrt, eps: o.eps });
  const ref = layerNormBackwardReference(x, d, weight, dOut, o.eps, dSum);
  const label = `${shape}${o.offset ? ` offset ${o.offset}` : ''}${o.sumGrad ? ' +dSum' : ''}`;
  const want = { x: o.wrt?.x ?? !o.wrt, params: o.wrt?.params ?? !o.wrt };
  expect(got.dx !== undefined).toBe(want.x);
  expect(got.dweight !== undefined && got.dbias !== undefined).toBe(want.params);
  if (got.dx) expectClose(await got.dx.read(), ref.dx, { scaleTol: 1e-5, label: `${label} dx` });
  if (got.dweight) expectClose(await got.dweight.read(), ref.dweight, { scaleTol: 1e-5, label: `${label} dweight` });
  if (got.dbias) expectClose(await got.dbias.read(), ref.dbias, { scaleTol: 1e-5, label: `${label} dbias` });
  for (const x of [...t, got.dx, got.dweight, got.dbias]) x?.dispose();
}

forEachProfile((_profile, getGpu) => {
  describe('layerNormBackward', () => {
    it('matches the reference on awkward shapes (one column, few and many rows, long rows)', async () => {
      const gpu = await getGpu();
      let seed = 1;
      for (const shape of [[1], [5, 1], [3, 7], [2, 7, 32], [50, 64], [130, 13], [4, 768]]) await checkCase(gpu, shape, (seed += 10));
    });

    it('keeps precision on rows with a large offset (mean 1000, std 1), and with eps 0', async () => {
      const gpu = await getGpu();
      await checkCase(gpu, [20, 48], 200, { offset: 1000 });
      await checkCase(gpu, [3, 100], 210, { offset: -300, eps: 0 });
    });

    it('addLayerNorm: adds the sum output’s gradient; computes only the gradients asked for', async () => {
      const gpu = await getGpu();
      await checkCase(gpu, [9, 24], 300, { sumGrad: true });
      await checkCase(gpu, [9, 24], 310, { wrt: { x: true } });
      await checkCase(gpu, [9, 24], 320, { sumGrad: true, wrt: { params: true } });
    });

    it('matches PyTorch autograd (float64) on the grad/ layernorm fixture (incl. mean 30, std 0.05)', async () => {
      const gpu = await getGpu();
      const fx = gradFixture('layernorm');
      for (const c of fx.cases) {
        const up = (name: string) => Tensor.from(gpu, fx.tensor(`${c.name}.${name}`).data, fx.tensor(`${c.name}.${name}`).shape);
        const [x, weight, bias, dY] = ['x', 'weight', 'bias', 'dY'].map(up) as [Tensor, Tensor, Tensor, Tensor];
        const y = await kernels.layerNorm(gpu, x, weight, bias);
        expectClose(await y.read(), fx.tensor(`${c.name}.Y_f64`).data, { scaleTol: 1e-4, label: `${c.name} Y` });
        const got = await kernels.layerNormBackward(gpu, x, weight, dY, { eps: c.params.eps as number });
        for (const [name, t] of [['x', got.dx], ['weight', got.dweight], ['bias', got.dbias]] as const) {
          expectClose(await t!.read(), fx.tensor(`${c.name}.grad_${name}_f64`).data, { scaleTol: 1e-4, label: `${c.name} grad_${name}` });
        }
        for (const t of [x, weight, bias, dY, y, got.dx, got.dweight, got.dbias]) t?.dispose();
      }
    });

    it('f16 storage matches the reference within 1e-2', async (ctx) => {
      const gpu = await getGpu();
      requireF16(ctx, gpu);
      const shape = [10, 40];
      const t = [Tensor.from(gpu, randomArray(400, 400, 2), shape, 'f16'), Tensor.from(gpu, randomArray(40, 401), [40], 'f16'), Tensor.from(gpu, randomArray(400, 402), shape, 'f16')];
      const got = await kernels.layerNormBackward(gpu, t[0]!, t[1]!, t[2]!);
      const ref = layerNormBackwardReference(await t[0]!.read(), 40, await t[1]!.read(), await t[2]!.read());
      expect(got.dx!.dtype).toBe('f16');
      expectClose(await got.dx!.read(), ref.dx, { scaleTol: 1e-2, label: 'f16 dx' });
      expectClose(await got.dweight!.read(), ref.dweight, { scaleTol: 1e-2, label: 'f16 dweight' });
      expectClose(await got.dbias!.read(), ref.dbias, { scaleTol: 1e-2, label: 'f16 dbias' });
      for (const x of [...t, got.dx, got.dweight, got.dbias]) x?.dispose();
    });

    it('rejects bad input before dispatching', async () => {
      const gpu = await getGpu();
      const x = Tensor.from(gpu, new Float32Array(6), [2, 3]);
      const w = Tensor.from(gpu, new Float32Array(3), [3]);
      const w2 = Tensor.from(gpu, new Float32Array(2), [2]);
      const bad = Tensor.from(gpu, new Float32Array(6), [3, 2]);
      const before = gpu.stats();
      await expect(kernels.layerNormBackward(gpu, x, w2, x)).rejects.toThrow(/^layerNormBackward: weight must be \[3\] \(x's last dimension\), got \[2\]$/);
      await expect(kernels.layerNormBackward(gpu, x, w, bad)).rejects.toThrow(/^layerNormBackward: dOut must have x's shape \[2, 3\], got \[3, 2\]$/);
      await expect(kernels.layerNormBackward(gpu, x, w, x, { dSum: bad })).rejects.toThrow(/^layerNormBackward: dSum must have x's shape \[2, 3\], got \[3, 2\]$/);
      await expect(kernels.layerNormBackward(gpu, x, w, x, { eps: -1 })).rejects.toThrow(/^layerNormBackward: eps must be a finite number >= 0, got -1$/);
      expect(() => layerNormBackwardKernel.outputs([x, w], {})).toThrow(/^layerNormBackward: expected inputs \[x, weight, dOut\], got 2 inputs$/);
      expect(gpu.stats()).toEqual(before);
      for (const t of [x, w, w2, bad]) t.dispose();
    });
  });
});
