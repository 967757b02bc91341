// One ONNX decomposition per kernel, in standard operators only (opset 18). Each takes the node's
// input names and returns its output names; kernels without an entry (backward kernels, NMS,
// optimizer steps) make export fail naming the node.
import { GpuError } from '../gpu/errors.js';
import type { Gpu } from '../gpu/gpu.js';
import { sizeOf, type DType } from '../dtype.js';
import { encodeTensorData } from '../tensor.js';
import type { GraphNode, Value, ViewOrigin } from '../graph/builder.js';
import type { Kernel } from '../kernels/program.js';
import { runKernel } from '../kernels/runtime.js';
import { readBuffer } from '../gpu/readback.js';
import { matmulKernel, type MatmulActivation, type MatmulOptions } from '../kernels/matmul.js';
import { layerNormKernel, type LayerNormOptions } from '../kernels/layerNorm.js';
import { attentionKernel, type AttentionOptions } from '../kernels/attention.js';
import { softmaxKernel, type SoftmaxOptions } from '../kernels/softmax.js';
import { elementwiseKernel, type ElementwiseOptions } from '../kernels/elementwise.js';
import { gatherKernel } from '../kernels/gather.js';
import { concatKernel, padKernel, stridedCopyKernel, type PadOptions, type StridedView } from '../kernels/copy.js';
import { patchEmbedKernel, type PatchEmbedOptions } from '../kernels/patchEmbed.js';
import { reduceKernel, type ReduceOptions } from '../kernels/reduce.js';
import { binaryCrossEntropyWithLogitsKernel, crossEntropyKernel, logSoftmaxKernel, type CrossEntropyOptions } from '../kernels/losses.js';
import { roiAlignKernel, type RoiAlignOptions } from '../kernels/roiAlign.js';
import { regionWordSimilarityKernel, type RegionWordSimilarityOptions } from '../kernels/regionWordSimilarity.js';
import { boxesKernel, type BoxesOptions } from '../kernels/boxes.js';
import { OnnxEmitter, TO_END, onnxElementType } from './emitter.js';

/** What an op exporter sees of the graph being exported. */
export interface ExportContext {
  readonly e: OnnxEmitter;
  /** The ONNX name of a graph value (emitting reshapes and slices for views as needed). */
  name(v: Value): string;
  /** Whether dimension 0 of a value is the symbolic batch. */
  batched(v: Value): boolean;
  /** The device that ran the graph (for nodes with no inputs, evaluated once at export). */
  readonly gpu?: Gpu;
}

type OpExporter = (ctx: ExportContext, node: GraphNode) => string[] | Promise<string[]>;

/** An f32 or f16 constant (the dtype of the values it meets) of `dims`. */
function floatConst(e: OnnxEmitter, values: readonly number[], dtype: DType, dims: readonly number[] = []): string {
  if (dtype === 'f32') return e.f32(values, dims);
  const bytes = new Uint8Array(encodeTensorData(values, dtype, values.length, 'exportOnnx'), 0, values.length * 2);
  return e.tensor('const_f16', dims, onnxElementType(dtype, 'constant'), bytes);
}

const swapLast = (rank: number) => [...Array.from({ length: rank - 2 }, (_, i) => i), rank - 1, rank - 2];

function activation(ctx: ExportContext, x: string, dtype: DType, act: MatmulActivation | undefined, name: string): string {
  const { e } = ctx;
  const c = (v: number) => floatConst(e, [v], dtype);
  if (act === 'gelu') {
    // PyTorch's exact GELU, 0.5·x·(1 + erf(x/√2)): opset 18 has no Gelu operator.
    const erf = e.op('Erf', [e.op('Div', [x, c(Math.SQRT2)], `${name}.gelu_div`)], `${name}.gelu_erf`);
    return e.op('Mul', [e.op('Mul', [x, e.op('Add', [erf, c(1)], `${name}.gelu_add`)], `${name}.gelu_mul`), c(0.5)], `${name}.gelu`);
  }
  if (act === 'quick_gelu') {
    return e.op('Mul', [x, e.op('Sigmoid', [e.op('Mul', [x, c(1.702)], `${name}.qg_scale`)], `${name}.qg_sigmoid`)], `${name}.quick_gelu`);
  }
  return x;
}

