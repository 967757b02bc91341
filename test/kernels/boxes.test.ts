import { describe, expect, it } from 'vitest';
import { Tensor, kernels } from '../../src/index.js';
import {
  boxIouReference,
  cxcywhToXyxyReference,
  decodeBoxesReference,
  owlBoxBiasReference,
  scaleBoxesReference,
  xyxyToCxcywhReference,
} from '../../src/kernels/boxes.js';
import { forEachProfile } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { randomArray, rng } from '../util/random.js';
import { fixtureTensor, loadFixture } from '../util/fixtures.js';

/** n xyxy boxes in [0, 100): random, plus zero-area, disjoint, identical and nested ones. */
function awkwardBoxes(n: number, seed: number): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n * 4);
  for (let i = 0; i < n; i++) {
    const x1 = r() * 80;
    const y1 = r() * 80;
    const kind = i % 5;
    const w = kind === 0 ? 0 : r() * 30; // zero width
    const h = kind === 1 ? 0 : r() * 30; // zero height
    out.set(kind === 2 ? [x1, y1, x1, y1] : [x1, y1, x1 + w, y1 + h], 4 * i);
  }
  return out;
}

forEachProfile((_, getGpu) => {
  describe('boxes', () => {
    it('cxcywh ↔ xyxy match the references on awkward shapes', async () => {
      const gpu = await getGpu();
      for (const shape of [[1, 4], [7, 4], [2, 13, 4], [4]]) {
        const n = shape.reduce((a, b) => a * b, 1);
        const data = randomArray(n, n, 50);
        const x = Tensor.from(gpu, data, shape);
        const a = await kernels.boxes.cxcywhToXyxy(gpu, x);
        const b = await kernels.boxes.xyxyToCxcywh(gpu, x);
        expect(a.shape).toEqual(shape);
        expectClose(await a.read(), cxcywhToXyxyReference(data), { scaleTol: 1e-6, label: `to xyxy ${shape}` });
        expectClose(await b.read(), xyxyToCxcywhReference(data), { scaleTol: 1e-6, label: `to cxcywh ${shape}` });
        for (const t of [x, a, b]) t.dispose();
      }
    });

    it('center→corners then scale reproduces HF post_process boxes (owlvit_tiny)', async () => {
      const gpu = await getGpu();
      const expected = loadFixture('owlvit_tiny', 'expected.safetensors');
      const inputs = loadFixture('owlvit_tiny', 'inputs.safetensors');
      const pred = fixtureTensor(expected, 'pred_boxes');
      const sizes = Array.from(fixtureTensor(inputs, 'target_sizes').data); // [[480, 640], [300, 200]] as (h, w)
      const x = Tensor.from(gpu, pred.data, pred.shape);
      const corners = await kernels.boxes.cxcywhToXyxy(gpu, x);
      const pixels = await kernels.boxes.scale(gpu, corners, sizes);
      const want = fixtureTensor(expected, 'post_boxes').data;
      const report = expectClose(await pixels.read(), want, { scaleTol: 1e-6, label: 'post_boxes' });
      console.log(`post_boxes max abs error ${report.maxAbsError.toExponential(2)} (scale ${report.scale.toFixed(1)})`);
      // The Tensor form of sizes and the reference agree too.
      const st = Tensor.from(gpu, sizes, [2, 2]);
      const again = await kernels.boxes.scale(gpu, corners, st);
      expectClose(await again.read(), scaleBoxesReference(await corners.read(), 16, sizes), { scaleTol: 1e-6 });
      for (const t of [x, corners, pixels, st, again]) t.dispose();
    });

    it('scale handles several images with prime box counts', async () => {
      const gpu = await getGpu();
      const data = randomArray(3 * 7 * 4, 5, 1);
      const sizes = [480, 640, 17, 3, 1, 1000];
      const x = Tensor.from(gpu, data, [3, 7, 4]);
      const y = await kernels.boxes.scale(gpu, x, sizes);
      expectClose(await y.read(), scaleBoxesReference(data, 7, sizes), { scaleTol: 1e-6 });
      x.dispose();
      y.dispose();
    });

    it('OWL-ViT box bias matches HF compute_box_bias (g=4 fixture) and the reference for other grids', async () => {
      const gpu = await getGpu();
      const bias = await kernels.boxes.owlBoxBias(gpu, 4);
      expect(bias.shape).toEqual([16, 4]);
      const report = expectClose(await bias.read(), fixtureTensor(loadFixture('owlvit_tiny', 'expected.safetensors'), 'box_bias').data, { atol: 1e-5, rtol: 0, label: 'box_bias g=4' });
      console.log(`box_bias max abs error vs HF ${report.maxAbsError.toExponential(2)}`);
      bias.dispose();
      for (const g of [1, 7, 24]) {
        const b = await kernels.boxes.owlBoxBias(gpu, g);
        expectClose(await b.read(), owlBoxBiasReference(g), { atol: 1e-5, rtol: 0, label: `box_bias g=${g}` });
        b.dispose();
      }
    });

    it('decode is sigmoid(head + bias) with the bias broadcast over images', async () => {
      const gpu = await getGpu();
      const head = randomArray(2 * 9 * 4, 3, 6);
      const h = Tensor.from(gpu, head, [2, 9, 4]);
      const bias = await kernels.boxes.owlBoxBias(gpu, 3);
      const y = await kernels.boxes.decode(gpu, h, bias);
      expectClose(await y.read(), decodeBoxesReference(head, await bias.read()), { atol: 1e-6, rtol: 1e-6 });
      for (const t of [h, bias, y]) t.dispose();
    });

    for (const generalized of [false, true]) {
      it(`${generalized ? 'generalized ' : ''}IoU matches the reference incl. zero-area, disjoint and identical boxes`, async () => {
        const gpu = await getGpu();
        for (const [n, m] of [[1, 1], [37, 23], [5, 64]] as const) {
          const a = awkwardBoxes(n, 11 + n);
          const b = awkwardBoxes(m, 17 + m);
          b.set(a.subarray(0, 4), 0); // an identical pair: IoU 1
          const ta = Tensor.from(gpu, a, [n, 4]);
          const tb = Tensor.from(gpu, b, [m, 4]);
          const y = await (generalized ? kernels.boxes.giou(gpu, ta, tb) : kernels.boxes.iou(gpu, ta, tb));
          expect(y.shape).toEqual([n, m]);
          const ref = boxIouReference(a, b, generalized);
          expectClose(await y.read(), ref, { atol: 1e-6, rtol: 1e-5, label: `${n}x${m}` });
          // The cases exist: some pairs disjoint (IoU 0, GIoU < 0), the first pair identical.
          expect(ref[0]).toBe(a[0] === a[2] || a[1] === a[3] ? 0 : 1);
          if (n * m > 1) expect(ref.some((v) => (generalized ? v < 0 : v === 0))).toBe(true);
          for (const t of [ta, tb, y]) t.dispose();
        }
      });
    }

    it('an empty box set gives an empty result', async () => {
      const gpu = await getGpu();
      const a = Tensor.from(gpu, [], [0, 4]);
      const b = Tensor.from(gpu, [0, 0, 1, 1], [1, 4]);
      const y = await kernels.boxes.iou(gpu, a, b);
      expect(y.shape).toEqual([0, 1]);
      for (const t of [a, b, y]) t.dispose();
    });

    it('rejects bad input before dispatching', async () => {
      const gpu = await getGpu();
      const b3 = Tensor.from(gpu, new Float32Array(9), [3, 3]);
      const b4 = Tensor.from(gpu, new Float32Array(8), [2, 4]);
      const nested = Tensor.from(gpu, new Float32Array(16), [2, 2, 4]);
      const i4 = Tensor.from(gpu, new Int32Array(4), [1, 4], 'i32');
      const sizes = Tensor.from(gpu, [1, 2, 3], [1, 3]);
      const before = gpu.stats();
      await expect(kernels.boxes.cxcywhToXyxy(gpu, b3)).rejects.toThrow(/boxes.cxcywh_to_xyxy: boxes of shape \[3, 3\] must be \[\.\.\., 4\]/);
      await expect(kernels.boxes.iou(gpu, b4, nested)).rejects.toThrow(/boxes.iou: b of shape \[2, 2, 4\] must be \[N, 4\]/);
      await expect(kernels.boxes.giou(gpu, i4, b4)).rejects.toThrow(/boxes.giou: a must be f32, got i32/);
      await expect(kernels.boxes.scale(gpu, b4, [1, 2])).rejects.toThrow(/boxes.scale: boxes of shape \[2, 4\] must be \[B, N, 4\]/);
      await expect(kernels.boxes.scale(gpu, nested, sizes)).rejects.toThrow(/boxes.scale: sizes of shape \[1, 3\] must be \[2, 2\]/);
      await expect(kernels.boxes.scale(gpu, nested, [1, 2, 3])).rejects.toThrow(/sizes must hold \(h, w\) pairs/);
      await expect(kernels.boxes.decode(gpu, b4, nested)).rejects.toThrow(/boxes.decode: bias of shape \[2, 2, 4\] must equal a trailing part of head's shape \[2, 4\]/);
      await expect(kernels.boxes.owlBoxBias(gpu, 0)).rejects.toThrow(/boxes.owl_bias: gridSize must be a positive integer, got 0/);
      await expect(kernels.boxes.owlBoxBias(gpu, 2.5)).rejects.toThrow(/gridSize must be a positive integer/);
      await expect(kernels.runKernel(gpu, kernels.boxesKernel, [b4], { op: 'nms' as never })).rejects.toThrow(/unknown op "nms"/);
      await expect(kernels.runKernel(gpu, kernels.boxesKernel, [b4], { op: 'iou' })).rejects.toThrow(/boxes.iou: expected 2 inputs, got 1/);
      expect(gpu.stats()).toEqual(before);
      for (const t of [b3, b4, nested, i4, sizes]) t.dispose();
    });
  });
});
