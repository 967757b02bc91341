// Memory of forward + backward plans: a ViT-B/32-shaped vision tower (12 layers, 50 tokens at
// 224 px / patch 32) differentiated with respect to every weight (test/util/training-memory.ts).
// Run at width 64 (4 heads, MLP 256): batch 8 and 100 steps on a GPU, batch 2 and 10 steps on a CPU
// adapter (lavapipe, where a step at batch 8 takes seconds, mostly in patchEmbedBackward). The
// full-width batch-8 plan is compiled for its memory report here; the bench's grad suite runs it.
import { describe, expect, it } from 'vitest';
import { kernels } from '../../src/index.js';
import { vitB32 } from '../../src/models/randomWeights.js';
import { useGpu } from '../util/gpu.js';
import { trainingGraph, trainingMemory, type TrainingMemory } from '../util/training-memory.js';

const getGpu = useGpu();

const B32 = vitB32('clip').vision!;

const MiB = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** What every training run must show: memory as planned, flat over the steps, all of it freed. */
function expectFlat(r: TrainingMemory, steps: number) {
  // Compiling allocates what the plan reports owning, and the intermediates are part of it.
  expect(r.compiledBytes).toBe(r.memory.ownedBytes);
  expect(r.memory.ownedBytes).toBeGreaterThanOrEqual(r.memory.intermediateBytes);
  expect(r.losses).toHaveLength(steps);
  // Same inputs, same weights: the same loss every step (nothing stale is read between steps).
  expect(new Set(r.losses).size).toBe(1);
  expect(Number.isFinite(r.losses[0])).toBe(true);
  // Staging buffers exist only for the outputs read (made by the first step), not for every gradient.
  expect(r.stagingBytes).toBe(steps > 0 ? r.readBytes : 0);
  // No step allocates anything that outlives it: live bytes and buffers equal those after step 1.
  expect(new Set(r.liveBytes)).toEqual(new Set([r.liveBytes[0]]));
  expect(new Set(r.liveBuffers)).toEqual(new Set([r.liveBuffers[0]]));
  expect(r.submitsPerStep).toEqual(new Array(steps).fill(1));
  // dispose() of the plan and the weights returns every byte and buffer.
  expect([r.leftBytes, r.leftBuffers]).toEqual([0, 0]);
}

describe('forward + backward memory', () => {
  it('a ViT-B/32-shaped training graph (width 64): flat over repeated steps, dispose returns everything', async () => {
    const gpu = await getGpu();
    const cfg = { ...B32, width: 64, heads: 4, mlpWidth: 256 };
    const [batch, steps] = kernels.isCpuAdapter(gpu) ? [2, 10] : [8, 100];
    const forward = trainingGraph(gpu, cfg, batch, false);
    const fplan = await forward.g.compile(gpu);
    const forwardBytes = fplan.memory.intermediateBytes;
    fplan.dispose();
    for (const t of forward.weights) t.dispose();

    const r = await trainingMemory(gpu, cfg, batch, steps);
    const m = r.memory;
    console.log(
      `ViT-B/32 shape at width 64, batch ${batch}: forward ${forwardBytes} B of intermediates; forward + backward ${m.intermediateBytes} B in ` +
        `${m.intermediateBuffers} buffers (unshared ${m.unsharedBytes} B, largest value ${m.largestBytes} B), ${r.nodes} nodes; ` +
        `${steps} steps, ${r.msPerStep.toFixed(0)} ms per step, live ${r.liveBytes[0]} B throughout`,
    );
    // Liveness sharing: the backward reuses the forward's buffers once their values are dead.
    expect(m.intermediateBytes).toBeLessThan(m.unsharedBytes / 2);
    expect(m.intermediateBytes).toBeGreaterThan(forwardBytes);
    expectFlat(r, steps);
  }, 600_000);

  it('reports the full-width ViT-B/32 forward + backward plan at batch 8 (compiled, not run)', async () => {
    const gpu = await getGpu();
    const r = await trainingMemory(gpu, B32, 8, 0);
    const m = r.memory;
    const rest = m.intermediateBytes - r.gradientBytes;
    console.log(
      `ViT-B/32 batch 8 forward + backward: ${MiB(m.intermediateBytes)} of intermediates in ${m.intermediateBuffers} buffers: ${MiB(r.gradientBytes)} of weight ` +
        `gradients (outputs) and ${MiB(rest)} for activations and backward temporaries (unshared ${MiB(m.unsharedBytes - r.gradientBytes)}); largest ${m.largestBytes} B`,
    );
    // The weight gradients are outputs, alive to the end: one f32 per parameter of the tower (patch
    // embedding, class token, positions, ln_pre; per layer qkv, out, 2 layer norms, fc1, fc2;
    // ln_post and the projection to trainingGraph's 32-wide embedding).
    const d = 768;
    const layer = 4 * d * d + 4 * d + 2 * d * 3072 + 3072 + d + 4 * d;
    expect(r.gradientBytes).toBe(4 * (3 * 32 * 32 * d + d + 50 * d + 2 * d + 12 * layer + 2 * d + d * 32));
    // The largest value is a weight gradient (fc1 / fc2, 3072 x 768), not an activation (8 x 50 x 3072).
    expect(m.largestBytes).toBe(3072 * 768 * 4);
    expect(rest).toBeLessThan((m.unsharedBytes - r.gradientBytes) / 4);
    expect(r.compiledBytes).toBe(m.ownedBytes);
    expect([r.leftBytes, r.leftBuffers]).toEqual([0, 0]);
  }, 300_000);
});
