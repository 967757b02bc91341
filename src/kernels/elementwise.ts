import { f16round } from '@petamoriken/float16';
import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { BYTES_PER_ELEMENT, shapeString, sizeOf, type DType } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, isCpuAdapter, rowLayout, specialize, splitUnits, uniforms, type Kernel, type Program, type SplitTensor, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import activationsWgsl from '../../shaders/activations.wgsl';
import elementwiseWgsl from '../../shaders/elementwise.wgsl';

/**
 * Forward ops, and the backward ops `gelu_grad`, `quick_gelu_grad` and `l2norm_grad`, whose inputs
 * are [x, dy] (dy, the upstream gradient, of x's shape) and whose output is dx.
 */
export type ElementwiseOp = 'add' | 'mul' | 'scale' | 'gelu' | 'quick_gelu' | 'l2norm' | 'cast' | 'gelu_grad' | 'quick_gelu_grad' | 'l2norm_grad';

export interface ElementwiseOptions {
  op: ElementwiseOp;
  /** Factor for 'scale'. */
  scalar?: number;
  /** eps for 'l2norm' and 'l2norm_grad' (default 1e-6, as OWL-ViT's class head; 0 gives x / ||x||). */
  eps?: number;
  /** Output dtype for 'cast' (f32 or f16). */
  dtype?: DType;
}

const OP_CODE: Record<Exclude<ElementwiseOp, 'l2norm' | 'l2norm_grad'>, number> = { add: 0, mul: 1, scale: 2, gelu: 3, quick_gelu: 4, cast: 5, gelu_grad: 6, quick_gelu_grad: 7 };
const BINARY = new Set<ElementwiseOp>(['add', 'mul', 'gelu_grad', 'quick_gelu_grad', 'l2norm_grad']);
/** Backward ops: inputs [x, dy] of one shape. */
const GRAD = new Set<ElementwiseOp>(['gelu_grad', 'quick_gelu_grad', 'l2norm_grad']);
const ROWWISE = new Set<ElementwiseOp>(['l2norm', 'l2norm_grad']);
const WG = 256;
const NAME = 'elementwise';

/**
 * main_vec4's workgroup size and vec4s per invocation. CPU adapters (lavapipe: a workgroup is SIMD
 * lanes on one thread) want few, long invocations: at CLIP / OWL-ViT shapes, 1 → 8 → 32 vec4s per
 * invocation took a bias add 400x3072 from 4.5 to 2.1 to 1.8 ms and the broadcast product
 * 8x576x768 from 39 to 10 to 6.5 ms (no gain past 32, nor from the workgroup size). GPUs keep one
 * vec4 per invocation (coalesced): not tuned on hardware here. l2norm's layout is `rowLayout`'s.
 */
const vec4Config = (gpu: Gpu) => (isCpuAdapter(gpu) ? { WG: 64, E: 32 } : { WG: 256, E: 1 });

/** Largest rank of a broadcasting binary op (two vec4s of dimensions in the uniform block). */
export const ELEMENTWISE_MAX_RANK = 8;

/** numpy's broadcast of two shapes, or undefined when they are incompatible. */
function broadcastShapes(a: readonly number[], b: readonly number[]): number[] | undefined {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let d = 0; d < rank; d++) {
    const x = a[a.length - rank + d] ?? 1;
    const y = b[b.length - rank + d] ?? 1;
    if (x !== y && x !== 1 && y !== 1) return undefined;
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** Element strides of `shape` read through the broadcast output `out`: 0 along broadcast dimensions. */
function broadcastStrides(shape: readonly number[], out: readonly number[]): number[] {
  const strides = new Array<number>(out.length).fill(0);
  let s = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    const k = out.length - shape.length + d;
    strides[k] = shape[d] === 1 ? 0 : s;
    s *= shape[d]!;
  }
  return strides;
}

const isFloat = (d: DType | undefined) => d === 'f32' || d === 'f16';

/** The WGSL for an input and output storage type (U is the output's: it differs only for cast). */
function code(x: DType, y: DType): string {
  const src = specialize(activationsWgsl + elementwiseWgsl, x).replace(/^alias U = f32;$/m, `alias U = ${y};`);
  return y === 'f16' && x !== 'f16' ? 'enable f16;\n' + src : src;
}

