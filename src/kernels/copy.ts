import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, specialize, uniforms, type Dispatch, type Kernel, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import copyWgsl from '../../shaders/copy.wgsl';

const WG = 256;
const MAX_RANK = 8;

/** Row-major strides of a contiguous shape. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    strides[d] = s;
    s *= shape[d]!;
  }
  return strides;
}

/** A strided window of a source tensor: shape, element strides and element offset into the source. */
export interface StridedView {
  shape: readonly number[];
  strides: readonly number[];
  offset: number;
}

/** Elements each invocation copies along the innermost dimension (RUN in shaders/copy.wgsl). */
const RUN = 16;

function copyDispatch(gpu: Gpu, dtype: TensorInfo['dtype'], src: StridedView, dstStrides: readonly number[], dstOffset: number, srcTensor: number, dstTensor: number): Dispatch {
  // A scalar is a one-element vector: the shader walks at least one dimension.
  const shape = src.shape.length ? src.shape.map((d) => Math.max(d, 1)) : [1];
  const [srcStrides, outStrides] = src.shape.length ? [src.strides, dstStrides] : [[1], [1]];
  const pad = (a: readonly number[]) => [...a, ...new Array<number>(MAX_RANK - a.length).fill(0)];
  const count = sizeOf(src.shape);
  const inner = shape[shape.length - 1]!;
  const runs = count === 0 ? 0 : (count / inner) * Math.ceil(inner / RUN);
  return {
    program: { name: 'copy', key: dtype, code: specialize(copyWgsl, dtype), constants: { WG, RUN }, bindings: ['read', 'write'] },
    tensors: [srcTensor, dstTensor],
    uniforms: uniforms(count, shape.length, src.offset, dstOffset, ...pad(shape), ...pad(srcStrides), ...pad(outStrides)),
    workgroups: grid1d(gpu, runs, WG),
  };
}

function bytesOf(info: TensorInfo): number {
  return sizeOf(info.shape) * (info.dtype === 'f16' ? 2 : 4);
}

/** Gathers a strided view of the input into a new contiguous tensor (transpose, slice). */
export const stridedCopyKernel: Kernel<StridedView> = {
  name: 'copy',
  outputs(inputs, view) {
    const x = inputs[0];
    check(x && inputs.length === 1, 'copy', 'expected one input');
    check(view.shape.length <= MAX_RANK && view.strides.length === view.shape.length, 'copy', `view rank must be ≤ ${MAX_RANK} with one stride per dimension`);
    // The furthest element read must lie inside the source.
    let last = view.offset;
    for (const [d, n] of view.shape.entries()) last += (n - 1) * view.strides[d]!;
    check(sizeOf(view.shape) === 0 || (view.offset >= 0 && last < sizeOf(x.shape)), 'copy', () => `view ${shapeString(view.shape)} reads outside the source of shape ${shapeString(x.shape)}`);
    return [{ shape: [...view.shape], dtype: x.dtype }];
  },
  plan(gpu, inputs, outputs, view) {
    const out = outputs[0]!;
    return { dispatches: [copyDispatch(gpu, inputs[0]!.dtype, view, contiguousStrides(view.shape), 0, 0, 1)], bytes: 2 * bytesOf(out) };
  },
};

/** Concatenates the inputs along `axis`. */
export const concatKernel: Kernel<{ axis: number }> = {
  name: 'concat',
  outputs(inputs, { axis }) {
    check(inputs.length >= 1, 'concat', 'needs at least one input');
    const first = inputs[0]!;
    const rank = first.shape.length;
    check(Number.isInteger(axis) && axis >= 0 && axis < rank, 'concat', `axis ${axis} out of range for rank ${rank}`);
    let total = 0;
    for (const [i, t] of inputs.entries()) {
      check(t.dtype === first.dtype, 'concat', `input ${i} is ${t.dtype}, expected ${first.dtype}`);
      check(
        t.shape.length === rank && t.shape.every((d, k) => k === axis || d === first.shape[k]),
        'concat',
        () => `input ${i} of shape ${shapeString(t.shape)} must match ${shapeString(first.shape)} except along axis ${axis}`,
      );
      total += t.shape[axis]!;
    }
    const shape = [...first.shape];
    shape[axis] = total;
    return [{ shape, dtype: first.dtype }];
  },
  plan(gpu, inputs, outputs, { axis }) {
    const out = outputs[0]!;
    const dstStrides = contiguousStrides(out.shape);
    let at = 0;
    const dispatches = inputs.map((t, i) => {
      const d = copyDispatch(gpu, t.dtype, { shape: t.shape, strides: contiguousStrides(t.shape), offset: 0 }, dstStrides, at * dstStrides[axis]!, i, inputs.length);
      at += t.shape[axis]!;
      return d;
    });
    return { dispatches: dispatches.filter((_, i) => sizeOf(inputs[i]!.shape) > 0), bytes: 2 * bytesOf(out) };
  },
};

