import type { Gpu } from '../gpu/gpu.js';
import { GpuError, check } from '../gpu/errors.js';
import { BYTES_PER_ELEMENT, shapeString, sizeOf } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { checkBindable, remapDispatch, splitUnits, type Dispatch, type Kernel, type KernelPlan, type SplitTensor, type TensorInfo, type TensorSlice, type UnitChunk } from './program.js';
import { runKernel } from './runtime.js';
import { matmulKernel, matmulReference, type MatmulActivation, type MatmulOptions } from './matmul.js';
import { reduceKernel } from './reduce.js';
import { elementwiseKernel, geluGradReference, quickGeluGradReference } from './elementwise.js';

/** Which gradients a matmulBackward node computes; its outputs follow this order. */
export interface MatmulGradients {
  a?: boolean;
  b?: boolean;
  bias?: boolean;
}

/**
 * Kernel options: those of the forward `out = act(a·b + bias) + residual` (see MatmulOptions).
 * Inputs are [dOut, a, b, bias if hasBias]: dOut the upstream gradient (the output's shape); a, b
 * and bias the forward's inputs (the pre-activation a·b + bias is recomputed, not stored).
 */
export interface MatmulBackwardOptions {
  transposeB?: boolean;
  activation?: MatmulActivation;
  hasBias?: boolean;
  /**
   * Gradients to compute (default: a, b, and bias when hasBias). Outputs are [da, db, dbias],
   * leaving out those not asked for. The residual's gradient is dOut itself: no output.
   */
  wrt?: MatmulGradients;
}

const NAME = 'matmulBackward';

/** A tensor of the plan, or a slice of one. */
type Binding = number | TensorSlice;

function wanted(o: MatmulBackwardOptions): Required<MatmulGradients> {
  const w = o.wrt ?? {};
  const all = o.wrt === undefined;
  return { a: all || !!w.a, b: all || !!w.b, bias: !!o.hasBias && (all || !!w.bias) };
}

/** The forward's output shape, validating a, b and bias with the forward's own checks. */
function forwardOutput(inputs: readonly TensorInfo[], o: MatmulBackwardOptions): TensorInfo {
  try {
    return matmulKernel.outputs(inputs, { transposeB: o.transposeB, activation: o.activation, hasBias: o.hasBias })[0]!;
  } catch (err) {
    if (err instanceof GpuError) throw new GpuError(NAME, err.message.slice(err.op.length + 2), { cause: err });
    throw err;
  }
}

/**
 * Gradients of out = act(a·b + bias) + residual (the forward matmul, b shared [K, N] / [N, K] or
 * batched) for the upstream gradient dOut: with dz = dOut ⊙ act'(a·b + bias),
 * da = dz·bᵀ, db = aᵀ·dz (summed over batches when b is shared), dbias = column sums of dz.
 * All are other kernels' dispatches: the forward matmul (dz with its activationGrad epilogue, the
 * weight gradient with transposeA) and a reduce over rows for dbias. Inputs [dOut, a, b, bias?].
 */
