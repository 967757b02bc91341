import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, uniforms, type Dispatch, type Kernel, type KernelPlan, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import { reduceStep } from './reduce.js';
import lossesWgsl from '../../shaders/losses.wgsl';

// Log-softmax and the losses, forward and backward: one shader (shaders/losses.wgsl), one
// invocation per row of the last dimension, f32 storage. The forward losses are a mean, PyTorch's
// default reduction: per-row values, then the reduce kernel's mean over rows.

const WG = 64;
const same = (a: readonly number[], b: readonly number[]) => shapeString(a) === shapeString(b);

type Entry = 'log_softmax' | 'log_softmax_grad' | 'cross_entropy_rows' | 'cross_entropy_mean' | 'cross_entropy_scale' | 'cross_entropy_grad' | 'bce_rows' | 'bce_grad';

/** Options of cross-entropy and its backward. */
export interface CrossEntropyOptions {
  /** Rows with this label contribute nothing and are left out of the mean (PyTorch's ignore_index). Default -100. */
  readonly ignoreIndex?: number;
}

const IGNORE_INDEX = -100;

function ignoreIndexOf(op: string, options: CrossEntropyOptions): number {
  const k = options.ignoreIndex ?? IGNORE_INDEX;
  check(Number.isInteger(k) && k >= -(2 ** 31) && k < 2 ** 31, op, () => `ignoreIndex must be an i32 integer, got ${String(k)}`);
  return k;
}

/** Rows and row length of x over its last dimension (a scalar is one row of one). */
function rowsOf(x: TensorInfo): [number, number] {
  const row = x.shape.length ? x.shape[x.shape.length - 1]! : 1;
  return [row === 0 ? 0 : sizeOf(x.shape) / row, row];
}

/** One dispatch of an entry point over x's rows. `tensors`: [a, b, c, out] as plan tensor indices. */
function rowPlan(gpu: Gpu, name: string, entryPoint: Entry, x: TensorInfo, tensors: number[], scale = 1, ignore = IGNORE_INDEX): KernelPlan {
  const [rows, row] = rowsOf(x);
  return {
    dispatches: rows === 0 ? [] : [dispatch(name, entryPoint, tensors, rows, row, scale, ignore, grid1d(gpu, rows, WG))],
    flops: 4 * sizeOf(x.shape),
    bytes: 3 * 4 * sizeOf(x.shape),
  };
}

function dispatch(name: string, entryPoint: Entry, tensors: number[], rows: number, row: number, scale: number, ignore: number, workgroups: Dispatch['workgroups']): Dispatch {
  return {
    program: { name: `${name}.${entryPoint}`, key: 'f32', code: lossesWgsl, entryPoint, constants: { WG }, bindings: ['read', 'read', 'read', 'write'] },
    tensors,
    uniforms: uniforms(rows, row, { f32: scale }, { i32: ignore }),
    workgroups,
  };
}

/** A loss's forward: per-row values into scratch 0, then their mean into the scalar output. */
function meanLossPlan(gpu: Gpu, name: string, entryPoint: Entry, x: TensorInfo, inputs: number): KernelPlan {
  const [rows] = rowsOf(x);
  const perRow = rowPlan(gpu, name, entryPoint, x, [0, 1, 0, inputs + 1]);
  const rowsInfo: TensorInfo = { shape: [rows], dtype: 'f32' };
  const mean = reduceStep(gpu, rowsInfo, { op: 'mean', axes: [0] }, { x: inputs + 1, y: inputs, scratch: inputs + 2 });
  return { ...perRow, dispatches: [...perRow.dispatches, ...mean.dispatches], scratch: [rowsInfo, ...(mean.scratch ?? [])] };
}

function checkF32(op: string, name: string, t: TensorInfo | undefined): asserts t is TensorInfo {
  check(t, op, `missing input ${name}`);
  check(t.dtype === 'f32', op, `${name} must be f32, got ${t.dtype}`);
}

function checkCount(op: string, inputs: readonly TensorInfo[], names: string[]): void {
  check(inputs.length === names.length, op, () => `expected inputs [${names.join(', ')}], got ${inputs.length} inputs`);
}

/** Checks [logits [N, C], labels [N] i32] for cross-entropy. */
function checkLogitsLabels(op: string, logits: TensorInfo, labels: TensorInfo): void {
  checkF32(op, 'logits', logits);
  check(logits.shape.length === 2 && logits.shape[1]! >= 1, op, () => `logits must be [N, C] with C >= 1, got ${shapeString(logits.shape)}`);
  check(labels.dtype === 'i32', op, `labels must be i32, got ${labels.dtype}`);
  check(same(labels.shape, [logits.shape[0]!]), op, () => `labels must be [${logits.shape[0]}] (one per row of logits), got ${shapeString(labels.shape)}`);
}

