import { describe, expect, it } from 'vitest';
import { Adam, GpuError, GraphBuilder, Sgd, Tensor, kernels, type Value } from '../../src/index.js';
import { useGpu } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { gradFixture, type GradCase } from '../util/grad.js';
import { randomArray } from '../util/random.js';

const getGpu = useGpu();

type Build = (g: GraphBuilder, x: Record<string, Value>, c: GradCase) => Value;

/** How each op of ../shared/fixtures/grad is written with the builder. */
const OPS: Record<string, { build: Build }> = {
  linear: {
    build: (g, { x, W, b, r }, c) => g.matmul(x!, W!, { transposeB: true, bias: b, residual: r, activation: c.params.act as 'none' }),
  },
  bmm: { build: (g, { a, b }) => g.matmul(a!, b!) },
  broadcast: { build: (g, { x, o }, c) => ((c.params.kind as string).startsWith('add') ? g.add(x!, o!) : g.mul(x!, o!)) },
  reduce: { build: (g, { x }, c) => (c.params.kind === 'sum' ? g.sum(x!, c.params.axes as number[]) : g.mean(x!, c.params.axes as number[])) },
  activation: { build: (g, { x }, c) => (c.params.act === 'gelu' ? g.gelu(x!) : g.quickGelu(x!)) },
  l2norm: { build: (g, { x }, c) => g.l2Normalize(x!, c.params.variant === 'eps' ? 1e-6 : 0) },
  layernorm: { build: (g, { x, weight, bias }, c) => g.layerNorm(x!, weight!, bias!, { eps: c.params.eps as number }) },
  patch_embed: { build: (g, { px, W, cls, pos }, c) => g.patchEmbed(px!, W!, cls!, pos!, { patchSize: c.params.patch as number }) },
  attention: {
    // Additive cases carry a per-batch [B, L, L] mask.
    build: (g, { q, k, v, mask }, c) => g.attention(q!, k!, v!, { heads: c.params.heads as number, scale: c.params.scale as number, mask: c.params.mask === 'causal' ? 'causal' : c.params.mask === 'additive' ? mask : undefined }),
  },
  roi_align: {
    build: (g, { feat, boxes }, c) =>
      g.roiAlign(feat!, boxes!, { outputSize: c.params.output_size as [number, number], spatialScale: c.params.spatial_scale as number, samplingRatio: c.params.sampling_ratio as number, aligned: c.params.aligned as boolean }),
  },
  region_word: { build: (g, { regions, words, shift, scale }) => g.regionWordSimilarity(regions!, words!, { shift, scale }).logits },
  embedding: { build: (g, { table, ids }) => g.gather(table!, ids!) },
  softmax: { build: (g, { x }) => g.softmax(x!) },
  losses: {
    build: (g, { x, logits, labels, targets }, c) =>
      c.name.startsWith('log_softmax') ? g.logSoftmax(x!) : c.name.startsWith('cross_entropy') ? g.crossEntropy(logits!, labels!) : g.binaryCrossEntropyWithLogits(logits!, targets!),
  },
  mean_tokens: { build: (g, { x }) => g.mean(g.slice(x!, [0, 1]), [1]) },
};

describe('gradients against PyTorch autograd (../shared/fixtures/grad, float64)', () => {
  for (const [op, { build }] of Object.entries(OPS)) {
    const fx = gradFixture(op);
    for (const c of fx.cases) {
      it(`${op} ${c.name}`, async () => {
        const gpu = await getGpu();
        const g = new GraphBuilder();
        const inputs: Record<string, Value> = {};
        const data: Record<string, Float32Array | Int32Array> = {};
        for (const [name, info] of Object.entries(c.inputs)) {
          const integer = info.dtype === 'int64';
          const t = fx.tensor(`${c.name}.${name}${integer ? '_i32' : ''}`);
          inputs[name] = g.input(name, info.shape, integer ? 'i32' : 'f32');
          data[name] = t.data as Float32Array | Int32Array;
        }
        const y = build(g, inputs, c);
        const dY = fx.tensor(`${c.name}.dY`);
        const seed = g.input('dY', dY.shape);
        data.dY = dY.data as Float32Array;
        const grads = g.gradients(y, c.differentiable.map((n) => inputs[n]!), { seed });
        g.output('Y', y);
        c.differentiable.forEach((n, i) => g.output(`grad_${n}`, grads[i]!));
        const plan = await g.compile(gpu);
        const { outputs } = await plan.run(data);
        plan.dispose();
        for (const name of ['Y', ...c.differentiable.map((n) => `grad_${n}`)]) {
          expectClose(outputs[name]!, fx.tensor(`${c.name}.${name}_f64`).data, { scaleTol: 1e-4, label: `${op} ${c.name} ${name}` });
        }
      });
    }
  }
});

