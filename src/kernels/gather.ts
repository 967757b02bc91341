import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { BYTES_PER_ELEMENT, shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { checkBindable, grid1d, specialize, splitUnits, uniforms, type Kernel, type Program, type TensorInfo } from './program.js';
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
    const [table, indices] = inputs as [TensorInfo, TensorInfo];
    const out = outputs[0]!;
    const count = sizeOf(out.shape);
    const width = table.shape[1]!;
    checkBindable(gpu, 'gather', 'table', table, 'gather splits indices, not the table: gather from row ranges of the table that fit, and add the pieces');
    const program: Program = { name: 'gather', key: table.dtype, code: specialize(gatherWgsl, table.dtype), constants: { WG }, bindings: ['read', 'read', 'write'] };
    // Chunks of indices, each with its indices and output rows, under the binding limit.
    const chunks = splitUnits(gpu, 'gather', 'indices', sizeOf(indices.shape), [
      { tensor: 1, name: 'indices', info: indices, unitBytes: 4 },
      { tensor: 2, name: 'output', info: out, unitBytes: width * BYTES_PER_ELEMENT[table.dtype] },
    ]);
    return {
      dispatches: chunks.map((chunk) => ({
        program,
        tensors: [0, chunk.bind(1), chunk.bind(2)],
        uniforms: uniforms(chunk.count * width, width, table.shape[0]!),
        workgroups: grid1d(gpu, chunk.count * width, WG),
      })),
      bytes: 2 * count * BYTES_PER_ELEMENT[table.dtype],
    };
  },
};

export interface GatherBackwardOptions {
  /** Rows of the gathered table (its gradient is [rows, width]). */
  rows: number;
}

/**
 * The gradient of `gather` with respect to its table: d table[r] = the sum of dy's rows at every
 * position whose index is r (repeated indices accumulate; out-of-range ones contribute nothing).
 * Inputs [indices [...] i32, dy [..., width]]; output [rows, width]. Deterministic without float
 * atomics: see shaders/gather.wgsl (a chain of the positions sharing each index, one writer per
 * distinct index summing its chain in position order).
 */
export const gatherBackwardKernel: Kernel<GatherBackwardOptions> = {
  name: 'gatherBackward',
  outputs(inputs, o) {
    const op = 'gatherBackward';
    const [indices, dy] = inputs;
    check(indices && dy && inputs.length === 2, op, 'expected inputs [indices, dy]');
    check(indices.dtype === 'i32', op, `indices must be i32, got ${indices.dtype}`);
    check(dy.dtype === 'f32' || dy.dtype === 'f16', op, `dy must be f32 or f16, got ${dy.dtype}`);
    check(
      dy.shape.length === indices.shape.length + 1 && indices.shape.every((n, d) => n === dy.shape[d]),
      op,
      () => `dy must be [${[...indices.shape, 'width'].join(', ')}] (indices' shape plus the row width), got ${shapeString(dy.shape)}`,
    );
    check(Number.isInteger(o?.rows) && o.rows >= 0, op, `rows must be a non-negative integer, got ${o?.rows}`);
    return [{ shape: [o.rows, dy.shape[dy.shape.length - 1]!], dtype: dy.dtype }];
  },
  plan(gpu, inputs, outputs) {
    const [indices, dy] = inputs as [TensorInfo, TensorInfo];
    const [rows, width] = outputs[0]!.shape as [number, number];
    const n = sizeOf(indices.shape);
    const chain: TensorInfo = { shape: [Math.max(2 * n, 1)], dtype: 'i32' };
    // Not split: each output row sums the dy rows of every index that points at it.
    const advice = 'gatherBackward binds its tensors whole: call it on fewer indices at a time (their dy rows) and add up the gradients';
    for (const [name, t] of [['dy', dy], ['the table gradient', outputs[0]!], ['its scratch (8 bytes per index)', chain]] as const) checkBindable(gpu, 'gatherBackward', name, t, advice);
    const program = (entryPoint: string) => ({
      name: `gatherBackward.${entryPoint}`,
      key: dy.dtype,
      code: specialize(gatherWgsl, dy.dtype),
      entryPoint,
      constants: { WG },
      bindings: ['read', 'read', 'write', 'write'] as const,
    });
    // Tensors: dy, indices, grad, chain (scratch).
    const step = (entryPoint: string, count: number) => ({
      program: program(entryPoint),
      tensors: [1, 0, 2, 3],
      uniforms: uniforms(count, width, rows),
      workgroups: grid1d(gpu, entryPoint === 'zero' ? Math.ceil(count / 16) : count, WG),
    });
    const work: [string, number][] = [['link', n], ['zero', rows * width], ['accumulate', n * width]];
    return {
      dispatches: work.filter(([, count]) => count > 0 && width > 0).map(([e, count]) => step(e, count)),
      scratch: [chain],
      bytes: (rows * width + 2 * n * width) * BYTES_PER_ELEMENT[dy.dtype],
    };
  },
};

/** `table[indices]` along the first axis; out-of-range indices give zero rows. */
export async function gather(gpu: Gpu, table: Tensor, indices: Tensor): Promise<Tensor> {
  return (await runKernel(gpu, gatherKernel, [table, indices], {}))[0]!;
}

/** The gradient of `gather` w.r.t. a table of `rows` rows, given dy (the gathered rows' gradient). */
export async function gatherBackward(gpu: Gpu, indices: Tensor, dy: Tensor, options: GatherBackwardOptions): Promise<Tensor> {
  return (await runKernel(gpu, gatherBackwardKernel, [indices, dy], options))[0]!;
}

/** CPU reference of `gatherBackward` (tests only): scatter-add in position order. */
export function gatherBackwardReference(indices: ArrayLike<number>, dy: ArrayLike<number>, rows: number, width: number): Float64Array {
  const grad = new Float64Array(rows * width);
  for (let i = 0; i < indices.length; i++) {
    const r = indices[i]!;
    if (r >= 0 && r < rows) for (let j = 0; j < width; j++) grad[r * width + j]! += dy[i * width + j]!;
  }
  return grad;
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
