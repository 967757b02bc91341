import { GpuError } from '../gpu/errors.js';
import type { Gpu } from '../gpu/gpu.js';
import { isDType, shapeString, sizeOf, type DType } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import type { Kernel, TensorInfo } from '../kernels/program.js';
import { concatKernel, contiguousStrides, sliceBounds, sliceView, stridedCopyKernel, transposeView, type StridedView } from '../kernels/copy.js';
import { elementwiseKernel } from '../kernels/elementwise.js';
import { gatherKernel } from '../kernels/gather.js';
import { matmulKernel, type MatmulActivation } from '../kernels/matmul.js';
import { layerNormKernel } from '../kernels/layerNorm.js';
import { attentionKernel, type AttentionVariant } from '../kernels/attention.js';
import { softmaxKernel } from '../kernels/softmax.js';
import { reduceKernel } from '../kernels/reduce.js';
import { binaryCrossEntropyWithLogitsKernel, crossEntropyKernel, logSoftmaxKernel, type CrossEntropyOptions } from '../kernels/losses.js';
import { roiAlignKernel, type RoiAlignOptions } from '../kernels/roiAlign.js';
import { regionWordSimilarityKernel } from '../kernels/regionWordSimilarity.js';
import { patchEmbedKernel } from '../kernels/patchEmbed.js';
import { compileGraph, type GraphPlan } from './plan.js';
import { markOwned } from './constants.js';
import { buildGradients, type GradientOptions } from './grad/index.js';
import { optimizerStepKernel } from '../kernels/optimizerStep.js';
import type { Optimizer } from '../optim.js';

/** Where a value's bytes come from. */
export type ValueSource =
  | { kind: 'input'; name: string }
  | { kind: 'constant'; tensor: Tensor }
  /** Every element `value`: written once when the plan is compiled (seeds, zeros). */
  | { kind: 'fill'; value: number }
  | { kind: 'node'; node: number }
  /** A reshape or contiguous slice of another value: no copy. `offset` is in elements. */
  | { kind: 'view'; base: Value; offset: number };

export interface RegionWordSimilarityGraphOptions {
  /** CLIP style: exp(logitScale) · cos (logitScale as stored in checkpoints). */
  logitScale?: number;
  /** OWL-ViT style: (cos + shift) · (elu(scale) + 1), shift and scale [B, R] or [B, R, 1]. */
  shift?: Value;
  scale?: Value;
  /** [B or 1, Q] i32/u32, 0 = padded query (its logits are -1e6). */
  queryMask?: Value;
  /** Also each region's k best queries (values f32, indices i32). */
  topK?: number;
}

/** A typed value in a graph under construction. */
export class Value implements TensorInfo {
  readonly id: number;
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly source: ValueSource;
  readonly graph: GraphBuilder;

  constructor(graph: GraphBuilder, id: number, info: TensorInfo, source: ValueSource) {
    this.graph = graph;
    this.id = id;
    this.shape = Object.freeze([...info.shape]);
    this.dtype = info.dtype;
    this.source = source;
  }

  /** The value that owns the bytes (follows views) and this value's element offset in it. */
  root(): { value: Value; offset: number } {
    if (this.source.kind !== 'view') return { value: this, offset: 0 };
    const r = this.source.base.root();
    return { value: r.value, offset: r.offset + this.source.offset };
  }

  toString(): string {
    return `value #${this.id} (${this.dtype} ${shapeString(this.shape)})`;
  }
}

/**
 * The operation a strided window (a view or a copy node) came from: export writes it as that op
 * (ONNX Slice / Transpose), which keeps batch dimensions symbolic, rather than as raw strides.
 */
export type ViewOrigin = { op: 'slice'; starts: readonly number[]; ends: readonly number[] } | { op: 'transpose'; perm: readonly number[] };

/** One kernel invocation recorded in a graph. */
export interface GraphNode {
  readonly index: number;
  readonly label: string;
  readonly kernel: Kernel<unknown>;
  readonly inputs: readonly Value[];
  readonly options: unknown;
  readonly outputs: readonly Value[];
}

export interface AttentionGraphOptions {
  heads: number;
  scale?: number;
  /** 'causal', or an additive f32 value, [L, L] or per batch [B, L, L]. */
  mask?: 'causal' | Value;
  variant?: AttentionVariant;
}

