import { describe, expect, it } from 'vitest';
import { GpuError, Tensor, kernels, type DType, type Gpu } from '../../src/index.js';
import { forEachProfile, requireF16, useGpu } from '../util/gpu.js';
import { firstDifference, runEagerAndGraph } from '../util/chunks.js';
import { expectClose } from '../util/check.js';
import { randomArray } from '../util/random.js';
import { matmulReference, type MatmulActivation, type MatmulVariant } from '../../src/kernels/matmul.js';

interface Case {
  aShape: number[];
  N: number;
  /** a is stored [..., K, M] (aShape stays the logical [..., M, K]). */
  transposeA?: boolean;
  transposeB?: boolean;
  bias?: boolean;
  activation?: MatmulActivation;
  residual?: boolean;
  /** b has a's batch dimensions: one matrix per batch. */
  batchedB?: boolean;
}

/** Runs one case on the GPU and checks it against the float64 reference of the values uploaded. */
async function checkCase(gpu: Gpu, c: Case, variant: MatmulVariant, dtype: DType = 'f32', seed = 1): Promise<void> {
  const K = c.aShape[c.aShape.length - 1]!;
  const M = c.aShape.slice(0, -1).reduce((x, y) => x * y, 1);
  const outShape = [...c.aShape.slice(0, -1), c.N];
  const batchDims = c.batchedB ? c.aShape.slice(0, -2) : [];
  const batch = batchDims.reduce((x, y) => x * y, 1);
  const aStored = c.transposeA ? [...c.aShape.slice(0, -2), K, c.aShape[c.aShape.length - 2]!] : c.aShape;
  const a = Tensor.from(gpu, randomArray(M * K, seed), aStored, dtype);
  const b = Tensor.from(gpu, randomArray(batch * K * c.N, seed + 1), [...batchDims, ...(c.transposeB ? [c.N, K] : [K, c.N])], dtype);
  const bias = c.bias ? Tensor.from(gpu, randomArray(c.N, seed + 2), [c.N], dtype) : undefined;
  const residual = c.residual ? Tensor.from(gpu, randomArray(M * c.N, seed + 3, 2), outShape, dtype) : undefined;
  const out = await kernels.matmul(gpu, a, b, { transposeA: c.transposeA, transposeB: c.transposeB, bias, activation: c.activation, residual, variant });
  expect(out.shape).toEqual(outShape);
  expect(out.dtype).toBe(dtype);
  // The reference sees the uploaded values (rounded to f16 where the storage is f16).
  const ref = matmulReference(await a.read(), await b.read(), M, c.N, K, {
    transposeA: c.transposeA,
    transposeB: c.transposeB,
    batch: c.batchedB ? batch : undefined,
    bias: bias && (await bias.read()),
    activation: c.activation,
    residual: residual && (await residual.read()),
  });
  const scaleTol = dtype === 'f16' ? 1e-2 : K > 1024 ? 1e-4 : 1e-5;
  const label = `${variant} ${dtype} a${JSON.stringify(c.aShape)} N=${c.N}${c.batchedB ? ' batched b' : ''}${c.transposeA ? ' transposeA' : ''}${c.transposeB ? ' transposeB' : ''}${c.bias ? ' +bias' : ''} ${c.activation ?? ''}${c.residual ? ' +residual' : ''}`;
  expectClose(await out.read(), ref, { scaleTol, label });
  for (const t of [a, b, bias, residual, out]) t?.dispose();
}

// Awkward shapes: 1x1x1, primes, tails of the 8-row / 4-column blocks and of the tiles, K not a
// multiple of 4 (scalar path), N not a multiple of 4 with K a multiple (vec4 path for transposeB
// only), batch dimensions, a CLIP-like 50x768 by 64, K > 1024, and M split into equal row blocks
// whose last group of 8 is partial (register_subgroup: 33 = 2 x 17, 71 in 3 blocks of 24).
const SHAPES: Array<[number[], number]> = [
  [[1, 1], 1],
  [[13, 19], 17],
  [[9, 12], 13],
  [[17, 16], 20],
  [[5, 7], 8],
  [[2, 3, 5, 12], 8],
  [[50, 768], 64],
  [[3, 1100], 5],
  [[33, 4], 8],
  [[71, 8], 12],
];