/** The uniform block: count, b_count, row, scalar, rank, then shape and both inputs' strides. */
function params(count: number, bCount: number, row: number, scalar: number, dims?: { shape: number[]; x: number[]; b: number[] }): ArrayBuffer {
  const pad = (a: readonly number[] = []) => [...a, ...new Array<number>(ELEMENTWISE_MAX_RANK - a.length).fill(0)];
  return uniforms(count, bCount, row, { f32: scalar }, dims?.shape.length ?? 0, 0, 0, 0, ...pad(dims?.shape), ...pad(dims?.x), ...pad(dims?.b));
}

/**
 * Elementwise ops, row-wise L2 normalisation and dtype casts. Inputs: [x], or [x, b] for add/mul,
 * which broadcast numpy-style (the output has the broadcast shape).
 */
export const elementwiseKernel: Kernel<ElementwiseOptions> = {
  name: NAME,
  outputs(inputs, o) {
    check(o && (Object.hasOwn(OP_CODE, o.op) || ROWWISE.has(o.op)), NAME, () => `unknown op ${JSON.stringify(o?.op)}; expected add, mul, scale, gelu, quick_gelu, l2norm, cast, gelu_grad, quick_gelu_grad or l2norm_grad`);
    const op = `${NAME}.${o.op}`;
    const x = inputs[0];
    check(x, op, 'missing input x');
    check(isFloat(x.dtype), op, `x must be f32 or f16, got ${x.dtype}`);
    check(inputs.length === (BINARY.has(o.op) ? 2 : 1), op, `expected ${BINARY.has(o.op) ? 2 : 1} inputs, got ${inputs.length}`);
    if (GRAD.has(o.op)) {
      const dy = inputs[1]!;
      check(dy.dtype === x.dtype, op, `dy must be ${x.dtype} like x, got ${dy.dtype}`);
      check(shapeString(dy.shape) === shapeString(x.shape), op, () => `dy must have x's shape ${shapeString(x.shape)}, got ${shapeString(dy.shape)}`);
      check(o.op !== 'l2norm_grad' || x.shape.length >= 1, op, 'x must have at least one dimension');
      return [{ shape: x.shape, dtype: x.dtype }];
    }
    if (BINARY.has(o.op)) {
      const b = inputs[1]!;
      check(b.dtype === x.dtype, op, `b must be ${x.dtype} like x, got ${b.dtype}`);
      const out = broadcastShapes(x.shape, b.shape);
      check(out, op, () => `b of shape ${shapeString(b.shape)} does not broadcast with x's shape ${shapeString(x.shape)} (each dimension must match or be 1)`);
      check(out.length <= ELEMENTWISE_MAX_RANK, op, () => `broadcast rank ${out.length} exceeds ${ELEMENTWISE_MAX_RANK}`);
      return [{ shape: out, dtype: x.dtype }];
    }
    if (o.op === 'scale') check(Number.isFinite(o.scalar), op, `scalar must be a finite number, got ${o.scalar}`);
    if (o.op === 'l2norm') check(x.shape.length >= 1, op, 'x must have at least one dimension');
    if (o.op === 'cast') {
      check(isFloat(o.dtype), op, `dtype must be f32 or f16, got ${JSON.stringify(o.dtype)}`);
      return [{ shape: x.shape, dtype: o.dtype! }];
    }
    return [{ shape: x.shape, dtype: x.dtype }];
  },
  plan(gpu, inputs, outputs, o) {
    const x = inputs[0]!;
    const y = outputs[0]!;
    const count = sizeOf(y.shape);
    const key = x.dtype === y.dtype ? x.dtype : `${x.dtype}>${y.dtype}`;
    const elementBytes = (t: TensorInfo) => sizeOf(t.shape) * BYTES_PER_ELEMENT[t.dtype];
    if (ROWWISE.has(o.op)) {
      const row = x.shape[x.shape.length - 1]!;
      const rows = row === 0 ? 0 : count / row;
      const { WG: wg, TPR } = rowLayout(gpu, rows, WG);
      const grad = o.op === 'l2norm_grad';
      const entryPoint = grad ? 'l2norm_grad' : row % 4 === 0 ? 'l2norm_vec4' : 'l2norm';
      const program: Program = { name: `${NAME}.${entryPoint}`, key, code: code(x.dtype, y.dtype), entryPoint, constants: { WG: wg, TPR }, bindings: ['read', 'read', 'write'] };
      // Chunks of whole rows of every tensor.
      const chunks = splitUnits(gpu, `${NAME}.${o.op}`, 'rows', rows, [...inputs, y].map((info, tensor) => ({ tensor, name: tensor < inputs.length ? `input ${tensor}` : 'output', info, unitBytes: row * BYTES_PER_ELEMENT[info.dtype] })));
      return {
        dispatches: chunks.map((chunk) => ({
          program,
          tensors: (grad ? [0, 1, 2] : [0, 0, 1]).map((t) => chunk.bind(t)),
          uniforms: params(chunk.count * row, 1, row, o.eps ?? 1e-6),
          workgroups: grid1d(gpu, chunk.count, wg / TPR),
        })),
        flops: (grad ? 7 : 3) * count,
        bytes: (grad ? 3 : 2) * elementBytes(x),
      };
    }
    const b = inputs.length > 1 ? inputs[1]! : undefined;
    // Unary ops see b = x with x's size, so the shader never wraps a column for them.
    const bCount = b ? sizeOf(b.shape) : count;
    // The suffix path serves x of the output's shape with b's shape (less leading 1s) a suffix of it.
    let broadcast = false;
    let uniformData = params(count, Math.max(1, bCount), 0, o.scalar ?? 1);
    if (b) {
      const lead = b.shape.findIndex((d) => d !== 1);
      const bCore = lead < 0 ? [] : b.shape.slice(lead);
      const suffix = shapeString(x.shape) === shapeString(y.shape) && bCore.every((d, i) => d === y.shape[y.shape.length - bCore.length + i]);
      if (!suffix) {
        broadcast = true;
        uniformData = params(count, 1, 0, 1, { shape: [...y.shape], x: broadcastStrides(x.shape, y.shape), b: broadcastStrides(b.shape, y.shape) });
      }
    }
    // vec4s need every input's elements in whole vec4s, and each vec4 inside one row of b (suffix
    // path) or of the output (broadcast path).
    const whole4 = (n: number) => n % 4 === 0;
    const vec4 = whole4(count) && whole4(sizeOf(x.shape)) && whole4(bCount) && (!broadcast || whole4(y.shape[y.shape.length - 1]!));
    const v4 = vec4Config(gpu);
    const constants = { OP: OP_CODE[o.op as keyof typeof OP_CODE], BROADCAST: broadcast ? 1 : 0, ...(vec4 ? v4 : { WG }) };
    const program: Program = { name: `${NAME}.${o.op}`, key, code: code(x.dtype, y.dtype), entryPoint: vec4 ? 'main_vec4' : 'main', constants, bindings: ['read', 'read', 'write'] };
    const tensors = [0, b ? 1 : 0, b ? 2 : 1];
    // Chunks under the binding limit. Broadcasting: slices of the output's first dimension, with
    // each input split where it is not broadcast along it. Otherwise runs of elements: whole rows
    // of b when b is a shorter row repeated (then bound whole), whole vec4s on the vec4 path.
    const unitBytes = (t: TensorInfo, elements: number) => elements * BYTES_PER_ELEMENT[t.dtype];
    let units: number;
    let unitElements: number;
    const split: SplitTensor[] = [];
    if (broadcast) {
      units = y.shape[0]!;
      unitElements = count / Math.max(1, units);
      for (const [t, info] of [[0, x], [1, b!]] as const) {
        const strides = broadcastStrides(info.shape, y.shape);
        if (strides[0] !== 0) split.push({ tensor: t, name: t === 0 ? 'x' : 'b', info, unitBytes: unitBytes(info, strides[0]!) });
      }
    } else {
      unitElements = b && bCount < count ? bCount : vec4 ? 4 : 1;
      units = count / Math.max(1, unitElements);
      split.push({ tensor: 0, name: 'x', info: x, unitBytes: unitBytes(x, unitElements) });
      if (b && bCount === count) split.push({ tensor: 1, name: 'b', info: b, unitBytes: unitBytes(b, unitElements) });
    }
    split.push({ tensor: tensors[2]!, name: 'output', info: y, unitBytes: unitBytes(y, unitElements) });
    const chunks = count === 0 ? [] : splitUnits(gpu, `${NAME}.${o.op}`, broadcast ? 'slices of the first dimension' : 'elements', units, split);
    return {
      dispatches: chunks.map((chunk) => {
        const n = chunk.count * unitElements;
        const data =
          chunks.length === 1
            ? uniformData
            : broadcast
              ? params(n, 1, 0, 1, { shape: [chunk.count, ...y.shape.slice(1)], x: broadcastStrides(x.shape, y.shape), b: broadcastStrides(b!.shape, y.shape) })
              : params(n, Math.max(1, bCount === count ? n : bCount), 0, o.scalar ?? 1);
        return { program, tensors: tensors.map((t) => chunk.bind(t)), uniforms: data, workgroups: vec4 ? grid1d(gpu, Math.ceil(n / 4 / v4.E), v4.WG) : grid1d(gpu, n, WG) };
      }),
      flops: count,
      bytes: elementBytes(x) + (b ? elementBytes(b) : 0) + elementBytes(y),
    };
  },
};

