// detect's NMS inside the scoring plan (OWL-ViT and OWLv2): text queries with `nms` and image
// queries cost the submits detection without NMS costs, and give the host path's detections. The
// references are independent of the GPU NMS: predict → postProcess → objectness filter → the CPU
// batched NMS reference for text queries; the line-by-line port of HF's image-guided
// post-processing (test/util/owl-postprocess.ts) for image queries. The host path is also run by
// forcing the fallback (the check that the plan's NMS decided as the host's refusing).
import { describe, expect, it, vi } from 'vitest';
import { OwlVitDetector, TINY_OWLVIT, kernels, randomModel, type Gpu } from '../../src/index.js';
import { logitThreshold, planAgrees, type PlanNms } from '../../src/models/owlvit/plan-nms.js';
import { sigmoid } from '../../src/models/owlvit/postprocess.js';
import { requireF16, useGpu } from '../util/gpu.js';
import { useDetector } from '../util/owl-detect.js';
import { hfPostProcessImageGuided } from '../util/owl-postprocess.js';
import { fixturePath, fixtureTensor, loadFixture } from '../util/fixtures.js';
import { expectClose } from '../util/check.js';
import { rng } from '../util/random.js';

const planNms = vi.hoisted(() => ({ forceFallback: false, refused: 0 }));
vi.mock('../../src/models/owlvit/plan-nms.js', async (importOriginal) => {
  const mod = await importOriginal<typeof import('../../src/models/owlvit/plan-nms.js')>();
  return {
    ...mod,
    agreedKept: (...args: Parameters<typeof mod.agreedKept>) => {
      const kept = planNms.forceFallback ? undefined : mod.agreedKept(...args);
      if (!kept) planNms.refused++;
      return kept;
    },
  };
});

const S = 32;
const QUERIES = ['a cat', 'a dog', 'cat', 'dog', 'a cod', 'a toad', 'god', 'a goat', 'coat', 'act'];

type Image = { pixelValues: Float32Array; originalSize: [number, number] };
type Options = { threshold: number; nms?: number; objectnessThreshold?: number; batchSize?: number };

/** Counts the submits `work` makes, run a second time (the first fills the text embedding cache). */
async function submits<T>(gpu: Gpu, work: () => Promise<T>): Promise<{ result: T; submits: number }> {
  await work();
  const before = gpu.stats().submits;
  const result = await work();
  return { result, submits: gpu.stats().submits - before };
}

/**
 * The host pipeline: predict on detect's batches of images (the 'gpu' profile's kernels may round
 * another batch size differently), postProcess, the objectness filter, then per image the CPU
 * batched NMS reference over the labels, best first (ties in index order).
 */
async function textReference(det: OwlVitDetector, encode: (q: string) => Int32Array, images: Image[], lists: string[][], o: Options) {
  const l = det.config.text.contextLength;
  const maxQ = Math.max(...lists.map((x) => x.length));
  const found = [];
  for (let first = 0; first < images.length; first += o.batchSize ?? 1) {
    const chunk = images.slice(first, first + (o.batchSize ?? 1));
    const ids = new Int32Array(chunk.length * maxQ * l);
    lists.slice(first, first + chunk.length).forEach((list, img) => list.forEach((q, j) => ids.set(encode(q), (img * maxQ + j) * l)));
    const size = det.config.vision.imageSize;
    const pixelValues = new Float32Array(chunk.length * 3 * size * size);
    chunk.forEach((im, i) => pixelValues.set(im.pixelValues, i * 3 * size * size));
    const out = await det.predict({ pixelValues, pixelShape: [chunk.length, 3, size, size], inputIds: ids, idsShape: [chunk.length * maxQ, l] });
    found.push(...det.postProcess(out, { threshold: o.threshold, targetSizes: chunk.map((im) => im.originalSize) }));
  }
  return found.map((d, img) => {
    let keep = [...d.scores.keys()];
    if (o.objectnessThreshold !== undefined) keep = keep.filter((k) => d.objectness![k]! > o.objectnessThreshold!);
    if (o.nms !== undefined) {
      const pick = <T extends Float32Array | Int32Array>(a: T, w = 1) => keep.flatMap((k) => Array.from(a.subarray(w * k, w * k + w)));
      keep = kernels.batchedNmsReference(pick(d.boxes, 4), pick(d.scores), pick(d.labels), { iouThreshold: o.nms }).map((j) => keep[j]!);
    }
    return keep
      .sort((a, b) => a - b)
      .map((k) => ({ box: Array.from(d.boxes.subarray(4 * k, 4 * k + 4)), score: d.scores[k]!, label: d.labels[k]!, query: lists[img]![d.labels[k]!]!, ...(d.objectness && { objectness: d.objectness[k]! }) }))
      .sort((a, b) => b.score - a.score);
  });
}

