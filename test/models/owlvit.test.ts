import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { OwlVitDetector, kernels, preprocessOwlVit, selectImageQuery, type Gpu } from '../../src/index.js';
import { decodeSafetensors } from '../../src/io/safetensors.js';
import { requireF16, useGpu } from '../util/gpu.js';
import { useDetector } from '../util/owl-detect.js';
import { checkImageGuidedThresholds } from '../util/owl-postprocess.js';
import { expectClose } from '../util/check.js';
import { fixturePath, fixtureTensor, loadFixture } from '../util/fixtures.js';
import { writeSafetensors } from '../util/write-safetensors.js';

const getGpu = useGpu();
const DIR = fixturePath('owlvit_tiny');
const input = (name: string) => fixtureTensor(loadFixture('owlvit_tiny', 'inputs.safetensors'), name).data;
const want = (name: string) => fixtureTensor(loadFixture('owlvit_tiny', 'expected.safetensors'), name).data;
const f32 = (name: string) => want(name) as Float32Array;

const B = 2;
const N = 16;
const Q = 3;
const PADDED = { image: 1, query: 2 }; // input_ids row 5 starts with 0
const pixelValues = () => input('pixel_values') as Float32Array;
const inputIds = () => input('input_ids') as Int32Array;
const targetSizes = () => {
  const s = input('target_sizes') as Int32Array;
  return [[s[0]!, s[1]!], [s[2]!, s[3]!]] as [number, number][];
};
const predictInputs = () => ({ pixelValues: pixelValues(), pixelShape: [B, 3, 32, 32], inputIds: inputIds(), idsShape: [B * Q, 16], attentionMask: input('attention_mask') });
const guidedInputs = () => ({ pixelValues: pixelValues(), pixelShape: [B, 3, 32, 32], queryPixelValues: input('query_pixel_values') as Float32Array, queryShape: [1, 3, 32, 32] });

/** Logits with the padded query's column checked apart: it is exactly -1e6, and would set the scale of the rest. */
/** predict's outputs against the forward pass of the reference, within `tol` of each output's scale. */
function checkPredict(out: { logits: Float32Array; predBoxes: Float32Array; classEmbeds: Float32Array; imageEmbeds: Float32Array; textEmbeds: Float32Array }, tol: number): string[] {
  const r = (label: string, got: Float32Array, ref: string) => expectClose(got, f32(ref), { scaleTol: tol, label }).message;
  return [
    checkLogits(out.logits, tol),
    r('pred_boxes', out.predBoxes, 'pred_boxes'),
    r('class_embeds', out.classEmbeds, 'class_embeds'),
    r('image_embeds', out.imageEmbeds, 'image_embeds'),
    r('text_embeds', out.textEmbeds, 'text_embeds'),
  ];
}

function checkLogits(got: Float32Array, tol: number): string {
  const ref = f32('logits');
  const isPadded = (i: number) => Math.floor(i / (N * Q)) === PADDED.image && i % Q === PADDED.query;
  const idx = [...ref.keys()];
  expect(idx.filter(isPadded).map((i) => got[i])).toEqual(new Array(N).fill(-1e6));
  expect(idx.filter(isPadded).map((i) => ref[i])).toEqual(new Array(N).fill(-1e6));
  const live = idx.filter((i) => !isPadded(i));
  return expectClose(live.map((i) => got[i]!), live.map((i) => ref[i]!), { scaleTol: tol, label: 'logits' }).message;
}

