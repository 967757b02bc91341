// exportOnnx against an independent runtime: every exportable op, in small graphs, runs in
// onnxruntime-node (CPU) and must give ovgpu's own outputs within 1e-4 of their scale.
import { describe, expect, it } from 'vitest';
import { GpuError, GraphBuilder, Tensor, exportOnnx, type DType, type GraphPlan, type Value } from '../../src/index.js';
import { nmsKernel } from '../../src/kernels/nms.js';
import { boxesKernel } from '../../src/kernels/boxes.js';
import { regionWordSimilarityKernel } from '../../src/kernels/regionWordSimilarity.js';
import { useGpu } from '../util/gpu.js';
import { runOrt, type OrtFeed } from '../util/ort.js';
import { expectClose } from '../util/check.js';
import { randomArray, rng } from '../util/random.js';

const getGpu = useGpu();

type Feed = OrtFeed;

/** Builds the graph with inputs of the feeds' shapes, runs it here and in ORT, compares every output. */
async function roundTrip(build: (g: GraphBuilder, inputs: Record<string, Value>) => void, feeds: Record<string, Feed>, tol = 1e-4): Promise<{ plan: GraphPlan; bytes: Uint8Array }> {
  const gpu = await getGpu();
  const g = new GraphBuilder();
  const inputs = Object.fromEntries(Object.entries(feeds).map(([k, f]) => [k, g.input(k, f.shape, f.dtype ?? 'f32')]));
  build(g, inputs);
  const plan = await g.compile(gpu);
  const ours = (await plan.run(Object.fromEntries(Object.entries(feeds).map(([k, f]) => [k, f.data])))).outputs;
  const bytes = await exportOnnx(plan);
  const theirs = await runOrt(bytes, feeds);
  for (const [name, v] of g.outputs) {
    const t = theirs[name]!;
    expect(t.dims, `output ${name} shape`).toEqual(v.shape);
    expectClose(Array.from(t.data as Float32Array, Number), ours[name]!, { scaleTol: tol, label: name });
  }
  plan.dispose();
  return { plan, bytes };
}

const f32 = (shape: number[], seed: number, scale = 1): Feed => ({ data: randomArray(shape.reduce((a, b) => a * b, 1), seed, scale), shape });
const i32 = (values: number[], shape = [values.length]): Feed => ({ data: Int32Array.from(values), shape, dtype: 'i32' });

async function weight(shape: number[], seed: number, scale = 1): Promise<Tensor> {
  return Tensor.from(await getGpu(), randomArray(shape.reduce((a, b) => a * b, 1), seed, scale), shape);
}

