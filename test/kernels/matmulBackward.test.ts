import { describe, expect, it } from 'vitest';
import { Tensor, kernels, type Gpu } from '../../src/index.js';
import { forEachProfile, requireF16, useGpu } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { randomArray } from '../util/random.js';
import { gradFixture } from '../util/grad.js';
import { runEagerAndGraph } from '../util/chunks.js';
import { matmulBackwardReference, type MatmulGradients } from '../../src/kernels/matmulBackward.js';
import type { MatmulActivation } from '../../src/kernels/matmul.js';

interface Case {
  aShape: number[];
  N: number;
  transposeB?: boolean;
  batchedB?: boolean;
  bias?: boolean;
  activation?: MatmulActivation;
  wrt?: MatmulGradients;
}

async function checkCase(gpu: Gpu, c: Case, seed: number): Promise<void> {
  const K = c.aShape[c.aShape.length - 1]!;
  const M = c.aShape.slice(0, -1).reduce((x, y) => x * y, 1);
  const batchDims = c.batchedB ? c.aShape.slice(0, -2) : [];
  const batch = batchDims.reduce((x, y) => x * y, 1);
  const a = Tensor.from(gpu, randomArray(M * K, seed), c.aShape);
  const b = Tensor.from(gpu, randomArray(batch * K * c.N, seed + 1), [...batchDims, ...(c.transposeB ? [c.N, K] : [K, c.N])]);
  const bias = c.bias ? Tensor.from(gpu, randomArray(c.N, seed + 2), [c.N]) : undefined;
  const dOut = Tensor.from(gpu, randomArray(M * c.N, seed + 3), [...c.aShape.slice(0, -1), c.N]);
  const got = await kernels.matmulBackward(gpu, dOut, a, b, { transposeB: c.transposeB, bias, activation: c.activation, wrt: c.wrt });
  const ref = matmulBackwardReference(await dOut.read(), await a.read(), await b.read(), M, c.N, K, {
    transposeB: c.transposeB,
    batch: c.batchedB ? batch : undefined,
    bias: bias && (await bias.read()),
    activation: c.activation,
  });
  const label = `a${JSON.stringify(c.aShape)} N=${c.N}${c.batchedB ? ' batched b' : ''}${c.transposeB ? ' transposeB' : ''}${c.bias ? ' +bias' : ''} ${c.activation ?? ''}`;
  const all = c.wrt === undefined;
  for (const [name, t, r, shape] of [
    ['da', got.da, ref.da, a.shape, all || c.wrt?.a],
    ['db', got.db, ref.db, b.shape, all || c.wrt?.b],
    ['dbias', got.dbias, ref.dbias, [c.N], (all || c.wrt?.bias) && c.bias],
  ].filter((e) => e[4]) as Array<[string, Tensor, Float64Array, number[]]>) {
    expect(t, `${label} ${name}`).toBeDefined();
    expect(t.shape, `${label} ${name}`).toEqual(shape);
    expectClose(await t.read(), r, { scaleTol: 1e-5, label: `${label} ${name}` });
  }
  const returned = [got.da, got.db, got.dbias].filter((t) => t !== undefined);
  expect(returned.length).toBe((all || c.wrt?.a ? 1 : 0) + (all || c.wrt?.b ? 1 : 0) + ((all || c.wrt?.bias) && c.bias ? 1 : 0));
  for (const t of [a, b, bias, dOut, ...returned]) t?.dispose();
}