const matmul: OpExporter = (ctx, node) => {
  const o = node.options as MatmulOptions;
  if (o.activationGrad) throw new GpuError('exportOnnx', `node ${node.label}: the activation-gradient epilogue is a backward op`);
  const { e } = ctx;
  const [a, b, ...rest] = node.inputs as Value[];
  const n = node.label;
  const an = o.transposeA ? e.op('Transpose', [ctx.name(a!)], `${n}.aT`, { perm: swapLast(a!.shape.length) }) : ctx.name(a!);
  const bn = o.transposeB ? e.op('Transpose', [ctx.name(b!)], `${n}.bT`, { perm: swapLast(b!.shape.length) }) : ctx.name(b!);
  let y = e.op('MatMul', [an, bn], n);
  let k = 0;
  if (o.hasBias) y = e.op('Add', [y, ctx.name(rest[k++]!)], `${n}.bias`);
  y = activation(ctx, y, node.outputs[0]!.dtype, o.activation, n);
  if (o.hasResidual) y = e.op('Add', [y, ctx.name(rest[k]!)], `${n}.residual`);
  return [y];
};

const layerNorm: OpExporter = (ctx, node) => {
  const o = node.options as LayerNormOptions & { residual?: boolean };
  const [x, w, b, residual] = node.inputs as Value[];
  const n = node.label;
  const sum = o.residual ? ctx.e.op('Add', [ctx.name(x!), ctx.name(residual!)], `${n}.sum`) : ctx.name(x!);
  const out = ctx.e.op('LayerNormalization', [sum, ctx.name(w!), ctx.name(b!)], n, { axis: -1, epsilon: { float: o.eps ?? 1e-5 } });
  return o.residual ? [out, sum] : [out];
};

/** [B, L, H·Dh] → [B, H, L, Dh]. */
function splitHeads(e: OnnxEmitter, x: string, heads: number, headDim: number, name: string): string {
  const r = e.op('Reshape', [x, e.i64([0, 0, heads, headDim])], `${name}.heads`);
  return e.op('Transpose', [r], `${name}.bhld`, { perm: [0, 2, 1, 3] });
}

const attention: OpExporter = (ctx, node) => {
  const o = node.options as AttentionOptions;
  const { e } = ctx;
  const n = node.label;
  const x = node.inputs[0]!;
  const H = o.heads;
  const width = x.shape[2]!;
  const Dh = o.packed ? width / (3 * H) : width / H;
  const L = x.shape[1]!;
  const dtype = x.dtype;
  let q: string, k: string, v: string;
  if (o.packed) {
    // [B, L, 3·H·Dh] → [3, B, H, L, Dh]: q | k | v along the last dimension, heads inside each.
    const r = e.op('Reshape', [ctx.name(x), e.i64([0, 0, 3, H, Dh])], `${n}.qkv`);
    const t = e.op('Transpose', [r], `${n}.qkv_t`, { perm: [2, 0, 3, 1, 4] });
    [q, k, v] = [0, 1, 2].map((i) => e.op('Gather', [t, e.i64([i], [])], `${n}.${'qkv'[i]}`, { axis: 0 })) as [string, string, string];
  } else {
    [q, k, v] = [0, 1, 2].map((i) => splitHeads(e, ctx.name(node.inputs[i]!), H, Dh, `${n}.${'qkv'[i]}`)) as [string, string, string];
  }
  const kt = e.op('Transpose', [k], `${n}.kT`, { perm: [0, 1, 3, 2] });
  let s = e.op('Mul', [e.op('MatMul', [q, kt], `${n}.qk`), floatConst(e, [o.scale ?? Dh ** -0.5], dtype)], `${n}.scaled`);
  if (o.mask === 'causal') {
    const mask = Array.from({ length: L * L }, (_, i) => (i % L > Math.floor(i / L) ? -Infinity : 0));
    s = e.op('Add', [s, floatConst(e, mask, dtype, [L, L])], `${n}.causal`);
  } else if (o.mask === 'tensor') {
    s = e.op('Add', [s, ctx.name(node.inputs[o.packed ? 1 : 3]!)], `${n}.mask`);
  }
  const p = e.op('Softmax', [s], `${n}.softmax`, { axis: -1 });
  const y = e.op('Transpose', [e.op('MatMul', [p, v], `${n}.pv`)], `${n}.blhd`, { perm: [0, 2, 1, 3] });
  return [e.op('Reshape', [y, e.i64([0, 0, H * Dh])], n)];
};