async function run(gpu: Gpu, inputs: Tensor[], options: ElementwiseOptions): Promise<Tensor> {
  return (await runKernel(gpu, elementwiseKernel, inputs, options))[0]!;
}

/** a + b, broadcasting numpy-style (e.g. a bias [D] over [N, D], or [B, 1, D] over [B, N, D]). */
export const add = (gpu: Gpu, a: Tensor, b: Tensor) => run(gpu, [a, b], { op: 'add' });
/** a * b, broadcasting as `add`. */
export const mul = (gpu: Gpu, a: Tensor, b: Tensor) => run(gpu, [a, b], { op: 'mul' });
/** x * s. */
export const scale = (gpu: Gpu, x: Tensor, s: number) => run(gpu, [x], { op: 'scale', scalar: s });
/** Exact (erf) GELU. */
export const gelu = (gpu: Gpu, x: Tensor) => run(gpu, [x], { op: 'gelu' });
/** CLIP's QuickGELU, x * sigmoid(1.702 x). */
export const quickGelu = (gpu: Gpu, x: Tensor) => run(gpu, [x], { op: 'quick_gelu' });
/** Each row (last dimension) divided by its L2 norm plus eps (default 1e-6). */
export const l2Normalize = (gpu: Gpu, x: Tensor, options: { eps?: number } = {}) =>
  run(gpu, [x], { op: 'l2norm', eps: options.eps });