// The 'gpu' profile runs the kernel settings real GPUs get (topK and NMS included).
for (const [model, profile] of [['owlvit_tiny', 'auto'], ['owlv2_tiny', 'auto'], ['owlv2_tiny', 'gpu']] as const) {
  describe(`detect with NMS on ${model}, profile ${profile}`, () => {
    const getGpu = useGpu(profile);
    const { tokenizer, det } = useDetector(getGpu, fixturePath(model));
    const v2 = model === 'owlv2_tiny';
    const input = (name: string) => fixtureTensor(loadFixture(model, 'inputs.safetensors'), name).data as Float32Array;
    const encode = (q: string) => tokenizer.encode(q, { contextLength: det().config.text.contextLength });

    it('text queries on random images, query lists and thresholds: the host pipeline, in the submits detection without NMS takes', async () => {
      const gpu = await getGpu();
      if (profile === 'gpu') expect(gpu.profile).toBe('gpu');
      const r = rng(v2 ? 29 : 17);
      const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
      let cases = 0;
      let suppressed = 0;
      planNms.refused = 0;
      for (let c = 0; c < 12; c++) {
        const count = 1 + Math.floor(r() * 3);
        const images: Image[] = Array.from({ length: count }, () => ({
          pixelValues: Float32Array.from({ length: 3 * S * S }, () => 4 * r() - 2),
          originalSize: [10 + Math.floor(r() * 90), 10 + Math.floor(r() * 90)],
        }));
        // Different lists per image (1 to 4 queries), so the shorter ones are padded.
        const lists = images.map(() => Array.from({ length: 1 + Math.floor(r() * 4) }, () => pick(QUERIES)));
        const o: Options = {
          threshold: pick([0, 0.01, 0.1, r() * 0.3]),
          nms: pick([0, 0.1, 0.3, 0.5, r()]),
          ...(v2 && r() < 0.6 && { objectnessThreshold: r() * 0.6 }),
          batchSize: 1 + Math.floor(r() * count),
        };
        const label = `case ${c}: ${JSON.stringify({ lists, ...o })}`;
        const plain = await submits(gpu, () => det().detect(images, lists, { ...o, nms: undefined }));
        const withNms = await submits(gpu, () => det().detect(images, lists, o));
        expect(withNms.submits, label).toBe(plain.submits);
        expect(withNms.result, label).toEqual(await textReference(det(), encode, images, lists, o));
        suppressed += plain.result.flat().length - withNms.result.flat().length;
        cases++;
      }
      expect(planNms.refused, 'batches where the in-plan NMS was refused').toBe(0);
      expect(suppressed, 'boxes NMS suppressed over all cases').toBeGreaterThan(20);
      console.log(`${model} (${profile}): ${cases} random text cases identical to the host pipeline, ${suppressed} boxes suppressed, no extra submit`);
    });

    it('the host path (the plan check forced to refuse) gives the same, at one more submit per batch', async () => {
      const gpu = await getGpu();
      const images: Image[] = [0, 1].map((i) => ({ pixelValues: input('pixel_values').subarray(i * 3 * S * S, (i + 1) * 3 * S * S), originalSize: [[45, 71], [61, 38]][i] as [number, number] }));
      const lists = [['a cat', 'a dog', 'cat'], ['a dog']];
      for (const o of [{ threshold: 0, nms: 0.2, batchSize: 2 }, { threshold: 0, nms: 0.4, batchSize: 1, ...(v2 && { objectnessThreshold: 0.3 }) }] as Options[]) {
        const inPlan = await submits(gpu, () => det().detect(images, lists, o));
        // Every image has boxes for NMS, so the host path runs it for every batch.
        expect(inPlan.result.every((d) => d.length > 0)).toBe(true);
        planNms.forceFallback = true;
        try {
          const host = await submits(gpu, () => det().detect(images, lists, o));
          expect(host.submits).toBe(inPlan.submits + 2 / o.batchSize!);
          expect(host.result).toEqual(inPlan.result);
          expect(host.result).toEqual(await textReference(det(), encode, images, lists, o));
          // Image queries too.
          const query = { image: { pixelValues: input('query_pixel_values'), originalSize: [32, 32] as [number, number] } };
          planNms.forceFallback = false;
          const igPlan = await submits(gpu, () => det().detect(images, query, o));
          planNms.forceFallback = true;
          const igHost = await submits(gpu, () => det().detect(images, query, o));
          expect(igHost.submits).toBe(igPlan.submits + 2 / o.batchSize!);
          expect(igHost.result).toEqual(igPlan.result);
        } finally {
          planNms.forceFallback = false;
        }
      }
    });

    it('f16 weights and activations: the host pipeline of the same f16 detector', async (ctx) => {
      const gpu = await getGpu();
      requireF16(ctx, gpu);
      const half = await OwlVitDetector.load(gpu, fixturePath(model), { tokenizer, dtype: 'f16' });
      const images: Image[] = [0, 1].map((i) => ({ pixelValues: input('pixel_values').subarray(i * 3 * S * S, (i + 1) * 3 * S * S), originalSize: [[45, 71], [61, 38]][i] as [number, number] }));
      const lists = [['a cat', 'a dog', 'cat'], ['a dog', 'god']];
      planNms.refused = 0;
      for (const o of [{ threshold: 0, nms: 0.3, batchSize: 2 }, { threshold: 0.05, nms: 0.1, batchSize: 1, ...(v2 && { objectnessThreshold: 0.2 }) }] as Options[]) {
        const got = await submits(gpu, () => half.detect(images, lists, o));
        const plain = await submits(gpu, () => half.detect(images, lists, { ...o, nms: undefined }));
        expect(got.submits).toBe(plain.submits);
        expect(got.result).toEqual(await textReference(half, encode, images, lists, o));
      }
      expect(planNms.refused).toBe(0);
      half.dispose();
    }, 600_000);

    it("NMS options key the scoring plans, and those stay within the plan cache's cap", async () => {
      const gpu = await getGpu();
      const capped = await OwlVitDetector.load(gpu, fixturePath(model), { tokenizer, plans: { maxPlans: 3 } });
      const images: Image[] = [{ pixelValues: input('pixel_values').subarray(0, 3 * S * S), originalSize: [45, 71] }];
      const bytes: number[] = [];
      for (const nms of [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]) {
        const o = { threshold: 0, nms, batchSize: 1 };
        expect(await capped.detect(images, ['a cat', 'a dog'], o), `nms ${nms}`).toEqual(await textReference(capped, encode, images, [['a cat', 'a dog']], o));
        bytes.push(gpu.stats().liveBytes);
      }
      // Each IoU threshold is a plan of its own; past the cap, older ones are evicted with their buffers.
      expect(Math.max(...bytes.slice(3))).toBeLessThanOrEqual(Math.max(...bytes.slice(0, 3)));
      capped.dispose();
    });

    it("image queries: HF's image-guided post-processing of imageGuided's outputs, in the submits detection without NMS takes", async () => {
      const gpu = await getGpu();
      const r = rng(v2 ? 5 : 3);
      const fixtureImages: Image[] = [0, 1].map((i) => ({ pixelValues: input('pixel_values').subarray(i * 3 * S * S, (i + 1) * 3 * S * S), originalSize: [[45, 71], [61, 38]][i] as [number, number] }));
      let cases = 0;
      for (let c = 0; c < 8; c++) {
        const images: Image[] = c === 0 ? fixtureImages : [0, 1].map(() => ({ pixelValues: Float32Array.from({ length: 3 * S * S }, () => 4 * r() - 2), originalSize: [10 + Math.floor(r() * 90), 10 + Math.floor(r() * 90)] }));
        const queryPixels = c === 0 ? input('query_pixel_values') : Float32Array.from({ length: 3 * S * S }, () => 4 * r() - 2);
        const threshold = [0, 0.1, 0.3][c % 3]!;
        const nms = c < 2 ? 0.3 : r() * 0.8;
        const batchSize = 1 + (c % 2);
        const query = { image: { pixelValues: queryPixels, originalSize: [32, 32] as [number, number] } };
        const got = await submits(gpu, () => det().detect(images, query, { threshold, nms, batchSize }));
        const noNms = await submits(gpu, () => det().detect(images, query, { threshold, nms: 1, batchSize }));
        expect(got.submits, `case ${c}`).toBe(noNms.submits);
        const pixelValues = new Float32Array(2 * 3 * S * S);
        images.forEach((im, i) => pixelValues.set(im.pixelValues, i * 3 * S * S));
        const out = await det().imageGuided({ pixelValues, pixelShape: [2, 3, S, S], queryPixelValues: queryPixels, queryShape: [1, 3, S, S] });
        // OWLv2: HF's boxes are relative to the padded square; ours are clipped to the original image.
        const sizes = images.map(({ originalSize: [h, w] }) => (v2 ? [Math.max(h, w), Math.max(h, w)] : [h, w]) as [number, number]);
        const ref = hfPostProcessImageGuided(out.logits, out.targetPredBoxes, [2, det().numPatches, 1], threshold, nms, sizes);
        ref.forEach((rr, img) => {
          const [h, w] = images[img]!.originalSize;
          const want = (rr?.scores ?? []).map((score, k) => ({ score, box: rr!.boxes.slice(4 * k, 4 * k + 4).map((v, j) => (v2 ? Math.min(Math.max(v, 0), j % 2 ? h : w) : v)) })).sort((a, b) => b.score - a.score);
          const mine = got.result[img]!;
          expect(mine.length, `case ${c} image ${img}`).toBe(want.length);
          if (want.length === 0) return;
          expectClose(mine.map((d) => d.score), want.map((d) => d.score), { scaleTol: 1e-6, label: `case ${c} image ${img} scores` });
          expectClose(mine.flatMap((d) => d.box), want.flatMap((d) => d.box), { scaleTol: 1e-6, label: `case ${c} image ${img} boxes` });
        });
        cases++;
      }
      console.log(`${model} (${profile}): ${cases} image-query cases as HF's post-processing, no extra submit`);
    });
  });
}