export const matmulBackwardKernel: Kernel<MatmulBackwardOptions> = {
  name: NAME,
  outputs(inputs, o) {
    check(o && typeof o === 'object', NAME, 'options must be an object');
    const expected = o.hasBias ? 4 : 3;
    check(inputs.length === expected, NAME, `expected ${expected} inputs [dOut, a, b${o.hasBias ? ', bias' : ''}], got ${inputs.length}`);
    const [dOut, a, b, bias] = inputs as [TensorInfo, TensorInfo, TensorInfo, TensorInfo?];
    const out = forwardOutput(inputs.slice(1), o);
    check(dOut.dtype === a.dtype, NAME, `dOut must be ${a.dtype} like a, got ${dOut.dtype}`);
    check(
      dOut.shape.length === out.shape.length && dOut.shape.every((d, i) => d === out.shape[i]),
      NAME,
      () => `dOut of shape ${shapeString(dOut.shape)} must have the forward output's shape ${shapeString(out.shape)}`,
    );
    const w = wanted(o);
    check(!o.wrt?.bias || o.hasBias, NAME, 'wrt.bias needs hasBias');
    return [...(w.a ? [a] : []), ...(w.b ? [b] : []), ...(w.bias ? [bias!] : [])].map((t) => ({ shape: t.shape, dtype: t.dtype }));
  },
  plan(gpu, inputs, outputs, o) {
    const [dOut, a, b] = inputs as [TensorInfo, TensorInfo, TensorInfo];
    const w = wanted(o);
    const transposeB = !!o.transposeB;
    const activation = o.activation ?? 'none';
    const N = dOut.shape[dOut.shape.length - 1]!;
    const K = a.shape[a.shape.length - 1]!;
    const rows = sizeOf(a.shape) / Math.max(K, 1);
    const batched = b.shape.length > 2;
    const dispatches: Dispatch[] = [];
    const scratch: TensorInfo[] = [];
    let flops = 0;
    let bytes = 0;
    const addScratch = (t: TensorInfo) => inputs.length + outputs.length + scratch.push(t) - 1;
    // A sub-kernel's plan, its [...inputs, ...outputs] mapped to ours by `map`, its scratch added to ours.
    const run = (plan: KernelPlan, map: Binding[]) => {
      const all = [...map, ...(plan.scratch ?? []).map(addScratch)];
      dispatches.push(...plan.dispatches.map((d) => remapDispatch(d, all)));
      flops += plan.flops ?? 0;
      bytes += plan.bytes ?? 0;
    };
    const matmul = (ins: TensorInfo[], out: TensorInfo, options: MatmulOptions, map: Binding[]) => run(matmulKernel.plan(gpu, ins, [out], options), map);
    // A sum over row chunks into tensor `out`: `step` writes chunk i's running sum (reading the one
    // before it, `sum`) to `target`. The last chunk writes `out`; earlier ones alternate between
    // `out` and one scratch so that no dispatch reads and writes the same tensor.
    const accumulate = (chunks: UnitChunk[], out: number, info: TensorInfo, step: (chunk: UnitChunk, target: number, sum: number | undefined) => void) => {
      const spare = chunks.length > 1 ? addScratch(info) : out;
      const target = (i: number) => ((chunks.length - 1 - i) % 2 === 0 ? out : spare);
      chunks.forEach((chunk, i) => step(chunk, target(i), i > 0 ? target(i - 1) : undefined));
    };
    // [...inputs, ...outputs, ...scratch] indices of dz, and of each output.
    let dz = 0;
    const dzInfo = { shape: dOut.shape, dtype: dOut.dtype };
    if (activation !== 'none' && (w.a || w.b || w.bias)) {
      dz = addScratch(dzInfo);
      const ins = [a, b, ...(o.hasBias ? [inputs[3]!] : []), dOut];
      const map = o.hasBias ? [1, 2, 3, 0, dz] : [1, 2, 0, dz];
      matmul(ins, dzInfo, { transposeB, activation, hasBias: o.hasBias, hasResidual: true, activationGrad: true }, map);
    }
    let next = inputs.length;
    if (w.a) matmul([dzInfo, b], outputs[0]!, { transposeB: !transposeB }, [dz, 2, next++]);
    // db and dbias sum over every row. Under the binding limit the rows of a and dz are split into
    // chunks, each chunk's sum added to the earlier chunks' (see `accumulate`).
    const flat = (t: TensorInfo, count = rows) => ({ shape: [count, t.shape[t.shape.length - 1]!], dtype: t.dtype });
    const bytesPer = BYTES_PER_ELEMENT[a.dtype];
    const dzRows: SplitTensor = { tensor: dz, name: 'dOut', info: flat(dzInfo), unitBytes: N * bytesPer };
    if (w.b) {
      // db = aᵀ·dz, or dzᵀ·a for a [N, K] b; with a shared b, over every row of every batch (a
      // batched b: the matmul splits by batches).
      const [first, second] = transposeB ? [dz, 1] : [1, dz];
      const info = (i: number, count: number) => (batched ? (i === dz ? dzInfo : inputs[i]!) : flat(i === dz ? dzInfo : inputs[i]!, count));
      const db = outputs[next - inputs.length]!;
      checkBindable(gpu, NAME, 'db', db, 'the weight gradient is bound whole (each element sums over every row): compute it for column blocks of b (row blocks with transposeB)');
      const chunks = batched ? splitUnits(gpu, NAME, 'rows', rows, []) : splitUnits(gpu, NAME, 'rows', rows, [{ tensor: 1, name: 'a', info: flat(a), unitBytes: K * bytesPer }, dzRows]);
      // Chunks after the first take the sum so far as the matmul's residual.
      accumulate(chunks, next++, db, (chunk, target, sum) => {
        const ins = [info(first, chunk.count), info(second, chunk.count), ...(sum === undefined ? [] : [db])];
        matmul(ins, db, { transposeA: true, hasResidual: sum !== undefined }, [chunk.bind(first), chunk.bind(second), ...(sum === undefined ? [] : [sum]), target]);
      });
    }
    if (w.bias) {
      const dbias = outputs[next - inputs.length]!;
      const chunks = splitUnits(gpu, NAME, 'rows', rows, [dzRows]);
      const rowSum = (chunk: UnitChunk, to: number) => run(reduceKernel.plan(gpu, [flat(dzInfo, chunk.count)], [dbias], { op: 'sum', axes: [0] }), [chunk.bind(dz), to]);
      // Chunks after the first sum their rows into `part`, then add it to the sum so far.
      const part = chunks.length > 1 ? addScratch(dbias) : -1;
      accumulate(chunks, next, dbias, (chunk, target, sum) => {
        if (sum === undefined) return rowSum(chunk, target);
        rowSum(chunk, part);
        run(elementwiseKernel.plan(gpu, [dbias, dbias], [dbias], { op: 'add' }), [sum, part, target]);
      });
    }
    return { dispatches, scratch, flops, bytes };
  },
};

