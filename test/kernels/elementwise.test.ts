import { describe, expect, it } from 'vitest';
import { GpuError, Tensor, kernels } from '../../src/index.js';
import { forEachProfile, requireF16, useGpu } from '../util/gpu.js';
import { firstDifference, runEagerAndGraph } from '../util/chunks.js';
import { gradFixture } from '../util/grad.js';
import { expectClose } from '../util/check.js';
import { randomArray } from '../util/random.js';
import { elementwiseReference, erfReference, type ElementwiseOptions } from '../../src/kernels/elementwise.js';

// Counts that are and are not multiples of 4 (vec4 path or not), l2norm rows of 4k and not, few rows
// (a workgroup per row on CPU adapters) and many (an invocation per row), and a vec4 count that
// leaves the last invocation partly empty (3 x 1364 = 1023 vec4s).
const SHAPES = [[1], [7], [3, 5], [2, 13, 31], [4, 1025], [300, 77], [3, 1364], [260, 36], [5, 8]];
const UNARY: ElementwiseOptions[] = [{ op: 'gelu' }, { op: 'quick_gelu' }, { op: 'scale', scalar: -0.37 }, { op: 'l2norm' }, { op: 'l2norm', eps: 0.5 }];

forEachProfile((profile, getGpu) => {
  /** A 4 KiB binding limit: a few hundred elements fill one binding. */
  const getSmallGpu = useGpu(profile, { limits: { maxStorageBufferBindingSize: 4096 } });
  describe('elementwise', () => {
    it('erfReference matches known values', () => {
      // Tabulated erf values (Abramowitz & Stegun table 7.1 / high-precision sources).
      expect(erfReference(0)).toBe(0);
      expect(erfReference(0.5)).toBeCloseTo(0.5204998778130465, 14);
      expect(erfReference(1)).toBeCloseTo(0.8427007929497149, 14);
      expect(erfReference(2)).toBeCloseTo(0.9953222650189527, 14);
      expect(erfReference(3)).toBeCloseTo(0.9999779095030014, 14);
      expect(erfReference(-1.5)).toBeCloseTo(-0.9661051464753108, 14);
    });

    for (const options of UNARY) {
      it(`${options.op}${options.eps ? ` eps=${options.eps}` : ''} matches the CPU reference on awkward shapes (f32)`, async () => {
        const gpu = await getGpu();
        for (const [s, shape] of SHAPES.entries()) {
          const n = shape.reduce((a, b) => a * b, 1);
          const data = randomArray(n, 100 + s, 6);
          const x = Tensor.from(gpu, data, shape);
          const y = await kernels.elementwise(gpu, [x], options);
          expect(y.shape).toEqual(shape);
          expectClose(await y.read(), elementwiseReference(data, shape, options), { scaleTol: 1e-5, label: `${options.op} ${shape}` });
          x.dispose();
          y.dispose();
        }
      });
    }

    for (const op of ['add', 'mul'] as const) {
      it(`${op} with same-shape and suffix-broadcast b`, async () => {
        const gpu = await getGpu();
        // Scalar and vec4 paths; b rows of 9 and 7 vec4s that wrap inside an invocation's run of vec4s.
        for (const [shape, bShape] of [[[5, 7], [5, 7]], [[3, 4, 9], [9]], [[3, 4, 9], [4, 9]], [[1001], [1001]], [[64, 36], [36]], [[5, 7, 28], [7, 28]], [[300, 40], [300, 40]]]) {
          const a = randomArray(shape!.reduce((p, q) => p * q, 1), 1, 3);
          const b = randomArray(bShape!.reduce((p, q) => p * q, 1), 2, 3);
          const ta = Tensor.from(gpu, a, shape!);
          const tb = Tensor.from(gpu, b, bShape!);
          const y = await (op === 'add' ? kernels.add(gpu, ta, tb) : kernels.mul(gpu, ta, tb));
          expectClose(await y.read(), elementwiseReference(a, shape!, { op }, b), { scaleTol: 1e-6 });
          for (const t of [ta, tb, y]) t.dispose();
        }
      });
    }

    // [x, b] shapes that need the general path: the class-token product [B,N,D]x[B,1,D], x broadcast
    // too, outer products, size-1 dims everywhere, rank 6 and 8, primes.
    const BROADCASTS: [number[], number[]][] = [
      [[2, 16, 64], [2, 1, 64]],
      [[3, 1, 5], [1, 7, 1]],
      [[7], [3, 1]],
      [[1, 13], [11, 1]],
      [[4, 1, 3], [5, 3]],
      [[2, 3, 1, 5, 1, 3], [3, 4, 1, 2, 1]],
      [[2, 1, 2, 1, 3, 1, 2, 1], [1, 3, 1, 2, 1, 3, 1, 5]],
      [[1], [37]],
      // Output rows of 4k (vec4 path): b or x broadcast along the last dimension (one element splat
      // over the vec4), in the middle, on both sides, rows that end inside an invocation's run.
      [[4, 8], [4, 1]],
      [[4, 1], [4, 12]],
      [[2, 5, 12], [2, 1, 12]],
      [[8, 1, 4], [1, 6, 4]],
      [[3, 40, 24], [3, 1, 1]],
    ];
    for (const op of ['add', 'mul'] as const) {
      it(`${op} broadcasts numpy-style in both directions`, async () => {
        const gpu = await getGpu();
        for (const [k, [xShape, bShape]] of BROADCASTS.entries()) {
          const a = randomArray(xShape.reduce((p, q) => p * q, 1), 10 + k, 3);
          const b = randomArray(bShape.reduce((p, q) => p * q, 1), 20 + k, 3);
          const ta = Tensor.from(gpu, a, xShape);
          const tb = Tensor.from(gpu, b, bShape);
          const y = await (op === 'add' ? kernels.add(gpu, ta, tb) : kernels.mul(gpu, ta, tb));
          const ref = elementwiseReference(a, xShape, { op }, b, bShape);
          expect(y.size).toBe(ref.length);
          expectClose(await y.read(), ref, { scaleTol: 1e-6, label: `${op} ${xShape} by ${bShape}` });
          for (const t of [ta, tb, y]) t.dispose();
        }
      });
    }

    it('takes the vec4 path when every count allows it, the scalar one otherwise', async () => {
      const gpu = await getGpu();
      const entry = (shapes: number[][], options: ElementwiseOptions) => {
        const inputs = shapes.map((shape) => ({ shape, dtype: 'f32' as const }));
        return kernels.elementwiseKernel.plan(gpu, inputs, kernels.elementwiseKernel.outputs(inputs, options), options).dispatches[0]!.program.entryPoint;
      };
      expect(entry([[4, 1025]], { op: 'gelu' })).toBe('main_vec4');
      expect(entry([[3, 5]], { op: 'gelu' })).toBe('main');
      expect(entry([[64, 36], [36]], { op: 'add' })).toBe('main_vec4');
      expect(entry([[3, 4, 9], [4, 9]], { op: 'add' })).toBe('main_vec4');
      expect(entry([[3, 4, 9], [9]], { op: 'add' })).toBe('main'); // b's row is not whole vec4s
      expect(entry([[2, 5, 12], [2, 1, 12]], { op: 'mul' })).toBe('main_vec4');
      expect(entry([[4, 8], [3, 4, 1]], { op: 'mul' })).toBe('main_vec4'); // output [3, 4, 8]
      expect(entry([[4, 6], [3, 4, 1]], { op: 'mul' })).toBe('main'); // output rows of 6
      expect(entry([[4, 8], [3, 1, 1]], { op: 'mul' })).toBe('main'); // b's 3 elements are no whole vec4
      expect(entry([[260, 36]], { op: 'l2norm' })).toBe('l2norm_vec4');
      expect(entry([[300, 77]], { op: 'l2norm' })).toBe('l2norm');
    });

    it('broadcast output shapes follow numpy', async () => {
      const gpu = await getGpu();
      const cases: [number[], number[], number[]][] = [[[2, 16, 64], [2, 1, 64], [2, 16, 64]], [[7], [3, 1], [3, 7]], [[4, 1, 3], [5, 3], [4, 5, 3]], [[3], [1, 1, 3], [1, 1, 3]]];
      for (const [xs, bs, out] of cases) {
        const ta = Tensor.from(gpu, new Float32Array(xs.reduce((p, q) => p * q, 1)), xs);
        const tb = Tensor.from(gpu, new Float32Array(bs.reduce((p, q) => p * q, 1)), bs);
        const y = await kernels.add(gpu, ta, tb);
        expect(y.shape).toEqual(out);
        for (const t of [ta, tb, y]) t.dispose();
      }
    });

    it('casts f32 to f16 (round to nearest even, overflow to infinity) and back', async (ctx) => {
      const gpu = await getGpu();
      requireF16(ctx, gpu);
      // 108 values: the vec4 path (vec4<f32> in, vec4<f16> out).
      const data = [0, -0.1, 1 / 3, 65504, 65520, -1e6, 6e-8, 1e-9, ...randomArray(100, 5, 100)];
      const x = Tensor.from(gpu, data, [data.length]);
      const h = await kernels.cast(gpu, x, 'f16');
      expect(h.dtype).toBe('f16');
      const ref = elementwiseReference(data, [data.length], { op: 'cast', dtype: 'f16' });
      expect(ref[4]).toBe(Infinity);
      expect(Array.from(await h.read())).toEqual(Array.from(ref));
      const back = await kernels.cast(gpu, h, 'f32');
      expect(back.dtype).toBe('f32');
      expect(Array.from(await back.read())).toEqual(Array.from(ref));
      for (const t of [x, h, back]) t.dispose();
    });

    it('gelu on extreme inputs stays finite and exact in the tails', async () => {
      const gpu = await getGpu();
      const data = [-1e4, -20, -8, -5.5, -1e-8, 0, 1e-8, 5.5, 8, 20, 1e4];
      const x = Tensor.from(gpu, data, [data.length]);
      const y = await kernels.gelu(gpu, x);
      expectClose(await y.read(), elementwiseReference(data, [data.length], { op: 'gelu' }), { atol: 1e-6, rtol: 1e-6 });
      x.dispose();
      y.dispose();
    });

    it('f16 storage matches the reference within 1e-2', async (ctx) => {
      const gpu = await getGpu();
      requireF16(ctx, gpu);
      for (const shape of [[3, 333], [3, 332]]) {
        const data = randomArray(shape[0]! * shape[1]!, 9, 4);
        for (const options of UNARY) {
          const x = Tensor.from(gpu, data, shape, 'f16');
          const xs = await x.read();
          const y = await kernels.elementwise(gpu, [x], options);
          expect(y.dtype).toBe('f16');
          expectClose(await y.read(), elementwiseReference(xs, shape, options), { scaleTol: 1e-2 });
          x.dispose();
          y.dispose();
        }
      }
      // Binary vec4 paths in f16: suffix and broadcast.
      const pairs: [number[], number[]][] = [[[6, 20], [20]], [[2, 5, 12], [2, 1, 12]]];
      for (const [xShape, bShape] of pairs) {
        const x = Tensor.from(gpu, randomArray(xShape.reduce((p, q) => p * q, 1), 30, 2), xShape, 'f16');
        const b = Tensor.from(gpu, randomArray(bShape.reduce((p, q) => p * q, 1), 31, 2), bShape, 'f16');
        const y = await kernels.mul(gpu, x, b);
        expectClose(await y.read(), elementwiseReference(await x.read(), xShape, { op: 'mul' }, await b.read(), bShape), { scaleTol: 1e-2 });
        for (const t of [x, b, y]) t.dispose();
      }
    });

    it('splits rows, elements or first-dimension slices under the binding limit, eager and in a graph', async () => {
      const gpu = await getGpu();
      const small = await getSmallGpu();
      const cases: { options: ElementwiseOptions; shapes: number[][]; chunks: number }[] = [
        { options: { op: 'add' }, shapes: [[200, 12], [12]], chunks: 3 }, // rows of a repeated bias, bound whole
        { options: { op: 'mul' }, shapes: [[3000], [3000]], chunks: 3 }, // vec4 runs of both inputs
        { options: { op: 'add' }, shapes: [[40, 1, 12], [7, 12]], chunks: 4 }, // broadcast: b bound whole
        { options: { op: 'mul' }, shapes: [[30, 7, 1], [30, 1, 5]], chunks: 2 }, // broadcast: both split
        { options: { op: 'cast', dtype: 'f16' }, shapes: [[1001, 3]], chunks: 3 }, // 4- and 2-byte elements
        { options: { op: 'gelu' }, shapes: [[5001]], chunks: 5 }, // scalar path
        { options: { op: 'l2norm' }, shapes: [[300, 10]], chunks: 3 },
        { options: { op: 'l2norm_grad' }, shapes: [[300, 12], [300, 12]], chunks: 4 },
      ];
      for (const [i, c] of cases.entries()) {
        const data = c.shapes.map((shape, j) => randomArray(shape.reduce((a, d) => a * d, 1), 900 + 2 * i + j));
        const whole = c.shapes.map((shape, j) => Tensor.from(gpu, data[j]!, shape));
        const [unsplit] = await kernels.runKernel(gpu, kernels.elementwiseKernel, whole, c.options);
        const want = await unsplit!.read();
        const inputs = c.shapes.map((shape, j) => Tensor.from(small, data[j]!, shape));
        const { eager, graph, dispatches } = await runEagerAndGraph(small, kernels.elementwiseKernel, inputs, c.options);
        const label = `${c.options.op} ${c.shapes.map((sh) => `[${sh}]`).join(' ')}`;
        expect(dispatches, label).toBe(c.chunks);
        expect(firstDifference(eager[0]!, want), `eager ${label}`).toBe(-1);
        expect(firstDifference(graph[0]!, want), `graph ${label}`).toBe(-1);
        for (const t of [...whole, unsplit!, ...inputs]) t.dispose();
      }
    });

    it('rejects bad input before dispatching', async () => {
      const gpu = await getGpu();
      const a = Tensor.from(gpu, new Float32Array(12), [3, 4]);
      const b = Tensor.from(gpu, new Float32Array(3), [3]);
      const i = Tensor.from(gpu, [1, 2], [2], 'i32');
      const deep = Tensor.from(gpu, new Float32Array(1), [1, 1, 1, 1, 1, 1, 1, 1, 1]);
      const before = gpu.stats();
      await expect(kernels.add(gpu, a, b)).rejects.toThrow(/elementwise.add: b of shape \[3\] does not broadcast with x's shape \[3, 4\]/);
      await expect(kernels.mul(gpu, a, deep)).rejects.toThrow(/elementwise.mul: broadcast rank 9 exceeds 8/);
      await expect(kernels.elementwise(gpu, [a], { op: 'cast', dtype: 'i32' })).rejects.toThrow(/elementwise.cast: dtype must be f32 or f16, got "i32"/);
      await expect(kernels.gelu(gpu, i)).rejects.toThrow(/elementwise.gelu: x must be f32 or f16, got i32/);
      await expect(kernels.elementwise(gpu, [a], { op: 'nope' as never })).rejects.toThrow(/unknown op "nope"/);
      await expect(kernels.scale(gpu, a, NaN)).rejects.toThrow(GpuError);
      expect(gpu.stats()).toEqual(before);
      const disposed = Tensor.from(gpu, [1], [1]);
      disposed.dispose();
      await expect(kernels.gelu(gpu, disposed)).rejects.toThrow(/disposed/);
      for (const t of [a, b, i, deep]) t.dispose();
    });
  });
});

// Backward ops: inputs [x, dy], output dx. l2norm_grad is row-wise, so it runs under both kernel
// profiles (an invocation per row on 'cpu', a workgroup per row on 'gpu').
forEachProfile((_profile, getProfileGpu) => {
  describe('elementwise backward (gelu_grad, quick_gelu_grad, l2norm_grad)', () => {
    const GRADS: ElementwiseOptions[] = [{ op: 'gelu_grad' }, { op: 'quick_gelu_grad' }, { op: 'l2norm_grad' }, { op: 'l2norm_grad', eps: 0 }, { op: 'l2norm_grad', eps: 0.5 }];
    for (const options of GRADS) {
      it(`${options.op}${options.eps !== undefined ? ` eps=${options.eps}` : ''} matches the CPU reference on awkward shapes`, async () => {
        const gpu = await getProfileGpu();
        for (const [s, shape] of [[1], [7], [3, 5], [2, 13, 31], [4, 1025], [300, 77], [5, 8]].entries()) {
          const n = shape.reduce((a, b) => a * b, 1);
          const data = randomArray(n, 200 + s, 6);
          const dy = randomArray(n, 300 + s, 2);
          const [x, g] = [Tensor.from(gpu, data, shape), Tensor.from(gpu, dy, shape)];
          const dx = await kernels.elementwise(gpu, [x, g], options);
          expect(dx.shape).toEqual(shape);
          const ref = elementwiseReference(data, shape, options, dy);
          // l2norm_grad's two terms cancel (to dy·eps/(n+eps)² for a row of one): errors scale with
          // the terms, |dy| / ||x||, not with the result.
          const row = shape[shape.length - 1]!;
          let terms = 0;
          for (let r = 0; r < n; r += row) terms = Math.max(terms, Math.max(...dy.subarray(r, r + row).map(Math.abs)) / Math.hypot(...data.subarray(r, r + row)));
          const scale = Math.max(...ref.map(Math.abs), options.op === 'l2norm_grad' ? terms : 0);
          expectClose(await dx.read(), ref, { atol: 1e-5 * scale, rtol: 1e-5, label: `${options.op} ${shape}` });
          for (const t of [x, g, dx]) t.dispose();
        }
      });
    }

    it('matches PyTorch autograd: activation and l2norm fixtures (incl. the row of norm ~1e-5)', async () => {
      const gpu = await getProfileGpu();
      const act = gradFixture('activation');
      const l2 = gradFixture('l2norm');
      const cases = [
        ...act.cases.map((c) => ({ fx: act, c, forward: { op: c.params.act } as ElementwiseOptions, backward: { op: `${c.params.act}_grad` } as ElementwiseOptions })),
        ...l2.cases.map((c) => {
          const eps = c.params.variant === 'eps' ? 1e-6 : 0;
          return { fx: l2, c, forward: { op: 'l2norm', eps } as ElementwiseOptions, backward: { op: 'l2norm_grad', eps } as ElementwiseOptions };
        }),
      ];
      expect(cases).toHaveLength(6);
      for (const { fx, c, forward, backward } of cases) {
        const [x, dy] = ['x', 'dY'].map((n) => fx.tensor(`${c.name}.${n}`));
        const [tx, tdy] = [x!, dy!].map((t) => Tensor.from(gpu, t.data, t.shape));
        const y = await kernels.elementwise(gpu, [tx!], forward);
        const dx = await kernels.elementwise(gpu, [tx!, tdy!], backward);
        expectClose(await y.read(), fx.tensor(`${c.name}.Y_f64`).data, { scaleTol: 1e-5, label: `${c.name} Y` });
        expectClose(await dx.read(), fx.tensor(`${c.name}.grad_x_f64`).data, { scaleTol: 1e-4, label: `${c.name} grad_x` });
        for (const t of [tx!, tdy!, y, dx]) t.dispose();
      }
    });

    it('eager forms, f16 storage, and bad input', async (ctx) => {
      const gpu = await getProfileGpu();
      const x = Tensor.from(gpu, [0.5, -1, 2, 0, 0, 0], [2, 3]);
      const dy = Tensor.from(gpu, [1, 2, 3, 4, 5, 6], [2, 3]);
      const outs = [await kernels.geluBackward(gpu, x, dy), await kernels.quickGeluBackward(gpu, x, dy), await kernels.l2NormalizeBackward(gpu, x, dy, { eps: 1e-6 })];
      const host = [await x.read(), await dy.read()] as const;
      for (const [k, op] of (['gelu_grad', 'quick_gelu_grad', 'l2norm_grad'] as const).entries()) {
        expectClose(await outs[k]!.read(), elementwiseReference(host[0], [2, 3], { op }, host[1]), { scaleTol: 1e-5, label: op });
      }
      // The zero row: dx = dy / eps.
      expectClose((await outs[2]!.read()).subarray(3), [4e6, 5e6, 6e6], { rtol: 1e-6 });
      const wrong = Tensor.from(gpu, [1, 2, 3], [3]);
      await expect(kernels.geluBackward(gpu, x, wrong)).rejects.toThrow(/elementwise.gelu_grad: dy must have x's shape \[2, 3\], got \[3\]/);
      await expect(kernels.elementwise(gpu, [x], { op: 'l2norm_grad' })).rejects.toThrow(/elementwise.l2norm_grad: expected 2 inputs, got 1/);
      for (const t of [x, dy, wrong, ...outs]) t.dispose();
      requireF16(ctx, gpu);
      const xh = Tensor.from(gpu, randomArray(6 * 40, 5, 4), [6, 40], 'f16');
      const dh = Tensor.from(gpu, randomArray(6 * 40, 6, 1), [6, 40], 'f16');
      for (const op of ['gelu_grad', 'quick_gelu_grad', 'l2norm_grad'] as const) {
        const r = await kernels.elementwise(gpu, [xh, dh], { op });
        expect(r.dtype).toBe('f16');
        expectClose(await r.read(), elementwiseReference(await xh.read(), [6, 40], { op }, await dh.read()), { scaleTol: 1e-2, label: `f16 ${op}` });
        r.dispose();
      }
      for (const t of [xh, dh]) t.dispose();
    });
  });
});