describe("detect with NMS at real models' box counts (random OWLv2 with tiny towers)", () => {
  const getGpu = useGpu();
  // 768 px / 32: OWL-ViT B/32's 576 boxes; 1920 px / 32: OWLv2 B/16's 3600.
  for (const imageSize of [768, 1920]) {
    it(`${(imageSize / 32) ** 2} boxes per image: the host pipeline, no extra submit`, async () => {
      const gpu = await getGpu();
      const det = await OwlVitDetector.load(gpu, randomModel('owlv2', { ...TINY_OWLVIT, vision: { ...TINY_OWLVIT.vision!, imageSize } }, 4));
      const r = rng(imageSize);
      const images: Image[] = [0, 1].map(() => ({ pixelValues: Float32Array.from({ length: 3 * imageSize ** 2 }, () => 4 * r() - 2), originalSize: [300 + Math.floor(r() * 700), 300 + Math.floor(r() * 700)] }));
      const lists = [['a cat', 'a dog'], ['a bird']];
      const encode = (q: string) => det.tokenizer!.encode(q, { contextLength: det.config.text.contextLength });
      planNms.refused = 0;
      let suppressed = 0;
      const cases: Options[] = [{ threshold: 0.2, nms: 0.5, batchSize: 1, objectnessThreshold: 0.3 }, { threshold: 0, nms: 0.3, batchSize: 2 }];
      // Every box of both images at 3600 boxes: seconds of the CPU reference's NMS, so that one is left out.
      for (const o of imageSize > 768 ? cases.slice(0, 1) : cases) {
        const got = await submits(gpu, () => det.detect(images, lists, o));
        const plain = await submits(gpu, () => det.detect(images, lists, { ...o, nms: undefined }));
        expect(got.submits).toBe(plain.submits);
        expect(got.result).toEqual(await textReference(det, encode, images, lists, o));
        suppressed += plain.result.flat().length - got.result.flat().length;
      }
      expect(planNms.refused).toBe(0);
      expect(suppressed).toBeGreaterThan(0);
      console.log(`${(imageSize / 32) ** 2} boxes per image: ${imageSize > 768 ? 1 : 2} case(s) identical to the host pipeline, ${suppressed} boxes suppressed`);
      det.dispose();
    }, 300_000);
  }
});

