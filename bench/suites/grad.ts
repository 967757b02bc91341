// `grad` suite: forward + backward as one plan (one submit, the loss the only readback) against
// TF.js's tf.grads on our GPUDevice: a CLIP ViT-B/32 residual block (50 tokens) and the CLIP text
// tower (77 tokens, causal) at batch 8, loss = mean of the output's squares, gradients w.r.t. the
// input and every weight. The peer's gradients are read back once and compared with ours, so the
// two sides are known to compute the same thing.
import { GraphBuilder, type Value } from '../../src/graph/builder.js';
import { Tensor } from '../../src/tensor.js';
import type { TextConfig, TowerConfig, VisionConfig } from '../../src/models/clip/config.js';
import { textFromEmbeddings, transformerBlock } from '../../src/models/clip/towers.js';
import { towerShapes } from '../../src/models/clip/weights.js';
import { TINY_CLIP, vitB32 } from '../../src/models/random.js';
import { randomArray } from '../../test/util/random.js';
import { matches, timeAsync, type BenchRow } from '../harness.js';
import type { Suite, SuiteContext } from '../main.js';
import type { PeerInput } from '../peers.js';
import { callRow, failedRow, flopsOf, onceRow, QUICK_VISION, randomWeights } from './common.js';
import { trainingMemory } from '../../test/util/training-memory.js';
import { isCpuAdapter } from '../../src/kernels/program.js';

const BATCH = 8;

/** A differentiable model: the graph from (input, weights) to its output, and the same in TF.js ops. */
interface Model {
  label: string;
  input: number[];
  /** Canonical weight names and shapes (what the graph and the peer take). */
  shapes: Map<string, number[]>;
  /** Extra int32 inputs (the text tower's pool indices): graph inputs and the peer's trailing inputs. */
  indices?: { name: string; data: Int32Array };
  build(g: GraphBuilder, x: Value, w: (name: string) => Value, indices?: Value): Value;
  tf(tf: any, x: any, w: (name: string) => any, indices?: any): any;
}

/** TF.js's form of transformerBlock (pre-LN, packed qkv, nn.Linear weights, quick_gelu MLP). */
function tfBlock(tf: any, c: TowerConfig, x: any, p: (s: string) => any, causal: boolean): any {
  const [b, l, d] = x.shape as [number, number, number];
  const dh = d / c.heads;
  const ln = (v: any, name: string) => {
    const { mean, variance } = tf.moments(v, -1, true);
    return tf.add(tf.mul(tf.div(tf.sub(v, mean), tf.sqrt(tf.add(variance, c.eps))), p(`${name}.weight`)), p(`${name}.bias`));
  };
  const linear = (v: any, name: string) => {
    const [rows, k] = [v.size / v.shape.at(-1), v.shape.at(-1)];
    const y = tf.add(tf.matMul(tf.reshape(v, [rows, k]), p(`${name}.weight`), false, true), p(`${name}.bias`));
    return tf.reshape(y, [...v.shape.slice(0, -1), y.shape[1]]);
  };
  const heads = (v: any) => tf.transpose(tf.reshape(v, [b, l, c.heads, dh]), [0, 2, 1, 3]);
  const [q, k, v] = tf.split(linear(ln(x, 'ln1'), 'qkv'), 3, -1).map(heads);
  let s = tf.mul(tf.matMul(q, k, false, true), dh ** -0.5);
  if (causal) s = tf.add(s, tf.mul(tf.sub(1, tf.linalg.bandPart(tf.ones([l, l]), -1, 0)), -1e9));
  const a = tf.reshape(tf.transpose(tf.matMul(tf.softmax(s), v), [0, 2, 1, 3]), [b, l, d]);
  const x1 = tf.add(x, linear(a, 'out'));
  const f = linear(ln(x1, 'ln2'), 'fc1');
  const act = c.activation === 'quick_gelu' ? tf.mul(f, tf.sigmoid(tf.mul(f, 1.702))) : tf.mul(tf.mul(f, 0.5), tf.add(1, tf.erf(tf.mul(f, Math.SQRT1_2))));
  return tf.add(x1, linear(act, 'fc2'));
}

