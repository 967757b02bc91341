// OWLv2 (Owlv2ForObjectDetection, Owlv2ImageProcessor) against Hugging Face transformers v4.35.2 on
// ../shared/fixtures/owlv2_tiny (see its README): float outputs against the float64 run.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeSafetensors } from '../../src/io/safetensors.js';
import { writeSafetensors } from '../util/write-safetensors.js';
import sharp from 'sharp';
import { ClipModel, GraphBuilder, OwlVitDetector, decodeImage, kernels, preprocessOwlv2, preprocessOwlv2Batch, type Gpu } from '../../src/index.js';
import { resizeOwlv2 } from '../../src/models/preprocess/index.js';
import { requireF16, useGpu } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { fixturePath } from '../util/fixtures.js';
import { fixtureTensors } from '../util/grad.js';
import { useDetector } from '../util/owl-detect.js';
import { checkImageGuidedThresholds } from '../util/owl-postprocess.js';

const getGpu = useGpu();
const DIR = fixturePath('owlv2_tiny');
const input = fixtureTensors('owlv2_tiny', 'inputs.safetensors');
const expected = fixtureTensors('owlv2_tiny', 'expected.safetensors');
/** The float64 run of a tensor (as f64 numbers). */
const f64 = (name: string) => Array.from(expected(`${name}_f64`).data);

const B = 2;
const N = 16;
const Q = 3;
const PADDED = { image: 1, query: 2 }; // input_ids row 5 starts with 0
const pixelValues = () => input('pixel_values').data as Float32Array;
const inputIds = () => input('input_ids').data as Int32Array;
/** The original (h, w) of the model's two input images (45×71 and 61×38); the fixture's target sizes are their padded squares. */
const ORIGINAL: [number, number][] = [[45, 71], [61, 38]];
const predictInputs = () => ({ pixelValues: pixelValues(), pixelShape: [B, 3, 32, 32], inputIds: inputIds(), idsShape: [B * Q, 16], attentionMask: input('attention_mask').data as Int32Array });

function close(got: ArrayLike<number>, name: string, tol = 1e-4, ref = f64(name)): string {
  return expectClose(got, ref, { scaleTol: tol, label: name }).message;
}

/** Logits with the padded query's column checked apart: it is exactly -1e6, and would set the scale of the rest. */
function checkLogits(got: Float32Array, tol: number): string {
  const ref = f64('logits');
  const isPadded = (i: number) => Math.floor(i / (N * Q)) === PADDED.image && i % Q === PADDED.query;
  const idx = [...ref.keys()];
  expect(idx.filter(isPadded).map((i) => got[i])).toEqual(new Array(N).fill(-1e6));
  const live = idx.filter((i) => !isPadded(i));
  return close(live.map((i) => got[i]!), 'logits', tol, live.map((i) => ref[i]!));
}

