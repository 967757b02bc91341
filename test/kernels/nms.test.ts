import { describe, expect, it } from 'vitest';
import { Tensor, kernels, type Gpu } from '../../src/index.js';
import { batchedNmsReference, boxIouF32Reference, nmsReference, type NmsOptions } from '../../src/kernels/nms.js';
import { forEachProfile } from '../util/gpu.js';
import { rng } from '../util/random.js';

/** n boxes xyxy: centres uniform in [0, extent), sides in [size/4, size); `inverted` of them with x1 > x2. */
function randomBoxes(n: number, seed: number, size = 100, extent = 1000, inverted = 0): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(4 * n);
  for (let i = 0; i < n; i++) {
    const cx = r() * extent;
    const cy = r() * extent;
    const w = size * (0.25 + 0.75 * r());
    const h = size * (0.25 + 0.75 * r());
    const flip = i < inverted ? -1 : 1;
    out.set([cx - (flip * w) / 2, cy - h / 2, cx + (flip * w) / 2, cy + h / 2], 4 * i);
  }
  return out;
}

/** Scores in [0, 1); with `levels`, only that many distinct values (many ties). */
function randomScores(n: number, seed: number, levels?: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (levels ? Math.floor(r() * levels) / levels : r()));
}

async function gpuNms(gpu: Gpu, boxes: ArrayLike<number>, scores: ArrayLike<number>, options: NmsOptions, labels?: ArrayLike<number>): Promise<number[]> {
  const k = scores.length;
  const tb = Tensor.from(gpu, boxes, [k, 4]);
  const ts = Tensor.from(gpu, scores, [k]);
  const tl = labels ? Tensor.from(gpu, labels, [k], 'i32') : undefined;
  try {
    const kept = tl ? await kernels.batchedNms(gpu, tb, ts, tl, options) : await kernels.nms(gpu, tb, ts, options);
    expect(kept).toBeInstanceOf(Int32Array);
    return Array.from(kept);
  } finally {
    for (const t of [tb, ts, tl]) t?.dispose();
  }
}