describe('GraphBuilder.gradients', () => {
  it('accumulates the gradient of a value used several times, at inputs and intermediates', async () => {
    const gpu = await getGpu();
    const xData = randomArray(12, 1);
    const g = new GraphBuilder();
    const x = g.input('x', [3, 4]);
    const h = g.mul(x, x); // x²
    const y = g.add(g.scale(h, 3), h); // 4x²
    const loss = g.sum(g.add(y, x), [0, 1]); // Σ 4x² + x
    const [dx, dh] = g.gradients(loss, [x, h]);
    expect(loss.shape).toEqual([]);
    g.output('dx', dx!);
    g.output('dh', dh!);
    const plan = await g.compile(gpu);
    const { outputs } = await plan.run({ x: xData });
    plan.dispose();
    expectClose(outputs.dx!, Array.from(xData, (v) => 8 * v + 1), { scaleTol: 1e-6 });
    expectClose(outputs.dh!, new Array(12).fill(4), { scaleTol: 1e-6 });
  });

  it('differentiates with respect to parameters and constants through views, slices, transposes and concat', async () => {
    const gpu = await getGpu();
    const wData = randomArray(6 * 4, 2);
    const w = Tensor.from(gpu, wData, [6, 4]);
    const c = Tensor.from(gpu, randomArray(4, 3), [4]);
    const g = new GraphBuilder();
    const wv = g.parameter(w, 'w');
    const cv = g.constant(c);
    expect(g.parameters.get('w')).toBe(wv);
    // loss = Σ concat(transpose(w[1:5, 1:3]), reshape(w)[0:1]) ⊙ k: each element of w gets the weights it is multiplied by.
    const s = g.transpose(g.slice(wv, [1, 1], [5, 3]), [1, 0]); // [2, 4]
    const row = g.slice(g.reshape(wv, [4, 6]), [0], [1]); // [1, 6]: a contiguous view
    const joined = g.concat([g.reshape(s, [1, 8]), row], 1); // [1, 14]
    const k = g.fill([14], 2);
    const loss = g.sum(g.mul(g.add(joined, g.fill([1, 14], 0)), k), [0, 1]);
    const [dw, dc] = g.gradients(loss, [wv, cv], { allowUnused: true });
    g.output('dw', dw!);
    g.output('dc', dc!);
    const plan = await g.compile(gpu);
    const { outputs } = await plan.run({});
    plan.dispose();
    const want = new Float32Array(24);
    for (let r = 1; r < 5; r++) for (let q = 1; q < 3; q++) want[r * 4 + q]! += 2;
    for (let i = 0; i < 6; i++) want[i]! += 2;
    expect(Array.from(outputs.dw!)).toEqual(Array.from(want));
    expect(Array.from(outputs.dc!)).toEqual([0, 0, 0, 0]);
    w.dispose();
    c.dispose();
  });

  it('optimizerStep: forward, backward and an Adam or SGD update in one submit, as the eager step', async () => {
    const gpu = await getGpu();
    const [wData, bData, xData] = [randomArray(5 * 4, 11), randomArray(5, 12), randomArray(6 * 4, 13)];
    const labels = Int32Array.from([0, 3, 1, 4, 2, 2]);
    for (const make of [
      (ps: Tensor[]) => new Adam(gpu, ps, { lr: 0.05, weightDecay: 0.01 }),
      (ps: Tensor[]) => new Sgd(gpu, ps, { lr: 0.1, momentum: 0.9, nesterov: true }),
    ]) {
      // The graph trains its own copy of the weights; the eager optimizer steps another from the graph's gradients.
      const [w, b, w2, b2] = [wData, bData, wData, bData].map((d, i) => Tensor.from(gpu, d, i % 2 ? [5] : [5, 4]));
      const [opt, eager] = [make([w!, b!]), make([w2!, b2!])];
      const build = (update: boolean) => {
        const g = new GraphBuilder();
        const params = [g.parameter(update ? w! : w2!, 'w'), g.parameter(update ? b! : b2!, 'b')];
        const loss = g.crossEntropy(g.matmul(g.input('x', [6, 4]), params[0]!, { transposeB: true, bias: params[1] }), g.input('labels', [6], 'i32'));
        const grads = g.gradients(loss, params);
        g.output('loss', loss);
        if (update) g.optimizerStep(opt, params, grads);
        else grads.forEach((d, i) => g.output(`g${i}`, d));
        return g.compile(gpu);
      };
      const [train, gradsOnly] = await Promise.all([build(true), build(false)]);
      for (let step = 0; step < 3; step++) {
        const submits = gpu.stats().submits;
        const { outputs } = await train.run({ x: xData, labels });
        expect(gpu.stats().submits).toBe(submits + 1);
        const ref = await gradsOnly.run({ x: xData, labels });
        expect(outputs.loss![0]).toBeCloseTo(ref.outputs.loss![0]!, 6);
        const grads = [Tensor.from(gpu, ref.outputs.g0!, [5, 4]), Tensor.from(gpu, ref.outputs.g1!, [5])];
        await eager.step(grads);
        for (const t of grads) t.dispose();
        expectClose(await w!.read(), await w2!.read(), { scaleTol: 1e-6, label: `${opt.constructor.name} step ${step + 1} weight` });
        expectClose(await b!.read(), await b2!.read(), { scaleTol: 1e-6, label: `${opt.constructor.name} step ${step + 1} bias` });
      }
      expect(Array.from(await w!.read())).not.toEqual(Array.from(wData));
      for (const x of [train, gradsOnly, opt, eager, w!, b!, w2!, b2!]) x.dispose();
    }
    const g = new GraphBuilder();
    const t = Tensor.from(gpu, [1, 2], [2]);
    const opt = new Sgd(gpu, [t], { lr: 0.1 });
    const p = g.parameter(t, 'p');
    const c = g.input('c', [2]);
    expect(() => g.optimizerStep(opt, [c], [c], 'update')).toThrow(/graph node update: params\[0\] value #\d+ \(f32 \[2\]\) is not one of the optimizer's parameter tensors/);
    expect(() => g.optimizerStep(opt, [p, p], [c, c], 'update')).toThrow(/params\[1\] repeats a parameter/);
    expect(() => g.optimizerStep(opt, [p], [], 'update')).toThrow(/1 params but 0 grads/);
    opt.dispose();
    t.dispose();
  });

  it('fails at build time naming the node on non-differentiable paths and bad requests', () => {
    const g = new GraphBuilder();
    const table = g.input('table', [5, 3]);
    const ids = g.input('ids', [4], 'i32');
    const rows = g.gather(table, ids, 'lookup');
    const loss = g.sum(rows, [0, 1]);
    const other = new GraphBuilder().input('x', [1]);
    expect(() => g.gradients(loss, [ids])).toThrow(/node lookup \(gather\) is not differentiable with respect to its input 1 \(value #1 \(i32 \[4\]\), input "ids"\).*i32 values carry no gradient/);
    expect(() => g.gradients(rows, [table])).toThrow(/the loss value #\d+ \(f32 \[4, 3\]\) has 12 elements: pass its upstream gradient as options\.seed/);
    expect(() => g.gradients(rows, [table], { seed: g.input('s', [4]) })).toThrow(/seed value #\d+ \(f32 \[4\]\) must be f32 \[4, 3\] like the loss/);
    expect(() => g.gradients(loss, [g.input('unused', [2])])).toThrow(/does not depend on wrt\[0\]/);
    expect(() => g.gradients(loss, [other])).toThrow(/gradients: wrt\[0\] is not a value of this graph/);
    expect(() => g.gradients(g.sum(g.transpose(g.reshape(ids, [2, 2]), [1, 0]), [0, 1]), [table])).toThrow(GpuError);
    // NMS: its kept indices carry no gradient, so neither scores nor boxes differentiate through them.
    const boxes = g.input('boxes', [6, 4]);
    const scores = g.input('scores', [6]);
    const [keep] = g.op(kernels.nmsKernel, [boxes, scores], { iouThreshold: 0.5 }, 'nms');
    const picked = g.sum(g.gather(boxes, keep!, 'pick'), [0, 1]);
    expect(() => g.gradients(picked, [scores])).toThrow(/node pick \(gather\) is not differentiable with respect to its input 1 \(value #\d+ \(i32 \[6\]\), made by node nms\)/);
    expect(() => g.gradients(picked, [boxes])).toThrow(/made by node nms/);
    const q = g.input('q', [1, 3, 4]);
    const mask = g.input('mask', [3, 3]);
    const attended = g.sum(g.attention(q, q, q, { heads: 1, mask }, 'attn'), [0, 1, 2]);
    expect(g.gradients(attended, [q])).toHaveLength(1);
    expect(() => g.gradients(attended, [mask])).toThrow(/node attn \(attention\) is not differentiable with respect to its input 3 .*the attention mask has no backward rule/);
  });
});