/** What the eager `matmulBackward` takes: the forward's arguments, and which gradients to return. */
export interface MatmulBackwardArgs {
  transposeB?: boolean;
  bias?: Tensor;
  activation?: MatmulActivation;
  wrt?: MatmulGradients;
}

/**
 * Gradients of `matmul(a, b, { transposeB, bias, activation, residual })` for the upstream gradient
 * dOut: { da, db, dbias } (those asked for in `wrt`, default all). The residual's gradient is dOut.
 */
export async function matmulBackward(gpu: Gpu, dOut: Tensor, a: Tensor, b: Tensor, args: MatmulBackwardArgs = {}): Promise<{ da?: Tensor; db?: Tensor; dbias?: Tensor }> {
  const options: MatmulBackwardOptions = { transposeB: args.transposeB, activation: args.activation, hasBias: !!args.bias, wrt: args.wrt };
  const outs = await runKernel(gpu, matmulBackwardKernel, [dOut, a, b, ...(args.bias ? [args.bias] : [])], options);
  const w = wanted(options);
  return { da: w.a ? outs.shift() : undefined, db: w.b ? outs.shift() : undefined, dbias: w.bias ? outs.shift() : undefined };
}

// ---- CPU reference (for tests only): float64 ----

export interface MatmulBackwardReferenceArgs {
  transposeB?: boolean;
  /** b holds this many matrices, one per equal block of a's rows (as matmulReference). */
  batch?: number;
  bias?: ArrayLike<number>;
  activation?: MatmulActivation;
}

/**
 * CPU reference (tests only): gradients of matmulReference(a, b, M, N, K, args) for dOut [M, N],
 * with M all rows of a (every batch). da [M, K]; db like b (summed over batches when shared); dbias [N].
 */
export function matmulBackwardReference(
  dOut: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
  args: MatmulBackwardReferenceArgs = {},
): { da: Float64Array; db: Float64Array; dbias: Float64Array } {
  const grad = { none: () => 1, gelu: geluGradReference, quick_gelu: quickGeluGradReference }[args.activation ?? 'none'];
  const z = matmulReference(a, b, M, N, K, { transposeB: args.transposeB, batch: args.batch, bias: args.bias });
  const dz = z.map((v, i) => dOut[i]! * grad(v));
  const batch = args.batch ?? 1;
  const rows = M / batch;
  const da = new Float64Array(M * K);
  const db = new Float64Array(b.length);
  const dbias = new Float64Array(N);
  for (let m = 0; m < M; m++) {
    const b0 = args.batch ? Math.floor(m / rows) * K * N : 0;
    for (let n = 0; n < N; n++) {
      const g = dz[m * N + n]!;
      dbias[n] = dbias[n]! + g;
      for (let k = 0; k < K; k++) {
        const at = b0 + (args.transposeB ? n * K + k : k * N + n);
        da[m * K + k] = da[m * K + k]! + g * b[at]!;
        db[at] = db[at]! + g * a[m * K + k]!;
      }
    }
  }
  return { da, db, dbias };
}
