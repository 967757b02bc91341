import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { BYTES_PER_ELEMENT, shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, rowLayout, specialize, uniforms, type Dispatch, type Kernel, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import { rowStatsReference } from './layerNorm.js';
import layerNormBackwardWgsl from '../../shaders/layerNormBackward.wgsl';

/**
 * Kernel options. Inputs are [x, weight, dOut, dSum if hasSumGrad]: x the forward's normalised
 * input (for addLayerNorm its `sum` output, x + residual), weight [D], dOut the upstream gradient
 * of the output. Row statistics are recomputed from x, not stored by the forward.
 */
export interface LayerNormBackwardOptions {
  /** As the forward's (default 1e-5). */
  eps?: number;
  /**
   * addLayerNorm: dSum, the upstream gradient of the forward's `sum` output, is added to dx, which
   * is then the gradient of both x and residual.
   */
  hasSumGrad?: boolean;
  /** Gradients to compute (default both): x gives dx, params gives dweight and dbias. Outputs [dx?, dweight?, dbias?]. */
  wrt?: { x?: boolean; params?: boolean };
}

const NAME = 'layerNormBackward';
const WG = 128;
const PARAM_WG = 64;

function wanted(o: LayerNormBackwardOptions): { x: boolean; params: boolean } {
  return o.wrt === undefined ? { x: true, params: true } : { x: !!o.wrt.x, params: !!o.wrt.params };
}

/**
 * Gradients of out = layerNorm(x) · weight + bias over the last dimension: dx (plus dSum for
 * addLayerNorm), dweight and dbias. Two dispatches: one per row (statistics and dx), then one
 * per column summing over rows (dweight, dbias), in a fixed order.
 */
export const layerNormBackwardKernel: Kernel<LayerNormBackwardOptions> = {
  name: NAME,
  outputs(inputs, o = {}) {
    const names = ['x', 'weight', 'dOut', ...(o.hasSumGrad ? ['dSum'] : [])];
    check(inputs.length === names.length, NAME, () => `expected inputs [${names.join(', ')}], got ${inputs.length} inputs`);
    const [x, weight, ...grads] = inputs as [TensorInfo, TensorInfo, ...TensorInfo[]];
    check(x.dtype === 'f32' || x.dtype === 'f16', NAME, `x must be f32 or f16, got ${x.dtype}`);
    check(x.shape.length >= 1 && x.shape[x.shape.length - 1]! >= 1, NAME, () => `x must be [..., D] with D >= 1, got ${shapeString(x.shape)}`);
    const d = x.shape[x.shape.length - 1]!;
    check(weight.shape.length === 1 && weight.shape[0] === d, NAME, () => `weight must be [${d}] (x's last dimension), got ${shapeString(weight.shape)}`);
    check(weight.dtype === x.dtype, NAME, `weight must be ${x.dtype} like x, got ${weight.dtype}`);
    grads.forEach((g, i) => {
      const name = names[i + 2]!;
      check(g.shape.length === x.shape.length && g.shape.every((n, k) => n === x.shape[k]), NAME, () => `${name} must have x's shape ${shapeString(x.shape)}, got ${shapeString(g.shape)}`);
      check(g.dtype === x.dtype, NAME, `${name} must be ${x.dtype} like x, got ${g.dtype}`);
    });
    const eps = o.eps ?? 1e-5;
    check(Number.isFinite(eps) && eps >= 0, NAME, `eps must be a finite number >= 0, got ${eps}`);
    const w = wanted(o);
    const param = { shape: [d], dtype: x.dtype };
    return [...(w.x ? [{ shape: x.shape, dtype: x.dtype }] : []), ...(w.params ? [param, { ...param }] : [])];
  },
  plan(gpu, inputs, outputs, o = {}) {
    const x = inputs[0]!;
    const d = x.shape[x.shape.length - 1]!;
    const count = sizeOf(x.shape);
    const rows = count / d;
    const w = wanted(o);
    const layout = rowLayout(gpu, rows, WG);
    const sumGrad = o.hasSumGrad === true;
    const code = specialize(layerNormBackwardWgsl, x.dtype);
    const u = uniforms(rows, d, { f32: o.eps ?? 1e-5 });
    // [...inputs, ...outputs, stats, dx when not an output].
    const stats = inputs.length + outputs.length;
    const dx = w.x ? inputs.length : stats + 1;
    const scratch: TensorInfo[] = [{ shape: [rows, 4], dtype: 'f32' }, ...(w.x ? [] : [{ shape: x.shape, dtype: x.dtype }])];
    const elem = BYTES_PER_ELEMENT[x.dtype];
    const dispatches: Dispatch[] = [
      {
        program: {
          name: `${NAME}.rows`,
          key: `${x.dtype}${sumGrad ? '|sum' : ''}`,
          code,
          entryPoint: 'row_pass',
          constants: { ...layout, HAS_SUM_GRAD: sumGrad ? 1 : 0 },
          bindings: ['read', 'read', 'read', 'read', 'write', 'write'],
        },
        tensors: [0, 1, 2, sumGrad ? 3 : 2, dx, stats],
        uniforms: u,
        workgroups: grid1d(gpu, rows, layout.WG / layout.TPR),
      },
    ];
    if (w.params) {
      const dweight = inputs.length + (w.x ? 1 : 0);
      dispatches.push({
        program: { name: `${NAME}.params`, key: x.dtype, code, entryPoint: 'param_pass', bindings: ['read', 'read', 'read', 'write', 'write'] },
        tensors: [0, 2, stats, dweight, dweight + 1],
        uniforms: u,
        workgroups: grid1d(gpu, d, PARAM_WG),
      });
    }
    return {
      dispatches,
      scratch,
      flops: 14 * count + (w.params ? 5 * count : 0),
      bytes: ((sumGrad ? 5 : 4) * count + d) * elem + (w.params ? (2 * count + 2 * d) * elem : 0),
    };
  },
};

export interface LayerNormBackwardArgs {
  eps?: number;
  /** addLayerNorm: the upstream gradient of its `sum` output, added to dx. */
  dSum?: Tensor;
  wrt?: { x?: boolean; params?: boolean };
}

/**
 * Gradients of layerNorm(x, weight, bias) for the upstream gradient dOut: { dx, dweight, dbias }
 * (those asked for in `wrt`, default all). For addLayerNorm pass its `sum` output as x and the
 * sum's own upstream gradient as `dSum`: dx is then the gradient of both x and residual.
 */
export async function layerNormBackward(gpu: Gpu, x: Tensor, weight: Tensor, dOut: Tensor, args: LayerNormBackwardArgs = {}): Promise<{ dx?: Tensor; dweight?: Tensor; dbias?: Tensor }> {
  const o: LayerNormBackwardOptions = { eps: args.eps, hasSumGrad: args.dSum !== undefined, wrt: args.wrt };
  const outs = await runKernel(gpu, layerNormBackwardKernel, [x, weight, dOut, ...(args.dSum ? [args.dSum] : [])], o);
  const w = wanted(o);
  return { dx: w.x ? outs.shift() : undefined, dweight: w.params ? outs.shift() : undefined, dbias: w.params ? outs.shift() : undefined };
}

// ---- CPU reference (for tests only): float64, two-pass statistics ----

export function layerNormBackwardReference(
  x: ArrayLike<number>,
  dim: number,
  weight: ArrayLike<number>,
  dOut: ArrayLike<number>,
  eps = 1e-5,
  dSum?: ArrayLike<number>,
): { dx: Float64Array; dweight: Float64Array; dbias: Float64Array } {
  const dx = new Float64Array(x.length);
  const dweight = new Float64Array(dim);
  const dbias = new Float64Array(dim);
  for (let base = 0; base < x.length; base += dim) {
    const { mean, rstd } = rowStatsReference(x, base, dim, eps);
    const xh = Array.from({ length: dim }, (_, j) => (x[base + j]! - mean) * rstd);
    const g = Array.from({ length: dim }, (_, j) => dOut[base + j]! * weight[j]!);
    const meanG = g.reduce((a, b) => a + b, 0) / dim;
    const meanGX = g.reduce((a, b, j) => a + b * xh[j]!, 0) / dim;
    for (let j = 0; j < dim; j++) {
      dx[base + j] = rstd * (g[j]! - meanG - xh[j]! * meanGX) + (dSum ? dSum[base + j]! : 0);
      dweight[j] = dweight[j]! + dOut[base + j]! * xh[j]!;
      dbias[j] = dbias[j]! + dOut[base + j]!;
    }
  }
  return { dx, dweight, dbias };
}