function attentionOptions(o: AttentionGraphOptions, packed: boolean) {
  const mask = o.mask === undefined ? ('none' as const) : o.mask === 'causal' ? ('causal' as const) : ('tensor' as const);
  return { heads: o.heads, scale: o.scale, packed, mask, variant: o.variant };
}

/**
 * Records a model as kernel nodes with inferred and checked shapes; `compile(gpu)` turns it into
 * a plan that runs with one submit. Errors name the node and what its kernel expected.
 */
export class GraphBuilder {
  readonly values: Value[] = [];
  readonly nodes: GraphNode[] = [];
  readonly inputs = new Map<string, Value>();
  readonly outputs = new Map<string, Value>();
  /** Trainable weights by name (see `parameter`). */
  readonly parameters = new Map<string, Value>();
  /** What `slice` and `transpose` results (views or copies) were made by (see ViewOrigin). */
  readonly viewOrigins = new Map<Value, ViewOrigin>();

  #add(info: TensorInfo, source: ValueSource): Value {
    const v = new Value(this, this.values.length, info, source);
    this.values.push(v);
    return v;
  }

  #own(v: Value, what: string): void {
    if (!(v instanceof Value) || v.graph !== this) throw new GpuError('graph', `${what} is not a value of this graph`);
  }

  /** A value supplied at run time. */
  input(name: string, shape: readonly number[], dtype: DType = 'f32'): Value {
    if (this.inputs.has(name)) throw new GpuError('graph', `input ${JSON.stringify(name)} is already defined`);
    if (!isDType(dtype)) throw new GpuError('graph', `input ${JSON.stringify(name)}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!shape.every((d) => Number.isInteger(d) && d >= 0)) throw new GpuError('graph', `input ${JSON.stringify(name)}: bad shape ${shapeString(shape)}`);
    const v = this.#add({ shape, dtype }, { kind: 'input', name });
    this.inputs.set(name, v);
    return v;
  }

  /**
   * A constant (weights): the tensor is uploaded once and may be shared by many graphs. Plans
   * reference-count it; with `owned: true` the last plan to be disposed also disposes the tensor.
   */
  constant(tensor: Tensor, options: { owned?: boolean } = {}): Value {
    if (tensor.disposed) throw new GpuError('graph', `constant ${tensor} was disposed`);
    if (options.owned) markOwned(tensor);
    return this.#add({ shape: tensor.shape, dtype: tensor.dtype }, { kind: 'constant', tensor });
  }

  /**
   * A trainable weight: a constant that `gradients` may differentiate with respect to and that
   * `optimizerStep` updates in place. The tensor stays the caller's.
   */
  parameter(tensor: Tensor, name: string): Value {
    if (this.parameters.has(name)) throw new GpuError('graph', `parameter ${JSON.stringify(name)} is already defined`);
    if (tensor.dtype !== 'f32' && tensor.dtype !== 'f16') throw new GpuError('graph', `parameter ${JSON.stringify(name)} must be f32 or f16, got ${tensor.dtype}`);
    const v = this.constant(tensor);
    this.parameters.set(name, v);
    return v;
  }

  /** A value with every element `value` (written once at compile time). */
  fill(shape: readonly number[], value: number, dtype: DType = 'f32'): Value {
    if (!shape.every((d) => Number.isInteger(d) && d >= 0)) throw new GpuError('graph fill', `bad shape ${shapeString(shape)}`);
    if (!isDType(dtype)) throw new GpuError('graph fill', `unknown dtype ${JSON.stringify(dtype)}`);
    if (Number.isNaN(value) || ((dtype === 'i32' || dtype === 'u32') && !Number.isInteger(value))) throw new GpuError('graph fill', `${value} is not a ${dtype} value`);
    return this.#add({ shape, dtype }, { kind: 'fill', value });
  }

  /** Adds a kernel node; returns its output values. Shapes are checked now. */
  op<O>(kernel: Kernel<O>, inputs: readonly Value[], options: O, label?: string): Value[] {
    const index = this.nodes.length;
    const name = label ?? `${kernel.name}#${index}`;
    inputs.forEach((v, i) => this.#own(v, `node ${name}: input ${i}`));
    let infos: TensorInfo[];
    try {
      infos = kernel.outputs(inputs, options);
    } catch (err) {
      throw new GpuError(`graph node ${name}`, (err as Error).message, { cause: err });
    }
    const outputs = infos.map((info) => this.#add(info, { kind: 'node', node: index }));
    this.nodes.push({ index, label: name, kernel: kernel as Kernel<unknown>, inputs: [...inputs], options, outputs: Object.freeze([...outputs]) });
    return outputs;
  }

  /** Same data, new shape (one dimension may be -1). No copy. */
  reshape(x: Value, shape: readonly number[]): Value {
    this.#own(x, 'reshape input');
    const known = shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
    const inferred = shape.map((d) => (d === -1 ? sizeOf(x.shape) / known : d));
    if (shape.filter((d) => d === -1).length > 1 || !inferred.every((d) => Number.isInteger(d) && d >= 0) || sizeOf(inferred) !== sizeOf(x.shape)) {
      throw new GpuError('graph reshape', `cannot reshape ${x} to ${shapeString(shape)}`);
    }
    return this.#add({ shape: inferred, dtype: x.dtype }, { kind: 'view', base: x, offset: 0 });
  }

  /** A strided window as its own value: a view when it is a contiguous range, else a copy node. */
  #window(x: Value, view: StridedView, origin: ViewOrigin, label: string): Value {
    const contiguous = contiguousStrides(view.shape);
    const out = view.shape.every((n, d) => n <= 1 || view.strides[d] === contiguous[d])
      ? this.#add({ shape: view.shape, dtype: x.dtype }, { kind: 'view', base: x, offset: view.offset })
      : this.op(stridedCopyKernel, [x], view, label)[0]!;
    this.viewOrigins.set(out, origin);
    return out;
  }

  /** x[starts[0]:ends[0], …]; a view (no copy) when the result is contiguous. */
  slice(x: Value, starts: readonly number[], ends?: readonly (number | undefined)[], label?: string): Value {
    this.#own(x, 'slice input');
    const bounds = sliceBounds(x.shape, starts, ends ?? []);
    const origin = { op: 'slice' as const, starts: bounds.map(([s]) => s), ends: bounds.map(([, e]) => e) };
    return this.#window(x, sliceView(x.shape, starts, ends), origin, label ?? `slice#${this.nodes.length}`);
  }

  /** Permutes dimensions (a copy unless the permutation leaves the layout unchanged). */
  transpose(x: Value, perm: readonly number[], label?: string): Value {
    this.#own(x, 'transpose input');
    return this.#window(x, transposeView(x.shape, perm), { op: 'transpose', perm: [...perm] }, label ?? `transpose#${this.nodes.length}`);
  }

  concat(xs: readonly Value[], axis: number, label?: string): Value {
    return this.op(concatKernel, xs, { axis }, label)[0]!;
  }

  add(a: Value, b: Value, label?: string): Value {
    return this.op(elementwiseKernel, [a, b], { op: 'add' }, label)[0]!;
  }

  mul(a: Value, b: Value, label?: string): Value {
    return this.op(elementwiseKernel, [a, b], { op: 'mul' }, label)[0]!;
  }

  /** x in another storage dtype (f32 ↔ f16). */
  cast(x: Value, dtype: 'f32' | 'f16', label?: string): Value {
    return x.dtype === dtype ? x : this.op(elementwiseKernel, [x], { op: 'cast', dtype }, label)[0]!;
  }

  scale(x: Value, scalar: number, label?: string): Value {
    return this.op(elementwiseKernel, [x], { op: 'scale', scalar }, label)[0]!;
  }

  gelu(x: Value, label?: string): Value {
    return this.op(elementwiseKernel, [x], { op: 'gelu' }, label)[0]!;
  }

  quickGelu(x: Value, label?: string): Value {
    return this.op(elementwiseKernel, [x], { op: 'quick_gelu' }, label)[0]!;
  }

  l2Normalize(x: Value, eps = 1e-6, label?: string): Value {
    return this.op(elementwiseKernel, [x], { op: 'l2norm', eps }, label)[0]!;
  }

  /** epilogue(a·b): optional bias [N], activation, residual added last (see kernels.matmul). */
  matmul(a: Value, b: Value, options: { transposeB?: boolean; bias?: Value; activation?: MatmulActivation; residual?: Value } = {}, label?: string): Value {
    const inputs = [a, b, ...(options.bias ? [options.bias] : []), ...(options.residual ? [options.residual] : [])];
    return this.op(matmulKernel, inputs, { transposeB: options.transposeB, activation: options.activation, hasBias: !!options.bias, hasResidual: !!options.residual }, label)[0]!;
  }

  /** Fused softmax(q·kᵀ·scale + mask)·v over q, k, v [B, L, H·Dh] (see kernels.attention). */
  attention(q: Value, k: Value, v: Value, options: AttentionGraphOptions, label?: string): Value {
    const mask = options.mask instanceof Value ? [options.mask] : [];
    return this.op(attentionKernel, [q, k, v, ...mask], attentionOptions(options, false), label)[0]!;
  }

  /** The same from one packed qkv [B, L, 3·H·Dh], as a fused in-projection produces. */
  attentionPacked(qkv: Value, options: AttentionGraphOptions, label?: string): Value {
    const mask = options.mask instanceof Value ? [options.mask] : [];
    return this.op(attentionKernel, [qkv, ...mask], attentionOptions(options, true), label)[0]!;
  }

  /** LayerNorm over the last dimension (see kernels.layerNorm). */
  layerNorm(x: Value, weight: Value, bias: Value, options: { eps?: number } = {}, label?: string): Value {
    return this.op(layerNormKernel, [x, weight, bias], { eps: options.eps }, label)[0]!;
  }

  /** LayerNorm of s = x + residual; returns both (pre-LN blocks need the sum for the next residual). */
  addLayerNorm(x: Value, residual: Value, weight: Value, bias: Value, options: { eps?: number } = {}, label?: string): { out: Value; sum: Value } {
    const [out, sum] = this.op(layerNormKernel, [x, weight, bias, residual], { eps: options.eps, residual: true }, label);
    return { out: out!, sum: sum! };
  }

  /** Softmax over the last dimension with an optional additive mask (see kernels.softmax). */
  softmax(x: Value, options: { mask?: Value } = {}, label?: string): Value {
    return this.op(softmaxKernel, options.mask ? [x, options.mask] : [x], { mask: !!options.mask }, label)[0]!;
  }

  /** log(softmax(x)) over the last dimension. */
  logSoftmax(x: Value, label?: string): Value {
    return this.op(logSoftmaxKernel, [x], {}, label)[0]!;
  }

  /**
   * Mean softmax cross-entropy of logits [N, C] against i32 labels [N] (PyTorch's F.cross_entropy):
   * a scalar. Rows labelled `ignoreIndex` (default -100) are left out of the mean.
   */
  crossEntropy(logits: Value, labels: Value, options: CrossEntropyOptions = {}, label?: string): Value {
    return this.op(crossEntropyKernel, [logits, labels], { ignoreIndex: options.ignoreIndex }, label)[0]!;
  }

  /** Mean binary cross-entropy of logits against targets in [0, 1] of their shape (F.binary_cross_entropy_with_logits): a scalar. */
  binaryCrossEntropyWithLogits(logits: Value, targets: Value, label?: string): Value {
    return this.op(binaryCrossEntropyWithLogitsKernel, [logits, targets], {}, label)[0]!;
  }

  /** ViT patch embedding with class token and position embedding (see kernels.patchEmbed). */
  patchEmbed(pixels: Value, weight: Value, classEmbedding: Value, positionEmbedding: Value, options: { patchSize: number }, label?: string): Value {
    return this.op(patchEmbedKernel, [pixels, weight, classEmbedding, positionEmbedding], options, label)[0]!;
  }

  /** x summed over `axes` (negative counts from the end; the summed dimensions are dropped). */
  sum(x: Value, axes: readonly number[], label?: string): Value {
    return this.op(reduceKernel, [x], { op: 'sum', axes }, label)[0]!;
  }

  /** x averaged over `axes` (as `sum`). */
  mean(x: Value, axes: readonly number[], label?: string): Value {
    return this.op(reduceKernel, [x], { op: 'mean', axes }, label)[0]!;
  }

  /** torchvision's roi_align: features [N, C, H, W] (or NHWC), boxes [K, 5] → [K, C, outH, outW] (see kernels.roiAlign). */
  roiAlign(features: Value, boxes: Value, options: RoiAlignOptions, label?: string): Value {
    return this.op(roiAlignKernel, [features, boxes], options, label)[0]!;
  }

  /**
   * Region–word logits [B, R, Q] (see kernels.regionWordSimilarity): CLIP style with `logitScale`,
   * OWL-ViT style with per-region `shift` and `scale`; `topK` adds each region's best queries.
   */
  regionWordSimilarity(regions: Value, words: Value, options: RegionWordSimilarityGraphOptions, label?: string): { logits: Value; topValues?: Value; topIndices?: Value } {
    const { shift, scale, queryMask } = options;
    const owl = shift !== undefined || scale !== undefined;
    if (owl !== (options.logitScale === undefined) || (owl && !(shift && scale))) {
      throw new GpuError(`graph node ${label ?? `regionWordSimilarity#${this.nodes.length}`}`, 'pass either logitScale (CLIP style) or both shift and scale (OWL-ViT style)');
    }
    const inputs = [regions, words, ...(owl ? [shift!, scale!] : []), ...(queryMask ? [queryMask] : [])];
    const [logits, topValues, topIndices] = this.op(regionWordSimilarityKernel, inputs, { mode: owl ? 'owl' : 'clip', logitScale: options.logitScale, queryMask: !!queryMask, topK: options.topK }, label);
    return { logits: logits!, topValues, topIndices };
  }

  /** Rows of `table` at `indices` (i32). */
  gather(table: Value, indices: Value, label?: string): Value {
    return this.op(gatherKernel, [table, indices], {}, label)[0]!;
  }

  /**
   * Reverse-mode gradients: appends the backward nodes and returns d(sum(loss · seed))/d w for each
   * `w` of `wrt` (inputs, constants, parameters or intermediate values). The seed defaults to 1 for
   * a one-element loss. Fails here, naming the node, when a path from a `wrt` to the loss runs
   * through something not differentiable.
   */
  gradients(loss: Value, wrt: readonly Value[], options: GradientOptions = {}): Value[] {
    this.#own(loss, 'gradients: loss');
    wrt.forEach((w, i) => this.#own(w, `gradients: wrt[${i}]`));
    if (options.seed) this.#own(options.seed, 'gradients: seed');
    return buildGradients(this, loss, wrt, options);
  }

  /**
   * One optimizer update (kernels.optimizerStepKernel) of `params`, parameters of this graph that
   * are among the optimizer's tensors, from `grads`, in place at this point of the plan: forward,
   * backward and update then run as one submit. Nodes added later that read the parameters see the
   * updated values.
   */
  optimizerStep(optimizer: Optimizer, params: readonly Value[], grads: readonly Value[], label?: string): void {
    const name = label ?? `optimizerStep#${this.nodes.length}`;
    const fail = (message: string): never => {
      throw new GpuError(`graph node ${name}`, message);
    };
    if (params.length !== grads.length) fail(`${params.length} params but ${grads.length} grads`);
    const seen = new Set<number>();
    const inputs = params.flatMap((p, i) => {
      this.#own(p, `node ${name}: params[${i}]`);
      this.#own(grads[i]!, `node ${name}: grads[${i}]`);
      const k = p.source.kind === 'constant' ? optimizer.params.indexOf(p.source.tensor) : -1;
      if (k < 0) fail(`params[${i}] ${p} is not one of the optimizer's parameter tensors`);
      if (seen.has(k)) fail(`params[${i}] repeats a parameter`);
      seen.add(k);
      return optimizer.inputsOf(k, grads[i]!).map((x, j) => (j === 0 ? p : x instanceof Value ? x : this.constant(x)));
    });
    this.op(optimizerStepKernel, inputs, optimizer.update, name);
  }

  /** Marks a value as a named output that run() can read back. */
  output(name: string, v: Value): void {
    this.#own(v, `output ${JSON.stringify(name)}`);
    if (this.outputs.has(name)) throw new GpuError('graph', `output ${JSON.stringify(name)} is already defined`);
    this.outputs.set(name, v);
  }

  /** Creates pipelines, plans memory and prebuilds bind groups for this device. */
  compile(gpu: Gpu): Promise<GraphPlan> {
    return compileGraph(gpu, this);
  }
}