describe('OWLv2 on owlv2_tiny: Owlv2ForObjectDetection', () => {
  let gpu: Gpu;
  let det: OwlVitDetector;
  let baseline: ReturnType<Gpu['stats']>;
  beforeAll(async () => {
    gpu = await getGpu();
    baseline = gpu.stats();
    det = await OwlVitDetector.load(gpu, DIR);
  });

  it('load detects OWLv2 from config.json and reads the objectness head', () => {
    expect(det.config).toMatchObject({ modelType: 'owlv2', gridSize: 4, embedDim: 48, vision: { width: 64, imageSize: 32, patchSize: 8 }, text: { width: 48, contextLength: 16 } });
    expect(det.unusedWeights).toEqual([]);
    expect(det.weights.head.get('objectness_head.dense2.weight')?.shape).toEqual([1, 64]);
  });

  it('predict matches forward: logits, boxes, objectness, embeddings (f32, 1e-4 of scale vs float64)', async () => {
    const out = await det.predict(predictInputs());
    expect(out.objectnessLogits?.length).toBe(B * N);
    for (const m of [
      checkLogits(out.logits, 1e-4),
      close(out.predBoxes, 'pred_boxes'),
      close(out.objectnessLogits!, 'objectness_logits'),
      close(out.classEmbeds, 'class_embeds'),
      close(out.imageEmbeds, 'image_embeds'),
      close(out.textEmbeds, 'text_embeds'),
    ]) console.log(m);
  });

  it('box bias and the first layer of the objectness head match compute_box_bias and objectness_head.dense0', async () => {
    const bias = await kernels.boxes.owlBoxBias(gpu, 4);
    close(await bias.read(), 'box_bias');
    bias.dispose();
    // objectness_head.dense0 of the reference's own feature map.
    const g = new GraphBuilder();
    const x = g.input('x', [B, N, 64]);
    const w = (n: string) => g.constant(det.weights.head.get(`objectness_head.dense0.${n}`)!);
    g.output('y', g.matmul(x, w('weight'), { transposeB: true, bias: w('bias') }));
    const plan = await g.compile(gpu);
    const { outputs } = await plan.run({ x: Float32Array.from(f64('image_embeds')) });
    console.log(close(outputs.y as Float32Array, 'objectness_head_dense0'));
    plan.dispose();
  });

  it('the towers read as a CLIP model give the reference intermediates and Owlv2Model outputs', async () => {
    const clip = await ClipModel.load(gpu, DIR);
    const vision = await clip.runVision(pixelValues(), [B, 3, 32, 32], { dense: true, intermediates: true });
    console.log(close(vision.intermediates!.tokens_pre_ln_post!, 'vision_last_hidden_state'));
    const post = vision.intermediates!.tokens_post_ln_post!;
    close(Float32Array.from({ length: B * 64 }, (_, i) => post[Math.floor(i / 64) * 17 * 64 + (i % 64)]!), 'vision_pooler_output');
    const text = await clip.runText(inputIds(), [B * Q, 16], { intermediates: true });
    // Positions the attention mask hides (padding after EOS) differ, as the causal tower here reads no mask; none reaches the pooled row.
    const mask = input('attention_mask').data;
    const seen = (i: number) => mask[Math.floor(i / 48)] === 1;
    const ref = f64('text_last_hidden_state');
    close(text.intermediates!.ln_final_out!.filter((_, i) => seen(i)), 'text_last_hidden_state', 1e-4, ref.filter((_, i) => seen(i)));
    close(text.intermediates!.pooled!, 'text_pooler_output');
    console.log(close(clip.similarity(vision.embeds, text.embeds), 'owlv2_logits_per_image'));
    clip.dispose();
  });

  /** The reference's boxes (in pixels of the padded square) in the original image's pixels: clipped to it. */
  const clipped = (boxes: number[], [h, w]: readonly [number, number]) => boxes.map((v, i) => Math.min(Math.max(v, 0), i % 2 ? h : w));

  it('postProcess gives post_process_object_detection boxes in original-image pixels (padding removed, clipped), with objectness', async () => {
    const out = await det.predict(predictInputs());
    const results = det.postProcess(out, { threshold: 0, targetSizes: ORIGINAL });
    const labels = Array.from(expected('post_labels').data);
    const objectness = f64('objectness_logits').map((v) => 1 / (1 + Math.exp(-v)));
    results.forEach((r, img) => {
      expect(Array.from(r.labels)).toEqual(labels.slice(img * N, (img + 1) * N));
      expect(Array.from(r.indices)).toEqual([...Array(N).keys()]);
      close(r.scores, 'post_scores', 1e-4, f64('post_scores').slice(img * N, (img + 1) * N));
      console.log(close(r.boxes, `post_boxes ${img}`, 1e-4, clipped(f64('post_boxes').slice(img * N * 4, (img + 1) * N * 4), ORIGINAL[img]!)));
      close(r.objectness!, 'objectness', 1e-4, objectness.slice(img * N, (img + 1) * N));
    });
    // Some boxes do reach into the padding or past the image (so the clipping is tested).
    expect(f64('post_boxes').some((v, i) => v > ORIGINAL[Math.floor(i / (N * 4))]![i % 2 ? 0 : 1])).toBe(true);
    const t05 = det.postProcess(out, { threshold: 0.5, targetSizes: ORIGINAL });
    t05.forEach((r, img) => {
      expect(Array.from(r.labels)).toEqual(Array.from(expected(`post_t05_labels_${img}`).data));
      close(r.scores, `post_t05_scores_${img}`);
      console.log(close(r.boxes, `post_t05_boxes_${img}`, 1e-4, clipped(f64(`post_t05_boxes_${img}`), ORIGINAL[img]!)));
    });
  });

  it('imageGuided and postProcessImageGuided match image_guided_detection and its NMS-0.3 post-processing (boxes in original pixels)', async () => {
    const out = await det.imageGuided({ pixelValues: pixelValues(), pixelShape: [B, 3, 32, 32], queryPixelValues: input('query_pixel_values').data as Float32Array, queryShape: [1, 3, 32, 32] });
    expect(Array.from(out.bestBoxIndices)).toEqual(Array.from(expected('ig_best_box_indices').data));
    for (const m of [
      close(out.queryEmbeds, 'ig_query_embeds'),
      close(out.logits, 'ig_logits'),
      close(out.targetPredBoxes, 'ig_target_pred_boxes'),
      close(out.queryPredBoxes, 'ig_query_pred_boxes'),
      close(out.classEmbeds, 'ig_class_embeds'),
      close(out.imageEmbeds, 'ig_image_embeds'),
      close(out.queryImageEmbeds, 'ig_query_image_embeds'),
    ]) console.log(m);
    const post = await det.postProcessImageGuided(out, { targetSizes: ORIGINAL });
    post.forEach((p, img) => {
      close(p.scores, `ig_post_scores_${img}`);
      console.log(close(p.boxes, `ig_post_boxes_${img}`, 1e-4, clipped(f64(`ig_post_boxes_${img}`), ORIGINAL[img]!)));
    });
  });

  it('f16 weights and activations: logits, boxes, objectness within 2e-2 of scale vs float64', async (ctx) => {
    requireF16(ctx, gpu);
    const half = await OwlVitDetector.load(gpu, DIR, { dtype: 'f16' });
    const out = await half.predict(predictInputs());
    for (const m of [
      checkLogits(out.logits, 2e-2),
      close(out.predBoxes, 'pred_boxes', 2e-2),
      close(out.objectnessLogits!, 'objectness_logits', 2e-2),
      close(out.classEmbeds, 'class_embeds', 2e-2),
      close(out.imageEmbeds, 'image_embeds', 2e-2),
    ]) console.log(`f16 ${m}`);
    half.dispose();
    // Every f16 pipeline compiles anew: minutes on a loaded lavapipe.
  }, 600_000);

  it('postProcessImageGuided thresholds the scores before the rescaling, as HF v4.35.2 (an independent reference checked on ig_post_* at 0)', async () => {
    const fixture = (name: string) => expected(name).data as Float32Array;
    const padded = ORIGINAL.map(([h, w]) => [Math.max(h, w), Math.max(h, w)] as [number, number]);
    const refBoxes = (boxes: number[], img: number) => clipped(boxes, ORIGINAL[img]!);
    for (const m of await checkImageGuidedThresholds(det, fixture, { n: N, sizes: ORIGINAL, refSizes: padded, refBoxes, thresholds: [0.5, 0.7, 0.8] })) console.log(m);
  });

  it('dispose frees everything load and the runs made', () => {
    const after = det.dispose();
    expect({ liveBuffers: after.liveBuffers, liveBytes: after.liveBytes }).toEqual({ liveBuffers: baseline.liveBuffers, liveBytes: baseline.liveBytes });
  });
});