/** dx of `gelu` (exact erf) at x for the upstream gradient dy: dy · (Φ(x) + x φ(x)). */
export const geluBackward = (gpu: Gpu, x: Tensor, dy: Tensor) => run(gpu, [x, dy], { op: 'gelu_grad' });
/** dx of `quickGelu` at x for dy: dy · (s + 1.702 x s (1 - s)), s = sigmoid(1.702 x). */
export const quickGeluBackward = (gpu: Gpu, x: Tensor, dy: Tensor) => run(gpu, [x, dy], { op: 'quick_gelu_grad' });
/** dx of `l2Normalize` (same eps) at x for dy, row by row; a zero row gets dy / eps. */
export const l2NormalizeBackward = (gpu: Gpu, x: Tensor, dy: Tensor, options: { eps?: number } = {}) =>
  run(gpu, [x, dy], { op: 'l2norm_grad', eps: options.eps });

/** x converted to another storage dtype (f32 ↔ f16; f16 rounds to nearest even). */
export const cast = (gpu: Gpu, x: Tensor, dtype: 'f32' | 'f16') => run(gpu, [x], { op: 'cast', dtype });

/** The eager form taking the op by name. */
export function elementwise(gpu: Gpu, inputs: Tensor[], options: ElementwiseOptions): Promise<Tensor> {
  return run(gpu, inputs, options);
}

// ---- CPU reference (for tests only): float64 math, written for clarity ----

/** erf to double precision (Abramowitz & Stegun 7.1.26 is too coarse for a reference). */
export function erfReference(x: number): number {
  // Series for small |x|, continued fraction (Lentz) for large |x|: both converge to ~1e-15.
  const ax = Math.abs(x);
  let r: number;
  if (ax < 2.5) {
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 100; n++) {
      term *= (-ax * ax) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
    let f = ax;
    for (let n = 60; n >= 1; n--) f = ax + n / 2 / f;
    r = 1 - Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  }
  return x < 0 ? -r : r;
}