/** The strided view of `shape` that permutes its dimensions. */
export function transposeView(shape: readonly number[], perm: readonly number[]): StridedView {
  check(
    perm.length === shape.length && [...perm].sort((a, b) => a - b).every((p, i) => p === i),
    'transpose',
    () => `perm [${perm.join(', ')}] is not a permutation of ${shape.length} dimensions`,
  );
  const strides = contiguousStrides(shape);
  return { shape: perm.map((p) => shape[p]!), strides: perm.map((p) => strides[p]!), offset: 0 };
}

/** [start, end) per axis of `shape`, negative and missing ends as in Python, clamped to the axis. */
export function sliceBounds(shape: readonly number[], starts: readonly number[], ends: readonly (number | undefined)[]): [number, number][] {
  check(starts.length <= shape.length, 'slice', `${starts.length} starts for a tensor of rank ${shape.length}`);
  return shape.map((n, d) => {
    const norm = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
    const s = norm(starts[d] ?? 0);
    const e = norm(ends[d] ?? n);
    check(Number.isInteger(s) && Number.isInteger(e), 'slice', `axis ${d}: start and end must be integers`);
    return [s, Math.max(e, s)];
  });
}

/** The strided view of `shape` for [start, end) on every axis (negative and missing ends as in Python). */
export function sliceView(shape: readonly number[], starts: readonly number[], ends: readonly (number | undefined)[] = []): StridedView {
  const strides = contiguousStrides(shape);
  const bounds = sliceBounds(shape, starts, ends);
  return { shape: bounds.map(([s, e]) => e - s), strides, offset: bounds.reduce((at, [s], d) => at + s * strides[d]!, 0) };
}

/**
 * The strided view that reads a tensor of `shape` broadcast (numpy rules) to `outShape`: stride 0
 * along broadcast axes. Copying it materialises the broadcast, e.g. the gradient of a sum or mean
 * spread back over the reduced axes (keep them as size 1 first).
 */
export function expandView(shape: readonly number[], outShape: readonly number[]): StridedView {
  const lead = outShape.length - shape.length;
  check(
    lead >= 0 && shape.every((n, d) => n === 1 || n === outShape[lead + d]),
    'expand',
    () => `shape ${shapeString(shape)} does not broadcast to ${shapeString(outShape)}`,
  );
  const strides = contiguousStrides(shape);
  return { shape: [...outShape], strides: outShape.map((n, d) => (d < lead || shape[d - lead] === 1 ? 0 : strides[d - lead]!)), offset: 0 };
}

/** Where `pad` puts its input: inside a zero tensor of `shape`, starting at `starts` (non-negative, one per axis). */
export interface PadOptions {
  shape: readonly number[];
  starts: readonly number[];
}

/**
 * Writes the input into a zero tensor of `shape` at `starts`: the backward of a slice (its gradient
 * is the upstream gradient where the slice read, zero elsewhere). Inputs [x]; output `shape`.
 */
