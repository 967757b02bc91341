// Finite-difference checks of graph gradients: random small graphs built from every op, their
// gradients computed on the GPU (f32) against central differences of a float64 CPU evaluation of
// the same graph through the kernels' references (test/util/evaluate.ts).
import { describe, it } from 'vitest';
import { GraphBuilder, type Value } from '../../src/index.js';
import { useGpu } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { evaluateGraph } from '../util/evaluate.js';
import { randomArray, rng } from '../util/random.js';

const getGpu = useGpu();

/** A graph under construction with its random input data. */
class RandomGraph {
  readonly g = new GraphBuilder();
  readonly data: Record<string, Float32Array | Int32Array> = {};
  /** Inputs the gradient is taken with respect to (integer inputs are not). */
  readonly wrt: string[] = [];
  readonly pool: Value[] = [];
  readonly rand: () => number;
  #seed: number;

  constructor(seed: number) {
    this.#seed = seed;
    this.rand = rng(seed);
  }

  int(lo: number, hi: number): number {
    return lo + Math.floor(this.rand() * (hi - lo + 1));
  }

  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rand() * xs.length)]!;
  }

  /** A random f32 input; `wrt` false leaves it out of the gradients (an attention mask has none). */
  input(shape: readonly number[], scale = 1, wrt = true): Value {
    const name = `in${Object.keys(this.data).length}`;
    this.data[name] = randomArray(shape.reduce((a, b) => a * b, 1), ++this.#seed * 7919, scale);
    if (wrt) this.wrt.push(name);
    return this.g.input(name, shape);
  }

  /** An i32 input of values in [0, n). */
  indices(shape: readonly number[], n: number): Value {
    const name = `in${Object.keys(this.data).length}`;
    this.data[name] = Int32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => this.int(0, n - 1));
    return this.g.input(name, shape, 'i32');
  }

  /** A recent value as [rows, last dimension]. */
  matrix(): Value {
    const x = this.recent();
    return this.g.reshape(x, [-1, x.shape.at(-1)!]);
  }

  /** A recent value of the pool (values get reused: their gradients accumulate). */
  recent(): Value {
    return this.pool[Math.max(0, this.pool.length - 1 - this.int(0, 2))]!;
  }
}

type Step = (r: RandomGraph) => Value;

