import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { BYTES_PER_ELEMENT, shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, remapDispatch, specialize, uniforms, type Dispatch, type Kernel, type KernelPlan, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import { contiguousStrides } from './copy.js';
import reduceWgsl from '../../shaders/reduce.wgsl';

export interface ReduceOptions {
  /** 'sum', or 'mean' (the sum divided by the number of reduced elements; NaN when that is 0, as PyTorch). */
  op: 'sum' | 'mean';
  /** Axes to reduce, negative counting from the end (-1: the last). Empty: nothing is reduced (a copy). */
  axes: readonly number[];
  /** Keep reduced axes as size 1 (default false: they are dropped, so reducing every axis gives shape []). */
  keepDims?: boolean;
}

const NAME = 'reduce';
const WG = 64;
const MAX_RANK = 8;
/**
 * Reduced elements per invocation before the reduction is split into chunks and a second pass: a
 * few outputs over many elements (a loss to a scalar, a bias gradient over 8·577 rows of few
 * columns) would otherwise leave all but a few invocations idle.
 */
const CHUNK = 1024;

/** The axes as sorted non-negative indices, checked against the rank. */
export function normalizeAxes(axes: readonly number[], rank: number, op = NAME): number[] {
  const out = axes.map((a) => {
    check(Number.isInteger(a) && a >= -rank && a < rank, op, `axis ${a} is out of range for rank ${rank}`);
    return a < 0 ? a + rank : a;
  });
  check(new Set(out).size === out.length, op, () => `axes [${axes.join(', ')}] repeat an axis`);
  return out.sort((a, b) => a - b);
}

/**
 * Shape and strides of the kept and reduced dimensions of `shape`, neighbours of the same kind
 * merged (a reduced [B, N] of a contiguous [B, N, D] is one dimension of B·N with stride D).
 */
function fold(shape: readonly number[], reduced: ReadonlySet<number>) {
  const strides = contiguousStrides(shape);
  const kept = { shape: [] as number[], strides: [] as number[] };
  const red = { shape: [] as number[], strides: [] as number[] };
  for (const [d, n] of shape.entries()) {
    if (n === 1) continue; // size-1 axes do not move the index either way
    const into = reduced.has(d) ? red : kept;
    const k = into.shape.length - 1;
    // x is contiguous: a dimension continues the previous one of its kind exactly when nothing of
    // the other kind lies between them.
    if (k >= 0 && into.strides[k] === n * strides[d]!) {
      into.shape[k]! *= n;
      into.strides[k] = strides[d]!;
    } else {
      into.shape.push(n);
      into.strides.push(strides[d]!);
    }
  }
  if (red.shape.length === 0) red.shape.push(1), red.strides.push(0);
  return { kept, red };
}

function dispatch(gpu: Gpu, dtype: TensorInfo['dtype'], tensors: [number, number], outCount: number, chunks: number, per: number, redCount: number, scale: number, kept: { shape: number[]; strides: number[] }, red: { shape: number[]; strides: number[] }): Dispatch {
  const pad = (a: readonly number[]) => [...a, ...new Array<number>(MAX_RANK - a.length).fill(0)];
  return {
    program: { name: NAME, key: dtype, code: specialize(reduceWgsl, dtype), constants: { WG }, bindings: ['read', 'write'] },
    tensors,
    uniforms: uniforms(outCount, chunks, per, redCount, kept.shape.length, red.shape.length, { f32: scale }, 0, ...pad(kept.shape), ...pad(kept.strides), ...pad(red.shape), ...pad(red.strides)),
    workgroups: grid1d(gpu, outCount * chunks, WG),
  };
}

/**
 * Sum or mean of x over `axes` (f32 or f16 storage, f32 accumulation in a fixed order, so results
 * are deterministic). Inputs [x]; output x's shape without the reduced axes (size 1 with keepDims).
 * Broadcast add/mul backward reduces the upstream gradient over the broadcast axes with it.
 */
export const reduceKernel: Kernel<ReduceOptions> = {
  name: NAME,
  outputs(inputs, o) {
    check(inputs.length === 1, NAME, `expected inputs [x], got ${inputs.length} inputs`);
    const x = inputs[0]!;
    check(o?.op === 'sum' || o?.op === 'mean', NAME, `op must be 'sum' or 'mean', got ${JSON.stringify(o?.op)}`);
    const op = `${NAME}.${o.op}`;
    check(x.dtype === 'f32' || x.dtype === 'f16', op, `x must be f32 or f16, got ${x.dtype}`);
    check(x.shape.length <= MAX_RANK, op, `x's rank ${x.shape.length} exceeds ${MAX_RANK}`);
    check(Array.isArray(o.axes), op, 'axes must be an array of axis indices');
    const axes = new Set(normalizeAxes(o.axes, x.shape.length, op));
    const shape = o.keepDims ? x.shape.map((n, d) => (axes.has(d) ? 1 : n)) : x.shape.filter((_, d) => !axes.has(d));
    return [{ shape, dtype: x.dtype }];
  },
  plan(gpu, inputs, outputs, o) {
    const x = inputs[0]!;
    const axes = new Set(normalizeAxes(o.axes, x.shape.length));
    const outCount = sizeOf(outputs[0]!.shape);
    const redCount = sizeOf(x.shape.filter((_, d) => axes.has(d)));
    const scale = o.op === 'mean' ? 1 / redCount : 1;
    const { kept, red } = fold(x.shape, axes);
    const bytes = (sizeOf(x.shape) + outCount) * BYTES_PER_ELEMENT[x.dtype];
    if (outCount === 0) return { dispatches: [], bytes: 0 };
    // Split only when the outputs alone would not give a few workgroups' worth of invocations.
    const chunks = outCount < 16 * WG ? Math.min(Math.ceil(redCount / CHUNK), 4 * WG) : 1;
    if (chunks <= 1) {
      return { dispatches: [dispatch(gpu, x.dtype, [0, 1], outCount, 1, Math.max(redCount, 1), redCount, scale, kept, red)], flops: sizeOf(x.shape), bytes };
    }
    const per = Math.ceil(redCount / chunks);
    const partial = { shape: [outCount], strides: [chunks] };
    return {
      dispatches: [
        dispatch(gpu, x.dtype, [0, 2], outCount, chunks, per, redCount, 1, kept, red),
        dispatch(gpu, x.dtype, [2, 1], outCount, 1, chunks, chunks, scale, partial, { shape: [chunks], strides: [1] }),
      ],
      scratch: [{ shape: [outCount, chunks], dtype: x.dtype }],
      flops: sizeOf(x.shape),
      bytes,
    };
  },
};

/**
 * The reduce kernel's dispatches inside another kernel's plan (a loss's mean over rows): `at.x` and
 * `at.y` index that plan's tensors [...inputs, ...outputs, ...scratch], `at.scratch` is the index
 * the returned scratch (at most one tensor) will take there.
 */
export function reduceStep(gpu: Gpu, x: TensorInfo, options: ReduceOptions, at: { x: number; y: number; scratch: number }): Pick<KernelPlan, 'dispatches' | 'scratch'> {
  const plan = reduceKernel.plan(gpu, [x], reduceKernel.outputs([x], options), options);
  const map = [at.x, at.y, at.scratch];
  return { dispatches: plan.dispatches.map((d) => remapDispatch(d, map)), scratch: plan.scratch ?? [] };
}

/** Sum of x over `axes` (negative axes count from the end); reduced axes are dropped unless keepDims. */
export async function sum(gpu: Gpu, x: Tensor, axes: readonly number[], options: { keepDims?: boolean } = {}): Promise<Tensor> {
  return (await runKernel(gpu, reduceKernel, [x], { op: 'sum', axes, keepDims: options.keepDims }))[0]!;
}

/** Mean of x over `axes`, as `sum`. */
export async function mean(gpu: Gpu, x: Tensor, axes: readonly number[], options: { keepDims?: boolean } = {}): Promise<Tensor> {
  return (await runKernel(gpu, reduceKernel, [x], { op: 'mean', axes, keepDims: options.keepDims }))[0]!;
}

/**
 * The axes of `outShape` along which a value of `shape` was broadcast to it (numpy rules): summing a
 * gradient of `outShape` over them (keepDims, then reshaped to `shape`) gives the gradient of the
 * broadcast operand, as broadcast add/mul backward needs.
 */
export function broadcastAxes(shape: readonly number[], outShape: readonly number[]): number[] {
  check(shape.length <= outShape.length, NAME, () => `shape ${shapeString(shape)} has more dimensions than ${shapeString(outShape)}`);
  const lead = outShape.length - shape.length;
  return outShape.flatMap((n, d) => {
    const m = d < lead ? 1 : shape[d - lead]!;
    check(m === n || m === 1, NAME, () => `shape ${shapeString(shape)} does not broadcast to ${shapeString(outShape)}`);
    return m === 1 && n !== 1 ? [d] : [];
  });
}

// ---- CPU reference (for tests only): float64 ----

/** Sum or mean of x (of shape xShape) over axes, flattened in the output's row-major order. */
export function reduceReference(x: ArrayLike<number>, xShape: readonly number[], options: ReduceOptions): Float64Array {
  const axes = new Set(normalizeAxes(options.axes, xShape.length));
  const outShape = xShape.map((n, d) => (axes.has(d) ? 1 : n));
  const outStrides = contiguousStrides(outShape);
  const y = new Float64Array(sizeOf(outShape));
  const idx = new Array<number>(xShape.length).fill(0);
  for (let i = 0; i < x.length; i++) {
    y[idx.reduce((at, c, d) => at + (axes.has(d) ? 0 : c * outStrides[d]!), 0)]! += x[i]!;
    for (let d = idx.length - 1; d >= 0; d--) {
      if (++idx[d]! < xShape[d]!) break;
      idx[d] = 0;
    }
  }
  const n = sizeOf(xShape.filter((_, d) => axes.has(d)));
  return options.op === 'mean' ? y.map((v) => v / n) : y;
}