const softmax: OpExporter = (ctx, node) => {
  const o = node.options as SoftmaxOptions;
  const [x, mask] = node.inputs;
  const s = o.mask ? ctx.e.op('Add', [ctx.name(x!), ctx.name(mask!)], `${node.label}.mask`) : ctx.name(x!);
  return [ctx.e.op('Softmax', [s], node.label, { axis: -1 })];
};

const elementwise: OpExporter = (ctx, node) => {
  const o = node.options as ElementwiseOptions;
  const { e } = ctx;
  const n = node.label;
  const [x, b] = node.inputs as Value[];
  const xn = ctx.name(x!);
  const dtype = x!.dtype;
  switch (o.op) {
    case 'add':
      return [e.op('Add', [xn, ctx.name(b!)], n)];
    case 'mul':
      return [e.op('Mul', [xn, ctx.name(b!)], n)];
    case 'scale':
      return [e.op('Mul', [xn, floatConst(e, [o.scalar ?? 1], dtype)], n)];
    case 'gelu':
    case 'quick_gelu':
      return [activation(ctx, xn, dtype, o.op, n)];
    case 'cast':
      return [e.op('Cast', [xn], n, { to: onnxElementType(o.dtype!, `node ${n}`) })];
    case 'l2norm': {
      // x / (‖x‖ + eps) per row, as the kernel (not max(‖x‖, eps)).
      const sq = e.op('ReduceSum', [e.op('Mul', [xn, xn], `${n}.sq`), e.i64([-1])], `${n}.sumsq`, { keepdims: 1 });
      const norm = e.op('Add', [e.op('Sqrt', [sq], `${n}.norm`), floatConst(e, [o.eps ?? 1e-6], dtype)], `${n}.norm_eps`);
      return [e.op('Div', [xn, norm], n)];
    }
    default:
      throw new GpuError('exportOnnx', `node ${n}: elementwise op '${o.op}' is a backward op with no ONNX form here`);
  }
};

/** A strided window without a recorded origin: gathers its elements by flat index (static shapes). */
function stridedGather(ctx: ExportContext, x: Value, view: StridedView, name: string): string {
  const { e } = ctx;
  const count = sizeOf(view.shape);
  const index: number[] = new Array(count);
  for (let i = 0; i < count; i++) {
    let at = view.offset;
    for (let d = view.shape.length - 1, rest = i; d >= 0; d--) {
      at += (rest % view.shape[d]!) * view.strides[d]!;
      rest = Math.floor(rest / view.shape[d]!);
    }
    index[i] = at;
  }
  const flat = e.op('Reshape', [ctx.name(x), e.i64([-1])], `${name}.flat`);
  return e.op('Gather', [flat, e.i64(index, view.shape)], name, { axis: 0 });
}

/** A slice or transpose as ONNX Slice / Transpose; a full slice of a batched axis 0 stays symbolic. */
export function windowOp(ctx: ExportContext, x: Value, origin: ViewOrigin, name: string): string {
  const { e } = ctx;
  if (origin.op === 'transpose') return e.op('Transpose', [ctx.name(x)], name, { perm: [...origin.perm] });
  const axes = origin.starts.map((_, d) => d).filter((d) => origin.starts[d] !== 0 || origin.ends[d] !== x.shape[d]);
  if (axes.length === 0) return e.op('Identity', [ctx.name(x)], name);
  const ends = axes.map((d) => (d === 0 && ctx.batched(x) && origin.ends[0] === x.shape[0] ? TO_END : origin.ends[d]!));
  return e.op('Slice', [ctx.name(x), e.i64(axes.map((d) => origin.starts[d]!)), e.i64(ends), e.i64(axes)], name);
}

