import { describe, expect, it } from 'vitest';
import { GraphBuilder, Tensor, kernels } from '../../src/index.js';
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
        // Labels in range, plus one at the default ignoreIndex -100 (left out of the mean).
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

    it('crossEntropy ignoreIndex: left out of the mean, in the kernels and in a graph, vs the f64 reference and finite differences', async () => {
      const gpu = await getGpu();
      const [N, C] = [9, 4];
      const logits = randomArray(N * C, 91, 3);
      const dLoss = 1.5;
      const cases: Array<{ ignoreIndex?: number; labels: number[] }> = [
        { labels: [0, -100, 3, 1, -100, 2, 2, 0, 1] },
        { ignoreIndex: 2, labels: [0, 2, 3, 1, 2, 2, 1, 0, 3] }, // a class index: its rows drop out
        { ignoreIndex: -1, labels: [-1, 1, -1, 3, 0, -1, 2, 2, 1] },
      ];
      const tl = Tensor.from(gpu, logits, [N, C]);
      const tg = Tensor.from(gpu, [dLoss], []);
      for (const { ignoreIndex, labels } of cases) {
        const label = `ignoreIndex ${ignoreIndex ?? 'default'}`;
        const kept = labels.filter((k) => k !== (ignoreIndex ?? -100));
        // Independent of the module's reference: mean of lse - x[label] over kept rows, written out.
        let want = 0;
        labels.forEach((k, r) => {
          if (k === (ignoreIndex ?? -100)) return;
          const row = Array.from(logits.subarray(r * C, r * C + C), Number);
          const m = Math.max(...row);
          want += m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0)) - row[k]!;
        });
        want /= kept.length;
        expect(lossesReference.crossEntropy(logits, labels, C, ignoreIndex)).toBeCloseTo(want, 12);
        const tk = Tensor.from(gpu, labels, [N], 'i32');
        const ce = await kernels.crossEntropy(gpu, tl, tk, { ignoreIndex });
        expectClose(await ce.read(), [want], { scaleTol: 1e-5, label: `ce ${label}` });
        const dce = await (await kernels.crossEntropyBackward(gpu, tl, tk, tg, { ignoreIndex })).read();
        // Central differences of the f64 reference, and exact zeros on ignored rows.
        const x = Float64Array.from(logits);
        const fd = x.map((v, i) => {
          x[i] = v + 1e-6;
          const up = lossesReference.crossEntropy(x, labels, C, ignoreIndex);
          x[i] = v - 1e-6;
          const down = lossesReference.crossEntropy(x, labels, C, ignoreIndex);
          x[i] = v;
          return (dLoss * (up - down)) / 2e-6;
        });
        expectClose(dce, fd, { scaleTol: 1e-5, label: `dce ${label} vs finite differences` });
        expect(Array.from(dce).filter((_, i) => labels[Math.floor(i / C)] === (ignoreIndex ?? -100) && dce[i] !== 0)).toEqual([]);
        // The graph op and its gradient rule carry the option.
        const g = new GraphBuilder();
        const gl = g.input('logits', [N, C]);
        const loss = g.crossEntropy(gl, g.input('labels', [N], 'i32'), { ignoreIndex });
        g.output('loss', loss);
        g.output('dlogits', g.gradients(loss, [gl])[0]!);
        const plan = await g.compile(gpu);
        const { outputs } = await plan.run({ logits, labels: Int32Array.from(labels) });
        expectClose(outputs.loss!, [want], { scaleTol: 1e-5, label: `graph ce ${label}` });
        expectClose(outputs.dlogits!, fd.map((v) => v / dLoss), { scaleTol: 1e-5, label: `graph dce ${label}` });
        plan.dispose();
        for (const t of [tk, ce]) t.dispose();
      }
      // Every row ignored: NaN loss (as PyTorch), zero gradient; a label outside [0, C) that is not
      // ignoreIndex: NaN (PyTorch raises; the GPU cannot), and the reference throws.
      for (const [labels, loss, grad] of [
        [[-100, -100], NaN, 'zero'],
        [[0, 4], NaN, 'nan row 1'],
        [[-3, 1], NaN, 'nan row 0'],
      ] as const) {
        const tk = Tensor.from(gpu, labels, [2], 'i32');
        const two = Tensor.from(gpu, logits.subarray(0, 2 * C), [2, C]);
        const ce = await (await kernels.crossEntropy(gpu, two, tk)).read();
        expect(ce[0], `loss for labels ${labels}`).toBe(loss);
        const d = Array.from(await (await kernels.crossEntropyBackward(gpu, two, tk, tg)).read());
        if (grad === 'zero') expect(d).toEqual(new Array(2 * C).fill(0));
        else {
          const bad = Number(grad.at(-1));
          expect(d.map((v, i) => Number.isNaN(v) === (Math.floor(i / C) === bad))).toEqual(new Array(2 * C).fill(true));
        }
        if (grad !== 'zero') expect(() => lossesReference.crossEntropy(logits, labels, C)).toThrow(/label -?\d+ of row \d is outside \[0, 4\)/);
        for (const t of [tk, two]) t.dispose();
      }
      expect(() => crossEntropyKernel.outputs([tl, { shape: [N], dtype: 'i32' }], { ignoreIndex: 0.5 })).toThrow(/crossEntropy: ignoreIndex must be an i32 integer, got 0.5/);
      tl.dispose();
      tg.dispose();
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
