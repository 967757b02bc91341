import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, specialize, uniforms, type Kernel } from './program.js';
import { runKernel } from './runtime.js';
import activationsWgsl from '../../shaders/activations.wgsl';
import elementwiseWgsl from '../../shaders/elementwise.wgsl';

export type ElementwiseOp = 'add' | 'mul' | 'scale' | 'gelu' | 'quick_gelu' | 'l2norm';

export interface ElementwiseOptions {
  op: ElementwiseOp;
  /** Factor for 'scale'. */
  scalar?: number;
  /** eps for 'l2norm' (default 1e-6, as OWL-ViT's class head). */
  eps?: number;
}

const OP_CODE: Record<Exclude<ElementwiseOp, 'l2norm'>, number> = { add: 0, mul: 1, scale: 2, gelu: 3, quick_gelu: 4 };
const BINARY = new Set<ElementwiseOp>(['add', 'mul']);
const WG = 256;
const NAME = 'elementwise';

/** Elementwise ops and row-wise L2 normalisation. Inputs: [x] or [x, b] for add/mul. */
export const elementwiseKernel: Kernel<ElementwiseOptions> = {
  name: NAME,
  outputs(inputs, o) {
    check(o && (Object.hasOwn(OP_CODE, o.op) || o.op === 'l2norm'), NAME, () => `unknown op ${JSON.stringify(o?.op)}; expected add, mul, scale, gelu, quick_gelu or l2norm`);
    const op = `${NAME}.${o.op}`;
    const x = inputs[0];
    check(x, op, 'missing input x');
    check(x.dtype === 'f32' || x.dtype === 'f16', op, `x must be f32 or f16, got ${x.dtype}`);
    check(inputs.length === (BINARY.has(o.op) ? 2 : 1), op, `expected ${BINARY.has(o.op) ? 2 : 1} inputs, got ${inputs.length}`);
    if (BINARY.has(o.op)) {
      const b = inputs[1]!;
      check(b.dtype === x.dtype, op, `b must be ${x.dtype} like x, got ${b.dtype}`);
      const suffix = x.shape.slice(x.shape.length - b.shape.length);
      check(
        b.shape.length <= x.shape.length && suffix.every((d, i) => d === b.shape[i]) && sizeOf(b.shape) > 0,
        op,
        () => `b of shape ${shapeString(b.shape)} must equal x's shape ${shapeString(x.shape)} or a trailing part of it`,
      );
    }
    if (o.op === 'scale') check(Number.isFinite(o.scalar), op, `scalar must be a finite number, got ${o.scalar}`);
    if (o.op === 'l2norm') check(x.shape.length >= 1, op, 'x must have at least one dimension');
    return [{ shape: x.shape, dtype: x.dtype }];
  },
  plan(gpu, inputs, _outputs, o) {
    const x = inputs[0]!;
    const count = sizeOf(x.shape);
    const code = specialize(activationsWgsl + elementwiseWgsl, x.dtype);
    const b = inputs.length > 1 ? 1 : 0;
    if (o.op === 'l2norm') {
      const row = x.shape[x.shape.length - 1]!;
      const rows = row === 0 ? 0 : count / row;
      return {
        dispatches: [
          {
            program: { name: `${NAME}.l2norm`, key: x.dtype, code, entryPoint: 'l2norm', constants: { WG }, bindings: ['read', 'read', 'write'] },
            tensors: [0, 0, 1],
            uniforms: uniforms(count, 1, row, { f32: o.eps ?? 1e-6 }),
            workgroups: grid1d(gpu, rows, 1),
          },
        ],
        flops: 3 * count,
        bytes: 2 * count * (x.dtype === 'f16' ? 2 : 4),
      };
    }
    return {
      dispatches: [
        {
          program: { name: `${NAME}.${o.op}`, key: x.dtype, code, constants: { OP: OP_CODE[o.op], WG }, bindings: ['read', 'read', 'write'] },
          tensors: [0, b, 1 + b],
          uniforms: uniforms(count, b ? sizeOf(inputs[1]!.shape) : 1, 0, { f32: o.scalar ?? 1 }),
          workgroups: grid1d(gpu, count, WG),
        },
      ],
      flops: count,
      bytes: (2 + b) * count * (x.dtype === 'f16' ? 2 : 4),
    };
  },
};

async function run(gpu: Gpu, inputs: Tensor[], options: ElementwiseOptions): Promise<Tensor> {
  return (await runKernel(gpu, elementwiseKernel, inputs, options))[0]!;
}

/** a + b, with b broadcast over a's leading dimensions (b's shape is a suffix of a's). */
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

export function elementwiseReference(x: ArrayLike<number>, xShape: readonly number[], options: ElementwiseOptions, b?: ArrayLike<number>): Float64Array {
  const n = x.length;
  const y = new Float64Array(n);
  if (options.op === 'l2norm') {
    const row = xShape[xShape.length - 1]!;
    for (let r = 0; r * row < n; r++) {
      let s = 0;
      for (let j = 0; j < row; j++) s += x[r * row + j]! ** 2;
      const d = Math.sqrt(s) + (options.eps ?? 1e-6);
      for (let j = 0; j < row; j++) y[r * row + j] = x[r * row + j]! / d;
    }
    return y;
  }
  for (let i = 0; i < n; i++) {
    const v = x[i]!;
    switch (options.op) {
      case 'add': y[i] = v + b![i % b!.length]!; break;
      case 'mul': y[i] = v * b![i % b!.length]!; break;
      case 'scale': y[i] = v * options.scalar!; break;
      case 'gelu': y[i] = geluReference(v); break;
      case 'quick_gelu': y[i] = quickGeluReference(v); break;
    }
  }
  return y;
}