const stridedCopy = (origins: ReadonlyMap<Value, ViewOrigin>): OpExporter => (ctx, node) => {
  const x = node.inputs[0]!;
  const origin = origins.get(node.outputs[0]!);
  return [origin ? windowOp(ctx, x, origin, node.label) : stridedGather(ctx, x, node.options as StridedView, node.label)];
};

const pad: OpExporter = (ctx, node) => {
  const o = node.options as PadOptions;
  const x = node.inputs[0]!;
  const pads = [...o.starts, ...o.shape.map((n, d) => n - o.starts[d]! - x.shape[d]!)];
  return [ctx.e.op('Pad', [ctx.name(x), ctx.e.i64(pads)], node.label, { mode: 'constant' })];
};

const patchEmbed: OpExporter = (ctx, node) => {
  const { e } = ctx;
  const p = (node.options as PatchEmbedOptions).patchSize;
  const [pixels, weight, cls, pos] = node.inputs as Value[];
  const n = node.label;
  const D = weight!.shape[0]!;
  const conv = e.op('Conv', [ctx.name(pixels!), ctx.name(weight!)], `${n}.conv`, { kernel_shape: [p, p], strides: [p, p] });
  const tokens = e.op('Transpose', [e.op('Reshape', [conv, e.i64([0, D, -1])], `${n}.flatten`)], `${n}.tokens`, { perm: [0, 2, 1] });
  // The class token for every image: [1, 1, D] expanded to [B, 1, D] (B read from the pixels).
  const batch = e.op('Slice', [e.op('Shape', [ctx.name(pixels!)], `${n}.shape`), e.i64([0]), e.i64([1])], `${n}.batch`);
  const target = e.op('Concat', [batch, e.i64([1, D])], `${n}.cls_shape`, { axis: 0 });
  const clsRow = e.op('Expand', [e.op('Reshape', [ctx.name(cls!), e.i64([1, 1, D])], `${n}.cls`), target], `${n}.cls_rows`);
  const all = e.op('Concat', [clsRow, tokens], `${n}.concat`, { axis: 1 });
  return [e.op('Add', [all, ctx.name(pos!)], n)];
};

const reduce: OpExporter = (ctx, node) => {
  const o = node.options as ReduceOptions;
  const x = node.inputs[0]!;
  const axes = o.axes.map((a) => (a < 0 ? a + x.shape.length : a));
  const op = o.op === 'sum' ? 'ReduceSum' : 'ReduceMean';
  return [ctx.e.op(op, [ctx.name(x), ctx.e.i64(axes)], node.label, { keepdims: o.keepDims ? 1 : 0, noop_with_empty_axes: axes.length === 0 ? 1 : undefined })];
};

const crossEntropy: OpExporter = (ctx, node) => {
  const [logits, labels] = node.inputs as Value[];
  const o = node.options as CrossEntropyOptions;
  return [ctx.e.op('SoftmaxCrossEntropyLoss', [ctx.name(logits!), ctx.name(labels!)], node.label, { reduction: 'mean', ignore_index: o.ignoreIndex ?? -100 })];
};

const binaryCrossEntropy: OpExporter = (ctx, node) => {
  // mean(max(x, 0) − x·t + log(1 + exp(−|x|))), PyTorch's stable form.
  const { e } = ctx;
  const n = node.label;
  const [x, t] = node.inputs.map((v) => ctx.name(v));
  const softplus = e.op('Softplus', [e.op('Neg', [e.op('Abs', [x!], `${n}.abs`)], `${n}.neg`)], `${n}.softplus`);
  const terms = e.op('Add', [e.op('Sub', [e.op('Relu', [x!], `${n}.relu`), e.op('Mul', [x!, t!], `${n}.xt`)], `${n}.sub`), softplus], `${n}.terms`);
  return [e.op('ReduceMean', [terms], n, { keepdims: 0 })];
};