describe('OWLv2 load errors', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ovgpu-owlv2-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A copy of the fixture checkpoint with some tensors left out and the config edited. */
  function checkpoint(name: string, drop: (tensor: string) => boolean, editConfig: (c: Record<string, any>) => void = () => undefined): string {
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const [k, t] of decodeSafetensors(readFileSync(join(DIR, 'model.safetensors')))) if (!drop(k)) tensors[k] = { shape: [...t.shape], data: t.data as Float32Array };
    const config = JSON.parse(readFileSync(join(DIR, 'config.json'), 'utf8')) as Record<string, any>;
    editConfig(config);
    const d = join(dir, name);
    mkdirSync(d);
    writeFileSync(join(d, 'config.json'), JSON.stringify(config));
    writeSafetensors(join(d, 'model.safetensors'), tensors);
    return d;
  }

  it('names what is missing or disagrees, and leaves nothing allocated', async () => {
    const gpu = await getGpu();
    const before = gpu.stats();
    const noObjectness = checkpoint('no-objectness', (k) => k.startsWith('objectness_head.'));
    await expect(OwlVitDetector.load(gpu, noObjectness)).rejects.toThrow(/missing tensor "objectness_head.dense0.weight" \(OWLv2's objectness head\), expected shape \[64, 64\]/);
    const patch = checkpoint('patch', () => false, (c) => (c.vision_config.patch_size = 16));
    await expect(OwlVitDetector.load(gpu, patch)).rejects.toThrow(/config.json.*patch_size.*owlv2.vision_model.embeddings.patch_embedding.weight|owlv2.vision_model.embeddings.patch_embedding.weight.*patch_size/);
    const size = checkpoint('size', () => false, (c) => (c.vision_config.image_size = 64));
    await expect(OwlVitDetector.load(gpu, size)).rejects.toThrow(/config.json.*image_size.*owlv2.vision_model.embeddings.position_embedding.weight|position_embedding.weight.*image_size/);
    const v1Config = checkpoint('v1-config', () => false, (c) => (c.model_type = 'owlvit'));
    await expect(OwlVitDetector.load(gpu, v1Config)).rejects.toThrow(/no OWL-ViT weights: no tensor named owlvit\.\*.*model_type is "owlvit"/);
    // Without model_type the weight names decide.
    const untyped = checkpoint('untyped', () => false, (c) => delete c.model_type);
    const det = await OwlVitDetector.load(gpu, untyped);
    expect(det.config.modelType).toBe('owlv2');
    det.dispose();
    expect(gpu.stats()).toEqual(before);
  });
});

