// Issue 11, "Inputs": every case feeds exactly one bad (or borderline) input at the API boundary and
// checks the named error, or the documented result.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClipModel, GpuError, OwlVitDetector, RegionClassifier, Tensor, TINY_CLIP, TINY_OWLVIT, kernels, writeRandomModel, type Gpu } from '../../src/index.js';
import { useGpu } from '../util/gpu.js';

const getGpu = useGpu();
const SAMPLE = join(__dirname, '..', '..', 'assets', 'sample.png'); // 320 × 240
let dir: string;
let gpu: Gpu;
let clip: ClipModel;
let rc: RegionClassifier;
let det: OwlVitDetector;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ovgpu-inputs-'));
  // Random tiny models with the byte-level tokenizer: context 32 tokens (30 bytes of text).
  writeRandomModel(join(dir, 'clip'), 'clip', TINY_CLIP, 3);
  writeRandomModel(join(dir, 'owlvit'), 'owlvit', TINY_OWLVIT, 4);
  gpu = await getGpu();
  clip = await ClipModel.load(gpu, join(dir, 'clip'));
  rc = new RegionClassifier(clip);
  det = await OwlVitDetector.load(gpu, join(dir, 'owlvit'));
});
afterAll(() => {
  det?.dispose();
  clip?.dispose();
  rc?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const LONG = 'a very long description of a thing that goes on'; // 47 bytes: over 32 tokens
const S = TINY_CLIP.vision!.imageSize;

async function rejects(p: Promise<unknown> | (() => unknown), message: RegExp): Promise<void> {
  const err = await Promise.resolve()
    .then(typeof p === 'function' ? p : () => p)
    .then(() => undefined, (e: unknown) => e);
  expect(err, 'expected a rejection').toBeInstanceOf(GpuError);
  expect((err as Error).message).toMatch(message);
}

describe('ClipModel.encodeText: strings are tokenized, ids never are', () => {
  const ids = () => {
    const a = new Array(2 * 32).fill(0);
    a.splice(0, 3, 512, 70, 513);
    a.splice(32, 4, 512, 71, 72, 513);
    return a;
  };
  it('an array of integers with a shape equals the same Int32Array', async () => {
    const want = await clip.encodeText(Int32Array.from(ids()), [2, 32]);
    expect(await clip.encodeText(ids(), [2, 32])).toEqual(want);
  });
  it('an array of numbers without a shape is refused, not tokenized as text', () => rejects(clip.encodeText(ids()), /^ClipModel\.encodeText: input: token ids need their shape \[B, L\]/));
  it('non-integer ids are refused naming the id', () => rejects(clip.encodeText([512, 1.5, 513], [1, 3]), /input: token id 1 is 1\.5, not an integer/));
  it('a Float32Array is refused naming the argument', () => rejects(clip.encodeText(new Float32Array(32) as never, [1, 32]), /input must be a string, an array of strings, or token ids .*got a Float32Array/));
  it('a mix of strings and numbers is refused', () => rejects(clip.encodeText(['a cat', 3] as never), /input must be .*got an array of string and number/));
  it('an object is refused', () => rejects(clip.encodeText({ text: 'a cat' } as never), /input must be .*got a Object/));
  it('null is refused', () => rejects(clip.encodeText(null as never), /input must be .*got null/));
  it('a shape with strings is refused', () => rejects(clip.encodeText('a cat', [1, 32]), /shape is for token ids/));
  it('strings equal their token ids', async () => {
    const want = await clip.encodeText(clip.tokenizer!.encode('a cat', { contextLength: 32 }), [1, 32]);
    expect(await clip.encodeText('a cat')).toEqual(want);
    expect(await clip.encodeText(['a cat'])).toEqual(want);
  });
  it('over-long text is refused with the limit, and cut with truncate', async () => {
    await rejects(clip.encodeText(LONG), /longer than the model's context of 32 tokens.*truncate: true/);
    expect((await clip.encodeText(LONG, undefined, { truncate: true })).length).toBe(64);
  });
  it('an empty batch returns an empty result', async () => {
    expect(await clip.encodeText([])).toEqual(new Float32Array(0));
    expect(await clip.encodeText(new Int32Array(0), [0, 32])).toEqual(new Float32Array(0));
  });
});

describe('tokenizing long text: bounded work, no RangeError', () => {
  it('a word of 300,000 letters is refused in well under a second without running its BPE', () => {
    const t0 = performance.now();
    expect(() => clip.tokenizer!.encode('x'.repeat(300_000), { contextLength: 32 })).toThrow(/too long for context length 32/);
    expect(performance.now() - t0).toBeLessThan(1000);
  });
  it('with truncate, a word of 300,000 letters gives the row of its first letters (its tokens no longer overflow the stack)', () => {
    const tok = clip.tokenizer!;
    const x = tok.encodeTokens('xx')[0]!; // 'x' inside a word (no end-of-word mark)
    expect(Array.from(tok.encode('x'.repeat(300_000), { contextLength: 32, truncate: true }))).toEqual([tok.sotId, ...new Array(30).fill(x), tok.eotId]);
  });
  it('100,000 words: only the words that fit are encoded, with truncate and without', async () => {
    const text = Array.from({ length: 100_000 }, (_, i) => `w${i % 7}`).join(' ');
    const want = clip.tokenizer!.encode(text.slice(0, 60), { contextLength: 32, truncate: true }); // 20 words, 40 tokens
    const t0 = performance.now();
    expect(clip.tokenizer!.encode(text, { contextLength: 32, truncate: true })).toEqual(want);
    await rejects(clip.encodeText(text), /is longer than the model's context of 32 tokens/);
    expect(performance.now() - t0).toBeLessThan(10_000);
  });
});

describe('ClipModel.encodeImage: pixels', () => {
  const pixels = (n: number) => new Float32Array(n * 3 * S * S).fill(0.5);
  it('NaN in pixels is refused naming the index', async () => {
    const p = pixels(1);
    p[100] = NaN;
    await rejects(clip.encodeImage(p, [1, 3, S, S]), /^ClipModel\.encodeImage: pixels holds NaN at index 100/);
  });
  it('Infinity in pixels is refused', async () => {
    const p = pixels(1);
    p[7] = -Infinity;
    await rejects(clip.encodeImage(p, [1, 3, S, S]), /pixels holds -Infinity at index 7/);
  });
  it('a batch of 0 images returns an empty result', async () => {
    expect(await clip.encodeImage(pixels(0), [0, 3, S, S])).toEqual(new Float32Array(0));
    expect(await clip.encodeImage([])).toEqual(new Float32Array(0));
  });
  it('pixels of the wrong length are refused', () => rejects(clip.encodeImage(pixels(1), [2, 3, S, S]), /pixels must be a Float32Array of/));
});

describe('RegionClassifier: boxes, pixels and prompt length', () => {
  const opts = { labels: ['square', 'circle'] };
  it('an inverted box is refused naming its index', () => rejects(rc.classify(SAMPLE, [[10, 10, 50, 50], [60, 10, 20, 50]], opts), /^RegionClassifier\.classify: box 1 \[60, 10, 20, 50\] is empty or inverted/));
  it('a NaN coordinate is refused naming the box', () => rejects(rc.classify(SAMPLE, [[10, NaN, 50, 50]], opts), /box 0 must be 4 finite numbers/));
  it('an infinite coordinate is refused naming the box', () => rejects(rc.embedRegions(SAMPLE, [[0, 0, 10, 10], [0, 0, Infinity, 10]]), /^RegionClassifier\.embedRegions: box 1 must be 4 finite numbers/));
  it('a box wholly outside the image is refused naming its index', () => rejects(rc.classify(SAMPLE, [[0, 0, 10, 10], [0, 0, 5, 5], [330, 10, 400, 50]], opts), /box 2 \[330, 10, 400, 50\] lies wholly outside the 320×240 image/));
  it('a box wholly outside in crop mode too', () => rejects(rc.classify(SAMPLE, [[-50, -50, -1, -1]], { ...opts, resize: 'crop' }), /box 0 .* lies wholly outside the 320×240 image/));
  it('a box partly outside is clipped to the image: the same result as the clipped box', async () => {
    const got = await rc.classify(SAMPLE, [[-40, 100, 120, 300]], opts);
    const want = await rc.classify(SAMPLE, [[0, 100, 120, 240]], opts);
    expect(got[0]!.box).toEqual([0, 100, 120, 240]);
    expect(got).toEqual(want);
    expect(await rc.embedRegions(SAMPLE, [[-40, 100, 120, 300]])).toEqual(await rc.embedRegions(SAMPLE, [[0, 100, 120, 240]]));
  });
  it('NaN in model-ready pixels is refused', async () => {
    const data = new Float32Array(3 * S * S);
    data[5] = NaN;
    await rejects(rc.classify({ data, shape: [1, 3, S, S] }, [[0, 0, 10, 10]], opts), /pixels holds NaN at index 5/);
  });
  it('0 boxes give an empty result', async () => {
    expect(await rc.classify(SAMPLE, [], opts)).toEqual([]);
    expect(await rc.embedRegions(SAMPLE, [])).toEqual(new Float32Array(0));
  });
  it('an over-long prompt is refused with the limit by default, and cut with truncate: true', async () => {
    await rejects(rc.classify(SAMPLE, [[0, 0, 100, 100]], { labels: [LONG], templates: ['{}'] }), /^RegionClassifier: query "a very long.*" is longer than the model's context of 32 tokens/);
    const [r] = await rc.classify(SAMPLE, [[0, 0, 100, 100]], { labels: [LONG, 'x'], templates: ['{}'], truncate: true });
    expect(r!.categories.map((c) => c.name).sort()).toEqual([LONG, 'x'].sort());
    // Cached once truncated, but still refused without truncate.
    await rejects(rc.classify(SAMPLE, [[0, 0, 100, 100]], { labels: [LONG], templates: ['{}'] }), /longer than the model's context of 32 tokens/);
  });
});

describe('OwlVitDetector: query length, boxes, pixels and empty batches', () => {
  const s = TINY_OWLVIT.vision!.imageSize;
  it('an over-long text query is refused with the limit by default, and cut with truncate: true', async () => {
    await rejects(det.detect([SAMPLE], ['a cat', LONG]), /^OwlVitDetector\.detect: query "a very long.*" is longer than the model's context of 32 tokens.*truncate/);
    const [found] = await det.detect([SAMPLE], ['a cat', LONG], { truncate: true, threshold: 0 });
    expect(found!.length).toBeGreaterThan(0);
  });
  it('an inverted image-query box is refused naming it', () => rejects(det.detect([SAMPLE], { image: SAMPLE, box: [100, 10, 50, 50] }), /query box 0 \[100, 10, 50, 50\] is empty or inverted/));
  it('a non-finite image-query box is refused', () => rejects(det.detect([SAMPLE], { image: SAMPLE, box: [0, 0, NaN, 50] }), /query box 0 must be 4 finite numbers/));
  it('an image-query box wholly outside the query image is refused', () => rejects(det.detect([SAMPLE], { image: SAMPLE, box: [0, 300, 50, 400] }), /query box 0 .* lies wholly outside the 320×240 image/));
  it('an image-query box partly outside is clipped: the same detections as the clipped box', async () => {
    const got = await det.detect([SAMPLE], { image: SAMPLE, box: [200, -20, 400, 100] });
    expect(got).toEqual(await det.detect([SAMPLE], { image: SAMPLE, box: [200, 0, 320, 100] }));
  });
  const pix = (n: number) => new Float32Array(n * 3 * s * s);
  it('normalised query boxes: one per query image, named by index, outside [0, 1] refused', async () => {
    await rejects(det.imageGuided({ pixelValues: pix(2), pixelShape: [2, 3, s, s], queryPixelValues: pix(2), queryShape: [2, 3, s, s], queryBox: [[0, 0, 0.5, 0.5], [1.2, 0, 1.5, 0.5]] }), /queryBox 1 .* lies wholly outside/);
    await rejects(det.imageGuided({ pixelValues: pix(1), pixelShape: [1, 3, s, s], queryPixelValues: pix(1), queryShape: [1, 3, s, s], queryBox: [0.5, 0.5, 0.2, 0.9] }), /queryBox 0 .* is empty or inverted/);
  });
  it('NaN in pixel values is refused (predict, embedImage, preprocessed detect images)', async () => {
    const p = pix(1);
    p[3] = NaN;
    const ids = new Int32Array(32).fill(0);
    ids.set([512, 70, 513]);
    await rejects(det.predict({ pixelValues: p, pixelShape: [1, 3, s, s], inputIds: ids, idsShape: [1, 32] }), /^OwlVitDetector\.predict: pixels holds NaN at index 3/);
    await rejects(det.embedImage(p, [1, 3, s, s]), /pixels holds NaN at index 3/);
    await rejects(det.detect([{ pixelValues: p, originalSize: [100, 100] }], ['a cat']), /pixelValues of image 0 holds NaN at index 3/);
    await rejects(det.detect([{ pixelValues: pix(1), originalSize: [Infinity, 100] }], ['a cat']), /originalSize must be \[h, w\]/);
    p[3] = 0;
    p[9] = Infinity;
    await rejects(det.imageGuided({ pixelValues: pix(1), pixelShape: [1, 3, s, s], queryPixelValues: p, queryShape: [1, 3, s, s] }), /query pixels holds Infinity at index 9/);
  });
  it('0 images, 0 queries or 0 query rows are refused with a named error', async () => {
    await rejects(det.detect([], ['a cat']), /^OwlVitDetector\.detect: expected a non-empty array of images/);
    await rejects(det.detect([SAMPLE], []), /^OwlVitDetector\.detect: no queries/);
    await rejects(det.detect([SAMPLE], [[]]), /every image needs at least one query/);
    await rejects(det.embedImage(pix(0), [0, 3, s, s]), /pixels must be \[B, 3, 256, 256\] \(B ≥ 1\)/);
    await rejects(det.embedText(new Int32Array(0), [0, 32]), /ids must be \[T, L\] with T ≥ 1/);
  });
});

describe('kernels: an empty batch gives an empty result, never a WebGPU validation error', () => {
  const T = (d: ArrayLike<number>, s: number[], t: 'f32' | 'i32' = 'f32') => Tensor.from(gpu, d, s, t);
  const cases: [string, () => Promise<Tensor | Int32Array | { logits: Tensor }>, number[]][] = [
    ['attentionPacked, 0 sequences', () => kernels.attentionPacked(gpu, T([], [0, 3, 12]), { heads: 1 }), [0, 3, 4]],
    ['attention, 0 sequences', () => kernels.attention(gpu, T([], [0, 3, 4]), T([], [0, 3, 4]), T([], [0, 3, 4]), { heads: 1 }), [0, 3, 4]],
    ['matmul, 0 rows', () => kernels.matmul(gpu, T([], [0, 2]), T([1, 0, 0, 1], [2, 2])), [0, 2]],
    ['softmax, 0 rows', () => kernels.softmax(gpu, T([], [0, 3])), [0, 3]],
    ['layerNorm, 0 rows', () => kernels.layerNorm(gpu, T([], [0, 2]), T([1, 1], [2]), T([0, 0], [2])), [0, 2]],
    ['patchEmbed, 0 images', () => kernels.patchEmbed(gpu, T([], [0, 3, 4, 4]), T(new Float32Array(2 * 3 * 16), [2, 3, 4, 4]), T([0, 0], [2]), T([0, 0, 0, 0], [2, 2]), { patchSize: 4 }), [0, 2, 2]],
    ['roiAlign, 0 boxes', () => kernels.roiAlign(gpu, T(new Float32Array(16), [1, 1, 4, 4]), [], { outputSize: [1, 1], spatialScale: 1, samplingRatio: 2 }), [0, 1, 1, 1]],
    ['regionWordSimilarity, 0 queries', () => kernels.regionWordSimilarity(gpu, T([1, 0], [1, 1, 2]), T([], [1, 0, 2]), { logitScale: 1 }), [1, 1, 0]],
    ['regionWordSimilarity, 0 regions', () => kernels.regionWordSimilarity(gpu, T([], [1, 0, 2]), T([1, 0], [1, 1, 2]), { logitScale: 1 }), [1, 0, 1]],
    ['boxes.iou, 0 boxes', () => kernels.boxes.iou(gpu, T([], [0, 4]), T([0, 0, 1, 1], [1, 4])), [0, 1]],
    ['gather, 0 indices', () => kernels.gather(gpu, T([1, 2, 3, 4], [2, 2]), T([], [0], 'i32')), [0, 2]],
    ['nms, 0 boxes', () => kernels.nms(gpu, T([], [0, 4]), T([], [0]), { iouThreshold: 0.5 }), [0]],
    ['batchedNms, 0 boxes', () => kernels.batchedNms(gpu, T([], [0, 4]), T([], [0]), T([], [0], 'i32'), { iouThreshold: 0.5 }), [0]],
  ];
  for (const [what, run, shape] of cases) {
    it(what, async () => {
      const r = await run();
      if (r instanceof Int32Array) expect(r.length).toBe(0);
      else {
        const t = r instanceof Tensor ? r : r.logits;
        expect(t.shape).toEqual(shape);
        expect((await t.read()).length).toBe(0);
      }
    });
  }
});