forEachProfile((_, getGpu) => {
  describe('nms', () => {
    it('hand-worked case: strict threshold, equal scores, zero-area boxes, score filter, truncation', async () => {
      const gpu = await getGpu();
      // Worked on paper (areas: boxes 0-2 100, box 3 50, box 4 64, boxes 5-6 0):
      //   IoU(0,1) = 81/119 = 0.68   IoU(0,3) = 50/100 = 0.5 exactly   IoU(1,3) = 36/114 = 0.32
      //   IoU(2,4) = 64/100 = 0.64   5, 6: zero width, IoU 0 with any box and 0/0 = NaN with each other
      // Order by score: 5, 6 (0.99: equal, lower index first), 3, 0, 1, 2, 4 (0.7 like 2, after it).
      const boxes = [
        [0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 5], [21, 21, 29, 29], [5, 5, 5, 9], [5, 5, 5, 9],
      ].flat();
      const scores = [0.9, 0.8, 0.7, 0.95, 0.7, 0.99, 0.99];
      // 0.5: 3 keeps 0 (0.5 is not > 0.5); 0 removes 1; 2 removes 4.
      expect(await gpuNms(gpu, boxes, scores, { iouThreshold: 0.5 })).toEqual([5, 6, 3, 0, 2]);
      // 0.3: 3 removes 0 and 1; 2 removes 4.
      expect(await gpuNms(gpu, boxes, scores, { iouThreshold: 0.3 })).toEqual([5, 6, 3, 2]);
      // 0.7: nothing overlaps that much.
      expect(await gpuNms(gpu, boxes, scores, { iouThreshold: 0.7 })).toEqual([5, 6, 3, 0, 1, 2, 4]);
      // Score > 0.8 in f32 drops box 1 (0.8 exactly) and the 0.7s.
      expect(await gpuNms(gpu, boxes, scores, { iouThreshold: 0.7, scoreThreshold: 0.8 })).toEqual([5, 6, 3, 0]);
      expect(await gpuNms(gpu, boxes, scores, { iouThreshold: 0.5, maxOutputs: 2 })).toEqual([5, 6]);
      expect(await gpuNms(gpu, boxes, scores, { iouThreshold: 0.5, maxOutputs: 0 })).toEqual([]);
      // Labels: 0 and 1 in different classes no longer suppress each other at 0.5.
      expect(await gpuNms(gpu, boxes, scores, { iouThreshold: 0.5 }, [0, 1, 0, 0, 0, 0, 0])).toEqual([5, 6, 3, 0, 1, 2]);
      // The references agree with the paper.
      expect(nmsReference(boxes, scores, { iouThreshold: 0.3 })).toEqual([5, 6, 3, 2]);
      expect(batchedNmsReference(boxes, scores, [0, 1, 0, 0, 0, 0, 0], { iouThreshold: 0.5 })).toEqual([5, 6, 3, 0, 1, 2]);
    });

    it('compares the f32 IoU with the threshold as torchvision does (as a double)', async () => {
      const gpu = await getGpu();
      // [0,0,10,1] and [0,0,3,1]: inter 3, union 10, f32 IoU = fround(0.3) = 0.30000001 > 0.3, so the
      // second is suppressed at 0.3 (a float comparison, as torchvision's CUDA kernel makes, would keep it).
      expect(boxIouF32Reference([0, 0, 10, 1], [0, 0, 3, 1])).toBe(Math.fround(0.3));
      expect(await gpuNms(gpu, [0, 0, 10, 1, 0, 0, 3, 1], [0.9, 0.8], { iouThreshold: 0.3 })).toEqual([0]);
      expect(await gpuNms(gpu, [0, 0, 10, 1, 0, 0, 3, 1], [0.9, 0.8], { iouThreshold: 0.30000002 })).toEqual([0, 1]);
      // IoU exactly 0.5 is kept at 0.5; identical boxes (IoU 1) survive only iouThreshold 1.
      expect(await gpuNms(gpu, [0, 0, 2, 1, 0, 0, 1, 1], [0.9, 0.8], { iouThreshold: 0.5 })).toEqual([0, 1]);
      expect(await gpuNms(gpu, [0, 0, 2, 1, 0, 0, 2, 1], [0.9, 0.8], { iouThreshold: 1 })).toEqual([0, 1]);
      expect(await gpuNms(gpu, [0, 0, 2, 1, 0, 0, 2, 1], [0.9, 0.8], { iouThreshold: 0.999 })).toEqual([0]);
      // Touching, disjoint and zero-area boxes have IoU 0 with the unit box 0: they survive threshold 0
      // and fall to a negative one. Between zero-area boxes IoU is 0/0 = NaN: they never suppress.
      const touching = [0, 0, 1, 1, 1, 0, 2, 1, 5, 5, 5, 5, 5, 5, 5, 5];
      expect(await gpuNms(gpu, touching, [4, 3, 2, 1], { iouThreshold: 0 })).toEqual([0, 1, 2, 3]);
      expect(await gpuNms(gpu, touching, [4, 3, 2, 1], { iouThreshold: -0.5 })).toEqual([0]);
      expect(await gpuNms(gpu, [5, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 9], [3, 2, 1], { iouThreshold: -0.5 })).toEqual([0, 1, 2]);
      expect(nmsReference(touching, [4, 3, 2, 1], { iouThreshold: -0.5 })).toEqual([0]);
    });

    it('orders and filters scores over the whole f32 range as torch does', async () => {
      const gpu = await getGpu();
      // -0 and 0 are equal to torch.sort: the lower index comes first (and suppresses its twin).
      expect(await gpuNms(gpu, [0, 0, 1, 1, 0, 0, 1, 1], [-0, 0], { iouThreshold: 0.5 })).toEqual([0]);
      const scores = [0.5, -0, 1e-45, -Infinity, NaN, -2, Infinity, 0, -1e-45, 3.4e38, NaN, -0.5, 0.5];
      const n = scores.length;
      const disjoint = Array.from({ length: n }, (_, i) => [10 * i, 0, 10 * i + 5, 5]).flat();
      // Expected order, by hand: NaNs (4, 10), inf, 3.4e38, the 0.5s (0, 12), 1e-45, the zeros (1, 7), ...
      expect(await gpuNms(gpu, disjoint, scores, { iouThreshold: 0.5 })).toEqual([4, 10, 6, 9, 0, 12, 2, 1, 7, 8, 11, 5, 3]);
      for (const scoreThreshold of [-1, -0, 0, 1e-45, 0.5, 0.4999999, -3.4e38, 3.4e38]) {
        const ref = nmsReference(disjoint, scores, { iouThreshold: 0.5, scoreThreshold });
        expect(await gpuNms(gpu, disjoint, scores, { iouThreshold: 0.5, scoreThreshold }), `scoreThreshold ${scoreThreshold}`).toEqual(ref);
      }
      expect(nmsReference(disjoint, scores, { iouThreshold: 0.5, scoreThreshold: 0 })).toEqual([6, 9, 0, 12, 2]);
    });

    it('matches the reference on random sets of 1 to 1000 boxes at thresholds 0, 0.3, 0.5, 1', async () => {
      const gpu = await getGpu();
      for (const [s, n] of [1, 2, 31, 32, 33, 100, 257, 1000].entries()) {
        const boxes = randomBoxes(n, 10 + s, 100, n < 100 ? 200 : 1000, s % 3 === 0 ? 3 : 0);
        const scores = randomScores(n, 50 + s, s % 2 ? 16 : undefined);
        for (const iouThreshold of [0, 0.3, 0.5, 1]) {
          const ref = nmsReference(boxes, scores, { iouThreshold });
          expect(await gpuNms(gpu, boxes, scores, { iouThreshold }), `n=${n} thr=${iouThreshold}`).toEqual(ref);
        }
      }
    });

    it('matches the reference under heavy overlap, duplicates, equal scores, zero areas, NaN scores', async () => {
      const gpu = await getGpu();
      const n = 600;
      const r = rng(7);
      // Boxes jittered around 5 centres, every 10th an exact duplicate of its predecessor, every 7th
      // of zero width; scores from 4 levels, with a few NaN.
      const boxes = new Float32Array(4 * n);
      const scores = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const c = 100 * (i % 5);
        const x1 = c + r() * 8;
        const y1 = c + r() * 8;
        const box = i % 10 === 9 ? boxes.slice(4 * (i - 1), 4 * i) : [x1, y1, i % 7 === 0 ? x1 : x1 + 50 + r() * 8, y1 + 50 + r() * 8];
        boxes.set(box, 4 * i);
        scores[i] = i % 97 === 5 ? NaN : Math.floor(r() * 4) / 4;
      }
      for (const options of [
        { iouThreshold: 0 },
        { iouThreshold: 0.3 },
        { iouThreshold: 0.5 },
        { iouThreshold: 0.8, scoreThreshold: 0.25 },
        { iouThreshold: 1, maxOutputs: 17 },
      ]) {
        const ref = nmsReference(boxes, scores, options);
        if (options.scoreThreshold === undefined) expect(scores[ref[0]!]).toBeNaN();
        expect(await gpuNms(gpu, boxes, scores, options), JSON.stringify(options)).toEqual(ref);
      }
    });

    it('5000 boxes: nms and batched nms over 80 classes', async () => {
      const gpu = await getGpu();
      const n = 5000;
      const boxes = randomBoxes(n, 3, 120, 1000);
      const scores = randomScores(n, 4);
      const ref = nmsReference(boxes, scores, { iouThreshold: 0.5 });
      expect(ref.length).toBeGreaterThan(100);
      expect(ref.length).toBeLessThan(n);
      expect(await gpuNms(gpu, boxes, scores, { iouThreshold: 0.5 })).toEqual(ref);
      const r = rng(5);
      const labels = Int32Array.from({ length: n }, () => Math.floor(r() * 80));
      const bref = batchedNmsReference(boxes, scores, labels, { iouThreshold: 0.5, maxOutputs: 3000 });
      expect(await gpuNms(gpu, boxes, scores, { iouThreshold: 0.5, maxOutputs: 3000 }, labels)).toEqual(bref);
    });

    it('batched: matches per-class NMS with several classes, duplicates across classes never suppress', async () => {
      const gpu = await getGpu();
      for (const [s, n] of [1, 40, 333].entries()) {
        const base = randomBoxes(n, 20 + s, 150, 500);
        // Every box twice, once in each of two labels: across labels they never suppress each other.
        const boxes = new Float32Array([...base, ...base]);
        const scores = randomScores(2 * n, 30 + s, s === 1 ? 8 : undefined);
        const r = rng(40 + s);
        const labels = Int32Array.from({ length: 2 * n }, (_, i) => (i < n ? -3 : 7) + 100 * Math.floor(r() * 3));
        for (const options of [{ iouThreshold: 0 }, { iouThreshold: 0.3 }, { iouThreshold: 0.5, scoreThreshold: 0.5 }, { iouThreshold: 1 }]) {
          const ref = batchedNmsReference(boxes, scores, labels, options);
          expect(await gpuNms(gpu, boxes, scores, options, labels), `n=${n} ${JSON.stringify(options)}`).toEqual(ref);
        }
      }
    });

    it('empty input gives an empty result', async () => {
      const gpu = await getGpu();
      expect(await gpuNms(gpu, [], [], { iouThreshold: 0.5 })).toEqual([]);
      expect(await gpuNms(gpu, [], [], { iouThreshold: 0.5 }, [])).toEqual([]);
    });

    it('rejects bad arguments before dispatching', async () => {
      const gpu = await getGpu();
      const boxes = Tensor.from(gpu, new Float32Array(12), [3, 4]);
      const scores = Tensor.from(gpu, new Float32Array(3), [3]);
      const labels = Tensor.from(gpu, [0, 1, 2], [3], 'i32');
      const flat = Tensor.from(gpu, new Float32Array(12), [12]);
      const wide = Tensor.from(gpu, new Float32Array(15), [3, 5]);
      const short = Tensor.from(gpu, new Float32Array(2), [2]);
      const shortLabels = Tensor.from(gpu, [0, 1], [2], 'i32');
      const floatLabels = Tensor.from(gpu, [0, 1, 2], [3]);
      const intBoxes = Tensor.from(gpu, new Int32Array(12), [3, 4], 'i32');
      const before = gpu.stats();
      const ok = { iouThreshold: 0.5 };
      await expect(kernels.nms(gpu, flat, scores, ok)).rejects.toThrow(/nms: boxes must be \[K, 4\] \(x1, y1, x2, y2\), got \[12\]/);
      await expect(kernels.nms(gpu, wide, scores, ok)).rejects.toThrow(/nms: boxes must be \[K, 4\] \(x1, y1, x2, y2\), got \[3, 5\]/);
      await expect(kernels.nms(gpu, intBoxes, scores, ok)).rejects.toThrow(/nms: boxes must be f32, got i32/);
      await expect(kernels.nms(gpu, boxes, short, ok)).rejects.toThrow(/nms: scores must be \[3\] like boxes' rows, got \[2\]/);
      await expect(kernels.nms(gpu, boxes, labels, ok)).rejects.toThrow(/nms: scores must be f32, got i32/);
      await expect(kernels.batchedNms(gpu, boxes, scores, shortLabels, ok)).rejects.toThrow(/nms.batched: labels must be \[3\] like boxes' rows, got \[2\]/);
      await expect(kernels.batchedNms(gpu, boxes, scores, floatLabels, ok)).rejects.toThrow(/nms.batched: labels must be i32, got f32/);
      for (const iouThreshold of [NaN, Infinity, undefined]) {
        await expect(kernels.nms(gpu, boxes, scores, { iouThreshold } as NmsOptions)).rejects.toThrow(/nms: iouThreshold must be a finite number/);
      }
      await expect(kernels.nms(gpu, boxes, scores, { iouThreshold: 0.5, scoreThreshold: NaN })).rejects.toThrow(/nms: scoreThreshold must be a number within the f32 range/);
      await expect(kernels.nms(gpu, boxes, scores, { iouThreshold: 0.5, scoreThreshold: 1e39 })).rejects.toThrow(/scoreThreshold/);
      for (const maxOutputs of [-1, 1.5, NaN]) {
        await expect(kernels.nms(gpu, boxes, scores, { iouThreshold: 0.5, maxOutputs })).rejects.toThrow(/nms: maxOutputs must be an integer >= 0/);
      }
      expect(() => kernels.nmsKernel.outputs([{ shape: [20000, 4], dtype: 'f32' }, { shape: [20000], dtype: 'f32' }], ok)).toThrow(
        /nms: boxes has 20000 rows; at most 16384 are supported/,
      );
      expect(() => kernels.nmsKernel.outputs([{ shape: [3, 4], dtype: 'f32' }, { shape: [3], dtype: 'f32' }], undefined as never)).toThrow(/nms: options/);
      expect(() => kernels.nmsKernel.outputs([{ shape: [3, 4], dtype: 'f32' }], ok)).toThrow(/nms: expected inputs \[boxes, scores\], got 1 inputs/);
      expect(gpu.stats()).toEqual(before);
      for (const t of [boxes, scores, labels, flat, wide, short, shortLabels, floatLabels, intBoxes]) t.dispose();
    });
  });
});
