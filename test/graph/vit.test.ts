import { describe, expect, it } from 'vitest';
import { GraphBuilder, Tensor, kernels, type Gpu } from '../../src/index.js';
import { transformerBlock, visionTower } from '../../src/models/clip/towers.js';
import { towerShapes } from '../../src/models/clip/weights.js';
import { hfNames, sourceNames, sourceOf } from '../../src/models/clip/names.js';
import type { VisionConfig } from '../../src/models/clip/config.js';
import { useGpu } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { fixtureTensor, loadFixture } from '../util/fixtures.js';
import { randomArray } from '../util/random.js';

const getGpu = useGpu();

const TINY: VisionConfig = { width: 128, layers: 2, heads: 2, mlpWidth: 512, activation: 'quick_gelu', eps: 1e-5, imageSize: 32, patchSize: 8 };

/** clip_tiny's vision weights under canonical names, read straight from the HF file. */
function tinyWeights(gpu: Gpu): Map<string, Tensor> {
  const file = loadFixture('clip_tiny', 'weights_hf.safetensors');
  const conv = hfNames();
  const out = new Map<string, Tensor>();
  for (const [param, shape] of towerShapes('vision', TINY, 32, 'NK')) {
    const { source, prefix } = sourceOf(conv, 'vision', param);
    const { concat, names } = sourceNames(source);
    const parts = (concat ? names : names.slice(0, 1)).map((n) => fixtureTensor(file, prefix + n).data as Float32Array);
    const data = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
    parts.reduce((at, p) => (data.set(p, at), at + p.length), 0);
    out.set(param, Tensor.from(gpu, data, shape));
  }
  return out;
}

describe('transformer graphs', () => {
  it('a pre-LN block on the graph equals the same kernels called eagerly, and the reference block', async () => {
    const gpu = await getGpu();
    const w = tinyWeights(gpu);
    const io = loadFixture('clip_tiny', 'io.safetensors');
    const xData = fixtureTensor(io, 'vision_ln_pre_out').data as Float32Array;
    const g = new GraphBuilder();
    const x = g.input('x', [2, 17, 128]);
    g.output('y', transformerBlock(g, (n) => g.constant(w.get(n)!), 0, TINY, x, undefined, 'block0'));
    const plan = await g.compile(gpu);
    const graphOut = (await plan.run({ x: xData })).outputs.y!;

    // Eager: the same sequence, one kernel call (and one submit) at a time.
    const p = (n: string) => w.get(`layers.0.${n}`)!;
    const xt = Tensor.from(gpu, xData, [2, 17, 128]);
    const h = await kernels.layerNorm(gpu, xt, p('ln1.weight'), p('ln1.bias'), { eps: 1e-5 });
    const qkv = await kernels.matmul(gpu, h, p('qkv.weight'), { transposeB: true, bias: p('qkv.bias') });
    const a = await kernels.attentionPacked(gpu, qkv, { heads: 2 });
    const x1 = await kernels.matmul(gpu, a, p('out.weight'), { transposeB: true, bias: p('out.bias'), residual: xt });
    const h2 = await kernels.layerNorm(gpu, x1, p('ln2.weight'), p('ln2.bias'), { eps: 1e-5 });
    const f = await kernels.matmul(gpu, h2, p('fc1.weight'), { transposeB: true, bias: p('fc1.bias'), activation: 'quick_gelu' });
    const y = await kernels.matmul(gpu, f, p('fc2.weight'), { transposeB: true, bias: p('fc2.bias'), residual: x1 });
    expect(Array.from(await y.read())).toEqual(Array.from(graphOut));
    console.log(expectClose(graphOut, fixtureTensor(io, 'vision_block0_out').data, { scaleTol: 1e-4, label: 'block0 vs reference' }).message);
    for (const t of [xt, h, qkv, a, x1, h2, f, y, ...w.values()]) t.dispose();
    plan.dispose();
  });

  it('the 2-layer ViT on the graph matches vision_tokens_pre_ln_post from the stored weights', async () => {
    const gpu = await getGpu();
    const w = tinyWeights(gpu);
    const io = loadFixture('clip_tiny', 'io.safetensors');
    const g = new GraphBuilder();
    const out = visionTower(g, (n) => g.constant(w.get(n)!), TINY, 'NK', g.input('pixels', [2, 3, 32, 32]));
    g.output('tokens', out.intermediates.tokens_pre_ln_post!);
    const plan = await g.compile(gpu);
    const got = (await plan.run({ pixels: fixtureTensor(io, 'pixel_values').data })).outputs.tokens!;
    console.log(expectClose(got, fixtureTensor(io, 'vision_tokens_pre_ln_post').data, { scaleTol: 1e-4, label: 'ViT tokens' }).message);
    plan.dispose();
    for (const t of w.values()) t.dispose();
  });

  it('a 12-layer ViT-B/32 graph keeps peak intermediate memory within 3x the largest activation', async () => {
    const gpu = await getGpu();
    const cfg: VisionConfig = { width: 768, layers: 12, heads: 12, mlpWidth: 3072, activation: 'quick_gelu', eps: 1e-5, imageSize: 224, patchSize: 32 };
    // One random tensor per weight shape, shared by all 12 layers: the graph and its memory plan are
    // those of ViT-B/32 without uploading 350 MB.
    const byShape = new Map<string, Tensor>();
    const weight = (shape: number[]) => {
      const key = shape.join('x');
      let t = byShape.get(key);
      if (!t) byShape.set(key, (t = Tensor.from(gpu, randomArray(shape.reduce((a, b) => a * b, 1), byShape.size + 1, 0.05), shape)));
      return t;
    };
    const shapes = towerShapes('vision', cfg, 512, 'NK');
    for (const batch of [1, 8]) {
      const g = new GraphBuilder();
      const out = visionTower(g, (n) => g.constant(weight(shapes.get(n)!)), cfg, 'NK', g.input('pixels', [batch, 3, 224, 224]));
      g.output('embeds', out.embeds);
      const plan = await g.compile(gpu);
      const { intermediateBytes, largestBytes, unsharedBytes, intermediateBuffers } = plan.memory;
      console.log(`ViT-B/32 batch ${batch}: peak intermediates ${intermediateBytes} B in ${intermediateBuffers} buffers; largest activation ${largestBytes} B (${(intermediateBytes / largestBytes).toFixed(2)}x); without sharing ${unsharedBytes} B`);
      expect(largestBytes).toBe(batch * 50 * 3072 * 4);
      expect(intermediateBytes).toBeLessThanOrEqual(3 * largestBytes);
      if (batch === 1) {
        const { outputs } = await plan.run({ pixels: randomArray(3 * 224 * 224, 9) });
        expect(outputs.embeds!.length).toBe(512);
        expect(outputs.embeds!.every(Number.isFinite)).toBe(true);
      }
      plan.dispose();
    }
    for (const t of byShape.values()) t.dispose();
  });
});