describe('OwlVitDetector on owlvit_tiny', () => {
  let gpu: Gpu;
  let det: OwlVitDetector;
  let baseline: ReturnType<Gpu['stats']>;
  beforeAll(async () => {
    gpu = await getGpu();
    baseline = gpu.stats();
    det = await OwlVitDetector.load(gpu, DIR);
  });

  it('predict matches OwlViTForObjectDetection.forward (f32, 1e-4 of scale)', async () => {
    expect(det.config).toMatchObject({ gridSize: 4, embedDim: 48, vision: { width: 64, imageSize: 32, patchSize: 8 }, text: { width: 48, contextLength: 16 } });
    expect(det.unusedWeights).toEqual([]);
    const out = await det.predict(predictInputs());
    for (const m of checkPredict(out, 1e-4)) console.log(m);
  });

  it('postProcess equals post_process_object_detection (threshold 0, target sizes)', async () => {
    const out = await det.predict(predictInputs());
    const results = det.postProcess(out, { threshold: 0, targetSizes: targetSizes() });
    expect(results).toHaveLength(B);
    const labels = want('post_labels') as Int32Array;
    results.forEach((r, img) => {
      expect(Array.from(r.labels)).toEqual(Array.from(labels.subarray(img * N, (img + 1) * N)));
      expectClose(r.scores, f32('post_scores').subarray(img * N, (img + 1) * N), { scaleTol: 1e-4, label: `post_scores ${img}` });
      console.log(expectClose(r.boxes, f32('post_boxes').subarray(img * N * 4, (img + 1) * N * 4), { scaleTol: 1e-4, label: `post_boxes ${img}` }).message);
    });
    // The default threshold 0.1 and a high one keep exactly the boxes scoring above them.
    for (const threshold of [undefined, 0.8]) {
      const kept = det.postProcess(out, { threshold, targetSizes: targetSizes() });
      kept.forEach((r, img) => {
        const scores = f32('post_scores').subarray(img * N, (img + 1) * N);
        expect(r.scores.length).toBe(scores.filter((v) => v > (threshold ?? 0.1)).length);
      });
    }
    // Without target sizes the boxes stay normalised.
    const plain = det.postProcess(out, { threshold: 0 });
    expectClose(plain[1]!.boxes.subarray(0, 4), Array.from(results[1]!.boxes.subarray(0, 4)).map((v, i) => v / [200, 300][i % 2]!), { scaleTol: 1e-6 });
  });

  it('imageGuided and postProcessImageGuided match image_guided_detection and its post-processing with NMS 0.3', async () => {
    const out = await det.imageGuided(guidedInputs());
    expect(Array.from(out.bestBoxIndices)).toEqual(Array.from(want('ig_best_box_indices')));
    const r = (label: string, got: Float32Array, ref: string) => expectClose(got, f32(ref), { scaleTol: 1e-4, label }).message;
    for (const m of [
      r('ig_query_embeds', out.queryEmbeds, 'ig_query_embeds'),
      r('ig_logits', out.logits, 'ig_logits'),
      r('ig_target_pred_boxes', out.targetPredBoxes, 'ig_target_pred_boxes'),
      r('ig_query_pred_boxes', out.queryPredBoxes, 'ig_query_pred_boxes'),
      r('ig_class_embeds', out.classEmbeds, 'ig_class_embeds'),
      r('ig_image_embeds', out.imageEmbeds, 'ig_image_embeds'),
      r('ig_query_image_embeds', out.queryImageEmbeds, 'ig_query_image_embeds'),
    ]) console.log(m);
    const post = await det.postProcessImageGuided(out, { targetSizes: targetSizes() });
    post.forEach((p, img) => {
      const scores = f32(`ig_post_scores_${img}`);
      expect(p.scores.length).toBe(scores.length);
      expectClose(p.scores, scores, { scaleTol: 1e-4, label: `ig_post_scores_${img}` });
      console.log(expectClose(p.boxes, f32(`ig_post_boxes_${img}`), { scaleTol: 1e-4, label: `ig_post_boxes_${img}` }).message);
    });
    // NMS does remove boxes here (image 1 keeps 15 of 16), and without it every box is kept.
    expect(post[1]!.scores.length).toBeLessThan(N);
    const noNms = await det.postProcessImageGuided(out, { nmsThreshold: 1, targetSizes: targetSizes() });
    expect(noNms[1]!.scores.length).toBe(N);
  });

  it('postProcessImageGuided thresholds the scores before the rescaling, as HF v4.35.2 (an independent reference checked on ig_post_* at 0)', async () => {
    for (const m of await checkImageGuidedThresholds(det, f32, { n: N, sizes: targetSizes(), refSizes: targetSizes(), thresholds: [0.9, 0.95, 0.99] })) console.log(m);
  });

  it('image-guided queries from a user box pick the predicted box that overlaps it most', async () => {
    const query = f32('ig_query_pred_boxes');
    const corners = (i: number) => [query[4 * i]! - query[4 * i + 2]! / 2, query[4 * i + 1]! - query[4 * i + 3]! / 2, query[4 * i]! + query[4 * i + 2]! / 2, query[4 * i + 1]! + query[4 * i + 3]! / 2];
    // The user box is the box HF chose: the same query, the same logits.
    const hfBest = (want('ig_best_box_indices') as Int32Array)[0]!;
    const same = await det.imageGuided({ ...guidedInputs(), queryBox: corners(hfBest) });
    expect(same.bestBoxIndices[0]).toBe(hfBest);
    expectClose(same.logits, f32('ig_logits'), { scaleTol: 1e-4 });
    // Another box: the argmax of IoU computed here in float64.
    const box = [0.05, 0.6, 0.3, 0.95];
    const iou = (a: number[], b: number[]) => {
      const w = Math.max(0, Math.min(a[2]!, b[2]!) - Math.max(a[0]!, b[0]!));
      const h = Math.max(0, Math.min(a[3]!, b[3]!) - Math.max(a[1]!, b[1]!));
      const area = (x: number[]) => (x[2]! - x[0]!) * (x[3]! - x[1]!);
      return (w * h) / (area(a) + area(b) - w * h);
    };
    const ious = Array.from({ length: N }, (_, i) => iou(box, corners(i)));
    const expected = ious.indexOf(Math.max(...ious));
    expect(expected).not.toBe(hfBest);
    const other = await det.imageGuided({ ...guidedInputs(), queryBox: box });
    expect(other.bestBoxIndices[0]).toBe(expected);
    expectClose(other.queryEmbeds, f32('ig_query_class_embeds_raw').subarray(expected * 48, (expected + 1) * 48), { scaleTol: 1e-4 });
  });

  it('caches: a second query set does not re-run the vision tower, a repeated one not even the text tower', async () => {
    const det = await OwlVitDetector.load(gpu, DIR); // an empty text cache
    const image = await det.embedImage(pixelValues(), [B, 3, 32, 32]);
    const ids = inputIds();
    const count = async (work: () => Promise<unknown>) => {
      const before = gpu.stats().submits;
      await work();
      return gpu.stats().submits - before;
    };
    // Queries 0–1 of each image, then query 2 (a different set of strings), then 0–1 again.
    const rows = (qs: number[]) => Int32Array.from(qs.flatMap((q) => [...ids.subarray(q * 16, (q + 1) * 16)]));
    const first = rows([0, 1, 3, 4]);
    const second = rows([2, 5]);
    let logits: Float32Array = new Float32Array();
    expect(await count(async () => (logits = (await det.queryText(image, { inputIds: first, idsShape: [4, 16] })).logits))).toBe(2); // text + scores
    expect(await count(() => det.queryText(image, { inputIds: second, idsShape: [2, 16] }))).toBe(2);
    expect(await count(() => det.queryText(image, { inputIds: first, idsShape: [4, 16] }))).toBe(1); // scores only
    // The cached embedding scores like a full forward pass: columns 0–1 of the reference logits.
    const ref = f32('logits');
    expectClose(logits, Array.from({ length: B * N * 2 }, (_, i) => ref[Math.floor(i / 2) * Q + (i % 2)]!), { scaleTol: 1e-4 });
    // Rows padded to another length reuse the cache: the embedding depends on the tokens up to the pooled one.
    const short = Int32Array.from([1, 3, 4].flatMap((q) => [...ids.subarray(q * 16, q * 16 + 10)]));
    expect(await count(() => det.embedText(short, [3, 10]))).toBe(0);
    image.dispose();
    expect(image.disposed).toBe(true);
    await expect(det.queryText(image, { inputIds: first, idsShape: [4, 16] })).rejects.toThrow(/the image embedding was disposed/);
    // Embeddings left alive are freed with the detector.
    const kept = await det.embedImage(pixelValues(), [B, 3, 32, 32]);
    det.dispose();
    expect(kept.disposed).toBe(true);
  });

  it('batch and query counts run as power-of-two buckets with the results of unpadded runs', async () => {
    // 3 images (run as 4) × 3 queries (run as 4) against each image and query alone (buckets of 1: no padding).
    const px = pixelValues();
    const three = new Float32Array(3 * 3072);
    three.set(px);
    three.set(px.subarray(0, 3072), 2 * 3072);
    const ids = inputIds().subarray(0, 3 * 16); // image 0's queries, none padded, for each image:
    const rows = Int32Array.from({ length: 9 * 16 }, (_, i) => ids[i % (3 * 16)]!);
    const batched = await det.embedImage(three, [3, 3, 32, 32]);
    expect(batched.tensors.classEmbedsRaw.shape[0]).toBe(4);
    const all = await det.queryText(batched, { inputIds: rows, idsShape: [9, 16] });
    expect(all.logits.length).toBe(3 * N * 3);
    for (let img = 0; img < 3; img++) {
      const one = await det.embedImage(three.subarray(img * 3072, (img + 1) * 3072), [1, 3, 32, 32]);
      expect(batched.predBoxes.subarray(img * N * 4, (img + 1) * N * 4)).toEqual(one.predBoxes);
      for (let q = 0; q < 3; q++) {
        const { logits, classEmbeds } = await det.queryText(one, { inputIds: ids.subarray(q * 16, (q + 1) * 16), idsShape: [1, 16] });
        expect(Float32Array.from({ length: N }, (_, i) => all.logits[(img * N + i) * 3 + q]!)).toEqual(logits);
        expect(all.classEmbeds.subarray(img * N * 48, (img + 1) * N * 48)).toEqual(classEmbeds);
      }
      one.dispose();
    }
    batched.dispose();
  });

  it('nms: a cached plan per power-of-two box count, equal to the batched NMS reference', async () => {
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (const k of [1, 5, 37]) {
      const boxes = Float32Array.from({ length: 4 * k }, (_, i) => (i % 4 < 2 ? 40 * rand() : 40 + 40 * rand()));
      const scores = Float32Array.from({ length: k }, () => rand());
      const labels = Int32Array.from({ length: k }, () => Math.floor(3 * rand()));
      for (const scoreThreshold of [undefined, 0.5]) {
        const want = new Int32Array(kernels.batchedNmsReference(boxes, scores, labels, { iouThreshold: 0.3, scoreThreshold }));
        expect(await det.nms(boxes, scores, labels, { iouThreshold: 0.3, scoreThreshold })).toEqual(want);
      }
    }
    const before = gpu.stats();
    await det.nms(new Float32Array([0, 0, 1, 1, 0, 0, 1, 1, 5, 5, 6, 6]), new Float32Array([0.5, 0.9, 0.1]), new Int32Array(3), { iouThreshold: 0.3 }); // one submit: the plan run, no eager uploads or reads
    expect(gpu.stats().submits - before.submits).toBe(1);
    await expect(det.nms(new Float32Array(4), new Float32Array(2), new Int32Array(2), { iouThreshold: 0.3 })).rejects.toThrow(/expected boxes \[K, 4\], scores \[K\] and labels \[K\]/);
  });

  it('repeated predicts allocate nothing that stays', async () => {
    await det.predict(predictInputs());
    await det.imageGuided(guidedInputs());
    const before = gpu.stats();
    for (let i = 0; i < 3; i++) {
      await det.predict(predictInputs());
      await det.imageGuided(guidedInputs());
    }
    const after = gpu.stats();
    expect({ liveBuffers: after.liveBuffers, liveBytes: after.liveBytes }).toEqual({ liveBuffers: before.liveBuffers, liveBytes: before.liveBytes });
  });

  it('refuses bad input before anything reaches the GPU', async () => {
    const before = gpu.stats();
    const p = predictInputs();
    await expect(det.predict({ ...p, pixelShape: [2, 3, 64, 64] })).rejects.toThrow(/OwlVitDetector.predict: pixels must be \[B, 3, 32, 32\] \(B ≥ 1\), got \[2, 3, 64, 64\]/);
    await expect(det.predict({ ...p, pixelValues: new Float32Array(10) })).rejects.toThrow(/pixels hold 10 values, expected 6144/);
    await expect(det.predict({ ...p, idsShape: [5, 16] })).rejects.toThrow(/idsShape must be \[B·Q, L\] with B = 2, got \[5, 16\]/);
    await expect(det.predict({ ...p, idsShape: [6, 17] })).rejects.toThrow(/ids must be \[T, L\] with T ≥ 1 and 1 ≤ L ≤ 16, got \[6, 17\]/);
    await expect(det.predict({ ...p, inputIds: p.inputIds.map((v, i) => (i === 3 ? 600 : v)) })).rejects.toThrow(/token id 600 outside the vocabulary \[0, 512\)/);
    await expect(det.predict({ ...p, inputIds: Float32Array.from(p.inputIds) as never })).rejects.toThrow(/inputIds must be an Int32Array/);
    const mask = Int32Array.from(p.attentionMask as Int32Array);
    mask[2] = 0;
    await expect(det.predict({ ...p, attentionMask: mask })).rejects.toThrow(/attentionMask row 0 masks token 2, before its pooled token 15/);
    await expect(det.imageGuided({ ...guidedInputs(), queryShape: [3, 3, 32, 32], queryPixelValues: new Float32Array(3 * 3 * 32 * 32) })).rejects.toThrow(/3 query images for 2 target images: give 1 or 2/);
    await expect(det.imageGuided({ ...guidedInputs(), queryBox: [0.5, 0.5, 0.2, 0.9] })).rejects.toThrow(/queryBox 0 \(normalised to the query image\) \[0.5, 0.5, 0.2, 0.9\] is empty or inverted/);
    expect(() => det.postProcess({ logits: new Float32Array(5), predBoxes: new Float32Array(B * N * 4) })).toThrow(/logits must be \[2, 16, Q\], got 5 values/);
    expect(() => det.postProcess({ logits: new Float32Array(B * N), predBoxes: new Float32Array(B * N * 4) }, { targetSizes: [[10, 10]] })).toThrow(/targetSizes must hold one positive \(h, w\) pair per image \(2\)/);
    await expect(det.postProcessImageGuided({ logits: new Float32Array(B * N), targetPredBoxes: new Float32Array(7) })).rejects.toThrow(/boxes must be \[B, 16, 4\], got 7 values/);
    expect(gpu.stats()).toEqual(before);
  });

  it('f16 weights and activations stay within 2e-2 of the reference', async () => {
    if (!gpu.features.has('shader-f16')) return;
    const half = await OwlVitDetector.load(gpu, DIR, { dtype: 'f16' });
    const out = await half.predict(predictInputs());
    for (const m of checkPredict(out, 2e-2)) console.log(`f16 ${m}`);
    const guided = await half.imageGuided(guidedInputs());
    console.log(`f16 ${expectClose(guided.logits, f32('ig_logits'), { scaleTol: 2e-2, label: 'ig_logits' }).message}`);
    half.dispose();
  });

  it('dispose frees everything load and the runs made, and returns the GPU stats', () => {
    const after = det.dispose();
    expect({ liveBuffers: after.liveBuffers, liveBytes: after.liveBytes }).toEqual({ liveBuffers: baseline.liveBuffers, liveBytes: baseline.liveBytes });
    expect(det.dispose()).toEqual(after);
  });
});

