import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { BYTES_PER_ELEMENT, shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, rowLayout, specialize, uniforms, type Kernel, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import softmaxBackwardWgsl from '../../shaders/softmaxBackward.wgsl';

const NAME = 'softmaxBackward';
const WG = 128;

/**
 * Gradient of y = softmax(x + mask) over the last dimension: dx = y ⊙ (dy − Σ y·dy) per row.
 * Inputs [y, dy]: the forward's output (saved, not recomputed) and the upstream gradient, same
 * shape. Output [dx] (also the gradient of an additive mask broadcast to x's shape). No options.
 */
export const softmaxBackwardKernel: Kernel<Record<string, never>> = {
  name: NAME,
  outputs(inputs) {
    check(inputs.length === 2, NAME, () => `expected inputs [y, dy], got ${inputs.length} inputs`);
    const [y, dy] = inputs as [TensorInfo, TensorInfo];
    check(y.dtype === 'f32' || y.dtype === 'f16', NAME, `y must be f32 or f16, got ${y.dtype}`);
    check(y.shape.length >= 1, NAME, 'y must have at least one dimension');
    check(dy.dtype === y.dtype, NAME, `dy must be ${y.dtype} like y, got ${dy.dtype}`);
    check(
      dy.shape.length === y.shape.length && dy.shape.every((d, i) => d === y.shape[i]),
      NAME,
      () => `dy of shape ${shapeString(dy.shape)} must have y's shape ${shapeString(y.shape)}`,
    );
    return [{ shape: y.shape, dtype: y.dtype }];
  },
  plan(gpu, inputs) {
    const y = inputs[0]!;
    const n = y.shape[y.shape.length - 1]!;
    const count = sizeOf(y.shape);
    const rows = n === 0 ? 0 : count / n;
    const layout = rowLayout(gpu, rows, WG);
    return {
      dispatches: [
        {
          program: { name: NAME, key: y.dtype, code: specialize(softmaxBackwardWgsl, y.dtype), constants: layout, bindings: ['read', 'read', 'write'] },
          tensors: [0, 1, 2],
          uniforms: uniforms(rows, n),
          workgroups: grid1d(gpu, rows, layout.WG / layout.TPR),
        },
      ],
      flops: 4 * count,
      bytes: 3 * count * BYTES_PER_ELEMENT[y.dtype],
    };
  },
};

/** dx for y = softmax(x) (last dimension) and the upstream gradient dy. */
export async function softmaxBackward(gpu: Gpu, y: Tensor, dy: Tensor): Promise<Tensor> {
  return (await runKernel(gpu, softmaxBackwardKernel, [y, dy], {}))[0]!;
}

// ---- CPU reference (for tests only): float64 ----

export function softmaxBackwardReference(y: ArrayLike<number>, dy: ArrayLike<number>, row: number): Float64Array {
  const dx = new Float64Array(y.length);
  for (let base = 0; base < y.length; base += row) {
    let s = 0;
    for (let j = 0; j < row; j++) s += y[base + j]! * dy[base + j]!;
    for (let j = 0; j < row; j++) dx[base + j] = y[base + j]! * (dy[base + j]! - s);
  }
  return dx;
}