export const padKernel: Kernel<PadOptions> = {
  name: 'pad',
  outputs(inputs, o) {
    const x = inputs[0];
    check(x && inputs.length === 1, 'pad', 'expected one input');
    check(
      o.shape.length === x.shape.length && o.starts.length === x.shape.length,
      'pad',
      () => `shape ${shapeString(o.shape)} and starts [${o.starts.join(', ')}] must have x's rank ${x.shape.length}`,
    );
    check(
      x.shape.every((n, d) => Number.isInteger(o.starts[d]) && o.starts[d]! >= 0 && o.starts[d]! + n <= o.shape[d]!),
      'pad',
      () => `x of shape ${shapeString(x.shape)} placed at [${o.starts.join(', ')}] does not fit in ${shapeString(o.shape)}`,
    );
    return [{ shape: [...o.shape], dtype: x.dtype }];
  },
  plan(gpu, inputs, outputs, o) {
    const x = inputs[0]!;
    const out = outputs[0]!;
    const strides = contiguousStrides(out.shape);
    const count = sizeOf(out.shape);
    const zero: Dispatch = {
      program: { name: 'pad.zero', key: x.dtype, code: specialize(copyWgsl, x.dtype), entryPoint: 'zero', constants: { WG }, bindings: ['read', 'write'] },
      tensors: [0, 1],
      uniforms: uniforms(count, ...new Array<number>(27).fill(0)), // the shared Params block: count first
      workgroups: grid1d(gpu, count, WG),
    };
    const at = o.starts.reduce((sum, s, d) => sum + s * strides[d]!, 0);
    const copy = copyDispatch(gpu, x.dtype, { shape: x.shape, strides: contiguousStrides(x.shape), offset: 0 }, strides, at, 0, 1);
    return { dispatches: [...(count ? [zero] : []), ...(sizeOf(x.shape) ? [copy] : [])], bytes: bytesOf(out) + 2 * bytesOf(x) };
  },
};

/** The `pad` that undoes `slice(x of shape, starts, ends)`: the slice's window, normalised as `sliceView` does. */
export function sliceBackwardOptions(shape: readonly number[], starts: readonly number[], ends: readonly (number | undefined)[] = []): PadOptions {
  return { shape: [...shape], starts: sliceBounds(shape, starts, ends).map(([s]) => s) };
}

/** Permutes dimensions into a new contiguous tensor. */
export async function transpose(gpu: Gpu, x: Tensor, perm: readonly number[]): Promise<Tensor> {
  return (await runKernel(gpu, stridedCopyKernel, [x], transposeView(x.shape, perm)))[0]!;
}

/** x[starts[0]:ends[0], starts[1]:ends[1], …] as a new contiguous tensor. */
export async function slice(gpu: Gpu, x: Tensor, starts: readonly number[], ends?: readonly (number | undefined)[]): Promise<Tensor> {
  return (await runKernel(gpu, stridedCopyKernel, [x], sliceView(x.shape, starts, ends)))[0]!;
}

/** x written into a zero tensor of `shape` at `starts` (the backward of a slice). */
export async function pad(gpu: Gpu, x: Tensor, options: PadOptions): Promise<Tensor> {
  return (await runKernel(gpu, padKernel, [x], options))[0]!;
}

/** Concatenates tensors along `axis`. */
export async function concat(gpu: Gpu, xs: readonly Tensor[], axis: number): Promise<Tensor> {
  return (await runKernel(gpu, concatKernel, xs, { axis }))[0]!;
}

// ---- CPU reference (tests only) ----

/** `pad` on flat data. */
export function padReference(x: ArrayLike<number>, xShape: readonly number[], o: PadOptions): number[] {
  const out = new Array<number>(sizeOf(o.shape)).fill(0);
  const strides = contiguousStrides(o.shape);
  const at = o.starts.reduce((sum, s, d) => sum + s * strides[d]!, 0);
  const dst = stridedCopyReference(Array.from({ length: out.length }, (_, i) => i), { shape: xShape, strides, offset: at });
  dst.forEach((i, k) => (out[i] = x[k]!));
  return out;
}

/** Gathers a strided view from flat data. */
export function stridedCopyReference<A extends ArrayLike<number>>(data: A, view: StridedView): number[] {
  const out: number[] = [];
  const idx = new Array<number>(view.shape.length).fill(0);
  const n = sizeOf(view.shape);
  for (let i = 0; i < n; i++) {
    let at = view.offset;
    for (let d = 0; d < idx.length; d++) at += idx[d]! * view.strides[d]!;
    out.push(data[at]!);
    for (let d = idx.length - 1; d >= 0; d--) {
      if (++idx[d]! < view.shape[d]!) break;
      idx[d] = 0;
    }
  }
  return out;
}