describe('exportOnnx: every forward op against onnxruntime-node', () => {
  it('matmul with bias, gelu / quick_gelu, residual, transposed and batched operands', async () => {
    const w = await weight([24, 16], 3, 0.3);
    const bias = await weight([24], 4);
    await roundTrip(
      (g, { a, r, x, y }) => {
        g.output('gelu', g.matmul(a!, g.constant(w), { transposeB: true, bias: g.constant(bias), activation: 'gelu', residual: r }));
        g.output('quick', g.matmul(a!, g.constant(w), { transposeB: true, activation: 'quick_gelu' }));
        g.output('batched', g.matmul(x!, y!));
      },
      { a: f32([2, 5, 16], 1), r: f32([2, 5, 24], 2), x: f32([2, 3, 7], 5), y: f32([2, 7, 4], 6) },
    );
  });

  it('layerNorm and addLayerNorm (both outputs)', async () => {
    const w = await weight([12], 7);
    const b = await weight([12], 8);
    await roundTrip(
      (g, { x, r }) => {
        g.output('ln', g.layerNorm(x!, g.constant(w), g.constant(b), { eps: 1e-5 }));
        const { out, sum } = g.addLayerNorm(x!, r!, g.constant(w), g.constant(b));
        g.output('out', out);
        g.output('sum', sum);
      },
      { x: f32([2, 3, 12], 1, 3), r: f32([2, 3, 12], 2) },
    );
  });

  it('attention: packed and separate q, k, v; no mask, causal, additive mask', async () => {
    const L = 6;
    const mask = Float32Array.from({ length: L * L }, (_, i) => (i % 5 === 1 ? -Infinity : (i % 3) * 0.25));
    await roundTrip(
      (g, { qkv, q, k, v, m }) => {
        g.output('packed', g.attentionPacked(qkv!, { heads: 2 }));
        g.output('causal', g.attentionPacked(qkv!, { heads: 2, mask: 'causal' }));
        g.output('masked', g.attention(q!, k!, v!, { heads: 4, mask: m!, scale: 0.3 }));
      },
      { qkv: f32([2, L, 3 * 16], 1), q: f32([2, L, 16], 2), k: f32([2, L, 16], 3), v: f32([2, L, 16], 4), m: { data: mask, shape: [L, L] } },
    );
  });

  it('softmax (with mask), logSoftmax, elementwise ops, cast round trip, reductions', async () => {
    await roundTrip(
      (g, { x, m, b }) => {
        g.output('softmax', g.softmax(x!, { mask: m }));
        g.output('logSoftmax', g.logSoftmax(x!));
        g.output('add', g.add(x!, b!));
        g.output('mul', g.mul(x!, b!));
        g.output('scale', g.scale(x!, -1.5));
        g.output('gelu', g.gelu(x!));
        g.output('quickGelu', g.quickGelu(x!));
        g.output('l2', g.l2Normalize(x!));
        g.output('sum', g.sum(x!, [-1]));
        g.output('mean', g.mean(x!, [0, 2]));
        g.output('all', g.sum(x!, [0, 1, 2]));
      },
      { x: f32([3, 4, 10], 1, 2), m: f32([10], 2), b: f32([4, 10], 3) },
    );
  });

  it('gather, concat, slices (views and strided copies), transposes and reshapes', async () => {
    const table = await weight([9, 8], 4);
    await roundTrip(
      (g, { x, ids }) => {
        g.output('gather', g.gather(g.constant(table), ids!));
        g.output('concat', g.concat([x!, g.scale(x!, 2)], 1));
        g.output('rows', g.slice(x!, [0, 1], [2, 3]));
        g.output('cols', g.slice(x!, [0, 0, 2], [2, 3, 7]));
        g.output('t', g.transpose(x!, [2, 0, 1]));
        g.output('r', g.reshape(g.transpose(x!, [0, 2, 1]), [2, -1]));
      },
      { x: f32([2, 3, 8], 1), ids: i32([0, 8, 3, 3, 5, 1], [2, 3]) },
    );
  });

  it('patch embedding as Conv with class and position embeddings', async () => {
    const w = await weight([8, 3, 4, 4], 2, 0.2);
    const cls = await weight([8], 3);
    const pos = await weight([1 + 3 * 2, 8], 4);
    await roundTrip((g, { px }) => g.output('tokens', g.patchEmbed(px!, g.constant(w), g.constant(cls), g.constant(pos), { patchSize: 4 })), { px: f32([2, 3, 12, 8], 1) });
  });

  it('losses: cross-entropy with i32 labels (ignore_index) and binary cross-entropy with logits', async () => {
    await roundTrip(
      (g, { logits, labels, classLabels, targets }) => {
        g.output('ce', g.crossEntropy(logits!, labels!));
        g.output('ce_ignore', g.crossEntropy(logits!, classLabels!, { ignoreIndex: 1 }));
        g.output('bce', g.binaryCrossEntropyWithLogits(logits!, targets!));
      },
      { logits: f32([5, 4], 1, 3), labels: i32([0, 3, -100, 1, 2]), classLabels: i32([0, 3, 1, 1, 2]), targets: { data: Float32Array.from({ length: 20 }, (_, i) => (i % 3) / 2), shape: [5, 4] } },
    );
  });

  it('RoIAlign (NCHW and NHWC, aligned or not, fixed and adaptive sampling)', async () => {
    const r = rng(9);
    const boxes = Float32Array.from({ length: 6 * 5 }, (_, i) => (i % 5 === 0 ? Math.floor(i / 5) % 2 : r() * 12));
    for (let k = 0; k < 6; k++) {
      const [x1, x2] = [boxes[k * 5 + 1]!, boxes[k * 5 + 3]!].sort((a, b) => a - b);
      boxes.set([x1!, boxes[k * 5 + 2]!, x2! + 1, boxes[k * 5 + 2]! + 3], k * 5 + 1);
    }
    await roundTrip(
      (g, { nchw, nhwc, rois }) => {
        g.output('a', g.roiAlign(nchw!, rois!, { outputSize: [3, 2], spatialScale: 0.5, samplingRatio: 2, aligned: true }));
        g.output('b', g.roiAlign(nchw!, rois!, { outputSize: 2, spatialScale: 1, samplingRatio: -1, aligned: false }));
        g.output('c', g.roiAlign(nhwc!, rois!, { outputSize: 2, spatialScale: 0.5, layout: 'nhwc', aligned: true }));
      },
      { nchw: f32([2, 3, 10, 9], 1), nhwc: f32([2, 10, 9, 3], 2), rois: { data: boxes, shape: [6, 5] } },
    );
  });

  it('region–word similarity: CLIP style with top-k, OWL-ViT style with a query mask', async () => {
    await roundTrip(
      (g, { regions, words, shift, scale, mask }) => {
        const clip = g.regionWordSimilarity(regions!, words!, { logitScale: 2.5, topK: 3 });
        g.output('clip', clip.logits);
        g.output('topValues', clip.topValues!);
        g.output('topIndices', clip.topIndices!);
        g.output('owl', g.op(regionWordSimilarityKernel, [regions!, words!, shift!, scale!, mask!], { mode: 'owl', queryMask: true })[0]!);
      },
      { regions: f32([2, 5, 8], 1), words: f32([1, 4, 8], 2), shift: f32([2, 5], 3), scale: f32([2, 5, 1], 4), mask: i32([1, 1, 0, 1], [1, 4]) },
    );
  });

  it("OWL-ViT's box decoding, box bias (a constant) and box conversions", async () => {
    await roundTrip(
      (g, { head, boxes }) => {
        const bias = g.op(boxesKernel, [], { op: 'owl_bias', gridSize: 3 })[0]!;
        g.output('decoded', g.op(boxesKernel, [head!, bias], { op: 'decode' })[0]!);
        g.output('xyxy', g.op(boxesKernel, [boxes!], { op: 'cxcywh_to_xyxy' })[0]!);
        g.output('cxcywh', g.op(boxesKernel, [boxes!], { op: 'xyxy_to_cxcywh' })[0]!);
      },
      { head: f32([2, 9, 4], 1), boxes: f32([5, 4], 2) },
    );
  });
});

