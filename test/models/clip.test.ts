import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { ClipModel, ClipTokenizer, GraphBuilder, preprocessClipBatch } from '../../src/index.js';
import { poolIndices as poolOf } from '../../src/models/clip/towers.js';
import { readSafetensors } from '../../src/io/safetensors.js';
import { requireF16, useGpu } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { fixturePath, fixtureTensor, loadFixture } from '../util/fixtures.js';
import { writeSafetensors } from '../util/write-safetensors.js';

const getGpu = useGpu();
const io = () => loadFixture('clip_tiny', 'io.safetensors');
const f32 = (name: string) => fixtureTensor(io(), name).data as Float32Array;
const config = () => JSON.parse(readFileSync(fixturePath('clip_tiny', 'config.json'), 'utf8'));

let hfDir: string;
beforeAll(() => {
  // The HF folder layout: config.json + model.safetensors.
  hfDir = mkdtempSync(join(tmpdir(), 'ovgpu-clip-'));
  symlinkSync(fixturePath('clip_tiny', 'config.json'), join(hfDir, 'config.json'));
  symlinkSync(fixturePath('clip_tiny', 'weights_hf.safetensors'), join(hfDir, 'model.safetensors'));
});
afterAll(() => rmSync(hfDir, { recursive: true, force: true }));

const pixels = () => f32('pixel_values');
const ids = () => fixtureTensor(io(), 'input_ids_i32').data as Int32Array;

async function checkModel(model: ClipModel, tol: number) {
  const img = await model.runVision(pixels(), [2, 3, 32, 32], { dense: true, intermediates: true });
  const txt = await model.runText(ids(), [3, 16], { intermediates: true });
  const r = (label: string, got: ArrayLike<number>, ref: string) => expectClose(got, f32(ref), { scaleTol: tol, label });
  const reports = [
    r('image_embeds', img.embeds, 'image_embeds_f64'),
    r('text_embeds', txt.embeds, 'text_embeds_f64'),
    r('logits_per_image', model.similarity(img.embeds, txt.embeds), 'logits_per_image_f64'),
    r('vision_ln_pre_out', img.intermediates!.ln_pre_out!, 'vision_ln_pre_out'),
    r('vision_block0_out', img.intermediates!.block0_out!, 'vision_block0_out'),
    r('vision_tokens_pre_ln_post', img.intermediates!.tokens_pre_ln_post!, 'vision_tokens_pre_ln_post'),
    r('vision_tokens_post_ln_post', img.intermediates!.tokens_post_ln_post!, 'vision_tokens_post_ln_post_f64'),
    r('vision_tokens_proj', img.dense!, 'vision_tokens_proj_f64'),
    r('text_block0_out', txt.intermediates!.block0_out!, 'text_block0_out'),
    r('text_block1_out', txt.intermediates!.block1_out!, 'text_block1_out'),
    r('text_ln_final_out', txt.intermediates!.ln_final_out!, 'text_ln_final_out_f64'),
    r('text_pooled', txt.intermediates!.pooled!, 'text_pooled'),
  ];
  for (const rep of reports) console.log(rep.message);
  // The embeddings without the debug outputs come from a leaner plan: the same numbers.
  expectClose(await model.encodeImage(pixels(), [2, 3, 32, 32]), f32('image_embeds_f64'), { scaleTol: tol });
  expectClose(await model.encodeText(ids(), [3, 16]), f32('text_embeds_f64'), { scaleTol: tol });
}