describe('preprocessOwlv2 = Owlv2ImageProcessor (rescale, pad with 0.5, gaussian + order-1 zoom, clip, normalise)', () => {
  const pre = fixtureTensors('owlv2_tiny', 'preprocess.safetensors');
  const manifest = JSON.parse(readFileSync(join(DIR, 'manifest.json'), 'utf8')) as { images: { name: string; mode: string; h: number; w: number; file: string }[] };

  it.each(manifest.images.map((m) => [m.name, m] as const))('%s: decoded pixels, padded, resized and pixel_values at 32 and 80 px within 1e-5', async (name, m) => {
    const file = join(DIR, m.file);
    const decoded = await decodeImage(file);
    expect([decoded.height, decoded.width]).toEqual([m.h, m.w]);
    // PIL's convert('RGB'): alpha dropped, gray replicated.
    const rgb = decoded.channels === 3 ? decoded.data : decoded.data.filter((_, i) => i % 4 !== 3);
    expect(Array.from(rgb)).toEqual(Array.from(pre(`${name}.rgb_u8`).data));
    // A resize to the padded side itself is the identity: the padded image.
    const side = Math.max(m.h, m.w);
    expectClose(resizeOwlv2(decoded, side), pre(`${name}.padded`).data, { atol: 1e-7, label: `${name}.padded` });
    console.log(expectClose(resizeOwlv2(decoded, 32), pre(`${name}.resized_f64`).data, { atol: 1e-5, label: `${name}.resized` }).message);
    const px = await preprocessOwlv2(file, { size: 32 });
    expect(px.shape).toEqual([1, 3, 32, 32]);
    expect(px.originalSize).toEqual([m.h, m.w]);
    console.log(expectClose(px.data, pre(`${name}.pixel_values_f64`).data, { atol: 1e-5, label: `${name}.pixel_values` }).message);
    const up = await preprocessOwlv2Batch([file, file], { size: 80 });
    expect(up.originalSizes).toEqual([[m.h, m.w], [m.h, m.w]]);
    const ref = pre(`${name}.pixel_values_s2_f64`).data;
    console.log(expectClose(up.data, [...ref, ...ref], { atol: 1e-5, label: `${name}.pixel_values_s2` }).message);
  });

  it('large downscaling factors (wide kernels, rows and columns read sparsely) equal filtering every pixel first, as scipy does', () => {
    // A plain scipy-order reference: gaussian_filter on the whole padded image (axis 0 then 1, f32 between), then zoom.
    const reference = (img: { data: Uint8Array; width: number; height: number }, size: number) => {
      const side = Math.max(img.width, img.height);
      const px = (y: number, x: number, c: number) => (y < img.height && x < img.width ? Math.fround(img.data[(y * img.width + x) * 3 + c]! * (1 / 255)) : 0.5);
      const mirror = (i: number) => (i < 0 ? -i : i >= side ? 2 * side - 2 - i : i);
      const sigma = Math.max(0, (side / size - 1) / 2);
      const r = Math.trunc(4 * sigma + 0.5);
      const k = Array.from({ length: 2 * r + 1 }, (_, j) => Math.exp((-0.5 / (sigma * sigma)) * (j - r) ** 2));
      const sum = k.reduce((a, b) => a + b);
      const pass = (get: (y: number, x: number, c: number) => number, axis: 0 | 1) => {
        const out = new Float32Array(side * side * 3);
        for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) for (let c = 0; c < 3; c++) {
          let s = get(y, x, c) * (k[r]! / sum);
          for (let j = r; j >= 1; j--) s += (axis === 0 ? get(mirror(y - j), x, c) + get(mirror(y + j), x, c) : get(y, mirror(x - j), c) + get(y, mirror(x + j), c)) * (k[r + j]! / sum);
          out[(y * side + x) * 3 + c] = s;
        }
        return (y: number, x: number, c: number) => out[(y * side + x) * 3 + c]!;
      };
      const filtered = pass(pass(px, 0), 1);
      const at = (o: number) => {
        const cc = (o + 0.5) * (side / size) - 0.5;
        const lo = Math.floor(cc);
        return [lo, Math.min(lo + 1, side - 1), 1 - (cc - lo)] as const;
      };
      const out = new Float32Array(size * size * 3);
      for (let i = 0; i < size; i++) for (let j = 0; j < size; j++) for (let c = 0; c < 3; c++) {
        const [y0, y1, wy] = at(i);
        const [x0, x1, wx] = at(j);
        out[(i * size + j) * 3 + c] = filtered(y0, x0, c) * wy * wx + filtered(y0, x1, c) * wy * (1 - wx) + filtered(y1, x0, c) * (1 - wy) * wx + filtered(y1, x1, c) * (1 - wy) * (1 - wx);
      }
      return out;
    };
    let seed = 3;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (const [width, height, size] of [[157, 90, 12], [31, 200, 17], [64, 64, 9]] as const) {
      const img = { data: Uint8Array.from({ length: width * height * 3 }, () => Math.floor(256 * rand())), width, height, channels: 3 as const };
      expectClose(resizeOwlv2(img, size), reference(img, size), { atol: 1e-6, label: `${width}x${height} → ${size}` });
    }
  });

  it('the model inputs are these images preprocessed', async () => {
    const files = manifest.images.slice(0, 2).map((m) => join(DIR, m.file));
    expectClose((await preprocessOwlv2Batch(files, { size: 32 })).data, pixelValues(), { atol: 1e-5 });
    expectClose((await preprocessOwlv2(join(DIR, manifest.images[2]!.file), { size: 32 })).data, input('query_pixel_values').data, { atol: 1e-5 });
  });

  it('refuses a bad size or an unreadable image, naming it', async () => {
    await expect(preprocessOwlv2(join(DIR, manifest.images[0]!.file), { size: 0 })).rejects.toThrow(/preprocessOwlv2: size must be a positive integer, got 0/);
    await expect(preprocessOwlv2(join(DIR, 'nope.png'))).rejects.toThrow(/nope.png: cannot read the image/);
  });
});