describe('OwlVitDetector.load errors', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ovgpu-owlvit-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A copy of the fixture checkpoint with some tensors changed or left out. */
  function checkpoint(name: string, edit: (tensors: Record<string, { shape: number[]; data: Float32Array }>) => void, config = readFileSync(join(DIR, 'config.json'), 'utf8')): string {
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const [k, t] of decodeSafetensors(readFileSync(join(DIR, 'model.safetensors')))) tensors[k] = { shape: [...t.shape], data: t.data as Float32Array };
    edit(tensors);
    const d = join(dir, name);
    rmSync(d, { recursive: true, force: true });
    mkdirSync(d);
    writeFileSync(join(d, 'config.json'), config);
    writeSafetensors(join(d, 'model.safetensors'), tensors);
    return d;
  }

  it('names the missing folder, config, tensor or wrong shape and frees what it uploaded', async () => {
    const gpu = await getGpu();
    const before = gpu.stats();
    await expect(OwlVitDetector.load(gpu, join(dir, 'nope'))).rejects.toThrow(/OwlVitDetector.load: .*nope: no such model folder/);
    const noConfig = join(dir, 'no-config');
    mkdirSync(noConfig);
    await expect(OwlVitDetector.load(gpu, noConfig)).rejects.toThrow(/config.json: no config.json in this folder/);
    writeFileSync(join(noConfig, 'config.json'), readFileSync(join(DIR, 'config.json')));
    await expect(OwlVitDetector.load(gpu, noConfig)).rejects.toThrow(/folder holds neither model.safetensors nor model.safetensors.index.json/);
    const missing = checkpoint('missing', (t) => delete t['box_head.dense2.bias']);
    await expect(OwlVitDetector.load(gpu, missing)).rejects.toThrow(/missing tensor "box_head.dense2.bias" \(detection head\), expected shape \[4\]/);
    const missingTower = checkpoint('missing-tower', (t) => delete t['owlvit.text_model.final_layer_norm.weight']);
    await expect(OwlVitDetector.load(gpu, missingTower)).rejects.toThrow(/missing tensor "owlvit.text_model.final_layer_norm.weight"/);
    const shaped = checkpoint('shaped', (t) => (t['class_head.dense0.weight']!.shape = [64, 48]));
    await expect(OwlVitDetector.load(gpu, shaped)).rejects.toThrow(/tensor "class_head.dense0.weight" \(detection head\) has shape \[64, 48\], expected \[48, 64\]/);
    const clipConfig = checkpoint('clip', () => undefined, JSON.stringify({ ...JSON.parse(readFileSync(join(DIR, 'config.json'), 'utf8')), model_type: 'clip' }));
    await expect(OwlVitDetector.load(gpu, clipConfig)).rejects.toThrow(/model_type is "clip", expected "owlvit"/);
    expect(gpu.stats()).toEqual(before);
  });

  it('loads a sharded checkpoint (model.safetensors.index.json) to the same outputs', async () => {
    const gpu = await getGpu();
    const d = join(dir, 'sharded');
    mkdirSync(d);
    const shards: Record<string, { shape: number[]; data: Float32Array }>[] = [{}, {}];
    const weightMap: Record<string, string> = {};
    [...decodeSafetensors(readFileSync(join(DIR, 'model.safetensors')))].forEach(([k, t], i) => {
      shards[i % 2]![k] = { shape: [...t.shape], data: t.data as Float32Array };
      weightMap[k] = `model-0000${(i % 2) + 1}-of-00002.safetensors`;
    });
    shards.forEach((t, i) => writeSafetensors(join(d, `model-0000${i + 1}-of-00002.safetensors`), t));
    writeFileSync(join(d, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    writeFileSync(join(d, 'config.json'), readFileSync(join(DIR, 'config.json')));
    const sharded = await OwlVitDetector.load(gpu, d);
    checkLogits((await sharded.predict(predictInputs())).logits, 1e-4);
    sharded.dispose();
  });

  it('a disposed detector refuses work', async () => {
    const gpu = await getGpu();
    const d = await OwlVitDetector.load(gpu, DIR);
    d.dispose();
    await expect(d.predict(predictInputs())).rejects.toThrow(/OwlVitDetector.predict: the detector was disposed/);
  });
});