const roiAlign: OpExporter = (ctx, node) => {
  const { e } = ctx;
  const o = node.options as RoiAlignOptions;
  const [features, boxes] = node.inputs as Value[];
  const n = node.label;
  const [oh, ow] = typeof o.outputSize === 'number' ? [o.outputSize, o.outputSize] : o.outputSize;
  const x = o.layout === 'nhwc' ? e.op('Transpose', [ctx.name(features!)], `${n}.nchw`, { perm: [0, 3, 1, 2] }) : ctx.name(features!);
  // boxes [K, 5] = (batch index, x1, y1, x2, y2) → rois [K, 4] and int64 batch indices [K].
  const b = ctx.name(boxes!);
  const rois = e.op('Slice', [b, e.i64([1]), e.i64([5]), e.i64([1])], `${n}.rois`);
  const index = e.op('Cast', [e.op('Reshape', [e.op('Slice', [b, e.i64([0]), e.i64([1]), e.i64([1])], `${n}.index_col`), e.i64([-1])], `${n}.index_f`)], `${n}.index`, { to: 7 });
  return [
    e.op('RoiAlign', [x, rois, index], n, {
      mode: 'avg',
      output_height: oh!,
      output_width: ow!,
      sampling_ratio: Math.max(0, o.samplingRatio ?? -1),
      spatial_scale: { float: o.spatialScale ?? 1 },
      // torchvision's aligned=False is ONNX's output_half_pixel; aligned=True is half_pixel.
      coordinate_transformation_mode: o.aligned ? 'half_pixel' : 'output_half_pixel',
    }),
  ];
};

const regionWordSimilarity: OpExporter = (ctx, node) => {
  const { e } = ctx;
  const o = node.options as RegionWordSimilarityOptions;
  const n = node.label;
  const ins = node.inputs as Value[];
  const dtype = ins[0]!.dtype;
  const normalize = (v: Value, what: string) => {
    const x = ctx.name(v);
    const sq = e.op('ReduceSum', [e.op('Mul', [x, x], `${n}.${what}_sq`), e.i64([-1])], `${n}.${what}_sumsq`, { keepdims: 1 });
    return e.op('Div', [x, e.op('Add', [e.op('Sqrt', [sq], `${n}.${what}_norm`), floatConst(e, [1e-6], dtype)], `${n}.${what}_eps`)], `${n}.${what}_unit`);
  };
  const words = e.op('Transpose', [normalize(ins[1]!, 'words')], `${n}.wordsT`, { perm: [0, 2, 1] });
  let logits = e.op('MatMul', [normalize(ins[0]!, 'regions'), words], `${n}.cos`);
  if (dtype !== 'f32') logits = e.op('Cast', [logits], `${n}.f32`, { to: 1 });
  let k = 2;
  if (o.mode === 'owl') {
    // (cos + shift) · (elu(scale) + 1), shift and scale per region as [B, R, 1].
    const perRegion = (v: Value, what: string) => {
      const x = e.op('Reshape', [ctx.name(v), e.i64([0, 0, 1])], `${n}.${what}`);
      return v.dtype === 'f32' ? x : e.op('Cast', [x], `${n}.${what}_f32`, { to: 1 });
    };
    const shift = perRegion(ins[k++]!, 'shift');
    const scale = e.op('Add', [e.op('Elu', [perRegion(ins[k++]!, 'scale')], `${n}.elu`), e.f32([1])], `${n}.scale1`);
    logits = e.op('Mul', [e.op('Add', [logits, shift], `${n}.shifted`), scale], `${n}.owl`);
  } else {
    logits = e.op('Mul', [logits, e.f32([Math.exp(o.logitScale ?? 0)])], `${n}.clip`);
  }
  if (o.queryMask) {
    // Padded queries (mask 0) get -1e6, as HF's class head.
    const mask = ins[k]!;
    const zero = e.op('Equal', [e.op('Unsqueeze', [ctx.name(mask), e.i64([1])], `${n}.mask_rows`), e.tensor('const_zero', [], onnxElementType(mask.dtype, 'queryMask'), new Uint8Array(4))], `${n}.padded`);
    logits = e.op('Where', [zero, e.f32([-1e6]), logits], `${n}.masked`);
  }
  if (!o.topK) return [e.op('Identity', [logits], n)];
  const [values, indices] = e.node('TopK', [logits, e.i64([o.topK])], `${n}.top`, { axis: -1, largest: 1, sorted: 1 }, 2) as [string, string];
  return [e.op('Identity', [logits], n), values, e.op('Cast', [indices], `${n}.top_i32`, { to: 6 })];
};