function blockModel(c: VisionConfig, tokens: number, label: string): Model {
  const shapes = new Map([...towerShapes('vision', c, 1, 'NK')].filter(([n]) => n.startsWith('layers.0.')));
  return {
    label,
    input: [BATCH, tokens, c.width],
    shapes,
    build: (g, x, w) => transformerBlock(g, w, 0, c, x, undefined, 'block'),
    tf: (tf, x, w) => tfBlock(tf, c, x, (s) => w(`layers.0.${s}`), false),
  };
}

function textModel(t: TextConfig, label: string): Model {
  const shapes = new Map([...towerShapes('text', t, 512, 'NK')].filter(([n]) => n !== 'tok'));
  const l = t.contextLength;
  // Pooled at a different position per row, as token ids ending at different lengths would be.
  const pool = Int32Array.from({ length: BATCH }, (_, r) => r * l + ((5 + 7 * r) % l));
  return {
    label,
    input: [BATCH, l, t.width],
    shapes,
    indices: { name: 'pool', data: pool },
    build: (g, x, w, indices) => textFromEmbeddings(g, w, t, 'NK', x, indices!).embeds,
    tf: (tf, x, w, indices) => {
      let h = tf.add(x, w('pos'));
      for (let i = 0; i < t.layers; i++) h = tfBlock(tf, t, h, (s) => w(`layers.${i}.${s}`), true);
      const { mean, variance } = tf.moments(h, -1, true);
      h = tf.add(tf.mul(tf.div(tf.sub(h, mean), tf.sqrt(tf.add(variance, t.eps))), w('ln_final.weight')), w('ln_final.bias'));
      const pooled = tf.gather(tf.reshape(h, [BATCH * l, t.width]), indices);
      return tf.matMul(pooled, w('proj'), false, true);
    },
  };
}

/** Largest |ours − peer| over the largest |peer|, per gradient; the worst of them and where. */
function agreement(names: string[], ours: Float32Array[], peer: Float32Array[]): { worst: number; at: string } {
  let worst = 0;
  let at = '';
  names.forEach((name, i) => {
    const a = ours[i]!;
    const b = peer[i]!;
    let err = 0;
    let scale = 0;
    for (let j = 0; j < b.length; j++) {
      err = Math.max(err, Math.abs(a[j]! - b[j]!));
      scale = Math.max(scale, Math.abs(b[j]!));
    }
    const rel = a.length === b.length ? err / (scale || 1) : Infinity;
    if (rel >= worst) [worst, at] = [rel, name];
  });
  return { worst, at };
}