describe('selectImageQuery', () => {
  const cxcywh = (boxes: number[][]) => Float32Array.from(boxes.flatMap(([x1, y1, x2, y2]) => [(x1! + x2!) / 2, (y1! + y2!) / 2, x2! - x1!, y2! - y1!]));
  it('takes boxes within 80% of the best IoU with the whole image, then the least typical embedding', () => {
    const boxes = cxcywh([[0, 0, 1, 1], [0, 0, 0.95, 0.95], [0, 0, 0.5, 0.5], [0.05, 0.05, 0.95, 0.95]]);
    // IoUs 1, 0.9025, 0.25, 0.81: boxes 0, 1 and 3 qualify; box 1's embedding is least like the mean.
    const embeds = Float32Array.from([1, 0, 0.2, 0, -1, 0, 1, 0.5]); // box 2 is least typical but does not qualify
    expect(selectImageQuery(boxes, embeds, 4)).toBe(1);
  });
  it('falls back to generalized IoU when no box overlaps the image (HF then keeps only boxes at the best GIoU of 0)', () => {
    const apart = cxcywh([[1, 0, 2, 1], [1.5, 0, 2, 1]]); // touching the image: GIoU 0; further away: GIoU < 0
    expect(selectImageQuery(apart, Float32Array.from([1, 2]), 2)).toBe(0);
    const far = cxcywh([[2, 2, 3, 3], [4, 4, 5, 5]]);
    expect(selectImageQuery(far, Float32Array.from([1, 2]), 2)).toBe(-1);
  });
});

