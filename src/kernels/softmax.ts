import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { BYTES_PER_ELEMENT, shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, rowLayout, specialize, uniforms, type Kernel, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import softmaxWgsl from '../../shaders/softmax.wgsl';

export interface SoftmaxOptions {
  /** Inputs are [x, mask]: the mask is added to x before the softmax. */
  mask?: boolean;
}

const NAME = 'softmax';
const WG = 128;

/**
 * Values at or below this (-Infinity included) count as masked: they get probability 0, and a row
 * with every value masked gets zeros (PyTorch would give NaN). A NaN in a row makes the row NaN.
 */
const SOFTMAX_MASKED = -1e30;

/**
 * Softmax over the last dimension, max-subtracted. Inputs [x [..., N]] or [x, mask] where the
 * mask's shape is a trailing part of x's that includes N (e.g. x [B, H, L, L], mask [L, L]).
 */
export const softmaxKernel: Kernel<SoftmaxOptions> = {
  name: NAME,
  outputs(inputs, o = {}) {
    const expected = o.mask ? 2 : 1;
    check(inputs.length === expected, NAME, () => `expected inputs [x${o.mask ? ', mask' : ''}], got ${inputs.length} inputs`);
    const [x, mask] = inputs as [TensorInfo, TensorInfo?];
    check(x.dtype === 'f32' || x.dtype === 'f16', NAME, `x must be f32 or f16, got ${x.dtype}`);
    check(x.shape.length >= 1, NAME, 'x must have at least one dimension');
    if (o.mask) {
      const m = mask!;
      const suffix = x.shape.slice(x.shape.length - m.shape.length);
      check(
        m.shape.length >= 1 && m.shape.length <= x.shape.length && suffix.every((d, i) => d === m.shape[i]) && sizeOf(m.shape) > 0,
        NAME,
        () => `mask of shape ${shapeString(m.shape)} must be a trailing part of x's shape ${shapeString(x.shape)} (at least its last dimension)`,
      );
      check(m.dtype === x.dtype, NAME, `mask must be ${x.dtype} like x, got ${m.dtype}`);
    }
    return [{ shape: x.shape, dtype: x.dtype }];
  },
  plan(gpu, inputs, _outputs, o = {}) {
    const x = inputs[0]!;
    const n = x.shape[x.shape.length - 1]!;
    const rows = sizeOf(x.shape.slice(0, -1));
    const layout = rowLayout(gpu, rows, WG);
    const mask = o.mask === true;
    const maskRows = mask ? sizeOf(inputs[1]!.shape.slice(0, -1)) : 1;
    const count = rows * n;
    return {
      dispatches: [
        {
          program: {
            name: NAME,
            key: `${x.dtype}${mask ? '|mask' : ''}`,
            code: specialize(softmaxWgsl, x.dtype),
            constants: { ...layout, HAS_MASK: mask ? 1 : 0 },
            bindings: ['read', 'read', 'write'],
          },
          tensors: mask ? [0, 1, 2] : [0, 0, 1],
          uniforms: uniforms(rows, n, maskRows),
          workgroups: grid1d(gpu, rows, layout.WG / layout.TPR),
        },
      ],
      flops: (mask ? 5 : 4) * count,
      bytes: (2 * count + (mask ? maskRows * n : 0)) * BYTES_PER_ELEMENT[x.dtype],
    };
  },
};

/** softmax(x + mask) over the last dimension; the mask broadcasts over x's leading dimensions. */
export async function softmax(gpu: Gpu, x: Tensor, options: { mask?: Tensor } = {}): Promise<Tensor> {
  const inputs = options.mask ? [x, options.mask] : [x];
  return (await runKernel(gpu, softmaxKernel, inputs, { mask: options.mask !== undefined }))[0]!;
}

// ---- CPU reference (for tests only): float64 ----

export function softmaxReference(x: ArrayLike<number>, row: number, mask?: ArrayLike<number>): Float64Array {
  const y = new Float64Array(x.length);
  for (let base = 0; base < x.length; base += row) {
    const v = Array.from({ length: row }, (_, j) => x[base + j]! + (mask ? mask[(base + j) % mask.length]! : 0));
    const max = Math.max(...v);
    if (max <= SOFTMAX_MASKED) continue; // fully masked row: zeros
    const e = v.map((t) => Math.exp(t - max));
    const sum = e.reduce((a, b) => a + b, 0);
    e.forEach((t, j) => (y[base + j] = t / sum));
  }
  return y;
}