export const geluReference = (x: number) => 0.5 * x * (1 + erfReference(x / Math.SQRT2));
export const quickGeluReference = (x: number) => x / (1 + Math.exp(-1.702 * x));
/** d gelu / dx = Φ(x) + x φ(x). */
export const geluGradReference = (x: number) => 0.5 * (1 + erfReference(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);
/** d quickGelu / dx = s + 1.702 x s (1 - s), s = sigmoid(1.702 x). */
export function quickGeluGradReference(x: number): number {
  const s = 1 / (1 + Math.exp(-1.702 * x));
  return s + 1.702 * x * s * (1 - s);
}

/**
 * The reference over x of shape xShape (and b of shape bShape for add/mul: numpy broadcasting; by
 * default b's shape is the trailing part of xShape with b's size). Returns the output flattened.
 */
export function elementwiseReference(x: ArrayLike<number>, xShape: readonly number[], options: ElementwiseOptions, b?: ArrayLike<number>, bShape?: readonly number[]): Float64Array {
  if (options.op === 'l2norm_grad') {
    // Written from the Jacobian: dx_j = sum_i dy_i (δ_ij / d - x_i x_j / (n d²)), n = ||x||, d = n + eps.
    const dx = new Float64Array(x.length);
    const row = xShape[xShape.length - 1]!;
    for (let r = 0; r * row < x.length; r++) {
      const xs = Array.from({ length: row }, (_, j) => x[r * row + j]!);
      const n = Math.sqrt(xs.reduce((a, v) => a + v * v, 0));
      const d = n + (options.eps ?? 1e-6);
      for (let j = 0; j < row; j++) {
        let g = 0;
        for (let i = 0; i < row; i++) g += b![r * row + i]! * ((i === j ? 1 / d : 0) - (n > 0 ? (xs[i]! * xs[j]!) / (n * d * d) : 0));
        dx[r * row + j] = g;
      }
    }
    return dx;
  }
  if (options.op === 'l2norm') {
    const y = new Float64Array(x.length);
    const row = xShape[xShape.length - 1]!;
    for (let r = 0; r * row < x.length; r++) {
      let s = 0;
      for (let j = 0; j < row; j++) s += x[r * row + j]! ** 2;
      const d = Math.sqrt(s) + (options.eps ?? 1e-6);
      for (let j = 0; j < row; j++) y[r * row + j] = x[r * row + j]! / d;
    }
    return y;
  }
  if (options.op === 'add' || options.op === 'mul') {
    let bs = bShape;
    for (let k = 0; !bs && k <= xShape.length; k++) if (sizeOf(xShape.slice(k)) === b!.length) bs = xShape.slice(k);
    const out = broadcastShapes(xShape, bs!)!;
    // Flat index of the element of `shape` that output coordinates `coords` read (size-1 dims repeat).
    const source = (shape: readonly number[], coords: number[]) =>
      shape.reduce((at, n, d) => at * n + (n === 1 ? 0 : coords[out.length - shape.length + d]!), 0);
    const y = new Float64Array(sizeOf(out));
    for (let i = 0; i < y.length; i++) {
      const coords: number[] = [];
      for (let d = out.length - 1, rest = i; d >= 0; d--) {
        coords[d] = rest % out[d]!;
        rest = Math.floor(rest / out[d]!);
      }
      const u = x[source(xShape, coords)]!;
      const v = b![source(bs!, coords)]!;
      y[i] = options.op === 'add' ? u + v : u * v;
    }
    return y;
  }
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    switch (options.op) {
      case 'scale': y[i] = v * options.scalar!; break;
      case 'gelu': y[i] = geluReference(v); break;
      case 'quick_gelu': y[i] = quickGeluReference(v); break;
      case 'cast': y[i] = options.dtype === 'f16' ? f16round(v) : Math.fround(v); break;
      case 'gelu_grad': y[i] = b![i]! * geluGradReference(v); break;
      case 'quick_gelu_grad': y[i] = b![i]! * quickGeluGradReference(v); break;
    }
  }
  return y;
}
