import { describe, expect, it } from 'vitest';
import { Tensor, kernels } from '../../src/index.js';
import { crossEntropyKernel, lossesReference } from '../../src/kernels/losses.js';
import { forEachProfile } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { gradFixture } from '../util/grad.js';
import { randomArray } from '../util/random.js';

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

forEachProfile((_profile, getGpu) => {
  describe('losses (logSoftmax, crossEntropy, binaryCrossEntropyWithLogits)', () => {
    it('logSoftmax and its backward match the reference on awkward shapes (incl. logits ~100 and -inf)', async () => {
      const gpu = await getGpu();
      for (const [s, shape] of [[1], [7], [3, 5], [2, 3, 33], [200, 10]].entries()) {
        const n = size(shape);
        const row = shape[shape.length - 1]!;
        const x = randomArray(n, 40 + s, 8).map((v, i) => (s === 3 ? v + 100 : s === 4 && i % 7 === 3 ? -Infinity : v));
        const dy = randomArray(n, 50 + s, 1);
        const [tx, tdy] = [Tensor.from(gpu, x, shape), Tensor.from(gpu, dy, shape)];
        const y = await kernels.logSoftmax(gpu, tx);
        const yRef = lossesReference.logSoftmax(x, row);
        const got = await y.read();
        expect(Array.from(got).map((v, i) => v === -Infinity && yRef[i] === -Infinity)).toEqual(Array.from(yRef).map((v) => v === -Infinity));
        const finite = (a: ArrayLike<number>) => Array.from(a, (v) => (Number.isFinite(v) ? v : 0));
        expectClose(finite(got), finite(yRef), { scaleTol: 1e-5, label: `logSoftmax ${shape}` });
        const dx = await kernels.logSoftmaxBackward(gpu, y, tdy);
        expectClose(await dx.read(), lossesReference.logSoftmaxBackward(got, dy, row), { scaleTol: 1e-5, label: `logSoftmaxBackward ${shape}` });
        for (const t of [tx, tdy, y, dx]) t.dispose();
      }
    });

    it('crossEntropy and binaryCrossEntropyWithLogits (mean) and their backward match the reference, 1 to 5000 rows', async () => {
      const gpu = await getGpu();
      for (const [s, [N, C]] of [[1, 1], [3, 5], [17, 3], [5000, 4]].entries()) {
        const logits = randomArray(N! * C!, 60 + s, 6);
        // Labels in range, plus one out of range (contributes nothing, still counted).
        const labels = Int32Array.from({ length: N! }, (_, i) => (i === 2 ? -100 : (i * 7 + s) % C!));
        const targets = randomArray(N! * C!, 70 + s, 0.5).map((v) => v + 0.5);
        const dLoss = 0.75;
        const [tl, tk, tt, tg] = [Tensor.from(gpu, logits, [N!, C!]), Tensor.from(gpu, labels, [N!], 'i32'), Tensor.from(gpu, targets, [N!, C!]), Tensor.from(gpu, [dLoss], [])];
        const ce = await kernels.crossEntropy(gpu, tl, tk);
        const bce = await kernels.binaryCrossEntropyWithLogits(gpu, tl, tt);
        expect(ce.shape).toEqual([]);
        expectClose(await ce.read(), [lossesReference.crossEntropy(logits, labels, C!)], { scaleTol: 1e-5, label: `ce ${N}x${C}` });
        expectClose(await bce.read(), [lossesReference.binaryCrossEntropyWithLogits(logits, targets)], { scaleTol: 1e-5, label: `bce ${N}x${C}` });
        const dce = await kernels.crossEntropyBackward(gpu, tl, tk, tg);
        const dbce = await kernels.binaryCrossEntropyWithLogitsBackward(gpu, tl, tt, tg);
        expectClose(await dce.read(), lossesReference.crossEntropyBackward(logits, labels, C!, dLoss), { scaleTol: 1e-5, label: `dce ${N}x${C}` });
        expectClose(await dbce.read(), lossesReference.binaryCrossEntropyWithLogitsBackward(logits, targets, dLoss), { scaleTol: 1e-5, label: `dbce ${N}x${C}` });
        for (const t of [tl, tk, tt, tg, ce, bce, dce, dbce]) t.dispose();
      }
    });

    it('matches PyTorch autograd: the losses fixture', async () => {
      const gpu = await getGpu();
      const fx = gradFixture('losses');
      expect(fx.cases.map((c) => c.name)).toEqual(['log_softmax_6x5', 'cross_entropy_6x5', 'bce_with_logits_6x5']);
      const t = (name: string) => fx.tensor(name);
      const up = (name: string, dtype: 'f32' | 'i32' = 'f32') => Tensor.from(gpu, t(name).data, t(name).shape, dtype);
      const check = async (got: Tensor, name: string) => {
        expectClose(await got.read(), t(name).data, { scaleTol: name.includes('grad') ? 1e-4 : 1e-5, label: name });
        got.dispose();
      };
      const x = up('log_softmax_6x5.x');
      const dy = up('log_softmax_6x5.dY');
      const y = await kernels.logSoftmax(gpu, x);
      await check(await kernels.logSoftmaxBackward(gpu, y, dy), 'log_softmax_6x5.grad_x_f64');
      await check(y, 'log_softmax_6x5.Y_f64');
      const [logits, labels, dLoss] = [up('cross_entropy_6x5.logits'), up('cross_entropy_6x5.labels_i32', 'i32'), up('cross_entropy_6x5.dY')];
      await check(await kernels.crossEntropy(gpu, logits, labels), 'cross_entropy_6x5.Y_f64');
      await check(await kernels.crossEntropyBackward(gpu, logits, labels, dLoss), 'cross_entropy_6x5.grad_logits_f64');
      const [bl, bt, bd] = [up('bce_with_logits_6x5.logits'), up('bce_with_logits_6x5.targets'), up('bce_with_logits_6x5.dY')];
      await check(await kernels.binaryCrossEntropyWithLogits(gpu, bl, bt), 'bce_with_logits_6x5.Y_f64');
      await check(await kernels.binaryCrossEntropyWithLogitsBackward(gpu, bl, bt, bd), 'bce_with_logits_6x5.grad_logits_f64');
      for (const v of [x, dy, logits, labels, dLoss, bl, bt, bd]) v.dispose();
    });

    it('rejects bad arguments before dispatching', async () => {
      const gpu = await getGpu();
      const logits = Tensor.from(gpu, new Float32Array(6), [2, 3]);
      const labels = Tensor.from(gpu, [0, 1], [2], 'i32');
      const wrongLabels = Tensor.from(gpu, [0, 1, 2], [3], 'i32');
      const fLabels = Tensor.from(gpu, [0, 1], [2]);
      const vec = Tensor.from(gpu, [1, 2], [2]);
      const h = Tensor.from(gpu, new Float32Array(6), [2, 3], 'f16');
      const before = gpu.stats();
      await expect(kernels.crossEntropy(gpu, logits, wrongLabels)).rejects.toThrow(/crossEntropy: labels must be \[2\] \(one per row of logits\), got \[3\]/);
      await expect(kernels.crossEntropy(gpu, logits, fLabels)).rejects.toThrow(/crossEntropy: labels must be i32, got f32/);
      await expect(kernels.crossEntropy(gpu, vec, labels)).rejects.toThrow(/crossEntropy: logits must be \[N, C\] with C >= 1, got \[2\]/);
      await expect(kernels.crossEntropyBackward(gpu, logits, labels, vec)).rejects.toThrow(/crossEntropyBackward: dLoss must be a scalar \(\[\] or \[1\]\), got \[2\]/);
      await expect(kernels.binaryCrossEntropyWithLogits(gpu, logits, vec)).rejects.toThrow(/binaryCrossEntropyWithLogits: targets must have logits' shape \[2, 3\], got \[2\]/);
      await expect(kernels.logSoftmax(gpu, h)).rejects.toThrow(/logSoftmax: x must be f32, got f16/);
      await expect(kernels.logSoftmaxBackward(gpu, logits, vec)).rejects.toThrow(/logSoftmaxBackward: dy must have y's shape \[2, 3\], got \[2\]/);
      expect(() => crossEntropyKernel.outputs([logits], {})).toThrow(/crossEntropy: expected inputs \[logits, labels\], got 1 inputs/);
      expect(gpu.stats()).toEqual(before);
      for (const v of [logits, labels, wrongLabels, fLabels, vec, h]) v.dispose();
    });
  });
});