/** Checks that the upstream gradient of a scalar loss is a scalar. */
function checkScalarGrad(op: string, g: TensorInfo): void {
  checkF32(op, 'dLoss', g);
  check(g.shape.length === 0 || same(g.shape, [1]), op, () => `dLoss must be a scalar ([] or [1]), got ${shapeString(g.shape)}`);
}

/** log(softmax(x)) over the last dimension. Inputs [x] (f32, rank >= 1); output x's shape. */
export const logSoftmaxKernel: Kernel<Record<string, never>> = {
  name: 'logSoftmax',
  outputs(inputs) {
    checkCount('logSoftmax', inputs, ['x']);
    checkF32('logSoftmax', 'x', inputs[0]);
    check(inputs[0].shape.length >= 1, 'logSoftmax', 'x must have at least one dimension');
    return [{ shape: inputs[0].shape, dtype: 'f32' }];
  },
  plan: (gpu, inputs) => rowPlan(gpu, 'logSoftmax', 'log_softmax', inputs[0]!, [0, 0, 0, 1]),
};

/** dx of logSoftmax from its output: dx = dy - exp(y)·sum(dy) per row. Inputs [y, dy] (one shape); output dx. */
export const logSoftmaxBackwardKernel: Kernel<Record<string, never>> = {
  name: 'logSoftmaxBackward',
  outputs(inputs) {
    const op = 'logSoftmaxBackward';
    checkCount(op, inputs, ['y', 'dy']);
    checkF32(op, 'y', inputs[0]);
    checkF32(op, 'dy', inputs[1]);
    check(inputs[0].shape.length >= 1, op, 'y must have at least one dimension');
    check(same(inputs[0].shape, inputs[1].shape), op, () => `dy must have y's shape ${shapeString(inputs[0]!.shape)}, got ${shapeString(inputs[1]!.shape)}`);
    return [{ shape: inputs[0].shape, dtype: 'f32' }];
  },
  plan: (gpu, inputs) => rowPlan(gpu, 'logSoftmaxBackward', 'log_softmax_grad', inputs[0]!, [0, 1, 0, 2]),
};

/**
 * Fused softmax cross-entropy, mean over the rows whose label is not `ignoreIndex` (PyTorch's
 * `F.cross_entropy`, reduction 'mean', ignore_index). Inputs [logits [N, C] f32, labels [N] i32];
 * output the scalar loss, shape []. NaN when every row is ignored (as PyTorch). Labels live on the
 * GPU, so a label outside [0, C) that is not ignoreIndex cannot be refused: it makes the loss (and
 * its row's gradient) NaN where PyTorch raises.
 */
export const crossEntropyKernel: Kernel<CrossEntropyOptions> = {
  name: 'crossEntropy',
  outputs(inputs, options) {
    checkCount('crossEntropy', inputs, ['logits', 'labels']);
    checkLogitsLabels('crossEntropy', inputs[0]!, inputs[1]!);
    ignoreIndexOf('crossEntropy', options);
    return [{ shape: [], dtype: 'f32' }];
  },
  plan(gpu, inputs, _outputs, options) {
    // Tensors: logits 0, labels 1, loss 2, scratch row losses 3.
    const ignore = ignoreIndexOf('crossEntropy', options);
    const [rows, row] = rowsOf(inputs[0]!);
    const perRow = rowPlan(gpu, 'crossEntropy', 'cross_entropy_rows', inputs[0]!, [0, 1, 0, 3], 1, ignore);
    const mean = dispatch('crossEntropy', 'cross_entropy_mean', [3, 1, 3, 2], rows, row, 1, ignore, [1, 1, 1]);
    return { ...perRow, dispatches: [...perRow.dispatches, mean], scratch: [{ shape: [rows], dtype: 'f32' }] };
  },
};

/**
 * d logits of `crossEntropy`: dLoss·(softmax(logits) − onehot(labels)) / (rows not ignored), 0 on
 * ignored rows. Inputs [logits, labels, dLoss []]; output [N, C].
 */
