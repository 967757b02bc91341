import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { BYTES_PER_ELEMENT, shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, rowLayout, specialize, uniforms, type Kernel, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import layerNormWgsl from '../../shaders/layerNorm.wgsl';

export interface LayerNormOptions {
  /** Added to the variance (default 1e-5, as PyTorch and CLIP). */
  eps?: number;
  /** Inputs are [x, weight, bias, residual]: normalise s = x + residual and also output s. */
  residual?: boolean;
}

const NAME = 'layerNorm';
const WG = 128;

/**
 * LayerNorm over the last dimension. Inputs [x [..., D], weight [D], bias [D], residual?] (residual
 * shaped like x); outputs [out] or, with `residual`, [out, sum] where sum = x + residual.
 */
export const layerNormKernel: Kernel<LayerNormOptions> = {
  name: NAME,
  outputs(inputs, o = {}) {
    const expected = o.residual ? 4 : 3;
    check(inputs.length === expected, NAME, () => `expected inputs [x, weight, bias${o.residual ? ', residual' : ''}], got ${inputs.length} inputs`);
    const [x, weight, bias, residual] = inputs as [TensorInfo, TensorInfo, TensorInfo, TensorInfo?];
    check(x.dtype === 'f32' || x.dtype === 'f16', NAME, `x must be f32 or f16, got ${x.dtype}`);
    check(x.shape.length >= 1 && x.shape[x.shape.length - 1]! >= 1, NAME, () => `x must be [..., D] with D >= 1, got ${shapeString(x.shape)}`);
    const d = x.shape[x.shape.length - 1]!;
    for (const [name, t] of [['weight', weight], ['bias', bias]] as const) {
      check(t.shape.length === 1 && t.shape[0] === d, NAME, () => `${name} must be [${d}] (x's last dimension), got ${shapeString(t.shape)}`);
      check(t.dtype === x.dtype, NAME, `${name} must be ${x.dtype} like x, got ${t.dtype}`);
    }
    if (o.residual) {
      const r = residual!;
      check(
        r.shape.length === x.shape.length && r.shape.every((n, i) => n === x.shape[i]),
        NAME,
        () => `residual must have x's shape ${shapeString(x.shape)}, got ${shapeString(r.shape)}`,
      );
      check(r.dtype === x.dtype, NAME, `residual must be ${x.dtype} like x, got ${r.dtype}`);
    }
    const eps = o.eps ?? 1e-5;
    check(Number.isFinite(eps) && eps >= 0, NAME, `eps must be a finite number >= 0, got ${eps}`);
    const out = { shape: x.shape, dtype: x.dtype };
    return o.residual ? [out, { ...out }] : [out];
  },
  plan(gpu, inputs, _outputs, o = {}) {
    const x = inputs[0]!;
    const d = x.shape[x.shape.length - 1]!;
    const count = sizeOf(x.shape);
    const rows = count / d;
    const layout = rowLayout(gpu, rows, WG);
    const residual = o.residual === true;
    return {
      dispatches: [
        {
          program: {
            name: NAME,
            key: `${x.dtype}${residual ? '|residual' : ''}`,
            code: specialize(layerNormWgsl, x.dtype),
            entryPoint: residual ? 'main_residual' : 'main',
            constants: layout,
            bindings: residual ? ['read', 'read', 'read', 'write', 'read', 'write'] : ['read', 'read', 'read', 'write'],
          },
          // [x, weight, bias, out, residual, sum] in terms of [...inputs, ...outputs].
          tensors: residual ? [0, 1, 2, 4, 3, 5] : [0, 1, 2, 3],
          uniforms: uniforms(rows, d, { f32: o.eps ?? 1e-5 }),
          workgroups: grid1d(gpu, rows, layout.WG / layout.TPR),
        },
      ],
      flops: (residual ? 8 : 7) * count,
      bytes: ((residual ? 4 : 2) * count + 2 * d) * BYTES_PER_ELEMENT[x.dtype],
    };
  },
};

/** LayerNorm over the last dimension: (x - mean) / sqrt(var + eps) * weight + bias. */
export function layerNorm(gpu: Gpu, x: Tensor, weight: Tensor, bias: Tensor, options?: { eps?: number; residual?: undefined }): Promise<Tensor>;
/** Pre-LN block form: sum = x + residual, out = layerNorm(sum); both are returned. */
export function layerNorm(
  gpu: Gpu,
  x: Tensor,
  weight: Tensor,
  bias: Tensor,
  options: { eps?: number; residual: Tensor },
): Promise<{ out: Tensor; sum: Tensor }>;
export async function layerNorm(
  gpu: Gpu,
  x: Tensor,
  weight: Tensor,
  bias: Tensor,
  options: { eps?: number; residual?: Tensor } = {},
): Promise<Tensor | { out: Tensor; sum: Tensor }> {
  const { eps, residual } = options;
  if (!residual) return (await runKernel(gpu, layerNormKernel, [x, weight, bias], { eps }))[0]!;
  const [out, sum] = await runKernel(gpu, layerNormKernel, [x, weight, bias, residual], { eps, residual: true });
  return { out: out!, sum: sum! };
}

// ---- CPU reference (for tests only): float64, two-pass mean then variance ----

/** Mean and 1 / sqrt(biased variance + eps) of x[base .. base + dim), two passes in float64. */
export function rowStatsReference(x: ArrayLike<number>, base: number, dim: number, eps: number): { mean: number; rstd: number } {
  let mean = 0;
  for (let j = 0; j < dim; j++) mean += x[base + j]!;
  mean /= dim;
  let variance = 0;
  for (let j = 0; j < dim; j++) variance += (x[base + j]! - mean) ** 2;
  return { mean, rstd: 1 / Math.sqrt(variance / dim + eps) };
}

export function layerNormReference(
  x: ArrayLike<number>,
  dim: number,
  weight: ArrayLike<number>,
  bias: ArrayLike<number>,
  eps = 1e-5,
): Float64Array {
  const y = new Float64Array(x.length);
  for (let base = 0; base < x.length; base += dim) {
    const { mean, rstd } = rowStatsReference(x, base, dim, eps);
    for (let j = 0; j < dim; j++) y[base + j] = (x[base + j]! - mean) * rstd * weight[j]! + bias[j]!;
  }
  return y;
}
