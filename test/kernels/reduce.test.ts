import { describe, expect, it } from 'vitest';
import { Tensor, kernels } from '../../src/index.js';
import { broadcastAxes, reduceKernel, reduceReference, type ReduceOptions } from '../../src/kernels/reduce.js';
import { expandView, padReference, sliceBackwardOptions } from '../../src/kernels/copy.js';
import { forEachProfile, requireF16 } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { gradFixture } from '../util/grad.js';
import { randomArray } from '../util/random.js';

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

forEachProfile((_profile, getGpu) => {
  describe('reduce (sum, mean)', () => {
    it('matches the reference over every axis set of awkward shapes, keepDims or not', async () => {
      const gpu = await getGpu();
      const shapes = [[7], [3, 5], [2, 1, 9], [4, 3, 5, 2], [1, 1]];
      let seed = 1;
      for (const shape of shapes) {
        const x = randomArray(size(shape), seed++, 3);
        const tx = Tensor.from(gpu, x, shape);
        // Every subset of axes, written with negative axes half of the time.
        for (let mask = 0; mask < 1 << shape.length; mask++) {
          const axes = shape.flatMap((_, d) => (mask & (1 << d) ? [mask & 1 ? d - shape.length : d] : []));
          for (const op of ['sum', 'mean'] as const) {
            const o: ReduceOptions = { op, axes, keepDims: mask % 3 === 0 };
            const y = (await kernels.runKernel(gpu, reduceKernel, [tx], o))[0]!;
            const want = shape.map((n, d) => (axes.some((a) => (a + shape.length) % shape.length === d) ? 1 : n));
            expect(y.shape).toEqual(o.keepDims ? want : shape.filter((_, d) => !axes.some((a) => (a + shape.length) % shape.length === d)));
            expectClose(await y.read(), reduceReference(x, shape, o), { scaleTol: 1e-5, label: `${op} ${shape} over [${axes}]` });
            y.dispose();
          }
        }
        tx.dispose();
      }
    });

    it('splits long reductions to few outputs into chunks (scalar of 70000, bias gradient 8x577 rows)', async () => {
      const gpu = await getGpu();
      for (const [shape, axes] of [[[70001], [0]], [[4616, 3], [0]], [[5, 3000, 2], [0, 1]]] as [number[], number[]][]) {
        const x = randomArray(size(shape), 5, 1);
        const tx = Tensor.from(gpu, x, shape);
        for (const op of ['sum', 'mean'] as const) {
          const plan = reduceKernel.plan(gpu, [tx], reduceKernel.outputs([tx], { op, axes }), { op, axes });
          expect(plan.dispatches).toHaveLength(2);
          const y = (await kernels.runKernel(gpu, reduceKernel, [tx], { op, axes }))[0]!;
          expectClose(await y.read(), reduceReference(x, shape, { op, axes }), { scaleTol: 1e-5, label: `${op} ${shape}` });
          y.dispose();
        }
        tx.dispose();
      }
    });

    it('sums f16 storage with f32 accumulation', async (ctx) => {
      const gpu = await getGpu();
      requireF16(ctx, gpu);
      const h = Tensor.from(gpu, randomArray(40 * 300, 6, 1), [40, 300], 'f16');
      const y = await kernels.sum(gpu, h, [0]);
      expect(y.dtype).toBe('f16');
      expectClose(await y.read(), reduceReference(await h.read(), [40, 300], { op: 'sum', axes: [0] }), { scaleTol: 2e-3, label: 'f16 sum' });
      for (const t of [h, y]) t.dispose();
    });

    it('reduces nothing (a copy) with empty axes, and gives mean NaN over an empty axis as PyTorch', async () => {
      const gpu = await getGpu();
      const x = Tensor.from(gpu, [1, 2, 3, 4, 5, 6], [2, 3]);
      const y = await kernels.sum(gpu, x, []);
      expect(Array.from(await y.read())).toEqual([1, 2, 3, 4, 5, 6]);
      const empty = Tensor.empty(gpu, [3, 0]);
      const s = await kernels.sum(gpu, empty, [1]);
      const m = await kernels.mean(gpu, empty, [1]);
      expect(Array.from(await s.read())).toEqual([0, 0, 0]);
      expect((await m.read()).every(Number.isNaN)).toBe(true);
      for (const t of [x, y, empty, s, m]) t.dispose();
    });

    it('matches PyTorch autograd: reduce, broadcast and mean_tokens fixtures (forward and backward)', async () => {
      const gpu = await getGpu();
      const reduce = gradFixture('reduce');
      expect(reduce.cases.length).toBeGreaterThan(0);
      for (const c of reduce.cases) {
        const x = reduce.tensor(`${c.name}.x`);
        const dY = reduce.tensor(`${c.name}.dY`);
        const o: ReduceOptions = { op: c.params.kind as 'sum' | 'mean', axes: c.params.axes as number[] };
        const tx = Tensor.from(gpu, x.data, x.shape);
        const y = (await kernels.runKernel(gpu, reduceKernel, [tx], o))[0]!;
        expectClose(await y.read(), reduce.tensor(`${c.name}.Y_f64`).data, { scaleTol: 1e-5, label: `${c.name} Y` });
        // Backward: dY with the reduced axes kept as 1s, spread over them (and divided by n for a mean).
        const kept = reduceKernel.outputs([tx], { ...o, keepDims: true })[0]!.shape;
        const tdy = Tensor.from(gpu, dY.data, kept);
        const spread = await kernels.runKernel(gpu, kernels.stridedCopyKernel, [tdy], expandView(kept, x.shape));
        const dx = o.op === 'mean' ? await kernels.scale(gpu, spread[0]!, size(kept) / size(x.shape)) : spread[0]!;
        expectClose(await dx.read(), reduce.tensor(`${c.name}.grad_x_f64`).data, { scaleTol: 1e-5, label: `${c.name} grad_x` });
        for (const t of new Set([tx, y, tdy, spread[0]!, dx])) t.dispose();
      }

      // Broadcast add/mul: the broadcast operand's gradient is dY (times x for mul) summed over broadcastAxes.
      const bc = gradFixture('broadcast');
      for (const c of bc.cases) {
        const [x, other, dY] = ['x', 'o', 'dY'].map((n) => bc.tensor(`${c.name}.${n}`));
        const isMul = (c.params.kind as string).startsWith('mul');
        const [tx, to, tdy] = [x!, other!, dY!].map((t) => Tensor.from(gpu, t.data, t.shape));
        const y = await (isMul ? kernels.mul : kernels.add)(gpu, tx!, to!);
        expectClose(await y.read(), bc.tensor(`${c.name}.Y_f64`).data, { scaleTol: 1e-5, label: `${c.name} Y` });
        const gx = isMul ? await kernels.mul(gpu, tdy!, to!) : tdy!;
        const prod = isMul ? await kernels.mul(gpu, tdy!, tx!) : tdy!;
        const go = await kernels.sum(gpu, prod, broadcastAxes(other!.shape, dY!.shape), { keepDims: true });
        expect(size(go.shape)).toBe(size(other!.shape));
        expectClose(await gx.read(), bc.tensor(`${c.name}.grad_x_f64`).data, { scaleTol: 1e-5, label: `${c.name} grad_x` });
        expectClose(await go.read(), bc.tensor(`${c.name}.grad_o_f64`).data, { scaleTol: 1e-5, label: `${c.name} grad_o` });
        for (const t of new Set([tx!, to!, tdy!, y, gx, prod, go])) t.dispose();
      }

      // mean_tokens = x[:, 1:].mean(1): slice then mean; backward spreads dY / (L-1) and pads token 0 with zeros.
      const mt = gradFixture('mean_tokens');
      for (const c of mt.cases) {
        const [x, dY] = ['x', 'dY'].map((n) => mt.tensor(`${c.name}.${n}`));
        const [B, L, D] = x!.shape as [number, number, number];
        const tx = Tensor.from(gpu, x!.data, x!.shape);
        const patches = await kernels.slice(gpu, tx, [0, 1]);
        const y = await kernels.mean(gpu, patches, [1]);
        expectClose(await y.read(), mt.tensor(`${c.name}.Y_f64`).data, { scaleTol: 1e-5, label: `${c.name} Y` });
        const tdy = Tensor.from(gpu, dY!.data, [B, 1, D]);
        const spread = (await kernels.runKernel(gpu, kernels.stridedCopyKernel, [tdy], expandView([B, 1, D], [B, L - 1, D])))[0]!;
        const scaled = await kernels.scale(gpu, spread, 1 / (L - 1));
        const dx = await kernels.pad(gpu, scaled, sliceBackwardOptions(x!.shape, [0, 1]));
        expect(dx.shape).toEqual([B, L, D]);
        expectClose(await dx.read(), mt.tensor(`${c.name}.grad_x_f64`).data, { scaleTol: 1e-5, label: `${c.name} grad_x` });
        for (const t of [tx, patches, y, tdy, spread, scaled, dx]) t.dispose();
      }
    });

    it('rejects bad arguments before dispatching', async () => {
      const gpu = await getGpu();
      const x = Tensor.from(gpu, new Float32Array(6), [2, 3]);
      const xi = Tensor.from(gpu, new Int32Array(6), [6], 'i32');
      const before = gpu.stats();
      await expect(kernels.sum(gpu, x, [2])).rejects.toThrow(/reduce.sum: axis 2 is out of range for rank 2/);
      await expect(kernels.mean(gpu, x, [-3])).rejects.toThrow(/reduce.mean: axis -3 is out of range for rank 2/);
      await expect(kernels.sum(gpu, x, [1, -1])).rejects.toThrow(/reduce.sum: axes \[1, -1\] repeat an axis/);
      await expect(kernels.sum(gpu, x, [0.5])).rejects.toThrow(/axis 0.5 is out of range/);
      await expect(kernels.sum(gpu, xi, [0])).rejects.toThrow(/reduce.sum: x must be f32 or f16, got i32/);
      const info = { shape: x.shape, dtype: x.dtype };
      expect(() => reduceKernel.outputs([info], { op: 'max' as 'sum', axes: [0] })).toThrow(/reduce: op must be 'sum' or 'mean', got "max"/);
      expect(() => reduceKernel.outputs([info, info], { op: 'sum', axes: [0] })).toThrow(/reduce: expected inputs \[x\], got 2 inputs/);
      expect(() => broadcastAxes([3, 2], [2, 3])).toThrow(/reduce: shape \[3, 2\] does not broadcast to \[2, 3\]/);
      expect(gpu.stats()).toEqual(before);
      for (const t of [x, xi]) t.dispose();
    });
  });

  describe('pad and expand (slice and sum backward, via the copy kernel)', () => {
    it('pad matches the reference; expandView broadcasts; sliceBackwardOptions normalises like slice', async () => {
      const gpu = await getGpu();
      const data = randomArray(2 * 3 * 4, 9);
      const x = Tensor.from(gpu, data, [2, 3, 4]);
      for (const o of [{ shape: [2, 3, 4], starts: [0, 0, 0] }, { shape: [3, 7, 5], starts: [1, 2, 1] }, sliceBackwardOptions([5, 3, 9], [-3, 0, 4], [-1, undefined, 8])]) {
        const y = await kernels.pad(gpu, x, o);
        expect(y.shape).toEqual(o.shape);
        expect(Array.from(await y.read())).toEqual(padReference(await x.read(), [2, 3, 4], o));
        y.dispose();
      }
      expect(sliceBackwardOptions([5, 3, 9], [-3, 0, 4], [-1, undefined, 8])).toEqual({ shape: [5, 3, 9], starts: [2, 0, 4] });
      const b = Tensor.from(gpu, [1, 2, 3], [3, 1]);
      const e = await kernels.runKernel(gpu, kernels.stridedCopyKernel, [b], expandView([3, 1], [2, 3, 2]));
      expect(Array.from(await e[0]!.read())).toEqual([1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3]);
      await expect(kernels.pad(gpu, x, { shape: [2, 3, 4], starts: [0, 1, 0] })).rejects.toThrow(/pad: x of shape \[2, 3, 4\] placed at \[0, 1, 0\] does not fit in \[2, 3, 4\]/);
      await expect(kernels.pad(gpu, x, { shape: [2, 3], starts: [0, 0] })).rejects.toThrow(/pad: shape \[2, 3\] and starts \[0, 0\] must have x's rank 3/);
      expect(() => expandView([3, 2], [3, 3])).toThrow(/expand: shape \[3, 2\] does not broadcast to \[3, 3\]/);
      for (const t of [x, b, e[0]!]) t.dispose();
    });
  });
});