export const crossEntropyBackwardKernel: Kernel<CrossEntropyOptions> = {
  name: 'crossEntropyBackward',
  outputs(inputs, options) {
    const op = 'crossEntropyBackward';
    checkCount(op, inputs, ['logits', 'labels', 'dLoss']);
    checkLogitsLabels(op, inputs[0]!, inputs[1]!);
    checkScalarGrad(op, inputs[2]!);
    ignoreIndexOf(op, options);
    return [{ shape: inputs[0]!.shape, dtype: 'f32' }];
  },
  plan(gpu, inputs, _outputs, options) {
    // Tensors: logits 0, labels 1, dLoss 2, d logits 3, scratch dLoss / kept rows 4.
    const ignore = ignoreIndexOf('crossEntropyBackward', options);
    const [rows, row] = rowsOf(inputs[0]!);
    const grad = rowPlan(gpu, 'crossEntropyBackward', 'cross_entropy_grad', inputs[0]!, [0, 1, 4, 3], 1, ignore);
    const factor = dispatch('crossEntropyBackward', 'cross_entropy_scale', [0, 1, 2, 4], rows, row, 1, ignore, [1, 1, 1]);
    return { ...grad, dispatches: rows === 0 ? [] : [factor, ...grad.dispatches], scratch: [{ shape: [1], dtype: 'f32' }] };
  },
};

function checkLogitsTargets(op: string, logits: TensorInfo, targets: TensorInfo): void {
  checkF32(op, 'logits', logits);
  checkF32(op, 'targets', targets);
  check(same(logits.shape, targets.shape), op, () => `targets must have logits' shape ${shapeString(logits.shape)}, got ${shapeString(targets.shape)}`);
}

/**
 * Binary cross-entropy on logits, mean over every element (PyTorch's
 * `F.binary_cross_entropy_with_logits`, reduction 'mean', in its overflow-free form). Inputs
 * [logits, targets] of one shape (targets in [0, 1]); output the scalar loss, shape [].
 */
export const binaryCrossEntropyWithLogitsKernel: Kernel<Record<string, never>> = {
  name: 'binaryCrossEntropyWithLogits',
  outputs(inputs) {
    checkCount('binaryCrossEntropyWithLogits', inputs, ['logits', 'targets']);
    checkLogitsTargets('binaryCrossEntropyWithLogits', inputs[0]!, inputs[1]!);
    return [{ shape: [], dtype: 'f32' }];
  },
  plan: (gpu, inputs) => meanLossPlan(gpu, 'binaryCrossEntropyWithLogits', 'bce_rows', inputs[0]!, 2),
};

/** d logits of `binaryCrossEntropyWithLogits`: dLoss·(sigmoid(logits) - targets) / count. Inputs [logits, targets, dLoss []]. */
export const binaryCrossEntropyWithLogitsBackwardKernel: Kernel<Record<string, never>> = {
  name: 'binaryCrossEntropyWithLogitsBackward',
  outputs(inputs) {
    const op = 'binaryCrossEntropyWithLogitsBackward';
    checkCount(op, inputs, ['logits', 'targets', 'dLoss']);
    checkLogitsTargets(op, inputs[0]!, inputs[1]!);
    checkScalarGrad(op, inputs[2]!);
    return [{ shape: inputs[0]!.shape, dtype: 'f32' }];
  },
  plan: (gpu, inputs) => rowPlan(gpu, 'binaryCrossEntropyWithLogitsBackward', 'bce_grad', inputs[0]!, [0, 1, 2, 3], 1 / sizeOf(inputs[0]!.shape)),
};

const one = async <O>(gpu: Gpu, kernel: Kernel<O>, inputs: Tensor[], options = {} as O) => (await runKernel(gpu, kernel, inputs, options))[0]!;

/** log(softmax(x)) over the last dimension. */
export const logSoftmax = (gpu: Gpu, x: Tensor) => one(gpu, logSoftmaxKernel, [x]);
/** dx of `logSoftmax` given its output y and the upstream gradient dy. */
export const logSoftmaxBackward = (gpu: Gpu, y: Tensor, dy: Tensor) => one(gpu, logSoftmaxBackwardKernel, [y, dy]);
/** Mean softmax cross-entropy of logits [N, C] against i32 labels [N] (rows labelled ignoreIndex left out): a scalar tensor. */
export const crossEntropy = (gpu: Gpu, logits: Tensor, labels: Tensor, options: CrossEntropyOptions = {}) => one(gpu, crossEntropyKernel, [logits, labels], options);
/** d logits of `crossEntropy` for the scalar upstream gradient dLoss (a tensor of 1 for the loss itself). */
export const crossEntropyBackward = (gpu: Gpu, logits: Tensor, labels: Tensor, dLoss: Tensor, options: CrossEntropyOptions = {}) =>
  one(gpu, crossEntropyBackwardKernel, [logits, labels, dLoss], options);