describe('exportOnnx: model contract', () => {
  it('leaves the batch symbolic: a graph exported at batch 2 runs at batch 3 in ORT and equals ovgpu at 3', async () => {
    const gpu = await getGpu();
    const w = await weight([8, 3, 4, 4], 2, 0.2);
    const cls = await weight([8], 3);
    const pos = await weight([5, 8], 4);
    const qkv = await weight([24, 8], 5, 0.3);
    const build = (b: number) => {
      const g = new GraphBuilder();
      const px = g.input('pixels', [b, 3, 8, 8]);
      const t = g.patchEmbed(px, g.constant(w), g.constant(cls), g.constant(pos), { patchSize: 4 });
      const a = g.attentionPacked(g.matmul(t, g.constant(qkv), { transposeB: true }), { heads: 2 });
      g.output('pooled', g.reshape(g.slice(a, [0, 0], [b, 1]), [b, -1]));
      g.output('flat', g.reshape(a, [b * 5, 8]));
      return g;
    };
    const bytes = await exportOnnx(build(2));
    const pixels = f32([3, 3, 8, 8], 7);
    const plan = await build(3).compile(gpu);
    const ours = (await plan.run({ pixels: pixels.data })).outputs;
    const theirs = await runOrt(bytes, { pixels });
    expect(theirs.pooled!.dims).toEqual([3, 8]);
    expectClose(theirs.pooled!.data as Float32Array, ours.pooled!, { scaleTol: 1e-4, label: 'pooled' });
    expectClose(theirs.flat!.data as Float32Array, ours.flat!, { scaleTol: 1e-4, label: 'flat' });
    plan.dispose();
  });

  it('fails at export, naming the node, for ops without an ONNX form (NMS, backward kernels)', async () => {
    const g = new GraphBuilder();
    const boxes = g.input('boxes', [4, 4]);
    const scores = g.input('scores', [4]);
    g.output('keep', g.op(nmsKernel, [boxes, scores], { iouThreshold: 0.5 } as never, 'my.nms')[0]!);
    await expect(exportOnnx(g)).rejects.toThrow(/my\.nms.*nms/);
    await expect(exportOnnx(g)).rejects.toBeInstanceOf(GpuError);

    const h = new GraphBuilder();
    const x = h.input('x', [3, 4]);
    const loss = h.sum(h.gelu(x), [0, 1]);
    h.output('dx', h.gradients(loss, [x])[0]!);
    await expect(exportOnnx(h)).rejects.toThrow(/gelu_grad|Backward|backward/);

    const k = new GraphBuilder();
    k.output('x', k.scale(k.input('x', [2]), 2));
    await expect(exportOnnx(k)).rejects.toThrow(/"x" names both an input and an output/);
  });
});
