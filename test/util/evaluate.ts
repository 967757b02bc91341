// A float64 CPU evaluation of a recorded graph through the kernels' CPU references: the oracle of
// the finite-difference gradient checks. Every node kernel a test graph uses needs a case here.
import { sizeOf } from '../../src/dtype.js';
import type { GraphBuilder, Value } from '../../src/graph/builder.js';
import {
  elementwiseReference,
  attentionReference,
  gatherReference,
  regionWordSimilarityReference,
  roiAlignReference,
  layerNormReference,
  patchEmbedReference,
  lossesReference,
  softmaxReference,
  matmulReference,
  padReference,
  reduceReference,
  stridedCopyReference,
  type AttentionOptions,
  type CrossEntropyOptions,
  type ElementwiseOptions,
  type RegionWordSimilarityOptions,
  type RoiAlignOptions,
  type LayerNormOptions,
  type PatchEmbedOptions,
  type MatmulOptions,
  type PadOptions,
  type ReduceOptions,
  type StridedView,
} from '../../src/kernels/index.js';

type Data = Float64Array;
type Evaluator = (inputs: readonly { value: Value; data: Data }[], options: unknown, outputs: readonly Value[]) => Data[];

const EVALUATORS: Record<string, Evaluator> = {
  elementwise: ([x, b], o) => [elementwiseReference(x!.data, x!.value.shape, o as ElementwiseOptions, b?.data, b?.value.shape)],
  matmul: ([a, b, ...rest], options) => {
    const o = options as MatmulOptions;
    const K = a!.value.shape.at(-1)!;
    const N = o.transposeB ? b!.value.shape.at(-2)! : b!.value.shape.at(-1)!;
    const M = sizeOf(a!.value.shape) / K;
    const batched = b!.value.shape.length > 2;
    const bias = o.hasBias ? rest.shift()!.data : undefined;
    const residual = o.hasResidual ? rest.shift()!.data : undefined;
    return [matmulReference(a!.data, b!.data, M, N, K, { transposeB: o.transposeB, activation: o.activation, bias, residual, batch: batched ? sizeOf(a!.value.shape.slice(0, -2)) : undefined })];
  },
  copy: ([x], view) => [Float64Array.from(stridedCopyReference(x!.data, view as StridedView))],
  concat: (xs, o, [out]) => {
    const axis = (o as { axis: number }).axis;
    const outer = sizeOf(out!.shape.slice(0, axis));
    const y: number[] = [];
    for (let i = 0; i < outer; i++) {
      for (const { value, data } of xs) {
        const run = sizeOf(value.shape.slice(axis));
        y.push(...data.subarray(i * run, (i + 1) * run));
      }
    }
    return [Float64Array.from(y)];
  },
  pad: ([x], o) => [Float64Array.from(padReference(x!.data, x!.value.shape, o as PadOptions))],
  reduce: ([x], o) => [reduceReference(x!.data, x!.value.shape, o as ReduceOptions)],
  layerNorm: ([x, weight, bias, residual], options) => {
    const o = options as LayerNormOptions;
    const s = residual ? x!.data.map((v, i) => v + residual.data[i]!) : x!.data;
    const out = layerNormReference(s, x!.value.shape.at(-1)!, weight!.data, bias!.data, o.eps);
    return residual ? [out, s] : [out];
  },
  patchEmbed: ([pixels, weight, cls, pos], o) => [patchEmbedReference(pixels!.data, pixels!.value.shape, weight!.data, cls!.data, pos!.data, (o as PatchEmbedOptions).patchSize)],
  attention: (inputs, options) => {
    const o = options as AttentionOptions;
    const [B, L, W] = inputs[0]!.value.shape as [number, number, number];
    const mask = o.mask === 'tensor' ? inputs.at(-1)!.data : o.mask === 'causal' ? ('causal' as const) : undefined;
    // Packed: q | k | v along the last dimension.
    const part = (p: number) => (o.packed ? inputs[0]!.data.filter((_, i) => Math.floor((i % W) / (W / 3)) === p) : inputs[p]!.data);
    const hd = o.packed ? W / 3 : W;
    return [attentionReference(part(0), part(1), part(2), { batch: B, length: L, heads: o.heads, headDim: hd / o.heads, scale: o.scale, mask })];
  },
  softmax: ([x, mask]) => [softmaxReference(x!.data, x!.value.shape.at(-1)!, mask?.data)],
  logSoftmax: ([x]) => [lossesReference.logSoftmax(x!.data, x!.value.shape.at(-1)!)],
  crossEntropy: ([logits, labels], o) => [Float64Array.of(lossesReference.crossEntropy(logits!.data, labels!.data, logits!.value.shape[1]!, (o as CrossEntropyOptions).ignoreIndex))],
  binaryCrossEntropyWithLogits: ([logits, targets]) => [Float64Array.of(lossesReference.binaryCrossEntropyWithLogits(logits!.data, targets!.data))],
  roiAlign: ([features, boxes], o) => [roiAlignReference(features!.data, features!.value.shape as [number, number, number, number], boxes!.data, o as RoiAlignOptions)],
  regionWordSimilarity: ([regions, words, shift, scale], options) => {
    const o = options as RegionWordSimilarityOptions;
    const [b, r, d] = regions!.value.shape as [number, number, number];
    const dims: [number, number, number, number] = [b, r, words!.value.shape[1]!, d];
    return [regionWordSimilarityReference(regions!.data, words!.data, dims, o.mode === 'owl' ? { shift: shift!.data, scale: scale!.data } : { logitScale: o.logitScale })];
  },
  gather: ([table, ids]) => [Float64Array.from(gatherReference(table!.data, table!.value.shape[1]!, ids!.data))],
};

/** Every value of `g` up to `last`, in float64, for the given input data and constants' host data. */
export function evaluateGraph(g: GraphBuilder, inputs: Record<string, ArrayLike<number>>, constants: ReadonlyMap<Value, ArrayLike<number>>, last: Value): Map<Value, Data> {
  const at = new Map<Value, Data>();
  for (const v of g.values.slice(0, last.id + 1)) {
    if (at.has(v)) continue;
    const s = v.source;
    if (s.kind === 'input') at.set(v, Float64Array.from(inputs[s.name]!));
    else if (s.kind === 'constant') at.set(v, Float64Array.from(constants.get(v)!));
    else if (s.kind === 'fill') at.set(v, new Float64Array(sizeOf(v.shape)).fill(s.value));
    else if (s.kind === 'view') at.set(v, at.get(s.base)!.subarray(s.offset, s.offset + sizeOf(v.shape)));
    else {
      const node = g.nodes[s.node]!;
      const evaluate = EVALUATORS[node.kernel.name];
      if (!evaluate) throw new Error(`evaluateGraph: no CPU evaluation of kernel ${node.kernel.name}`);
      const outs = evaluate(node.inputs.map((x) => ({ value: x, data: at.get(x)! })), node.options, node.outputs);
      node.outputs.forEach((o, i) => at.set(o, outs[i]!));
    }
  }
  return at;
}
