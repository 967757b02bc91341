import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { BYTES_PER_ELEMENT, shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { checkBindable, grid2d, isCpuAdapter, specialize, splitUnits, subgroupsUsable, uniforms, type Kernel, type Program, type SplitTensor, type TensorInfo, type UnitChunk } from './program.js';
import { runKernel } from './runtime.js';
import { geluReference, quickGeluReference } from './elementwise.js';
import activationsWgsl from '../../shaders/activations.wgsl';
import matmulWgsl from '../../shaders/matmul.wgsl';
import matmulSubgroupWgsl from '../../shaders/matmulSubgroup.wgsl';

export type MatmulActivation = 'none' | 'gelu' | 'quick_gelu';
/** 'register': register-blocked, no workgroup memory (CPU adapters); 'tiled': workgroup-memory tiles (GPUs). */
/** 'gemv': at most MATMUL_GEMV_MAX_ROWS rows per product, K split over a workgroup (GPUs). */
export type MatmulVariant = 'register' | 'tiled' | 'gemv';

/** Most rows per product (M) the gemv variant takes; the gpu profile uses it up to there. */
const MATMUL_GEMV_MAX_ROWS = 16;

/** Kernel options: plain data. Inputs are [a, b, bias if hasBias, residual if hasResidual]. */
export interface MatmulOptions {
  /**
   * a is [..., K, M] rather than [..., M, K]: products Aᵀ·B that contract over the rows of both
   * operands (weight gradients). A 3-D or larger a then needs a batched b.
   */
  transposeA?: boolean;
  /** b is [N, K] (a PyTorch Linear weight) rather than [K, N]. */
  transposeB?: boolean;
  activation?: MatmulActivation;
  hasBias?: boolean;
  hasResidual?: boolean;
  /**
   * Backward epilogue (needs hasResidual): out = residual ⊙ act'(a·b + bias), the gradient at the
   * pre-activation when `residual` is the upstream gradient; the pre-activation is recomputed.
   */
  activationGrad?: boolean;
  /** Forces a variant; by default it is chosen per profile and M (see `matmulConfig`). */
  variant?: MatmulVariant;
}

/** What the eager `matmul` takes: optional tensors instead of flags. */
export interface MatmulArgs {
  transposeA?: boolean;
  transposeB?: boolean;
  bias?: Tensor;
  activation?: MatmulActivation;
  residual?: Tensor;
  variant?: MatmulVariant;
}

const NAME = 'matmul';
const ACTIVATION_CODE: Record<MatmulActivation, number> = { none: 0, gelu: 1, quick_gelu: 2 };

/**
 * Tile configuration per adapter class (WGSL override constants). CPU adapters (lavapipe,
 * SwiftShader) run a workgroup as SIMD lanes on one thread. On lavapipe (2 cores, 8 lanes),
 * ROWS 4/8/16 x WG 8/16/32 all landed within about 20% of each other at CLIP shapes (8-13
 * GFLOP/s of CPU time); ROWS 8 wastes fewer rows at M = 50 and WG 16 was never worst. The tiled
 * variant reached about 3 there. The GPU row is the usual 64x64 tile with 16-deep slices, not
 * tuned on hardware here.
 */
const CONFIGS: Record<'cpu' | 'gpu', {
  variant: MatmulVariant;
  register: { ROWS: number; WG: number };
  /** register_subgroup, where subgroups are usable (cpu profile only): most rows per invocation (at most 32). */
  subgroup?: { ROWS: number; WG: number };
  tiled: { WG_X: number; WG_Y: number; TILE_K: number };
  gemv: { KS: number; CQ: number };
}> = {
  cpu: { variant: 'register', register: { ROWS: 8, WG: 16 }, subgroup: { ROWS: 32, WG: 16 }, tiled: { WG_X: 8, WG_Y: 8, TILE_K: 16 }, gemv: { KS: 8, CQ: 8 } },
  gpu: { variant: 'tiled', register: { ROWS: 8, WG: 64 }, tiled: { WG_X: 16, WG_Y: 16, TILE_K: 16 }, gemv: { KS: 32, CQ: 8 } },
};

/**
 * The tile constants of the variants under this Gpu's profile, and its default variant for large
 * M. Shapes refine it in `plan`: under the gpu profile, products of at most MATMUL_GEMV_MAX_ROWS
 * rows take 'gemv' instead of 64-row tiles that would be mostly empty; the register and gemv
 * variants take row blocks of the next power of two >= M when that is smaller than their own.
 */
export function matmulConfig(gpu: Gpu) {
  return CONFIGS[isCpuAdapter(gpu) ? 'cpu' : 'gpu'];
}

/**
 * Chunks under the binding limit: rows of a, out and residual when b is shared (b and bias stay
 * whole), whole batches of every operand when b is batched. a stored transposed ([K, M]) with a
 * shared b has no contiguous rows: it is bound whole, and so is the output.
 */
function rowChunks(gpu: Gpu, inputs: readonly TensorInfo[], out: TensorInfo, o: MatmulOptions, d: { batched: boolean; batch: number; M: number; K: number; N: number }): UnitChunk[] {
  const bytes = BYTES_PER_ELEMENT[out.dtype];
  const residual = o.hasResidual ? 2 + (o.hasBias ? 1 : 0) : -1;
  const at = (tensor: number, name: string, unitBytes: number): SplitTensor => ({ tensor, name, info: tensor === inputs.length ? out : inputs[tensor]!, unitBytes });
  if (d.batched) {
    return splitUnits(gpu, NAME, 'batches', d.batch, [
      at(0, 'a', d.M * d.K * bytes),
      at(1, 'b', d.K * d.N * bytes),
      at(inputs.length, 'output', d.M * d.N * bytes),
      ...(residual > 0 ? [at(residual, 'residual', d.M * d.N * bytes)] : []),
    ]);
  }
  if (o.transposeA) {
    // Summed over a's rows (K), which no chunk of M can split.
    const advice = 'with transposeA, a, b and the output are bound whole: split K (the rows of a and b) into several products and add them, as matmulBackward does for its db';
    for (const [name, t] of [['a', inputs[0]!], ['b', inputs[1]!], ['output', out]] as const) checkBindable(gpu, NAME, name, t, advice);
    return splitUnits(gpu, NAME, 'rows', d.M, []);
  }
  checkBindable(gpu, NAME, 'b', inputs[1]!, 'matmul splits the rows of a, not b: multiply by column blocks of b (row blocks with transposeB) and concatenate the outputs');
  return splitUnits(gpu, NAME, 'rows', d.M, [
    at(0, 'a', d.K * bytes),
    at(inputs.length, 'output', d.N * bytes),
    ...(residual > 0 ? [at(residual, 'residual', d.N * bytes)] : []),
  ]);
}

/**
 * out = act(a · b + bias) + residual. a [..., M, K]; b [K, N] shared by every batch, or batched
 * [..., K, N] with a's leading dimensions; [.., N, K] with transposeB.
 */
export const matmulKernel: Kernel<MatmulOptions> = {
  name: NAME,
  outputs(inputs, o) {
    check(o && typeof o === 'object', NAME, 'options must be an object');
    const act = o.activation ?? 'none';
    check(Object.hasOwn(ACTIVATION_CODE, act), NAME, () => `unknown activation ${JSON.stringify(o.activation)}; expected none, gelu or quick_gelu`);
    check(o.variant === undefined || o.variant === 'register' || o.variant === 'tiled' || o.variant === 'gemv', NAME, () => `unknown variant ${JSON.stringify(o.variant)}; expected register, tiled or gemv`);
    check(!o.activationGrad || o.hasResidual, NAME, 'activationGrad needs the upstream gradient as the residual input (hasResidual)');
    const expected = 2 + (o.hasBias ? 1 : 0) + (o.hasResidual ? 1 : 0);
    check(inputs.length === expected, NAME, `expected ${expected} inputs [a, b${o.hasBias ? ', bias' : ''}${o.hasResidual ? ', residual' : ''}], got ${inputs.length}`);
    const [a, b] = inputs as [(typeof inputs)[0], (typeof inputs)[0]];
    check(a.dtype === 'f32' || a.dtype === 'f16', NAME, `a must be f32 or f16, got ${a.dtype}`);
    check(a.shape.length >= 2, NAME, () => `a must be [..., ${o.transposeA ? 'K, M' : 'M, K'}], got ${shapeString(a.shape)}`);
    const K = a.shape[a.shape.length - (o.transposeA ? 2 : 1)]!;
    const batch = a.shape.slice(0, -2);
    const matrix = o.transposeB ? `N, K=${K}` : `K=${K}, N`;
    const suffix = o.transposeB ? ' (transposeB)' : '';
    // A 2-D b is shared by every batch (whose rows fold into M, which a transposed a does not
    // allow); otherwise b has a's batch dimensions.
    const shared = batch.length === 0 || !o.transposeA;
    const bExpected = batch.length === 0 ? `[${matrix}]${suffix}` : `${shared ? `[${matrix}] or ` : ''}[${batch.join(', ')}, ${matrix}]${suffix}`;
    check(b.dtype === a.dtype, NAME, `b must be ${a.dtype} like a, got ${b.dtype}`);
    check(
      (shared && b.shape.length === 2) || (b.shape.length === a.shape.length && batch.every((d, i) => d === b.shape[i])),
      NAME,
      () => `b must be ${bExpected} to match a of shape ${shapeString(a.shape)}${o.transposeA ? ' (transposeA)' : ''}, got ${shapeString(b.shape)}`,
    );
    const [b0, b1] = b.shape.slice(-2) as [number, number];
    check((o.transposeB ? b1 : b0) === K, NAME, () => `b of shape ${shapeString(b.shape)} must be ${bExpected} to match a of shape ${shapeString(a.shape)}`);
    const N = o.transposeB ? b0 : b1;
    const out = o.transposeA ? [...batch, a.shape[a.shape.length - 1]!, N] : [...a.shape.slice(0, -1), N];
    let next = 2;
    if (o.hasBias) {
      const bias = inputs[next++]!;
      check(bias.dtype === a.dtype, NAME, `bias must be ${a.dtype} like a, got ${bias.dtype}`);
      check(bias.shape.length === 1 && bias.shape[0] === N, NAME, () => `bias of shape ${shapeString(bias.shape)} must be [N] = [${N}]`);
    }
    if (o.hasResidual) {
      const residual = inputs[next++]!;
      check(residual.dtype === a.dtype, NAME, `residual must be ${a.dtype} like a, got ${residual.dtype}`);
      check(
        residual.shape.length === out.length && residual.shape.every((d, i) => d === out[i]),
        NAME,
        () => `residual of shape ${shapeString(residual.shape)} must equal the output shape ${shapeString(out)}`,
      );
    }
    return [{ shape: out, dtype: a.dtype }];
  },
  plan(gpu, inputs, outputs, o) {
    const a = inputs[0]!;
    check(a.dtype !== 'f16' || gpu.features.has('shader-f16'), NAME, 'f16 tensors need the shader-f16 feature, which this device lacks');
    const transposeA = !!o.transposeA;
    const transposeB = !!o.transposeB;
    const out = outputs[0]!;
    // With a shared b, batch dimensions of a fold into M; with a batched b, each batch is one matrix.
    const batched = inputs[1]!.shape.length > 2;
    const batch = batched ? sizeOf(a.shape.slice(0, -2)) : 1;
    const M = sizeOf(out.shape.slice(batched ? -2 : 0, -1));
    const K = a.shape[a.shape.length - (transposeA ? 2 : 1)]!;
    const N = out.shape[out.shape.length - 1]!;
    if (batch * M * N === 0) return { dispatches: [], flops: 0, bytes: 0 };
    const bytes = batch * (M * K + K * N + M * N * (o.hasResidual ? 2 : 1)) * BYTES_PER_ELEMENT[a.dtype] + (o.hasBias ? N * BYTES_PER_ELEMENT[a.dtype] : 0);
    const config = matmulConfig(gpu);
    const { register, tiled } = config;
    // vec4 reads need every row of a and b (and every batch of b) to start on a vec4, and a non-empty binding.
    const vec4 = !transposeA && K > 0 && K % 4 === 0 && (transposeB || N % 4 === 0);
    const variant = o.variant ?? (config.variant === 'tiled' && M <= MATMUL_GEMV_MAX_ROWS ? 'gemv' : config.variant);
    check(variant !== 'gemv' || M <= MATMUL_GEMV_MAX_ROWS, NAME, () => `variant 'gemv' takes at most ${MATMUL_GEMV_MAX_ROWS} rows per product, got M = ${M}`);
    // register_subgroup: the cpu profile only (the gpu profile's forced 'register' keeps testing register_vec4).
    const subgroupConfig = variant === 'register' && vec4 && subgroupsUsable(gpu) ? config.subgroup : undefined;
    const subgroup = subgroupConfig !== undefined;
    // Rows per block: no more than the next power of two >= M (few pipelines, no empty rows). For
    // register_subgroup, M split into equal blocks of at most its ROWS (50 rows: 2 x 25, not 32 + 18
    // with 14 empty), the row count being fixed per pipeline.
    const maxRows = variant === 'gemv' ? MATMUL_GEMV_MAX_ROWS : subgroupConfig?.ROWS ?? register.ROWS;
    const blockRows = subgroup ? Math.ceil(M / Math.ceil(M / maxRows)) : Math.min(maxRows, 2 ** Math.ceil(Math.log2(Math.max(M, 1))));
    const entryPoint = variant === 'register' ? (subgroup ? 'register_subgroup' : vec4 ? 'register_vec4' : 'register_scalar') : variant;
    const registerConfig = subgroupConfig ?? register;
    const constants = variant === 'tiled' ? tiled : variant === 'gemv' ? { ...config.gemv, ROWS: blockRows } : { ...registerConfig, ROWS: blockRows };
    const code = subgroup ? 'enable subgroups;\n' + activationsWgsl + matmulWgsl + matmulSubgroupWgsl : activationsWgsl + matmulWgsl;
    // Absent bias / residual bindings are filled by a, which the shader then never reads.
    const bias = o.hasBias ? 2 : 0;
    const residual = o.hasResidual ? 2 + (o.hasBias ? 1 : 0) : 0;
    const chunks = rowChunks(gpu, inputs, out, o, { batched, batch, M, K, N });
    const program: Program = {
      name: `${NAME}.${entryPoint}`,
      key: variant === 'tiled' ? a.dtype : `${a.dtype}|rows${blockRows}`,
      code: specialize(code, a.dtype),
      entryPoint,
      constants: {
        ...constants,
        TRANS_A: transposeA ? 1 : 0,
        TRANS_B: transposeB ? 1 : 0,
        HAS_BIAS: o.hasBias ? 1 : 0,
        HAS_RESIDUAL: o.hasResidual ? 1 : 0,
        ACTIVATION: ACTIVATION_CODE[o.activation ?? 'none'],
        ACTIVATION_GRAD: o.activationGrad ? 1 : 0,
      },
      bindings: ['read', 'read', 'read', 'read', 'write'],
    };
    return {
      dispatches: chunks.map((chunk) => {
        // A chunk is `count` rows of M (shared b) or `count` whole batches (batched b).
        const [rows, batches] = batched ? [M, chunk.count] : [chunk.count, 1];
        return {
          program,
          tensors: [0, 1, bias, residual, inputs.length].map((t) => chunk.bind(t)),
          uniforms: uniforms(rows, N, K, batches),
          workgroups:
            variant === 'tiled' ? grid2d(gpu, Math.ceil(N / (4 * tiled.WG_X)), batches * Math.ceil(rows / (4 * tiled.WG_Y)))
            : variant === 'gemv' ? grid2d(gpu, Math.ceil(N / (4 * config.gemv.CQ)), batches * Math.ceil(rows / blockRows))
            : grid2d(gpu, Math.ceil(N / (4 * registerConfig.WG)), batches * Math.ceil(rows / blockRows)),
        };
      }),
      flops: 2 * batch * M * N * K,
      bytes,
    };
  },
};

/**
 * act(a · b + bias) + residual, with a [..., M, K] and b [K, N] (or [N, K] with `transposeB`, as
 * PyTorch Linear weights are stored), shared by every batch of a; or b batched as [..., K, N] (or
 * [..., N, K]) with a's leading dimensions, one product per batch (as q·kᵀ per head). With
 * `transposeA`, a is [..., K, M] (aᵀ · b). f32, or f16 storage with f32 accumulation.
 */
export async function matmul(gpu: Gpu, a: Tensor, b: Tensor, args: MatmulArgs = {}): Promise<Tensor> {
  const { bias, residual, ...rest } = args;
  const inputs = [a, b, ...(bias ? [bias] : []), ...(residual ? [residual] : [])];
  return (await runKernel(gpu, matmulKernel, inputs, { ...rest, hasBias: !!bias, hasResidual: !!residual }))[0]!;
}

/** Data-only form of MatmulArgs for the CPU reference. */
export interface MatmulReferenceArgs {
  transposeA?: boolean;
  transposeB?: boolean;
  /** b holds this many matrices, one per equal block of a's rows. */
  batch?: number;
  bias?: ArrayLike<number>;
  activation?: MatmulActivation;
  residual?: ArrayLike<number>;
}

/**
 * CPU reference (tests only): float64, one output element at a time. `a` is [M, K] with M = a.length / K,
 * b is [K, N] (or [N, K]) shared by all rows, or with `batch` set, a is [batch, M / batch, K] and b
 * holds one [K, N] matrix per batch. With `transposeA` each batch's a is stored [K, M / batch].
 */
export function matmulReference(a: ArrayLike<number>, b: ArrayLike<number>, M: number, N: number, K: number, args: MatmulReferenceArgs = {}): Float64Array {
  const act = { none: (x: number) => x, gelu: geluReference, quick_gelu: quickGeluReference }[args.activation ?? 'none'];
  const out = new Float64Array(M * N);
  const rowsPerB = M / (args.batch ?? 1);
  for (let m = 0; m < M; m++) {
    const batch = Math.floor(m / rowsPerB);
    const b0 = batch * (args.batch ? K * N : 0);
    const aAt = (k: number) => (args.transposeA ? a[batch * K * rowsPerB + k * rowsPerB + (m % rowsPerB)]! : a[m * K + k]!);
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += aAt(k) * b[b0 + (args.transposeB ? n * K + k : k * N + n)]!;
      if (args.bias) s += args.bias[n]!;
      s = act(s);
      if (args.residual) s += args.residual[m * N + n]!;
      out[m * N + n] = s;
    }
  }
  return out;
}