export const gradSuite: Suite = async (ctx) => {
  const { gpu, log } = ctx;
  const block = ctx.quick ? QUICK_VISION : vitB32('clip').vision!;
  const text = ctx.quick ? TINY_CLIP.text! : vitB32('clip').text!;
  const models = [
    blockModel(block, ctx.quick ? 2 : 50, ctx.quick ? 'tiny ViT block (quick)' : 'CLIP ViT-B/32 residual block (50 tokens)'),
    textModel(text, ctx.quick ? 'tiny text tower (quick)' : 'CLIP text tower (12 layers, 77 tokens, causal)'),
  ];
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  // A ViT-B/32 block's forward + backward at batch 8 takes seconds on a CPU adapter: one trial.
  const heavy = { ...ctx.settings, trials: 1 };
  for (const m of models) {
    const label = `${m.label} b${BATCH}: forward + backward (loss = mean(y²); gradients of the input and all ${m.shapes.size} weights), 1 plan, 1 submit`;
    if (!matches(ctx.filter, 'grad', label)) continue;
    const weights = randomWeights(gpu, m.shapes, 'f32');
    const data = randomArray(m.input.reduce((a, b) => a * b, 1), 7, 0.5);
    const input = Tensor.from(gpu, data, m.input);
    const names = ['input', ...m.shapes.keys()];
    const build = (g: GraphBuilder) => {
      const x = g.input('x', m.input);
      const idx = m.indices && g.input(m.indices.name, [m.indices.data.length], 'i32');
      const w = new Map([...weights].map(([k, t]) => [k, g.parameter(t, k)]));
      const y = m.build(g, x, (n) => w.get(n)!, idx);
      const loss = g.mean(g.mul(y, y), y.shape.map((_, i) => i));
      g.output('loss', loss);
      g.gradients(loss, [x, ...w.values()]).forEach((d, i) => g.output(names[i]!, d));
    };
    const g = new GraphBuilder();
    build(g);
    const plan = await g.compile(gpu);
    const feeds = { x: input, ...(m.indices ? { [m.indices.name]: m.indices.data } : {}) };
    try {
      const ours = (await plan.run(feeds)).outputs;
      const timing = await timeAsync(() => plan.run(feeds, { outputs: ['loss'] }), heavy);
      const row = callRow('grad', label, timing, { shape: `[${m.input.join(', ')}]`, ...flopsOf(gpu, ctx.peak, build, timing.wallMs) });
      rows.push(row);
      notes.push(`${label}: ${g.nodes.length} nodes, peak intermediates ${(plan.memory.intermediateBytes / 2 ** 20).toFixed(1)} MiB (${(plan.memory.unsharedBytes / 2 ** 20).toFixed(1)} MiB unshared)`);
      log(`${label}: ${timing.wallMs.toFixed(1)} ms`);
      if (ctx.tfjs) {
        // The peer's inputs: x, the weights in `shapes` order, then the indices; gradients of all but the indices.
        const peerInputs: PeerInput[] = [
          { data, shape: m.input, dtype: 'f32' },
          ...(await Promise.all([...weights.values()].map(async (t) => ({ data: (await t.read()) as Float32Array, shape: [...t.shape], dtype: 'f32' as const })))),
          ...(m.indices ? [{ data: m.indices.data, shape: [m.indices.data.length], dtype: 'i32' as const }] : []),
        ];
        const differentiable = names.length;
        const fn = (tf: any, xs: any[]) => {
          const idx = xs[differentiable];
          const loss = (...args: any[]) => {
            const byName = new Map(names.map((n, i) => [n, args[i]]));
            const y = m.tf(tf, args[0], (n) => byName.get(n), idx);
            return tf.mean(tf.mul(y, y));
          };
          return tf.grads(loss)(xs.slice(0, differentiable));
        };
        try {
          const check = agreement(names, names.map((n) => ours[n] as Float32Array), await ctx.tfjs.values(fn, peerInputs));
          const peer = await ctx.tfjs.time(fn, peerInputs, heavy);
          Object.assign(row, { peerMs: peer.wallMs, ratio: timing.wallMs / peer.wallMs });
          notes.push(`${label}: TF.js tf.grads computes the same gradients: worst max |ours − TF.js| / max |TF.js| over the ${differentiable} gradients ${check.worst.toExponential(1)} (${check.at})`);
          log(`  TF.js ${peer.wallMs.toFixed(1)} ms, ours/TF.js ${(timing.wallMs / peer.wallMs).toFixed(3)}, gradients agree to ${check.worst.toExponential(1)}`);
        } catch (err) {
          row.peerError = (err as Error).message.split('\n')[0];
          log(`  TF.js: FAILED ${row.peerError}`);
        }
      }
    } catch (err) {
      rows.push(failedRow('grad', label, err));
      log(`${label}: FAILED ${(err as Error).message}`);
    } finally {
      plan.dispose();
      input.dispose();
      for (const t of weights.values()) t.dispose();
    }
  }
  notes.push('ms: wall time per training-step graph run (input uploaded once, the loss read back; gradients stay on the GPU); TF.js: tf.grads of the same function, n calls then one fence, nothing read back');
  for (const r of await memoryRows(ctx)) {
    rows.push(r.row);
    notes.push(...r.notes);
  }
  return { rows, notes };
};

