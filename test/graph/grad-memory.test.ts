// Memory of forward + backward plans: a ViT-B/32-shaped vision tower (12 layers, 50 tokens at
// 224 px / patch 32) differentiated with respect to every weight. Run at width 64 (4 heads, MLP
// 256): batch 8 and 100 steps on a GPU, batch 2 and 10 steps on a CPU adapter (lavapipe, where a
// step at batch 8 takes seconds, mostly in patchEmbedBackward). The full-width batch-8 plan is
// compiled for its memory report only.
import { describe, expect, it } from 'vitest';
import { GraphBuilder, Tensor, kernels, type Gpu } from '../../src/index.js';
import { visionTower } from '../../src/models/clip/towers.js';
import { towerShapes } from '../../src/models/clip/weights.js';
import type { VisionConfig } from '../../src/models/clip/config.js';
import { useGpu } from '../util/gpu.js';
import { randomArray } from '../util/random.js';

const getGpu = useGpu();

const B32: VisionConfig = { width: 768, layers: 12, heads: 12, mlpWidth: 3072, activation: 'quick_gelu', eps: 1e-5, imageSize: 224, patchSize: 32 };

/**
 * A training-step graph: loss = mean(embeds²), gradients w.r.t. every weight (parameters). One
 * random tensor per weight shape, shared by the layers (each use its own parameter): the graph and
 * its memory plan are the model's without uploading all its weights.
 */
function build(gpu: Gpu, cfg: VisionConfig, batch: number, backward: boolean) {
  const byShape = new Map<string, Tensor>();
  const g = new GraphBuilder();
  const w = (name: string) => {
    const shape = shapes.get(name)!;
    let t = byShape.get(shape.join('x'));
    if (!t) byShape.set(shape.join('x'), (t = Tensor.from(gpu, randomArray(shape.reduce((a, b) => a * b, 1), byShape.size + 1, 0.05), shape)));
    return g.parameter(t, name);
  };
  const shapes = towerShapes('vision', cfg, 32, 'NK');
  const { embeds } = visionTower(g, w, cfg, 'NK', g.input('pixels', [batch, 3, cfg.imageSize, cfg.imageSize]));
  const loss = g.mean(g.mul(embeds, embeds), [0, 1]);
  g.output('loss', loss);
  if (backward) g.gradients(loss, [...g.parameters.values()]).forEach((d, i) => g.output(`grad${i}`, d));
  return { g, weights: [...byShape.values()] };
}

describe('forward + backward memory', () => {
  it('a ViT-B/32-shaped training graph (width 64): flat over repeated steps, dispose returns everything', async () => {
    const gpu = await getGpu();
    const cfg = { ...B32, width: 64, heads: 4, mlpWidth: 256 };
    const [batch, steps] = kernels.isCpuAdapter(gpu) ? [2, 10] : [8, 100];
    const before = gpu.stats().liveBytes;
    const forward = build(gpu, cfg, batch, false);
    const fplan = await forward.g.compile(gpu);
    const { g, weights } = build(gpu, cfg, batch, true);
    const plan = await g.compile(gpu);
    const m = plan.memory;
    console.log(
      `ViT-B/32 shape at width 64, batch ${batch}: forward ${fplan.memory.intermediateBytes} B of intermediates; forward + backward ` +
        `${m.intermediateBytes} B in ${m.intermediateBuffers} buffers (unshared ${m.unsharedBytes} B, largest value ${m.largestBytes} B), ${plan.nodeCount} nodes`,
    );
    expect(m.intermediateBytes).toBeLessThan(m.unsharedBytes / 2);
    fplan.dispose();
    for (const t of forward.weights) t.dispose();

    const pixels = randomArray(batch * 3 * 224 * 224, 5);
    const live = gpu.stats().liveBytes;
    const submits = gpu.stats().submits;
    let first: number | undefined;
    const started = performance.now();
    for (let step = 0; step < steps; step++) {
      const { outputs } = await plan.run({ pixels }, { outputs: ['loss', 'grad0'] });
      first ??= outputs.loss![0]!;
      expect(outputs.loss![0]).toBe(first); // same inputs, same weights: the same loss every step
      expect(gpu.stats().liveBytes).toBe(live);
    }
    console.log(`${steps} steps, ${((performance.now() - started) / steps).toFixed(0)} ms per step; live bytes ${live} throughout`);
    expect(gpu.stats().submits).toBe(submits + steps);
    plan.dispose();
    for (const t of weights) t.dispose();
    expect(gpu.stats().liveBytes).toBe(before);
  }, 600_000);

  it('reports the full-width ViT-B/32 forward + backward plan at batch 8 (compiled, not run)', async () => {
    const gpu = await getGpu();
    const before = gpu.stats().liveBytes;
    const { g, weights } = build(gpu, B32, 8, true);
    const plan = await g.compile(gpu);
    const m = plan.memory;
    // The weight gradients are outputs, alive to the end: as large as the weights (350 MB).
    const gradBytes = [...g.parameters.values()].reduce((s, p) => s + 4 * p.shape.reduce((a, b) => a * b, 1), 0);
    const rest = m.intermediateBytes - gradBytes;
    console.log(
      `ViT-B/32 batch 8 forward + backward: ${m.intermediateBytes} B of intermediates in ${m.intermediateBuffers} buffers: ${gradBytes} B of weight ` +
        `gradients (outputs) and ${rest} B for activations and backward temporaries (unshared ${m.unsharedBytes - gradBytes} B); largest ${m.largestBytes} B`,
    );
    // The largest value is a weight gradient (fc1 / fc2, 3072 x 768), not an activation (8 x 50 x 3072).
    expect(m.largestBytes).toBe(3072 * 768 * 4);
    expect(rest).toBeLessThan((m.unsharedBytes - gradBytes) / 4);
    plan.dispose();
    for (const t of weights) t.dispose();
    expect(gpu.stats().liveBytes).toBe(before);
  }, 300_000);
});