/** One builder op each, on a value from the pool (with fresh inputs where the op needs operands). */
const STEPS: Record<string, Step> = {
  add: (r) => {
    const x = r.recent();
    const same = r.pool.find((v) => v !== x && v.shape.join() === x.shape.join());
    return r.g.add(x, same && r.rand() < 0.5 ? same : r.input(r.pick([x.shape.slice(-1), [1, ...x.shape.slice(1)], x.shape])));
  },
  mul: (r) => {
    const x = r.recent();
    return r.g.mul(r.rand() < 0.3 ? x : r.input(r.pick([x.shape.slice(-1), [1, ...x.shape.slice(1)], x.shape])), x);
  },
  scale: (r) => r.g.scale(r.recent(), r.pick([-0.5, 2, 0.3])),
  matmul: (r) => {
    const x = r.recent();
    const K = x.shape.at(-1)!;
    const N = r.int(1, 6);
    const transposeB = r.rand() < 0.5;
    const out = [...x.shape.slice(0, -1), N];
    return r.g.matmul(x, r.input(transposeB ? [N, K] : [K, N]), {
      transposeB,
      activation: r.pick(['none', 'gelu', 'quick_gelu'] as const),
      bias: r.rand() < 0.5 ? r.input([N]) : undefined,
      residual: r.rand() < 0.5 ? r.input(out) : undefined,
    });
  },
  batchedMatmul: (r) => {
    let x = r.recent();
    if (x.shape.length < 3) x = r.g.reshape(x, [1, ...x.shape]);
    const K = x.shape.at(-1)!;
    const N = r.int(1, 5);
    const transposeB = r.rand() < 0.5;
    return r.g.matmul(x, r.input([...x.shape.slice(0, -2), ...(transposeB ? [N, K] : [K, N])]), { transposeB });
  },
  gelu: (r) => r.g.gelu(r.recent()),
  quickGelu: (r) => r.g.quickGelu(r.recent()),
  l2Normalize: (r) => r.g.l2Normalize(r.recent(), r.pick([1e-6, 0])),
  softmax: (r) => r.g.softmax(r.recent()),
  maskedSoftmax: (r) => {
    const x = r.recent();
    return r.g.softmax(x, { mask: r.input(x.shape.slice(-1)) });
  },
  logSoftmax: (r) => r.g.logSoftmax(r.recent()),
  crossEntropy: (r) => {
    const x = r.matrix();
    const [N, C] = x.shape as [number, number];
    const labels = r.indices([N], C);
    // Row 0 labelled ignoreIndex (the default, or a class index: that class's rows drop out too);
    // the last row keeps a label that is not, so some row counts.
    const ignoreIndex = r.pick(C > 1 ? [undefined, 0, C - 1] : [undefined]);
    const data = r.data[(labels.source as { name: string }).name]!;
    data[0] = ignoreIndex ?? -100;
    data[N - 1] = ignoreIndex === 0 ? C - 1 : 0;
    // The scalar loss as [1, 1], so that later steps have dimensions to work on.
    return r.g.reshape(r.g.crossEntropy(x, labels, { ignoreIndex }), [1, 1]);
  },
  binaryCrossEntropyWithLogits: (r) => {
    const x = r.recent();
    const targets = r.input(x.shape);
    const name = r.wrt.at(-1)!;
    r.data[name] = (r.data[name] as Float32Array).map((v) => (v + 1) / 2); // targets in [0, 1]
    return r.g.reshape(r.g.binaryCrossEntropyWithLogits(x, targets), [1, 1]);
  },
  layerNorm: (r) => {
    const x = r.recent();
    const d = x.shape.at(-1)!;
    return r.g.layerNorm(x, r.input([d]), r.input([d]));
  },
  addLayerNorm: (r) => {
    const x = r.recent();
    const d = x.shape.at(-1)!;
    const { out, sum } = r.g.addLayerNorm(x, r.input(x.shape), r.input([d]), r.input([d]));
    r.pool.push(sum); // later steps may take the sum: both outputs then carry gradients
    return out;
  },
  patchEmbed: (r) => {
    const [p, d] = [2, r.int(2, 4)];
    const [gh, gw] = [r.int(1, 2), r.int(1, 3)];
    const pixels = r.input([r.int(1, 2), 3, gh * p, gw * p]);
    return r.g.patchEmbed(pixels, r.input([d, 3, p, p]), r.input([d]), r.input([1 + gh * gw, d]), { patchSize: p });
  },
  attention: (r) => {
    const [B, L, H, Dh] = [r.int(1, 2), r.int(2, 5), r.int(1, 2), r.int(1, 4)];
    const qkv = [0, 1, 2].map(() => r.input([B, L, H * Dh]));
    const mask = r.pick(['none', 'causal', 'tensor'] as const);
    return r.g.attention(qkv[0]!, qkv[1]!, qkv[2]!, { heads: H, scale: r.pick([undefined, 0.7]), mask: mask === 'none' ? undefined : mask === 'causal' ? 'causal' : r.input([L, L], 1, false) });
  },
  attentionPacked: (r) => {
    const x = r.recent();
    const [L, H] = [x.shape.at(-2) ?? 1, r.int(1, 2)];
    const qkv = r.g.matmul(r.g.reshape(x, [-1, L, x.shape.at(-1)!]), r.input([3 * H * 2, x.shape.at(-1)!]), { transposeB: true });
    return r.g.attentionPacked(qkv, { heads: H, mask: r.pick([undefined, 'causal'] as const) });
  },
  roiAlign: (r) => {
    const x = r.recent();
    // The value as a 1 x C x H x W feature map, and two boxes inside it (coordinates: no gradient).
    const [h, w] = [x.shape.length > 2 ? x.shape.at(-2)! : 1, x.shape.at(-1)!];
    const features = r.g.reshape(x, [1, -1, h, w]);
    const boxes = r.input([2, 5], 1, false);
    r.data[(boxes.source as { name: string }).name] = Float32Array.from([0, 0.2, 0.1, w - 0.7, h - 0.4, 0, 0.6, 0.3, w - 1.2, h - 0.1]);
    return r.g.roiAlign(features, boxes, { outputSize: [2, 2], samplingRatio: r.pick([2, -1]), aligned: r.rand() < 0.5 });
  },
  regionWordSimilarity: (r) => {
    const x = r.recent();
    const regions = x.shape.length === 3 ? x : r.g.reshape(x, [1, ...x.shape.slice(-2)]);
    const [b, n, d] = regions.shape as [number, number, number];
    const words = r.input([r.pick([1, b]), r.int(1, 3), d]);
    const owl = r.rand() < 0.5;
    return r.g.regionWordSimilarity(regions, words, owl ? { shift: r.input([b, n]), scale: r.input([b, n, 1]) } : { logitScale: 1.5 }).logits;
  },
  gather: (r) => {
    const table = r.matrix();
    return r.g.gather(table, r.indices([r.int(1, 3), r.int(1, 4)], table.shape[0]!));
  },
  transpose: (r) => {
    const x = r.recent();
    const perm = [...x.shape.keys()].sort(() => r.rand() - 0.5);
    return r.g.transpose(x, perm);
  },
  slice: (r) => {
    const x = r.recent();
    const starts = x.shape.map((n) => r.int(0, Math.max(0, n - 2)));
    return r.g.slice(x, starts, x.shape.map((n, d) => r.int(starts[d]! + 1, n)));
  },
  concat: (r) => {
    const x = r.recent();
    const axis = r.int(0, x.shape.length - 1);
    return r.g.concat([x, r.rand() < 0.5 ? x : r.input(x.shape.map((n, d) => (d === axis ? r.int(1, 3) : n)))], axis);
  },
  reshape: (r) => {
    const x = r.recent();
    return x.shape.length === 2 ? r.g.reshape(x, [x.shape[0]!, 1, x.shape[1]!]) : r.g.reshape(x, [-1, x.shape.at(-1)!]);
  },
  sum: (r) => {
    const x = r.recent();
    const axes = [...x.shape.keys()].filter(() => r.rand() < 0.5);
    return r.g.sum(x, axes.length === x.shape.length ? axes.slice(1) : axes);
  },
  mean: (r) => {
    const x = r.recent();
    return r.g.mean(x, [r.int(-x.shape.length, x.shape.length - 1)]);
  },
};

