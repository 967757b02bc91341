import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { BYTES_PER_ELEMENT, shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, specialize, uniforms, type Kernel } from './program.js';
import { runKernel } from './runtime.js';
import gatherWgsl from '../../shaders/gather.wgsl';

const WG = 256;

/** Rows of `table [rows, width]` picked by `indices [...]` (i32) → `[..., width]`. Inputs: [table, indices]. */
export const gatherKernel: Kernel<Record<string, never>> = {
  name: 'gather',
  outputs(inputs) {
    const [table, indices] = inputs;
    check(table && indices && inputs.length === 2, 'gather', 'expected inputs [table, indices]');
    check(table.shape.length === 2, 'gather', () => `table must be [rows, width], got ${shapeString(table.shape)}`);
    check(indices.dtype === 'i32', 'gather', `indices must be i32, got ${indices.dtype}`);
    return [{ shape: [...indices.shape, table.shape[1]!], dtype: table.dtype }];
  },
  plan(gpu, inputs, outputs) {
    const table = inputs[0]!;
    const out = outputs[0]!;
    const count = sizeOf(out.shape);
    return {
      dispatches: [
        {
          program: { name: 'gather', key: table.dtype, code: specialize(gatherWgsl, table.dtype), constants: { WG }, bindings: ['read', 'read', 'write'] },
          tensors: [0, 1, 2],
          uniforms: uniforms(count, table.shape[1]!, table.shape[0]!),
          workgroups: grid1d(gpu, count, WG),
        },
      ],
      bytes: 2 * count * BYTES_PER_ELEMENT[table.dtype],
    };
  },
};

/** `table[indices]` along the first axis; out-of-range indices give zero rows. */
export async function gather(gpu: Gpu, table: Tensor, indices: Tensor): Promise<Tensor> {
  return (await runKernel(gpu, gatherKernel, [table, indices], {}))[0]!;
}

/** CPU reference (tests only). */
export function gatherReference(table: ArrayLike<number>, width: number, indices: ArrayLike<number>): number[] {
  const rows = table.length / width;
  const out: number[] = [];
  for (let i = 0; i < indices.length; i++) {
    const r = indices[i]!;
    for (let j = 0; j < width; j++) out.push(r >= 0 && r < rows ? table[r * width + j]! : 0);
  }
  return out;
}