describe('OWLv2 boxes in original-image pixels and detect', () => {
  const { tokenizer, det, dir } = useDetector(getGpu, DIR);

  it('a shape drawn in a non-square image sits where the padded frame puts it, and a box there maps back onto it', async () => {
    // 80×40 (wide) and 30×60 (tall) images, one red rectangle each at a known place.
    for (const [w, h, rect] of [[80, 40, [40, 10, 60, 30]], [30, 60, [4, 36, 20, 56]]] as const) {
      const raw = Buffer.alloc(w * h * 3, 255);
      for (let y = rect[1]; y < rect[3]; y++) for (let x = rect[0]; x < rect[2]; x++) raw.set([255, 0, 0], (y * w + x) * 3);
      const file = join(dir(), `shape-${w}x${h}.png`);
      await sharp(raw, { raw: { width: w, height: h, channels: 3 } }).png().toFile(file);
      const size = 32;
      const side = Math.max(w, h);
      const px = await preprocessOwlv2(file, { size });
      // The rectangle's centre, in the model's pixels: x · size / side on both axes (padding at the bottom/right).
      const [cx, cy] = [((rect[0] + rect[2]) / 2) * (size / side), ((rect[1] + rect[3]) / 2) * (size / side)];
      const at = (c: number, x: number, y: number) => px.data[c * size * size + Math.floor(y) * size + Math.floor(x)]!;
      expect(at(1, cx, cy)).toBeLessThan(-1.4); // green channel: red there (normalised 0 ≈ -1.75)
      expect(at(1, (rect[2] * size) / side + 1.5, cy)).toBeGreaterThan(1.5); // white just right of it
      // A predicted box (cxcywh, normalised to the padded square) on the rectangle, and one reaching into the padding.
      const n = det().numPatches;
      const predBoxes = new Float32Array(n * 4);
      predBoxes.set([(rect[0] + rect[2]) / 2 / side, (rect[1] + rect[3]) / 2 / side, (rect[2] - rect[0]) / side, (rect[3] - rect[1]) / side], 0);
      predBoxes.set([0.9, 0.9, 0.4, 0.4], 4);
      const logits = Float32Array.from({ length: n }, (_, i) => (i < 2 ? 5 : -5));
      const [found] = det().postProcess({ logits, predBoxes }, { targetSizes: [[h, w]] });
      expectClose(found!.boxes.subarray(0, 4), rect, { atol: 1e-4 });
      // HF's output for the same box (scaled to the padded square) is the same point: the padding is after it.
      expect(Array.from(found!.boxes.subarray(4, 8))).toEqual([0.7 * side, 0.7 * side, w, h].map((v, i) => Math.min(Math.fround(v), [w, h][i % 2]!)).map(Math.fround));
    }
  });

  it('detect: images read and preprocessed as OWLv2, the predict → postProcess pipeline, objectness per detection', async () => {
    const files = ['img0_rgb_45x71.png', 'img1_rgb_61x38.png'].map((f) => join(DIR, 'images', f));
    const got = await det().detect(files, ['a cat', 'a dog'], { threshold: 0 });
    const pre = await preprocessOwlv2Batch(files, { size: 32 });
    const ids = new Int32Array(4 * 16);
    for (const [i, q] of ['a cat', 'a dog', 'a cat', 'a dog'].entries()) ids.set(tokenizer.encode(q, { contextLength: 16 }), i * 16);
    const out = await det().predict({ pixelValues: pre.data, pixelShape: pre.shape, inputIds: ids, idsShape: [4, 16] });
    const ref = det().postProcess(out, { threshold: 0, targetSizes: ORIGINAL });
    ref.forEach((r, img) => {
      const want = Array.from(r.scores, (score, k) => ({ box: Array.from(r.boxes.subarray(4 * k, 4 * k + 4)), score, label: r.labels[k]!, query: ['a cat', 'a dog'][r.labels[k]!], objectness: r.objectness![k]! }));
      expect(got[img]).toEqual(want.sort((a, b) => b.score - a.score));
      expect(got[img]!.every((d) => d.box[2] <= ORIGINAL[img]![1] && d.box[3] <= ORIGINAL[img]![0])).toBe(true);
    });
    // objectnessThreshold keeps exactly the detections whose objectness passes it.
    const all = got.flat().map((d) => d.objectness!).sort();
    const cut = all[Math.floor(all.length / 2)]!;
    const kept = await det().detect(files, ['a cat', 'a dog'], { threshold: 0, objectnessThreshold: cut });
    kept.forEach((k, img) => expect(k).toEqual(got[img]!.filter((d) => d.objectness! > cut)));
    expect(kept.flat().length).toBeLessThan(got.flat().length);
    await expect(det().detect(files, ['a cat'], { objectnessThreshold: Number.NaN })).rejects.toThrow(/objectnessThreshold must be a finite number/);
  });

  it('detect with an image query: the query box is in its pixels, relative to its padded square', async () => {
    const query = join(DIR, 'images', 'img2_rgba_33x50.png');
    const target = join(DIR, 'images', 'img0_rgb_45x71.png');
    const box = [5, 20, 30, 32] as const; // in the 50×33 query image
    const got = await det().detect([target], { image: query, box });
    const q = await preprocessOwlv2(query, { size: 32 });
    const t = await preprocessOwlv2(target, { size: 32 });
    const ref = await det().imageGuided({ pixelValues: t.data, pixelShape: t.shape, queryPixelValues: q.data, queryShape: q.shape, queryBox: box.map((v) => v / 50) });
    const [post] = await det().postProcessImageGuided(ref, { threshold: 0.1, targetSizes: [t.originalSize] });
    expect(got[0]!.map((d) => d.score)).toEqual(Array.from(post!.scores).sort((a, b) => b - a));
    expect(got[0]!.every((d) => d.objectness !== undefined)).toBe(true);
  });

  it('OWL-ViT (v1) refuses objectnessThreshold', async () => {
    const v1 = await OwlVitDetector.load(await getGpu(), fixturePath('owlvit_tiny'), { tokenizer });
    await expect(v1.detect([join(DIR, 'images', 'img0_rgb_45x71.png')], ['a cat'], { objectnessThreshold: 0.5 })).rejects.toThrow(/objectnessThreshold needs an OWLv2 model/);
    v1.dispose();
  });
});