/**
 * Builds `steps` random ops after `first` (the op under test), then loss = Σ last ⊙ w; checks the
 * gradient of every input against central differences of the float64 evaluation.
 */
async function check(seed: number, first: string, steps: number): Promise<void> {
  const gpu = await getGpu();
  const r = new RandomGraph(seed);
  r.pool.push(r.input([r.int(2, 4), r.int(2, 5)]), r.input([r.int(2, 3), r.int(2, 3), r.int(2, 4)]));
  r.pool.push(STEPS[first]!(r));
  const names = Object.keys(STEPS);
  for (let i = 0; i < steps; i++) r.pool.push(STEPS[r.pick(names)]!(r));
  const last = r.pool.at(-1)!;
  const weights = r.input(last.shape);
  const loss = r.g.sum(r.g.mul(last, weights), [...last.shape.keys()]);
  const names_ = r.wrt;
  const wrt = names_.map((n) => r.g.inputs.get(n)!);
  const grads = r.g.gradients(loss, wrt, { allowUnused: true });
  grads.forEach((d, i) => r.g.output(names_[i]!, d));
  const plan = await r.g.compile(gpu);
  const { outputs } = await plan.run(r.data);
  plan.dispose();

  const lossAt = (data: Record<string, ArrayLike<number>>) => evaluateGraph(r.g, data, new Map(), loss).get(loss)![0]!;
  const h = 1e-6;
  const fds = names_.map((name) => {
    const x = Float64Array.from(r.data[name]!);
    const fd = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) {
      const v = x[i]!;
      x[i] = v + h;
      const up = lossAt({ ...r.data, [name]: x });
      x[i] = v - h;
      const down = lossAt({ ...r.data, [name]: x });
      x[i] = v;
      fd[i] = (up - down) / (2 * h);
    }
    return fd;
  });
  // Relative to the largest gradient of the graph: an input whose gradient is ~0 (e.g. through a
  // sum of l2-normalised rows) gets f32 rounding noise of the graph's scale, not of its own.
  const scale = Math.max(...fds.map((fd) => fd.reduce((m, v) => Math.max(m, Math.abs(v)), 0)));
  fds.forEach((fd, i) => expectClose(outputs[names_[i]!]!, fd, { atol: 2e-4 * scale, rtol: 2e-4, label: `seed ${seed}, ${first} then ${steps} random ops: d loss / d ${names_[i]}` }));
}

describe('gradients against finite differences on random graphs', () => {
  for (const op of Object.keys(STEPS)) {
    it(`${op}, alone and followed by random ops`, async () => {
      for (let s = 0; s < 3; s++) await check(1000 * s + op.length, op, s);
    });
  }
  it('longer random chains of every op', async () => {
    for (let s = 0; s < 6; s++) await check(77 + s, 'add', 8);
  });
});