forEachProfile((profile, getGpu) => describe('matmulBackward', () => {
  const getSmallGpu = useGpu(profile, { limits: { maxStorageBufferBindingSize: 4096 } });

  it('matches the reference: shared and batched b, both layouts, every activation, with and without bias', async () => {
    const gpu = await getGpu();
    let i = 0;
    const shapes: Array<[number[], number, boolean]> = [
      [[1, 1], 1, false],
      [[13, 19], 17, false],
      [[2, 7, 12], 8, false],
      [[3, 9, 16], 20, false],
      [[3, 13, 19], 17, true],
      [[2, 3, 5, 12], 8, true],
    ];
    // Activations and bias rotate so each layout sees each of them.
    for (const [aShape, N, batchedB] of shapes) {
      for (const transposeB of [false, true]) {
        const activation = (['none', 'gelu', 'quick_gelu'] as const)[i % 3];
        await checkCase(gpu, { aShape, N, transposeB, batchedB, bias: i % 2 === 0, activation }, 10 * i++);
      }
    }
  });

  it('under the binding limit: da splits by rows like the forward; db and dbias split the rows and add the chunks, eager and in a graph', async () => {
    const [gpu, small] = [await getGpu(), await getSmallGpu()];
    // a [300, 8] and da are 9600 bytes: da's rows split into 3 chunks and more.
    await checkCase(small, { aShape: [300, 8], N: 4, bias: true, activation: 'gelu', wrt: { a: true } }, 950);
    // a [3, 100, 8] (9600 bytes) and dOut [3, 100, 12] (14400 bytes): db and dbias sum 300 rows in
    // 4+ chunks (an odd count too: 5 with N = 20). Compared with the same call on the full limit.
    for (const [c, transposeB, activation, N] of [[0, false, 'none', 12], [1, true, 'gelu', 12], [2, true, 'quick_gelu', 20]] as const) {
      const K = 8;
      const a = Tensor.from(small, randomArray(300 * K, 970 + c), [3, 100, K]);
      const b = Tensor.from(small, randomArray(K * N, 980 + c), transposeB ? [N, K] : [K, N]);
      const bias = Tensor.from(small, randomArray(N, 990 + c), [N]);
      const dOut = Tensor.from(small, randomArray(300 * N, 1000 + c), [3, 100, N]);
      const options = { transposeB, activation, hasBias: true, wrt: { b: true, bias: true } };
      const split = await runEagerAndGraph(small, kernels.matmulBackwardKernel, [dOut, a, b, bias], options);
      const onGpu = await Promise.all([dOut, a, b, bias].map(async (t) => Tensor.from(gpu, await t.read(), t.shape)));
      const whole = await runEagerAndGraph(gpu, kernels.matmulBackwardKernel, onGpu, options);
      expect(split.dispatches, `case ${c}`).toBeGreaterThan(whole.dispatches + 4);
      for (const [i, name] of ['db', 'dbias'].entries()) {
        expectClose(split.eager[i]!, whole.eager[i]!, { scaleTol: 1e-5, label: `case ${c} ${name} eager` });
        expectClose(split.graph[i]!, whole.eager[i]!, { scaleTol: 1e-5, label: `case ${c} ${name} graph` });
      }
      for (const t of [a, b, bias, dOut, ...onGpu]) t.dispose();
    }
  });

  it('under the binding limit, f16: db and dbias split with an odd N (chunk sums kept in f16 between chunks)', async (ctx) => {
    const [gpu, small] = [await getGpu(), await getSmallGpu()];
    requireF16(ctx, small);
    const [K, N] = [8, 13];
    const data = [randomArray(300 * N, 1010), randomArray(300 * K, 1011), randomArray(N * K, 1012), randomArray(N, 1013)];
    const shapes = [[300, N], [300, K], [N, K], [N]];
    const run = (on: Gpu) => runEagerAndGraph(on, kernels.matmulBackwardKernel, data.map((d, i) => Tensor.from(on, d, shapes[i]!, 'f16')), { transposeB: true, activation: 'gelu' as const, hasBias: true, wrt: { b: true, bias: true } });
    const [split, whole] = [await run(small), await run(gpu)];
    expect(split.dispatches, `${whole.dispatches} dispatches unsplit`).toBeGreaterThan(whole.dispatches + 3);
    // Each chunk's sum is rounded to f16 once more than the unsplit call's.
    for (const [i, name] of ['db', 'dbias'].entries()) {
      expectClose(split.eager[i]!, whole.eager[i]!, { scaleTol: 4e-3, label: `f16 ${name} eager` });
      expectClose(split.graph[i]!, whole.eager[i]!, { scaleTol: 4e-3, label: `f16 ${name} graph` });
    }
  });

  it('under the binding limit: a db that does not fit one binding fails before dispatch, saying what to do', async () => {
    const small = await getSmallGpu();
    const [a, b, dOut] = [[30, 40], [40, 40], [30, 40]].map((shape, i) => Tensor.from(small, randomArray(shape[0]! * shape[1]!, 960 + i), shape));
    const before = small.stats();
    await expect(kernels.matmulBackward(small, dOut!, a!, b!, { wrt: { b: true } })).rejects.toThrow(
      /^matmulBackward: db \(f32 \[40, 40\], 6400 bytes\) is bound whole and exceeds the device's maxStorageBufferBindingSize of 4096 bytes: the weight gradient is bound whole .*column blocks of b/,
    );
    expect(small.stats().submits).toBe(before.submits);
    for (const t of [a, b, dOut]) t!.dispose();
  });

  it('computes only the gradients asked for', async () => {
    const gpu = await getGpu();
    await checkCase(gpu, { aShape: [2, 5, 8], N: 12, transposeB: true, bias: true, activation: 'gelu', wrt: { a: true } }, 900);
    await checkCase(gpu, { aShape: [2, 5, 8], N: 12, bias: true, activation: 'quick_gelu', wrt: { b: true, bias: true } }, 901);
    await checkCase(gpu, { aShape: [7, 8], N: 4, bias: true, wrt: { bias: true } }, 902);
    await checkCase(gpu, { aShape: [3, 7, 8], N: 4, batchedB: true, wrt: { b: true } }, 903);
  });

  it('matches PyTorch autograd (float64) on the grad/ linear fixture: act(x Wᵀ + b) + r', async () => {
    const gpu = await getGpu();
    const fx = gradFixture('linear');
    for (const c of fx.cases) {
      const up = (name: string) => Tensor.from(gpu, fx.tensor(`${c.name}.${name}`).data, fx.tensor(`${c.name}.${name}`).shape);
      const [x, W, b, r, dY] = ['x', 'W', 'b', 'r', 'dY'].map(up) as [Tensor, Tensor, Tensor, Tensor, Tensor];
      const activation = c.params.act as MatmulActivation;
      const y = await kernels.matmul(gpu, x, W, { transposeB: true, bias: b, activation, residual: r });
      expectClose(await y.read(), fx.tensor(`${c.name}.Y_f64`).data, { scaleTol: 1e-5, label: `${c.name} Y` });
      const got = await kernels.matmulBackward(gpu, dY, x, W, { transposeB: true, bias: b, activation });
      for (const [name, t] of [['x', got.da], ['W', got.db], ['b', got.dbias]] as const) {
        expectClose(await t!.read(), fx.tensor(`${c.name}.grad_${name}_f64`).data, { scaleTol: 1e-4, label: `${c.name} grad_${name}` });
      }
      // The residual's gradient is the upstream gradient itself.
      expectClose(fx.tensor(`${c.name}.dY`).data, fx.tensor(`${c.name}.grad_r_f64`).data, { scaleTol: 0, label: `${c.name} grad_r` });
      for (const t of [x, W, b, r, dY, y, got.da, got.db, got.dbias]) t?.dispose();
    }
  });

  it('matches PyTorch autograd (float64) on the grad/ bmm fixture', async () => {
    const gpu = await getGpu();
    const fx = gradFixture('bmm');
    for (const c of fx.cases) {
      const up = (name: string) => Tensor.from(gpu, fx.tensor(`${c.name}.${name}`).data, fx.tensor(`${c.name}.${name}`).shape);
      const [a, b, dY] = ['a', 'b', 'dY'].map(up) as [Tensor, Tensor, Tensor];
      const got = await kernels.matmulBackward(gpu, dY, a, b);
      expectClose(await got.da!.read(), fx.tensor(`${c.name}.grad_a_f64`).data, { scaleTol: 1e-4, label: `${c.name} grad_a` });
      expectClose(await got.db!.read(), fx.tensor(`${c.name}.grad_b_f64`).data, { scaleTol: 1e-4, label: `${c.name} grad_b` });
      for (const t of [a, b, dY, got.da, got.db]) t?.dispose();
    }
  });

  it('rejects bad input before dispatching', async () => {
    const gpu = await getGpu();
    const a = Tensor.from(gpu, new Float32Array(2 * 3 * 4), [2, 3, 4]);
    const b = Tensor.from(gpu, new Float32Array(4 * 5), [4, 5]);
    const dOut = Tensor.from(gpu, new Float32Array(2 * 3 * 5), [2, 3, 5]);
    const bad = Tensor.from(gpu, new Float32Array(3 * 5), [3, 5]);
    const before = gpu.stats();
    await expect(kernels.matmulBackward(gpu, bad, a, b)).rejects.toThrow(
      /^matmulBackward: dOut of shape \[3, 5\] must have the forward output's shape \[2, 3, 5\]$/,
    );
    await expect(kernels.matmulBackward(gpu, dOut, a, bad)).rejects.toThrow(/^matmulBackward: b of shape \[3, 5\] must be/);
    await expect(kernels.matmulBackward(gpu, dOut, a, b, { bias: bad })).rejects.toThrow(/^matmulBackward: bias of shape \[3, 5\] must be \[N\] = \[5\]$/);
    expect(() => kernels.matmulBackwardKernel.outputs([dOut, a, b], { wrt: { bias: true } })).toThrow(/^matmulBackward: wrt.bias needs hasBias$/);
    expect(() => kernels.matmulBackwardKernel.outputs([dOut, a], {})).toThrow(/^matmulBackward: expected 3 inputs \[dOut, a, b\], got 2$/);
    expect(gpu.stats()).toEqual(before);
    for (const t of [a, b, dOut, bad]) t.dispose();
  });
}));