describe('ovgpu detect --model-type owlv2 (the built CLI)', () => {
  const CLI = join(__dirname, '..', '..', 'dist', 'cli.js');
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, 'detect', join(__dirname, '..', '..', 'assets', 'sample.png'), ...args], { encoding: 'utf8', env: { ...process.env, XDG_RUNTIME_DIR: '/tmp' }, timeout: 120_000 });

  it('runs the random tiny OWLv2: boxes inside the 320×240 image, objectness per detection, --objectness filters', (ctx) => {
    if (!existsSync(CLI)) ctx.skip(); // npm test builds dist/ first
    const all = run('--query', 'a red square', '--model-type', 'owlv2', '--threshold', '0', '--json', '-');
    expect(all.status, all.stderr).toBe(0);
    expect(all.stderr).toContain('tiny OWLv2 with RANDOM weights');
    const dets = JSON.parse(all.stdout).images[0].detections as { box: number[]; objectness: number }[];
    expect(dets.length).toBe(64); // the 8×8 grid, threshold 0
    for (const d of dets) {
      expect(d.box[0]).toBeGreaterThanOrEqual(0);
      expect(d.box[2]).toBeLessThanOrEqual(320);
      expect(d.box[3]).toBeLessThanOrEqual(240);
      expect(d.objectness).toBeGreaterThan(0);
    }
    const cut = dets.map((d) => d.objectness).sort()[32]!;
    const some = run('--query', 'a red square', '--model-type', 'owlv2', '--threshold', '0', '--objectness', String(cut), '--json', '-');
    expect(JSON.parse(some.stdout).images[0].detections).toEqual(dets.filter((d) => d.objectness > cut));
    const v1 = run('--query', 'a red square', '--objectness', '0.5');
    expect([v1.status, v1.stderr.trim()]).toEqual([2, expect.stringMatching(/--objectness needs an OWLv2 model/)]);
    expect(run('--query', 'x', '--model-type', 'owlv3').stderr).toMatch(/--model-type must be owlvit or owlv2, got owlv3/);
  }, 300_000);
});