const BATCHED_SHAPES: Array<[number[], number]> = [
  [[1, 13, 19], 17],
  [[3, 13, 19], 17],
  [[4, 9, 12], 8],
  [[5, 17, 16], 20],
  [[2, 3, 50, 64], 50],
  [[2, 3, 1, 5], 1],
];

const ACTIVATIONS: MatmulActivation[] = ['none', 'gelu', 'quick_gelu'];
const VARIANTS: MatmulVariant[] = ['register', 'tiled'];

forEachProfile((profile, getGpu) => {
  /** A 4 KiB binding limit: a few dozen rows fill one binding. */
  const getSmallGpu = useGpu(profile, { limits: { maxStorageBufferBindingSize: 4096 } });
  describe('matmul', () => {
    for (const variant of VARIANTS) {
      for (const transposeB of [false, true]) {
        it(`${variant}${transposeB ? ' transposeB' : ''} matches the reference on awkward shapes (f32)`, async () => {
          const gpu = await getGpu();
          for (const [s, [aShape, N]] of SHAPES.entries()) await checkCase(gpu, { aShape, N, transposeB }, variant, 'f32', 10 * s);
        });
      }

      it(`${variant}: every epilogue (bias, activation, residual)`, async () => {
        const gpu = await getGpu();
        let i = 0;
        for (const bias of [false, true]) {
          for (const residual of [false, true]) {
            for (const activation of ACTIVATIONS) {
              // Alternate layouts and shapes so both the vec4 and the scalar paths see each epilogue.
              const transposeB = i % 2 === 1;
              const aShape = i % 3 === 0 ? [2, 7, 13] : [11, 24];
              await checkCase(gpu, { aShape, N: i % 4 < 2 ? 12 : 10, transposeB, bias, activation, residual }, variant, 'f32', 100 + i++);
            }
          }
        }
      });

      it(`${variant}: batched b (one matrix per batch of a), both layouts, awkward shapes`, async () => {
        const gpu = await getGpu();
        let i = 0;
        for (const transposeB of [false, true]) {
          // One batch; primes (scalar path); vec4 path; a row-block tail per batch (M = 9 with 8-row
          // blocks); attention-like [B, H, L, Dh] products; two batch dimensions.
          for (const [aShape, N] of BATCHED_SHAPES) await checkCase(gpu, { aShape, N, transposeB, batchedB: true }, variant, 'f32', 500 + i++);
        }
        await checkCase(gpu, { aShape: [3, 9, 12], N: 8, batchedB: true, bias: true, activation: 'gelu', residual: true }, variant, 'f32', 520);
        await checkCase(gpu, { aShape: [2, 5, 7], N: 6, transposeB: true, batchedB: true, bias: true, residual: true }, variant, 'f32', 521);
      });

      it(`${variant}: transposeA (aᵀ·b), shared and batched b, both b layouts, every epilogue`, async () => {
        const gpu = await getGpu();
        let i = 0;
        for (const transposeB of [false, true]) {
          for (const [aShape, N] of SHAPES.filter(([s]) => s.length === 2)) await checkCase(gpu, { aShape, N, transposeA: true, transposeB }, variant, 'f32', 600 + i++);
          for (const [aShape, N] of BATCHED_SHAPES) await checkCase(gpu, { aShape, N, transposeA: true, transposeB, batchedB: true }, variant, 'f32', 600 + i++);
        }
        await checkCase(gpu, { aShape: [24, 13], N: 12, transposeA: true, bias: true, activation: 'gelu', residual: true }, variant, 'f32', 650);
        await checkCase(gpu, { aShape: [3, 9, 12], N: 8, transposeA: true, transposeB: true, batchedB: true, bias: true, activation: 'quick_gelu', residual: true }, variant, 'f32', 651);
      });

      it(`${variant}: splits rows (shared b) or batches (batched b) under the binding limit, eager and in a graph`, async () => {
        const small = await getSmallGpu();
        // Rows of 80 / 96 bytes: 42 rows a chunk; batches of 432 bytes of a: 9 a chunk.
        await checkCase(small, { aShape: [300, 20], N: 24, bias: true, activation: 'gelu', residual: true }, variant, 'f32', 700);
        await checkCase(small, { aShape: [3, 100, 20], N: 24, transposeB: true, residual: true }, variant, 'f32', 701);
        await checkCase(small, { aShape: [30, 9, 12], N: 8, batchedB: true, residual: true }, variant, 'f32', 702);
        await checkCase(small, { aShape: [30, 9, 12], N: 8, batchedB: true, transposeA: true, transposeB: true, bias: true }, variant, 'f32', 703);
        // The graph binds the same slices; both equal one unsplit call bit for bit.
        const gpu = await getGpu();
        const [a, b, residual] = [randomArray(300 * 20, 704), randomArray(20 * 24, 705), randomArray(300 * 24, 706)];
        const options = { hasResidual: true, activation: 'quick_gelu' as const, variant };
        const whole = [Tensor.from(gpu, a, [300, 20]), Tensor.from(gpu, b, [20, 24]), Tensor.from(gpu, residual, [300, 24])];
        const [unsplit] = await kernels.runKernel(gpu, kernels.matmulKernel, whole, options);
        const inputs = [Tensor.from(small, a, [300, 20]), Tensor.from(small, b, [20, 24]), Tensor.from(small, residual, [300, 24])];
        const { eager, graph, dispatches } = await runEagerAndGraph(small, kernels.matmulKernel, inputs, options);
        expect(dispatches).toBe(8);
        const want = await unsplit!.read();
        expect(firstDifference(eager[0]!, want), 'eager').toBe(-1);
        expect(firstDifference(graph[0]!, want), 'graph').toBe(-1);
        for (const t of [...whole, unsplit!, ...inputs]) t.dispose();
      });

      it(`${variant}: splits f16 rows of odd byte lengths under the binding limit`, async (ctx) => {
        const small = await getSmallGpu();
        requireF16(ctx, small);
        // Rows of 26 / 34 bytes: chunks start at multiples of 8 rows to stay aligned.
        await checkCase(small, { aShape: [301, 13], N: 17, bias: true, residual: true }, variant, 'f16', 710);
      });

      it(`${variant}: f16 storage matches the reference within 1e-2`, async (ctx) => {
        const gpu = await getGpu();
        requireF16(ctx, gpu);
        await checkCase(gpu, { aShape: [13, 19], N: 17 }, variant, 'f16', 200);
        await checkCase(gpu, { aShape: [2, 9, 64], N: 24, transposeB: true, bias: true, activation: 'gelu', residual: true }, variant, 'f16', 201);
        await checkCase(gpu, { aShape: [50, 128], N: 36, bias: true, activation: 'quick_gelu' }, variant, 'f16', 202);
        await checkCase(gpu, { aShape: [3, 17, 16], N: 17, transposeB: true, batchedB: true }, variant, 'f16', 203);
        await checkCase(gpu, { aShape: [2, 13, 5], N: 7, batchedB: true, residual: true }, variant, 'f16', 204);
        await checkCase(gpu, { aShape: [2, 13, 20], N: 9, transposeA: true, batchedB: true }, variant, 'f16', 205);
      });
    }

    it('K = 0 gives act(bias) + residual; empty M gives an empty output', async () => {
      const gpu = await getGpu();
      await checkCase(gpu, { aShape: [3, 0], N: 5, bias: true, activation: 'gelu', residual: true }, 'register', 'f32', 300);
      const a = Tensor.from(gpu, [], [0, 4]);
      const b = Tensor.from(gpu, randomArray(12, 301), [4, 3]);
      const out = await kernels.matmul(gpu, a, b);
      expect(out.shape).toEqual([0, 3]);
      for (const t of [a, b, out]) t.dispose();
    });

    it('folds row blocks past the per-dimension workgroup limit into z', async () => {
      const gpu = await getGpu();
      const max = gpu.limits.maxComputeWorkgroupsPerDimension ?? 65535;
      const { register, tiled } = kernels.matmulConfig(gpu);
      for (const variant of VARIANTS) {
        // One more row block than the limit; K = N = 1 keeps it cheap.
        const M = max * (variant === 'register' ? register.ROWS : 4 * tiled.WG_Y) + 3;
        const plan = kernels.matmulKernel.plan(gpu, [{ shape: [M, 1], dtype: 'f32' }, { shape: [1, 1], dtype: 'f32' }], [{ shape: [M, 1], dtype: 'f32' }], { variant });
        expect(plan.dispatches[0]!.workgroups[2]).toBe(2);
        await checkCase(gpu, { aShape: [M, 1], N: 1, bias: true }, variant, 'f32', 400);
        // Batched: one block per batch, one batch more than the limit.
        const B = max + 1;
        const info = (shape: number[]) => ({ shape, dtype: 'f32' as const });
        const batchedPlan = kernels.matmulKernel.plan(gpu, [info([B, 1, 1]), info([B, 1, 1])], [info([B, 1, 1])], { variant });
        expect(batchedPlan.dispatches[0]!.workgroups[2]).toBe(2);
        await checkCase(gpu, { aShape: [B, 1, 1], N: 1, batchedB: true, residual: true }, variant, 'f32', 401);
      }
      // Millions of rows (the gpu profile's 64-row tiles double them): about a minute on lavapipe.
    }, 300_000);

    it('gemv (at most 16 rows per product) matches the reference: shared and batched b, both layouts of a and b, epilogues, f16', async (ctx) => {
      const gpu = await getGpu();
      const cases: Case[] = [
        { aShape: [1, 1], N: 1 },
        { aShape: [1, 768], N: 37, transposeB: true, bias: true },
        { aShape: [2, 19], N: 17, bias: true, activation: 'gelu', residual: true },
        { aShape: [3, 40], N: 64, transposeB: true, activation: 'quick_gelu' },
        { aShape: [8, 512], N: 36, transposeB: true, bias: true, residual: true },
        { aShape: [2, 8, 13], N: 9 },
        { aShape: [13, 3], N: 5, transposeA: true, residual: true },
        { aShape: [16, 100], N: 33, transposeB: true },
        { aShape: [4, 5, 12], N: 7, batchedB: true, transposeB: true, bias: true },
        { aShape: [3, 16, 9], N: 6, batchedB: true, transposeA: true },
        { aShape: [2, 1, 70], N: 11, batchedB: true },
      ];
      for (const [i, c] of cases.entries()) await checkCase(gpu, c, 'gemv', 'f32', 600 + i);
      requireF16(ctx, gpu);
      await checkCase(gpu, { aShape: [5, 64], N: 24, transposeB: true, bias: true, activation: 'gelu', residual: true }, 'gemv', 'f16', 620);
      // A dozen pipelines to compile, up to 10 s each on a loaded lavapipe.
    }, 300_000);

    it('chooses the variant by profile and M: register under cpu (rows to the next power of two; with subgroups, M in equal blocks of at most 32); gemv up to 16 rows, then tiled, under gpu', async () => {
      const gpu = await getGpu();
      const info = (shape: number[]) => ({ shape, dtype: 'f32' as const });
      const plan = (M: number, o = {}) => kernels.matmulKernel.plan(gpu, [info([M, 8]), info([8, 8])], [info([M, 8])], o).dispatches[0]!.program;
      const cpu = kernels.isCpuAdapter(gpu);
      const subgroups = kernels.subgroupsUsable(gpu);
      for (const [M, rows, subgroupRows] of [[1, 1, 1], [3, 4, 3], [8, 8, 8], [16, 16, 16], [17, 0, 17], [50, 0, 25], [400, 0, 31], [577, 0, 31]] as const) {
        const program = plan(M);
        if (cpu && subgroups) {
          expect(program.entryPoint).toBe('register_subgroup');
          expect(program.constants!.ROWS).toBe(subgroupRows);
        } else if (cpu) {
          expect(program.entryPoint).toBe('register_vec4');
          expect(program.constants!.ROWS).toBe(Math.min(8, rows || 8));
        } else {
          expect(program.entryPoint).toBe(rows ? 'gemv' : 'tiled');
          if (rows) expect(program.constants!.ROWS).toBe(rows);
        }
        // The cache key names the row specialisation.
        if (program.entryPoint !== 'tiled') expect(program.key).toBe(`f32|rows${program.constants!.ROWS}`);
      }
      expect(() => plan(17, { variant: 'gemv' })).toThrow(/matmul: variant 'gemv' takes at most 16 rows per product, got M = 17/);
      expect(plan(1, { variant: 'tiled' }).entryPoint).toBe('tiled');
      expect(kernels.matmulKernel.plan(gpu, [info([8, 8]), info([8, 8])], [info([8, 8])], {}).flops).toBe(2 * 8 * 8 * 8);
      const batched = kernels.matmulKernel.plan(gpu, [info([2, 3, 5, 7]), info([2, 3, 11, 7])], [info([2, 3, 5, 11])], { transposeB: true });
      expect(batched.flops).toBe(2 * 6 * 5 * 11 * 7);
      expect(batched.bytes).toBe(4 * 6 * (5 * 7 + 11 * 7 + 5 * 11));
    });

    it('rejects bad input before dispatching', async () => {
      const gpu = await getGpu();
      const a = Tensor.from(gpu, new Float32Array(2 * 3 * 4), [2, 3, 4]);
      const b = Tensor.from(gpu, new Float32Array(4 * 5), [4, 5]);
      const b3 = Tensor.from(gpu, new Float32Array(4 * 5), [1, 4, 5]);
      const a1 = Tensor.from(gpu, new Float32Array(4), [4]);
      const a2 = Tensor.from(gpu, new Float32Array(12), [3, 4]);
      const bBatched = Tensor.from(gpu, new Float32Array(2 * 4 * 5), [2, 4, 5]);
      const bBadK = Tensor.from(gpu, new Float32Array(2 * 5 * 5), [2, 5, 5]);
      const b4d = Tensor.from(gpu, new Float32Array(2 * 4 * 5), [1, 2, 4, 5]);
      const bias4 = Tensor.from(gpu, new Float32Array(4), [4]);
      const res = Tensor.from(gpu, new Float32Array(3 * 5), [3, 5]);
      const h = Tensor.from(gpu, new Float32Array(20), [4, 5], 'f16');
      const i = Tensor.from(gpu, new Int32Array(12), [3, 4], 'i32');
      const before = gpu.stats();
      const shared = '\\[K=4, N\\] or \\[2, K=4, N\\]';
      await expect(kernels.matmul(gpu, a, bias4)).rejects.toThrow(new RegExp(`^matmul: b must be ${shared} to match a of shape \\[2, 3, 4\\], got \\[4\\]$`));
      // Batch dimensions that differ from a's, or a rank that is neither 2 nor a's.
      await expect(kernels.matmul(gpu, a, b3)).rejects.toThrow(new RegExp(`^matmul: b must be ${shared} to match a of shape \\[2, 3, 4\\], got \\[1, 4, 5\\]$`));
      await expect(kernels.matmul(gpu, a, b4d)).rejects.toThrow(new RegExp(`^matmul: b must be ${shared} to match a of shape \\[2, 3, 4\\], got \\[1, 2, 4, 5\\]$`));
      await expect(kernels.matmul(gpu, a2, bBatched)).rejects.toThrow(/^matmul: b must be \[K=4, N\] to match a of shape \[3, 4\], got \[2, 4, 5\]$/);
      await expect(kernels.matmul(gpu, a, res)).rejects.toThrow(new RegExp(`^matmul: b of shape \\[3, 5\\] must be ${shared} to match a of shape \\[2, 3, 4\\]$`));
      await expect(kernels.matmul(gpu, a, bBadK)).rejects.toThrow(new RegExp(`^matmul: b of shape \\[2, 5, 5\\] must be ${shared} to match a of shape \\[2, 3, 4\\]$`));
      await expect(kernels.matmul(gpu, a, b, { transposeB: true })).rejects.toThrow(
        /^matmul: b of shape \[4, 5\] must be \[N, K=4\] or \[2, N, K=4\] \(transposeB\) to match a of shape \[2, 3, 4\]$/,
      );
      await expect(kernels.matmul(gpu, a, bBatched, { transposeB: true })).rejects.toThrow(
        /^matmul: b of shape \[2, 4, 5\] must be \[N, K=4\] or \[2, N, K=4\] \(transposeB\) to match a of shape \[2, 3, 4\]$/,
      );
      await expect(kernels.matmul(gpu, a, bBatched, { residual: res })).rejects.toThrow(
        /^matmul: residual of shape \[3, 5\] must equal the output shape \[2, 3, 5\]$/,
      );
      await expect(kernels.matmul(gpu, a, b, { transposeA: true })).rejects.toThrow(
        /^matmul: b must be \[2, K=3, N\] to match a of shape \[2, 3, 4\] \(transposeA\), got \[4, 5\]$/,
      );
      await expect(kernels.matmul(gpu, a1, b)).rejects.toThrow(/^matmul: a must be \[\.\.\., M, K\], got \[4\]$/);
      await expect(kernels.matmul(gpu, a, h)).rejects.toThrow(/^matmul: b must be f32 like a, got f16$/);
      await expect(kernels.matmul(gpu, i, b)).rejects.toThrow(/^matmul: a must be f32 or f16, got i32$/);
      await expect(kernels.matmul(gpu, a, b, { bias: bias4 })).rejects.toThrow(/^matmul: bias of shape \[4\] must be \[N\] = \[5\]$/);
      await expect(kernels.matmul(gpu, a, b, { bias: h })).rejects.toThrow(/^matmul: bias must be f32 like a, got f16$/);
      await expect(kernels.matmul(gpu, a, b, { residual: res })).rejects.toThrow(
        /^matmul: residual of shape \[3, 5\] must equal the output shape \[2, 3, 5\]$/,
      );
      await expect(kernels.matmul(gpu, a, b, { activation: 'relu' as never })).rejects.toThrow(/^matmul: unknown activation "relu"/);
      await expect(kernels.matmul(gpu, a, b, { activation: 'toString' as never })).rejects.toThrow(/^matmul: unknown activation "toString"/);
      await expect(kernels.matmul(gpu, a, b, { variant: 'fast' as never })).rejects.toThrow(/^matmul: unknown variant "fast"/);
      await expect(kernels.matmul(gpu, a, b, { bias: b })).rejects.toThrow(GpuError);
      expect(() => kernels.matmulKernel.outputs([{ shape: [2, 4], dtype: 'f32' }, { shape: [4, 5], dtype: 'f32' }], { hasBias: true })).toThrow(
        /^matmul: expected 3 inputs \[a, b, bias\], got 2$/,
      );
      expect(gpu.stats()).toEqual(before);
      for (const t of [a, b, b3, a1, a2, bBatched, bBadK, b4d, bias4, res, h, i]) t.dispose();
    });
  });
});