describe('the check that the plan NMS decided as the host path', () => {
  const nms = (n: number, bias = new Float32Array(n)): PlanNms => ({ boxes: new Float32Array(4 * n), bias, iouThreshold: 0.5, logitThreshold: logitThreshold(0.1) });

  it('logitThreshold: a logit passes exactly when its f32 sigmoid is above the threshold', () => {
    const next = (x: number) => {
      const b = new Float32Array([x]);
      const i = new Int32Array(b.buffer);
      i[0]! += x >= 0 ? 1 : -1;
      return b[0]!;
    };
    for (const t of [0, 1e-30, 0.01, 0.1, 0.25, 0.5, 0.5000001, 0.9, 0.99999, 0.3333333]) {
      const x = logitThreshold(t);
      expect(sigmoid(x) > Math.fround(t), `threshold ${t}`).toBe(false);
      expect(sigmoid(next(x)) > Math.fround(t), `threshold ${t}`).toBe(true);
    }
  });

  it('refuses ties of the f32 score between different logits of one label, NaN, and other candidates; accepts the rest', () => {
    // Logits 20 and 21 both score 1 in f32: the host orders them by index, the plan by logit.
    const logits = Float32Array.from([20, -5, 21, -5, 3, -5]); // [1, 3, 2]: 3 boxes, 2 queries
    expect(sigmoid(20)).toBe(sigmoid(21));
    expect(planAgrees(logits, [3, 2], 0, nms(3), [0, 1, 2])).toBe(false);
    // The same logits on different labels never meet in NMS.
    expect(planAgrees(Float32Array.from([20, -5, -5, 21, 3, -5]), [3, 2], 0, nms(3), [0, 1, 2])).toBe(true);
    expect(planAgrees(Float32Array.from([2, -5, 3, -5, 1, -5]), [3, 2], 0, nms(3), [0, 1, 2])).toBe(true);
    expect(planAgrees(Float32Array.from([2, -5, 3, -5, 1, -5]), [3, 2], 0, nms(3), [0, 2])).toBe(false);
    expect(planAgrees(Float32Array.from([2, -5, 3, -5, 1, -5]), [3, 2], 0, nms(3, Float32Array.from([0, -Infinity, 0])), [0, 2])).toBe(true);
    expect(planAgrees(Float32Array.from([2, NaN, 3, -5, 1, -5]), [3, 2], 0, nms(3), [0, 1, 2])).toBe(false);
    expect(planAgrees(Float32Array.from([2, 1e-40, 3, -5, 1, -5]), [3, 2], 0, nms(3), [0, 1, 2])).toBe(false);
  });
});