/** The 4×4 matrix that maps a box row b to b·M. */
const BOX_CONVERT: Record<string, number[]> = {
  // (cx, cy, w, h) → (cx − w/2, cy − h/2, cx + w/2, cy + h/2)
  cxcywh_to_xyxy: [1, 0, 1, 0, 0, 1, 0, 1, -0.5, 0, 0.5, 0, 0, -0.5, 0, 0.5],
  // (x1, y1, x2, y2) → ((x1 + x2)/2, (y1 + y2)/2, x2 − x1, y2 − y1)
  xyxy_to_cxcywh: [0.5, 0, -1, 0, 0, 0.5, 0, -1, 0.5, 0, 1, 0, 0, 0.5, 0, 1],
};

const boxes: OpExporter = async (ctx, node) => {
  const { e } = ctx;
  const o = node.options as BoxesOptions;
  const n = node.label;
  if (o.op === 'decode') return [e.op('Sigmoid', [e.op('Add', [ctx.name(node.inputs[0]!), ctx.name(node.inputs[1]!)], `${n}.add`)], n)];
  if (o.op in BOX_CONVERT) return [e.op('MatMul', [ctx.name(node.inputs[0]!), e.f32(BOX_CONVERT[o.op]!, [4, 4])], n)];
  if (o.op === 'owl_bias') {
    // No inputs: the bias is a constant of the grid, so it is computed once, by the kernel itself.
    if (!ctx.gpu) throw new GpuError('exportOnnx', `node ${n}: pass options.gpu to evaluate the constant box bias`);
    const [t] = await runKernel(ctx.gpu, boxesKernel, [], o);
    try {
      const bytes = await readBuffer(ctx.gpu, t!.buffer, t!.byteLength, 'exportOnnx');
      return [e.tensor(n, t!.shape, 1, new Uint8Array(bytes, 0, t!.size * 4))];
    } finally {
      t!.dispose();
    }
  }
  throw new GpuError('exportOnnx', `node ${n}: boxes op '${o.op}' has no ONNX form here`);
};

/** The exporter of each kernel that has one. */
export function opExporters(origins: ReadonlyMap<Value, ViewOrigin>): ReadonlyMap<Kernel<unknown>, OpExporter> {
  const entries: [Kernel<never>, OpExporter][] = [
    [matmulKernel, matmul],
    [layerNormKernel, layerNorm],
    [attentionKernel, attention],
    [softmaxKernel, softmax],
    [elementwiseKernel, elementwise],
    [gatherKernel, (ctx, node) => [ctx.e.op('Gather', node.inputs.map((v) => ctx.name(v)), node.label, { axis: 0 })]],
    [concatKernel, (ctx, node) => [ctx.e.op('Concat', node.inputs.map((v) => ctx.name(v)), node.label, { axis: (node.options as { axis: number }).axis })]],
    [stridedCopyKernel, stridedCopy(origins)],
    [padKernel, pad],
    [patchEmbedKernel, patchEmbed],
    [reduceKernel, reduce],
    [logSoftmaxKernel, (ctx, node) => [ctx.e.op('LogSoftmax', [ctx.name(node.inputs[0]!)], node.label, { axis: -1 })]],
    [crossEntropyKernel, crossEntropy],
    [binaryCrossEntropyWithLogitsKernel, binaryCrossEntropy],
    [roiAlignKernel, roiAlign],
    [regionWordSimilarityKernel, regionWordSimilarity],
    [boxesKernel, boxes],
  ];
  return new Map(entries as unknown as [Kernel<unknown>, OpExporter][]);
}