describe('ClipModel on clip_tiny', () => {
  it('HF folder layout, f32: embeddings, logits and intermediates within 1e-4 of the reference', async () => {
    const gpu = await getGpu();
    const before = gpu.stats();
    const model = await ClipModel.load(gpu, hfDir);
    expect(model.convention.name).toBe('hf');
    expect(model.config.vision).toMatchObject({ width: 128, layers: 2, heads: 2, patchSize: 8, imageSize: 32 });
    expect(model.config.text).toMatchObject({ width: 48, heads: 4, contextLength: 16, eosTokenId: 511 });
    expect(model.unusedWeights).toEqual([]);
    await checkModel(model, 1e-4);
    // Plans and weights are freed at once, not after the next tick.
    model.dispose();
    expect(gpu.stats().liveBuffers).toBe(before.liveBuffers);
    expect(gpu.stats().liveBytes).toBe(before.liveBytes);
    await expect(model.encodeImage(pixels(), [2, 3, 32, 32])).rejects.toThrow(/^ClipModel.encodeImage: the model was disposed/);
  });

  it('OpenAI-named file + config, f32', async () => {
    const gpu = await getGpu();
    const model = await ClipModel.load(gpu, fixturePath('clip_tiny', 'weights_openai.safetensors'), { config: config() });
    expect(model.convention.name).toBe('openai');
    expect(model.unusedWeights).toEqual([]);
    await checkModel(model, 1e-4);
    model.dispose();
  });

  it('OpenAI-named file with the config inferred (heads given, as build_model cannot)', async () => {
    const gpu = await getGpu();
    const model = await ClipModel.load(gpu, fixturePath('clip_tiny', 'weights_openai.safetensors'), { heads: { vision: 2, text: 4 } });
    expect(model.config).toMatchObject({ embedDim: 32, vision: { width: 128, layers: 2, imageSize: 32, patchSize: 8 }, text: { width: 48, layers: 2, contextLength: 16, vocabSize: 512 } });
    expectClose(await model.encodeText(ids(), [3, 16]), f32('text_embeds_f64'), { scaleTol: 1e-4 });
    model.dispose();
  });

  it('f16 weights and activations within 2e-2', async () => {
    const gpu = await getGpu();
    if (!gpu.features.has('shader-f16')) return;
    for (const path of [hfDir, fixturePath('clip_tiny', 'weights_openai.safetensors')]) {
      const model = await ClipModel.load(gpu, path, { dtype: 'f16', config: config() });
      const img = await model.encodeImage(pixels(), [2, 3, 32, 32]);
      const txt = await model.encodeText(ids(), [3, 16]);
      expectClose(img, f32('image_embeds_f64'), { scaleTol: 2e-2 });
      expectClose(txt, f32('text_embeds_f64'), { scaleTol: 2e-2 });
      expectClose(model.similarity(img, txt), f32('logits_per_image_f64'), { scaleTol: 2e-2 });
      model.dispose();
    }
  });

  it('a missing or misshaped tensor fails loading with its name and expected shape, leaving nothing allocated', async () => {
    const gpu = await getGpu();
    const dir = mkdtempSync(join(tmpdir(), 'ovgpu-bad-'));
    try {
      const all = await readSafetensors(fixturePath('clip_tiny', 'weights_hf.safetensors'));
      const tensors = Object.fromEntries([...all].map(([k, v]) => [k, { shape: v.shape, data: v.data }]));
      const before = gpu.stats();
      const missing = { ...tensors };
      delete missing['text_model.encoder.layers.1.mlp.fc2.bias'];
      writeSafetensors(join(dir, 'missing.safetensors'), missing);
      await expect(ClipModel.load(gpu, join(dir, 'missing.safetensors'), { config: config() })).rejects.toThrow(
        /missing tensor "text_model.encoder.layers.1.mlp.fc2.bias" \(text layers.1.fc2.bias\), expected shape \[48\]/,
      );
      const misshaped = { ...tensors, 'vision_model.encoder.layers.0.self_attn.k_proj.weight': { shape: [128, 64], data: new Float32Array(128 * 64) } };
      writeSafetensors(join(dir, 'misshaped.safetensors'), misshaped);
      await expect(ClipModel.load(gpu, join(dir, 'misshaped.safetensors'), { config: config() })).rejects.toThrow(
        /tensor "vision_model.encoder.layers.0.self_attn.k_proj.weight" \(vision layers.0.qkv.weight\) has shape \[128, 64\], expected \[128, 128\]/,
      );
      expect(gpu.stats().liveBuffers).toBe(before.liveBuffers);
      await expect(ClipModel.load(gpu, join(dir, 'nope'))).rejects.toThrow(/no such file or folder/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('encodes image files and strings, preprocessing and tokenizing as the reference', async () => {
    const gpu = await getGpu();
    const model = await ClipModel.load(gpu, hfDir);
    const png = join(hfDir, 'image.png');
    const raw = Buffer.from(Array.from({ length: 50 * 40 * 3 }, (_, i) => (i * 37) % 256));
    await sharp(raw, { raw: { width: 50, height: 40, channels: 3 } }).png().toFile(png);
    const pre = await preprocessClipBatch([png, png], { size: 32 });
    expect(Array.from(await model.encodeImage([png, png]))).toEqual(Array.from(await model.encodeImage(pre.data, [2, 3, 32, 32])));
    await expect(model.encodeText('a cat')).rejects.toThrow(/strings need a tokenizer/);
    // OpenAI's vocabulary is larger than clip_tiny's 512 ids: tokenizing works, the ids are refused by name.
    const withTokenizer = await ClipModel.load(gpu, hfDir, { tokenizer: await ClipTokenizer.load(fixturePath('bpe_simple_vocab_16e6.txt.gz')) });
    await expect(withTokenizer.encodeText(['a cat'])).rejects.toThrow(/token id 49406 outside the vocabulary \[0, 512\)/);
    withTokenizer.dispose();
    model.dispose();
  });

  it('batch sizes run as power-of-two buckets, zero-padded, with the results of unpadded graphs', async () => {
    const gpu = await getGpu();
    const model = await ClipModel.load(gpu, hfDir);
    const px = new Float32Array(3 * 3 * 32 * 32).map((_, i) => Math.sin(i * 0.37));
    const tokens = Int32Array.from({ length: 5 * 16 }, (_, i) => (i % 16 < 2 + (i >> 4) ? 1 + ((i * 7) % 400) : 0));
    // Unpadded references: graphs of exactly 3 images and 5 texts, on the model's weights.
    const unpadded = async (build: (g: GraphBuilder) => void, inputs: Record<string, Int32Array | Float32Array>) => {
      const g = new GraphBuilder();
      build(g);
      const plan = await g.compile(gpu);
      const { outputs } = await plan.run(inputs);
      plan.dispose();
      return outputs;
    };
    const img = await unpadded((g) => {
      const out = model.buildVision(g, g.input('pixels', [3, 3, 32, 32]), { dense: true });
      g.output('embeds', out.embeds);
      g.output('dense', out.dense!);
    }, { pixels: px });
    const txt = await unpadded((g) => g.output('embeds', model.buildText(g, g.input('ids', [5, 16], 'i32'), g.input('pool', [5], 'i32')).embeds), { ids: tokens, pool: poolOf(tokens, 5, 16, model.config.text!.eosTokenId) });
    const before = gpu.stats().submits;
    const vision = await model.runVision(px, [3, 3, 32, 32], { dense: true }); // runs as 4
    expect(vision.embeds).toEqual(img.embeds);
    expect(vision.dense).toEqual(img.dense);
    expect(await model.encodeText(tokens, [5, 16])).toEqual(txt.embeds); // runs as 8
    // 3 and 4 images share a plan (one submit each, no new compile visible in the results either).
    expect((await model.runVision(new Float32Array(4 * 3 * 32 * 32).fill(0.5).map((v, i) => (i < px.length ? px[i]! : v)), [4, 3, 32, 32], { dense: true })).embeds.subarray(0, 3 * 32)).toEqual(img.embeds);
    expect(gpu.stats().submits - before).toBe(3);
    model.dispose();
  });

  it('refuses inputs of the wrong shape or vocabulary', async () => {
    const gpu = await getGpu();
    const model = await ClipModel.load(gpu, hfDir);
    await expect(model.encodeImage(new Float32Array(3 * 20 * 16), [1, 3, 20, 16])).rejects.toThrow(/pixels must be \[B, 3, H, W\] with H and W positive multiples of the patch size 8 \(the config's size is 32\), got \[1, 3, 20, 16\]/);
    await expect(model.encodeText(new Int32Array([1, 600]), [1, 2])).rejects.toThrow(/token id 600 outside the vocabulary \[0, 512\)/);
    await expect(model.encodeText(new Int32Array(17), [1, 17])).rejects.toThrow(/1 ≤ L ≤ 16/);
    model.dispose();
  });
});

describe("ClipModel on clip_tiny under profile 'gpu' (the kernel settings real GPUs run)", () => {
  const getProfileGpu = useGpu('gpu');
  it('f32 embeddings, logits and intermediates within 1e-4 of the reference', async () => {
    const gpu = await getProfileGpu();
    expect(gpu.profile).toBe('gpu');
    const model = await ClipModel.load(gpu, hfDir);
    await checkModel(model, 1e-4);
    model.dispose();
  }, 300_000);

  it('f16 weights and activations within 2e-2 of the reference', async (ctx) => {
    const gpu = await getProfileGpu();
    requireF16(ctx, gpu);
    const half = await ClipModel.load(gpu, hfDir, { dtype: 'f16' });
    expectClose(await half.encodeImage(pixels(), [2, 3, 32, 32]), f32('image_embeds_f64'), { scaleTol: 2e-2 });
    expectClose(await half.encodeText(ids(), [3, 16]), f32('text_embeds_f64'), { scaleTol: 2e-2 });
    half.dispose();
    // Every f16 pipeline compiles anew: minutes on a loaded lavapipe.
  }, 600_000);
});