describe('OwlVitDetector.detect', () => {
  const { tokenizer, det, dir } = useDetector(getGpu, DIR);
  const image = (i: number) => ({ pixelValues: pixelValues().subarray(i * 3 * 32 * 32, (i + 1) * 3 * 32 * 32), originalSize: targetSizes()[i]! });
  const sorted = (d: { scores: Float32Array; labels: Int32Array; boxes: Float32Array }, names: string[]) =>
    Array.from(d.scores, (score, k) => ({ box: Array.from(d.boxes.subarray(4 * k, 4 * k + 4)), score, label: d.labels[k]!, query: names[d.labels[k]!]! })).sort((a, b) => b.score - a.score);

  it('text queries, different per image: the predict → postProcess pipeline, best first, padded queries never win', async () => {
    const got = await det().detect([image(0), image(1)], [['a cat', 'a dog'], ['a cat']], { batchSize: 2 });
    const cat = tokenizer.encode('a cat', { contextLength: 16 });
    const dog = tokenizer.encode('a dog', { contextLength: 16 });
    const ids = new Int32Array(4 * 16);
    ids.set(cat, 0);
    ids.set(dog, 16);
    ids.set(cat, 32); // image 1, query 1: zeros (padding)
    const out = await det().predict({ pixelValues: pixelValues(), pixelShape: [2, 3, 32, 32], inputIds: ids, idsShape: [4, 16] });
    const ref = det().postProcess(out, { targetSizes: targetSizes() });
    expect(got[0]).toEqual(sorted(ref[0]!, ['a cat', 'a dog']));
    expect(got[1]).toEqual(sorted(ref[1]!, ['a cat']));
    expect(got[1]!.length).toBeGreaterThan(0);
    expect(got[1]!.every((d) => d.label === 0)).toBe(true);
    // One image at a time gives the same, and topK keeps the best.
    expect(await det().detect([image(0), image(1)], [['a cat', 'a dog'], ['a cat']])).toEqual(got);
    expect(await det().detect([image(0)], ['a cat', 'a dog'], { topK: 2 })).toEqual([got[0]!.slice(0, 2)]);
  });

  it('class-aware NMS drops exactly the boxes a better box of the same query overlaps by more than the threshold', async () => {
    const all = (await det().detect([image(1)], ['a cat', 'a dog'], { threshold: 0 }))[0]!;
    const kept = (await det().detect([image(1)], ['a cat', 'a dog'], { threshold: 0, nms: 0.1 }))[0]!;
    const iou = (a: number[], b: number[]) => {
      const w = Math.max(0, Math.min(a[2]!, b[2]!) - Math.max(a[0]!, b[0]!));
      const h = Math.max(0, Math.min(a[3]!, b[3]!) - Math.max(a[1]!, b[1]!));
      const area = (x: number[]) => (x[2]! - x[0]!) * (x[3]! - x[1]!);
      return (w * h) / (area(a) + area(b) - w * h);
    };
    // Greedy NMS per label, computed here.
    const expected = all.filter((d, i) => !all.slice(0, i).some((e, j) => e.label === d.label && iou(e.box, d.box) > 0.1 && !isSuppressed(j)));
    function isSuppressed(j: number): boolean {
      return all.slice(0, j).some((e, k) => e.label === all[j]!.label && iou(e.box, all[j]!.box) > 0.1 && !isSuppressed(k));
    }
    expect(kept).toEqual(expected);
    expect(kept.length).toBeLessThan(all.length);
    // The NMS runs inside the scoring plan: no submit of its own; a batch keeps what its images keep alone.
    const gpu = await getGpu();
    const submits = async (options: { nms?: number }) => {
      const before = gpu.stats().submits;
      const found = await det().detect([image(0), image(1)], ['a cat', 'a dog'], { threshold: 0, batchSize: 2, ...options });
      return { found, submits: gpu.stats().submits - before };
    };
    const plain = await submits({});
    const batched = await submits({ nms: 0.1 });
    expect(batched.submits - plain.submits).toBe(0);
    expect(batched.found[1]).toEqual(kept);
    expect(batched.found[0]).toEqual((await det().detect([image(0)], ['a cat', 'a dog'], { threshold: 0, nms: 0.1 }))[0]);
  });

  it('an image query: the imageGuided → postProcessImageGuided pipeline', async () => {
    const query = { pixelValues: input('query_pixel_values') as Float32Array, originalSize: [32, 32] as const };
    const got = await det().detect([image(0), image(1)], { image: query });
    const out = await det().imageGuided(guidedInputs());
    const ref = await det().postProcessImageGuided(out, { threshold: 0.1, targetSizes: targetSizes() });
    expect(got).toEqual(ref.map((r) => sorted(r, ['image'])));
    // A box in the query image's pixels picks the predicted box that overlaps it most, as imageGuided with the normalised box.
    const boxed = await det().detect([image(0)], { image: query, box: [1.6, 19.2, 9.6, 30.4] });
    const refBoxed = await det().imageGuided({ ...guidedInputs(), queryBox: [0.05, 0.6, 0.3, 0.95] });
    const post = await det().postProcessImageGuided(refBoxed, { threshold: 0.1, targetSizes: targetSizes() });
    expect(boxed[0]).toEqual(sorted(post[0]!, ['image']));
  });

  it('reads image files and scales boxes back to their own size', async () => {
    const gpu = await getGpu();
    const png = join(dir(), 'wide.png');
    const raw = Buffer.from(Array.from({ length: 50 * 20 * 3 }, (_, i) => (i * 37) % 256));
    await sharp(raw, { raw: { width: 50, height: 20, channels: 3 } }).png().toFile(png);
    const got = await det().detect([png], ['a dog'], { threshold: 0 });
    const pre = await preprocessOwlVit(png, { size: 32 });
    const out = await det().predict({ pixelValues: pre.data, pixelShape: pre.shape, inputIds: tokenizer.encode('a dog', { contextLength: 16 }), idsShape: [1, 16] });
    expect(pre.originalSize).toEqual([20, 50]);
    expect(got[0]).toEqual(sorted(det().postProcess(out, { threshold: 0, targetSizes: [pre.originalSize] })[0]!, ['a dog']));
    const before = gpu.stats();
    await expect(det().detect([join(dir(), 'missing.png')], ['a dog'])).rejects.toThrow(/missing.png: cannot read the image/);
    await expect(det().detect([png], [])).rejects.toThrow(/OwlVitDetector.detect: no queries: give at least one string/);
    await expect(det().detect([png], [[]])).rejects.toThrow(/OwlVitDetector.detect: every image needs at least one query/);
    await expect(det().detect([png], ['a bat'])).rejects.toThrow(/OwlVitDetector.detect: query "a bat": token "b" is not in the vocabulary/);
    await expect(det().detect([png], ['a cat a cat a cat a cat a cat'])).rejects.toThrow(/query "a cat a cat a cat a cat a cat" is longer than the model's context of 16 tokens/);
    await expect(det().detect([png], ['a cat'], { batchSize: 0 })).rejects.toThrow(/batchSize must be a positive integer/);
    const plain = await OwlVitDetector.load(gpu, DIR);
    await expect(plain.detect([png], ['a cat'])).rejects.toThrow(/string queries need a tokenizer: the model folder has none of tokenizer.json/);
    plain.dispose();
    expect(gpu.stats()).toEqual(before);
  });
});

describe("OwlVitDetector on owlvit_tiny under profile 'gpu' (the kernel settings real GPUs run)", () => {
  const getProfileGpu = useGpu('gpu');
  it('predict and imageGuided match the reference within 1e-4 of scale (f32)', async () => {
    const gpu = await getProfileGpu();
    expect(gpu.profile).toBe('gpu');
    const det = await OwlVitDetector.load(gpu, DIR);
    for (const m of checkPredict(await det.predict(predictInputs()), 1e-4)) console.log(`gpu profile ${m}`);
    const guided = await det.imageGuided(guidedInputs());
    expect(Array.from(guided.bestBoxIndices)).toEqual(Array.from(want('ig_best_box_indices')));
    console.log(`gpu profile ${expectClose(guided.logits, f32('ig_logits'), { scaleTol: 1e-4, label: 'ig_logits' }).message}`);
    expectClose(guided.targetPredBoxes, f32('ig_target_pred_boxes'), { scaleTol: 1e-4, label: 'ig_target_pred_boxes' });
    det.dispose();
  }, 300_000);

  it('predict with f16 weights and activations within 2e-2 of the reference', async (ctx) => {
    const gpu = await getProfileGpu();
    requireF16(ctx, gpu);
    const half = await OwlVitDetector.load(gpu, DIR, { dtype: 'f16' });
    for (const m of checkPredict(await half.predict(predictInputs()), 2e-2)) console.log(`gpu profile f16 ${m}`);
    half.dispose();
    // Every f16 pipeline compiles anew: minutes on a loaded lavapipe.
  }, 600_000);
});