/**
 * #12's memory check as rows: a ViT-B/32-shaped vision tower's training step (loss = mean(embeds²),
 * gradients of every weight) at batch 8, run for some steps (test/util/training-memory.ts): ms per
 * step, and in the notes the peak intermediates, whether live GPU memory stayed flat over the steps
 * and what dispose() left. 100 steps at width 64; the full width runs 100 steps only off CPU
 * adapters (a step takes tens of seconds on lavapipe).
 */
async function memoryRows(ctx: SuiteContext): Promise<{ row: BenchRow; notes: string[] }[]> {
  const b32 = vitB32('clip').vision!;
  const cases = ctx.quick
    ? [{ cfg: QUICK_VISION, name: 'tiny ViT (quick)', steps: 3 }]
    : [
        { cfg: { ...b32, width: 64, heads: 4, mlpWidth: 256 }, name: 'ViT-B/32-shaped vision tower at width 64', steps: 100 },
        { cfg: b32, name: 'ViT-B/32 vision tower', steps: isCpuAdapter(ctx.gpu) ? 3 : 100 },
      ];
  const out: { row: BenchRow; notes: string[] }[] = [];
  for (const c of cases) {
    const label = `${c.name} b${BATCH}: training step memory over ${c.steps} steps (forward + backward, gradients of all weights)`;
    if (!matches(ctx.filter, 'grad', label)) continue;
    try {
      const r = await trainingMemory(ctx.gpu, c.cfg, BATCH, c.steps);
      const m = r.memory;
      const drift = Math.max(...r.liveBytes) - Math.min(...r.liveBytes);
      const buffers = Math.max(...r.liveBuffers) - Math.min(...r.liveBuffers);
      const MiB = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
      const range = (xs: number[]) => (Math.min(...xs) === Math.max(...xs) ? `${xs[0]}` : `${Math.min(...xs)}-${Math.max(...xs)}`);
      ctx.log(`${label}: ${r.msPerStep.toFixed(0)} ms per step, peak intermediates ${MiB(m.intermediateBytes)}, live drift ${drift} B, left after dispose ${r.leftBytes} B`);
      out.push({
        row: onceRow('grad', label, r.msPerStep, { shape: `[${BATCH}, 3, ${c.cfg.imageSize}, ${c.cfg.imageSize}]` }),
        notes: [
          `${label}: ${r.nodes} nodes; peak intermediates ${MiB(m.intermediateBytes)} in ${m.intermediateBuffers} buffers (unshared ${MiB(m.unsharedBytes)}), ` +
            `of which ${MiB(r.gradientBytes)} are the weight gradients (outputs, alive to the end) and ${MiB(m.intermediateBytes - r.gradientBytes)} activations and backward temporaries; ` +
            `compiling allocated ${MiB(r.compiledBytes)} (the plan reports owning ${MiB(m.ownedBytes)}), the first step's reads ${MiB(r.stagingBytes)} more (staging for the loss and grad0 only); ` +
            `live GPU memory over the ${c.steps} steps ${MiB(r.liveBytes[0]!)}, ` +
            `varying by ${drift} B and ${buffers} buffers; submits per step ${range(r.submitsPerStep)}; ${new Set(r.losses).size} distinct loss value(s) over the steps; ` +
            `dispose() left ${r.leftBytes} B in ${r.leftBuffers} buffers`,
        ],
      });
    } catch (err) {
      out.push({ row: failedRow('grad', label, err), notes: [] });
      ctx.log(`${label}: FAILED ${(err as Error).message}`);
    }
  }
  return out;
}