/** Mean binary cross-entropy of logits against targets of the same shape: a scalar tensor. */
export const binaryCrossEntropyWithLogits = (gpu: Gpu, logits: Tensor, targets: Tensor) => one(gpu, binaryCrossEntropyWithLogitsKernel, [logits, targets]);
/** d logits of `binaryCrossEntropyWithLogits` for the scalar upstream gradient dLoss. */
export const binaryCrossEntropyWithLogitsBackward = (gpu: Gpu, logits: Tensor, targets: Tensor, dLoss: Tensor) =>
  one(gpu, binaryCrossEntropyWithLogitsBackwardKernel, [logits, targets, dLoss]);

// ---- CPU references (for tests only): float64 ----

/** Rows whose label is not ignoreIndex; throws (as PyTorch) on a label outside [0, row). */
function keptRows(labels: ArrayLike<number>, row: number, ignoreIndex: number): number[] {
  const kept: number[] = [];
  for (let r = 0; r < labels.length; r++) {
    const k = labels[r]!;
    if (k === ignoreIndex) continue;
    if (!(k >= 0 && k < row)) throw new RangeError(`crossEntropy reference: label ${k} of row ${r} is outside [0, ${row})`);
    kept.push(r);
  }
  return kept;
}

function rowLse(x: ArrayLike<number>, base: number, row: number): number {
  let m = -Infinity;
  for (let j = 0; j < row; j++) m = Math.max(m, x[base + j]!);
  let s = 0;
  for (let j = 0; j < row; j++) s += Math.exp(x[base + j]! - m);
  return m + Math.log(s);
}

/** The losses module's ops on flat data (`row`: the last dimension). Losses return one value. */
export const lossesReference = {
  logSoftmax(x: ArrayLike<number>, row: number): Float64Array {
    const y = new Float64Array(x.length);
    for (let b = 0; b < x.length; b += row) {
      const l = rowLse(x, b, row);
      for (let j = 0; j < row; j++) y[b + j] = x[b + j]! - l;
    }
    return y;
  },
  logSoftmaxBackward(y: ArrayLike<number>, dy: ArrayLike<number>, row: number): Float64Array {
    const dx = new Float64Array(y.length);
    for (let b = 0; b < y.length; b += row) {
      let s = 0;
      for (let j = 0; j < row; j++) s += dy[b + j]!;
      for (let j = 0; j < row; j++) dx[b + j] = dy[b + j]! - Math.exp(y[b + j]!) * s;
    }
    return dx;
  },
  /** Mean over rows whose label is not ignoreIndex; NaN if all are; throws on other labels outside [0, row). */
  crossEntropy(logits: ArrayLike<number>, labels: ArrayLike<number>, row: number, ignoreIndex = IGNORE_INDEX): number {
    let sum = 0;
    const kept = keptRows(labels, row, ignoreIndex);
    for (const r of kept) sum += rowLse(logits, r * row, row) - logits[r * row + labels[r]!]!;
    return sum / kept.length;
  },
  crossEntropyBackward(logits: ArrayLike<number>, labels: ArrayLike<number>, row: number, dLoss: number, ignoreIndex = IGNORE_INDEX): Float64Array {
    const dx = new Float64Array(logits.length);
    const kept = keptRows(labels, row, ignoreIndex);
    for (const r of kept) {
      const l = rowLse(logits, r * row, row);
      for (let j = 0; j < row; j++) dx[r * row + j] = (dLoss / kept.length) * (Math.exp(logits[r * row + j]! - l) - (j === labels[r] ? 1 : 0));
    }
    return dx;
  },
  binaryCrossEntropyWithLogits(logits: ArrayLike<number>, targets: ArrayLike<number>): number {
    let sum = 0;
    for (let i = 0; i < logits.length; i++) {
      const x = logits[i]!;
      sum += Math.max(x, 0) - x * targets[i]! + Math.log1p(Math.exp(-Math.abs(x)));
    }
    return sum / logits.length;
  },
  binaryCrossEntropyWithLogitsBackward(logits: ArrayLike<number>, targets: ArrayLike<number>, dLoss: number): Float64Array {
    return Float64Array.from({ length: logits.length }, (_, i) => (dLoss / logits.length) * (1 / (1 + Math.exp(-logits[i]!)) - targets[i]!));
  },
};
