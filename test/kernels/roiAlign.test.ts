import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GpuError, Tensor, kernels } from '../../src/index.js';
import { ROI_ALIGN_MAX_SAMPLES, roiAlignBackwardReference, roiAlignReference, type RoiAlignOptions } from '../../src/kernels/roiAlign.js';
import { gradFixture } from '../util/grad.js';
import { forEachProfile, requireF16, useGpu } from '../util/gpu.js';
import { compareClose, expectClose } from '../util/check.js';
import { firstDifference, runEagerAndGraph } from '../util/chunks.js';
import { randomArray, rng } from '../util/random.js';
import { fixturePath, fixtureTensor, loadFixture } from '../util/fixtures.js';

/** Binding limit of the devices that test chunking: a few boxes of output fill one binding. */
const SMALL_LIMIT = 65536;

interface Variant {
  output: string;
  output_f64: string;
  boxes: string;
  output_size: [number, number];
  spatial_scale: number;
  sampling_ratio: number;
  aligned: boolean;
  shape: number[];
  all_zero_rois: number[];
}

const meta = JSON.parse(readFileSync(fixturePath('roi_align.json'), 'utf8')) as { variants: Variant[] };

const optionsOf = (v: Variant): RoiAlignOptions => ({
  outputSize: v.output_size,
  spatialScale: v.spatial_scale,
  samplingRatio: v.sampling_ratio,
  aligned: v.aligned,
});

/** n random boxes over an image of (width, height) image pixels, some partly outside, some inverted. */
function randomBoxes(n: number, images: number, width: number, height: number, seed: number): number[] {
  const r = rng(seed);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x1 = r() * width * 1.4 - width * 0.2;
    const y1 = r() * height * 1.4 - height * 0.2;
    const inverted = i % 6 === 5;
    const w = r() * width * (inverted ? -0.3 : 0.8);
    const h = r() * height * (inverted ? -0.3 : 0.8);
    out.push(i % images, x1, y1, x1 + w, y1 + h);
  }
  return out;
}

forEachProfile((profile, getGpu) => {
  const getSmallGpu = useGpu(profile, { limits: { maxStorageBufferBindingSize: SMALL_LIMIT } });
  describe('roiAlign', () => {
    it('matches torchvision on all 24 fixture variants (NCHW and NHWC give the same numbers)', async () => {
      const gpu = await getGpu();
      const fx = loadFixture('roi_align.safetensors');
      const input = fixtureTensor(fx, 'input');
      expect(input.shape).toEqual([2, 8, 13, 17]);
      const nchw = Tensor.from(gpu, input.data, input.shape);
      const nhwc = await kernels.transpose(gpu, nchw, [0, 2, 3, 1]);
      expect(meta.variants).toHaveLength(24);
      const lines: string[] = [];
      for (const v of meta.variants) {
        const boxes = fixtureTensor(fx, v.boxes);
        expect(boxes.shape).toEqual([16, 5]);
        const want = fixtureTensor(fx, v.output_f64).data;
        const tb = Tensor.from(gpu, boxes.data, boxes.shape);
        const a = await kernels.roiAlign(gpu, nchw, tb, optionsOf(v));
        const b = await kernels.roiAlign(gpu, nhwc, boxes.data, { ...optionsOf(v), layout: 'nhwc' });
        expect(a.shape).toEqual(v.shape);
        expect(b.shape).toEqual(v.shape);
        const got = await a.read();
        const report = expectClose(got, want, { atol: 1e-5, rtol: 0, label: v.output });
        lines.push(`${v.output.padEnd(28)} max abs error ${report.maxAbsError.toExponential(2)} (scale ${report.scale.toFixed(2)})`);
        expect(Array.from(await b.read())).toEqual(Array.from(got));
        // The boxes the fixture lists as empty come out exactly zero, the others do not.
        const per = v.shape[1]! * v.shape[2]! * v.shape[3]!;
        for (let k = 0; k < 16; k++) {
          const zero = got.subarray(k * per, (k + 1) * per).every((x) => x === 0);
          expect(zero, `${v.output} box ${k}`).toBe(v.all_zero_rois.includes(k));
        }
        // The CPU reference, which the random tests trust, agrees with torchvision too.
        expectClose(roiAlignReference(input.data, [2, 8, 13, 17], boxes.data, optionsOf(v)), want, { atol: 1e-6, rtol: 0, label: `reference ${v.output}` });
        for (const t of [tb, a, b]) t.dispose();
      }
      console.log(lines.join('\n'));
      nchw.dispose();
      nhwc.dispose();
    });

    for (const dtype of ['f32', 'f16'] as const) {
      it(`matches the reference on awkward shapes, both layouts (${dtype})`, async (ctx) => {
        const gpu = await getGpu();
        if (dtype === 'f16') requireF16(ctx, gpu);
        const cases: { shape: [number, number, number, number]; k: number; options: RoiAlignOptions }[] = [
          { shape: [1, 1, 1, 1], k: 3, options: { outputSize: 2 } },
          { shape: [2, 3, 5, 1], k: 7, options: { outputSize: [3, 1], samplingRatio: 3, aligned: true } },
          { shape: [3, 5, 11, 7], k: 13, options: { outputSize: [7, 7], spatialScale: 0.5, aligned: true } },
          { shape: [1, 37, 6, 9], k: 5, options: { outputSize: [2, 5], spatialScale: 0.125, samplingRatio: 0 } },
        ];
        for (const [i, { shape, k, options }] of cases.entries()) {
          const [n, c, h, w] = shape;
          const data = randomArray(n * c * h * w, 40 + i, 2);
          const boxes = randomBoxes(k, n, w / (options.spatialScale ?? 1), h / (options.spatialScale ?? 1), 50 + i);
          const ref = roiAlignReference(data, shape, boxes, options);
          const x = Tensor.from(gpu, data, shape, dtype);
          const xt = await kernels.transpose(gpu, x, [0, 2, 3, 1]);
          const stored = dtype === 'f16' ? roiAlignReference(await x.read(), shape, boxes, options) : ref;
          for (const [layout, t] of [['nchw', x], ['nhwc', xt]] as const) {
            const y = await kernels.roiAlign(gpu, t, boxes, { ...options, layout });
            expect(y.shape).toEqual([k, c, ...(typeof options.outputSize === 'number' ? [options.outputSize, options.outputSize] : options.outputSize)]);
            expect(y.dtype).toBe(dtype);
            expectClose(await y.read(), stored, { scaleTol: dtype === 'f16' ? 1e-2 : 1e-5, label: `${shape} ${layout} ${dtype}` });
            y.dispose();
          }
          x.dispose();
          xt.dispose();
        }
      });
    }

    it('a random box set on a ViT token grid (NHWC, adaptive sampling) matches the reference', async () => {
      const gpu = await getGpu();
      const [n, h, w, c] = [2, 6, 6, 40];
      const grid = randomArray(n * h * w * c, 7, 1);
      const x = Tensor.from(gpu, grid, [n, h, w, c]);
      const boxes = randomBoxes(29, n, 96, 96, 8);
      const y = await kernels.roiAlign(gpu, x, boxes, { outputSize: 7, spatialScale: 1 / 16, samplingRatio: 0, aligned: true, layout: 'nhwc' });
      // The reference takes NCHW: transpose on the host.
      const nchw = new Float32Array(grid.length);
      for (let b = 0; b < n; b++) for (let i = 0; i < h * w; i++) for (let ch = 0; ch < c; ch++) nchw[(b * c + ch) * h * w + i] = grid[(b * h * w + i) * c + ch]!;
      expectClose(await y.read(), roiAlignReference(nchw, [n, c, h, w], boxes, { outputSize: 7, spatialScale: 1 / 16, samplingRatio: 0, aligned: true }), { scaleTol: 1e-5 });
      x.dispose();
      y.dispose();
    });

    for (const dtype of ['f32', 'f16'] as const) {
      it(`every channel-group tail (C % 16, C % 4) gives the reference, NHWC bit-identical to NCHW (${dtype})`, async (ctx) => {
        // Invocations take 16 channels; NHWC with C % 4 == 0 reads them as vec4s (main_vec4), else as scalars.
        const gpu = await getGpu();
        if (dtype === 'f16') requireF16(ctx, gpu);
        const options: RoiAlignOptions = { outputSize: [2, 3], spatialScale: 0.25, samplingRatio: 0, aligned: true };
        for (const [i, c] of [4, 12, 16, 17, 20, 33, 36].entries()) {
          const shape: [number, number, number, number] = [2, c, 5, 6];
          const data = randomArray(2 * c * 5 * 6, 60 + i, 2);
          const boxes = randomBoxes(9, 2, 24, 20, 70 + i);
          const x = Tensor.from(gpu, data, shape, dtype);
          const xt = await kernels.transpose(gpu, x, [0, 2, 3, 1]);
          const a = await kernels.roiAlign(gpu, x, boxes, options);
          const b = await kernels.roiAlign(gpu, xt, boxes, { ...options, layout: 'nhwc' });
          const got = await a.read();
          expectClose(got, roiAlignReference(await x.read(), shape, boxes, options), { scaleTol: dtype === 'f16' ? 1e-2 : 1e-5, label: `C=${c} ${dtype}` });
          expect(Array.from(await b.read()), `C=${c} ${dtype}`).toEqual(Array.from(got));
          for (const t of [x, xt, a, b]) t.dispose();
        }
      });
    }

    it('no boxes give an empty output', async () => {
      const gpu = await getGpu();
      const x = Tensor.from(gpu, randomArray(2 * 3 * 4 * 5, 1), [2, 3, 4, 5]);
      const y = await kernels.roiAlign(gpu, x, [], { outputSize: 2 });
      expect(y.shape).toEqual([0, 3, 2, 2]);
      x.dispose();
      y.dispose();
    });

    it('rejects bad input before dispatching', async () => {
      const gpu = await getGpu();
      const x = Tensor.from(gpu, new Float32Array(2 * 3 * 4 * 5), [2, 3, 4, 5]);
      const x3 = Tensor.from(gpu, new Float32Array(12), [3, 4, 1]);
      const xi = Tensor.from(gpu, new Int32Array(4), [1, 1, 2, 2], 'i32');
      const b4 = Tensor.from(gpu, new Float32Array(8), [2, 4]);
      const bBatch = Tensor.from(gpu, [2, 0, 0, 1, 1], [1, 5]);
      const good = [1, 0, 0, 2, 2];
      const o = { outputSize: 2 };
      const before = gpu.stats();
      const cases: [Promise<unknown>, RegExp][] = [
        [kernels.roiAlign(gpu, x, b4, o), /roiAlign: boxes of shape \[2, 4\] must be \[K, 5\]/],
        [kernels.roiAlign(gpu, x, [0, 1, 2, 3], o), /boxes must hold rows of 5 numbers/],
        [kernels.roiAlign(gpu, x, [2, 0, 0, 1, 1], o), /roiAlign: box 0: batch index 2 must be an integer in \[0, 1\]/],
        [kernels.roiAlign(gpu, x, [...good, -1, 0, 0, 1, 1], o), /box 1: batch index -1/],
        [kernels.roiAlign(gpu, x, [0.5, 0, 0, 1, 1], o), /box 0: batch index 0.5 must be an integer/],
        [kernels.roiAlign(gpu, x, [0, 0, NaN, 1, 1], o), /box 0: coordinate 1 is NaN, expected a finite number/],
        [kernels.roiAlign(gpu, x, [0, 0, 0, Infinity, 1], o), /coordinate 2 is Infinity/],
        [kernels.roiAlign(gpu, x, good, { outputSize: 0 }), /outputSize must be a positive integer or \[height, width\]/],
        [kernels.roiAlign(gpu, x, good, { outputSize: [2, -1] }), /outputSize must be/],
        [kernels.roiAlign(gpu, x, good, { outputSize: [2] as never }), /outputSize must be/],
        [kernels.roiAlign(gpu, x, good, { outputSize: 2.5 }), /outputSize must be/],
        [kernels.roiAlign(gpu, x, good, { outputSize: 2, spatialScale: 0 }), /spatialScale must be a positive finite number, got 0/],
        [kernels.roiAlign(gpu, x, good, { outputSize: 2, spatialScale: NaN }), /spatialScale must be/],
        [kernels.roiAlign(gpu, x, good, { outputSize: 2, samplingRatio: 1.5 }), /samplingRatio must be an integer/],
        [kernels.roiAlign(gpu, x, good, { outputSize: 2, layout: 'hwc' as never }), /layout must be 'nchw' or 'nhwc', got "hwc"/],
        [kernels.roiAlign(gpu, x3, good, o), /features of shape \[3, 4, 1\] must be \[N, C, H, W\]/],
        [kernels.roiAlign(gpu, x3, good, { ...o, layout: 'nhwc' }), /must be \[N, H, W, C\] \(layout 'nhwc'\)/],
        [kernels.roiAlign(gpu, xi, good, o), /features must be f32 or f16, got i32/],
        [kernels.runKernel(gpu, kernels.roiAlignKernel, [x], o), /expected 2 inputs/],
      ];
      for (const [p, re] of cases) {
        await expect(p).rejects.toThrow(GpuError);
        await expect(p).rejects.toThrow(re);
      }
      expect(gpu.stats()).toEqual(before);
      // A box Tensor is read back (one submit, nothing left allocated) and checked before the dispatch.
      await expect(kernels.roiAlign(gpu, x, bBatch, o)).rejects.toThrow(/box 0: batch index 2 must be an integer in \[0, 1\]/);
      expect(gpu.stats()).toEqual({ ...before, submits: before.submits + 1 });
      for (const t of [x, x3, xi, b4, bBatch]) t.dispose();
    });

    it('in a graph-style run, an out-of-range batch index or a non-finite coordinate gives zeros', async () => {
      const gpu = await getGpu();
      const x = Tensor.from(gpu, randomArray(2 * 3 * 4 * 5, 2, 1).map((v) => v + 2), [2, 3, 4, 5]);
      const bad = [5, 0, 0, 3, 3, -1, 0, 0, 3, 3, 0, 0, NaN, 3, 3, 1, 0, 0, Infinity, 3, 0, -Infinity, 0, 1, 1];
      const boxes = Tensor.from(gpu, [...bad, 1, 0, 0, 3, 3], [6, 5]);
      const [y] = await kernels.runKernel(gpu, kernels.roiAlignKernel, [x, boxes], { outputSize: 2, samplingRatio: 0 });
      const got = await y!.read();
      const per = 3 * 2 * 2;
      expect(got.subarray(0, 5 * per).every((v) => v === 0)).toBe(true);
      // The valid box is non-zero (features are in [1, 3)) and matches the reference.
      expect(compareClose(got.subarray(5 * per), roiAlignReference(await x.read(), [2, 3, 4, 5], [1, 0, 0, 3, 3], { outputSize: 2, samplingRatio: 0 }), { scaleTol: 1e-5 }).ok).toBe(true);
      expect(got.subarray(5 * per).every((v) => v > 0)).toBe(true);
      for (const t of [x, boxes, y!]) t.dispose();
    });
    // f32 with C = 40 (vec4 path, 7840 output bytes a box: 8 boxes a chunk, 19 chunks) and f16 with
    // C = 5 (490 bytes a box: chunks start at multiples of 8 boxes to stay 16-byte aligned, 8
    // chunks, the last one covering the padding of an odd element count).
    for (const [c, dtype, k] of [[40, 'f32', 150], [5, 'f16', 1000]] as const) {
      it(`splits boxes into chunks under the binding limit, eager and in a graph, equal to one unsplit call (${dtype})`, async (ctx) => {
        const gpu = await getGpu();
        const small = await getSmallGpu();
        if (dtype === 'f16') requireF16(ctx, small);
        expect(small.limits.maxStorageBufferBindingSize).toBe(SMALL_LIMIT);
        const [n, h, w] = [2, 6, 6];
        const data = randomArray(n * h * w * c, 80 + c, 2);
        const boxes = randomBoxes(k, n, 96, 96, 90 + c);
        const options: RoiAlignOptions = { outputSize: 7, spatialScale: 1 / 16, samplingRatio: 0, aligned: true, layout: 'nhwc' };
        const whole = Tensor.from(gpu, data, [n, h, w, c], dtype);
        const unsplit = await kernels.roiAlign(gpu, whole, boxes, options);
        const want = await unsplit.read();
        const inputs = [Tensor.from(small, data, [n, h, w, c], dtype), Tensor.from(small, boxes, [k, 5])];
        const { eager, graph, dispatches } = await runEagerAndGraph(small, kernels.roiAlignKernel, inputs, options);
        expect(dispatches).toBeGreaterThanOrEqual(7);
        expect(firstDifference(eager[0]!, want), 'eager').toBe(-1);
        expect(firstDifference(graph[0]!, want), 'graph').toBe(-1);
        for (const t of [whole, unsplit, ...inputs]) t.dispose();
      });
    }

    it('what cannot be split fails before dispatch, naming the op, the sizes, the limit and what to do', async () => {
      const small = await getSmallGpu();
      const before = small.stats();
      // Features are bound whole: 2 x 32 x 32 x 16 f32 is 128 KiB.
      const big = Tensor.empty(small, [2, 32, 32, 16]);
      await expect(kernels.roiAlign(small, big, [0, 0, 0, 4, 4], { outputSize: 2, layout: 'nhwc' })).rejects.toThrow(
        /roiAlign: features \(f32 \[2, 32, 32, 16\], 131072 bytes\) is bound whole and exceeds the device's maxStorageBufferBindingSize of 65536 bytes: .*call it per image/,
      );
      // One box of output (4096 x 2 x 2 f32 = 64 KiB + 4 channels) is more than a binding.
      const wide = Tensor.empty(small, [1, 1, 1, 4100]);
      await expect(kernels.roiAlign(small, wide, [0, 0, 0, 1, 1, 0, 0, 0, 1, 1], { outputSize: 2, layout: 'nhwc' })).rejects.toThrow(
        /roiAlign: output \(f32 \[2, 4100, 2, 2\]\) exceeds the device's maxStorageBufferBindingSize of 65536 bytes, and splitting it by boxes cannot help: 4 boxes .* take 262400 bytes/,
      );
      big.dispose();
      wide.dispose();
      expect(small.stats().liveBuffers).toBe(before.liveBuffers);
    });

    it('1000 and 5000 boxes at 7x7 on a 24x24x768 map (150 and 753 MB outputs) equal smaller calls, at every chunk boundary', async (ctx) => {
      // Some 10 s of lavapipe time, once: roiAlign has no profile-dependent settings, and the
      // small-limit test above runs the chunked path under both profiles.
      ctx.skip(profile === 'gpu', 'roiAlign has no profile-dependent settings; the chunked path runs under both profiles above');
      const gpu = await getGpu();
      const [h, w, c] = [24, 24, 768];
      const limit = gpu.limits.maxStorageBufferBindingSize!;
      const x = Tensor.from(gpu, randomArray(h * w * c, 5, 1), [1, h, w, c]);
      // One sample a bin keeps the boxes of this test affordable on a shared CPU adapter.
      const options: RoiAlignOptions = { outputSize: 7, spatialScale: 1 / 32, samplingRatio: 1, aligned: true, layout: 'nhwc' };
      const boxes = randomBoxes(5000, 1, 768, 768, 6);
      const boxBytes = c * 49 * 4;
      const call = async (first: number, count: number) => {
        const y = await kernels.roiAlign(gpu, x, boxes.slice(5 * first, 5 * (first + count)), options);
        const data = await y.read();
        y.dispose();
        return data;
      };
      // 1000 boxes: all of it against two 500-box calls (75 MB, one binding everywhere).
      expect(1000 * boxBytes, 'the output exceeds one binding').toBeGreaterThan(limit);
      const got = await call(0, 1000);
      for (const i of [0, 1]) expect(firstDifference(got, await call(500 * i, 500), 500 * i * c * 49), `1000 boxes, part ${i}`).toBe(-1);
      // 5000 boxes: the boxes around each chunk boundary and the last ones, copied out on the GPU
      // (reading all 753 MB back would take most of this test's time), against calls on just them.
      const y = await kernels.roiAlign(gpu, x, boxes, options);
      expect(y.shape).toEqual([5000, c, 7, 7]);
      const infos = [{ shape: x.shape, dtype: x.dtype }, { shape: [5000, 5], dtype: 'f32' as const }];
      const plan = kernels.roiAlignKernel.plan(gpu, infos, kernels.roiAlignKernel.outputs(infos, options), options);
      const starts = plan.dispatches.map((d) => (d.tensors[2] as kernels.TensorSlice).offset / boxBytes);
      expect(starts.length).toBeGreaterThanOrEqual(Math.ceil((5000 * boxBytes) / limit));
      for (const first of [...starts.slice(1).map((b) => b - 4), 4992]) {
        const part = Tensor.empty(gpu, [8, c, 7, 7]);
        const encoder = gpu.device.createCommandEncoder();
        encoder.copyBufferToBuffer(y.buffer, first * boxBytes, part.buffer, 0, 8 * boxBytes);
        gpu.submit([encoder.finish()]);
        expect(firstDifference(await part.read(), await call(first, 8)), `5000 boxes, boxes ${first}..${first + 7}`).toBe(-1);
        part.dispose();
      }
      y.dispose();
      x.dispose();
    }, 600_000);

    it(`caps adaptive sampling at ${ROI_ALIGN_MAX_SAMPLES} per bin axis: a box of 1e9 pixels takes milliseconds`, async () => {
      const gpu = await getGpu();
      const [h, w, c] = [24, 24, 768];
      const data = randomArray(h * w * c, 11, 1);
      const x = Tensor.from(gpu, data, [1, h, w, c]);
      // Huge boxes over the map, partly on it, and one exactly at the cap (64 x 7 = 448 feature pixels).
      const boxes = [0, -1e9, -1e9, 1e9, 1e9, 0, 0, 0, 1e9, 1e9, 0, 3, 5, 1e9, 9, 0, -420, -420, 28, 28];
      const options: RoiAlignOptions = { outputSize: 7, samplingRatio: 0 };
      const warm = await kernels.roiAlign(gpu, x, boxes, { ...options, layout: 'nhwc' });
      warm.dispose();
      const started = performance.now();
      const y = await kernels.roiAlign(gpu, x, boxes, { ...options, layout: 'nhwc' });
      const got = await y.read();
      const ms = performance.now() - started;
      console.log(`4 boxes up to 1e9 px, 24x24x768 → 7x7: ${ms.toFixed(1)} ms`);
      // Uncapped, the first box alone would loop ~4e14 samples per output (some 2 ms unloaded; the
      // bound leaves room for a CPU adapter shared with other work).
      expect(ms).toBeLessThan(2000);
      // The reference (NCHW) on the first 16 channels: up to 4096 samples a bin are slow on the host.
      const nchw = new Float32Array(16 * h * w);
      for (let i = 0; i < h * w; i++) for (let ch = 0; ch < 16; ch++) nchw[ch * h * w + i] = data[i * c + ch]!;
      const ref = roiAlignReference(nchw, [1, 16, h, w], boxes, options);
      const firstChannels = Array.from({ length: 4 }, (_, k) => Array.from(got.subarray(k * c * 49, (k * c + 16) * 49))).flat();
      expectClose(firstChannels, ref, { scaleTol: 1e-5 });
      // The box at the cap is sampled as torchvision samples it, and is not all zero.
      expect(got.subarray(3 * c * 49).some((v) => v !== 0)).toBe(true);
      x.dispose();
      y.dispose();
    });
  });
  describe('roiAlignBackward', () => {
    it('the CPU reference is the transpose of the forward: <dy, roiAlign(x)> = <roiAlignBackward(dy), x>', () => {
      const shape = [2, 3, 9, 11] as const;
      const x = randomArray(2 * 3 * 9 * 11, 5, 1);
      const boxes = randomBoxes(10, 2, 11, 9, 6);
      for (const o of [{ outputSize: 3, samplingRatio: 2 }, { outputSize: [2, 4], samplingRatio: -1, aligned: true }] as RoiAlignOptions[]) {
        const y = roiAlignReference(x, shape, boxes, o);
        const dy = randomArray(y.length, 7, 1);
        const g = roiAlignBackwardReference(dy, shape, boxes, o);
        const lhs = y.reduce((a, v, i) => a + v * dy[i]!, 0);
        const rhs = g.reduce((a, v, i) => a + v * x[i]!, 0);
        expect(Math.abs(lhs - rhs)).toBeLessThan(1e-9 * Math.max(1, Math.abs(lhs)));
      }
    });

    it('matches the reference on random boxes (partly outside, inverted, tiny), NCHW and NHWC, several scales', async () => {
      const gpu = await getGpu();
      const cases: [readonly [number, number, number, number], RoiAlignOptions, number][] = [
        [[2, 5, 13, 17], { outputSize: 7, samplingRatio: 2 }, 40],
        [[1, 6, 24, 24], { outputSize: [2, 3], samplingRatio: -1, aligned: true }, 12],
        [[3, 1, 7, 9], { outputSize: 3, samplingRatio: 0, spatialScale: 0.25 }, 9],
        [[1, 8, 30, 20], { outputSize: 4, samplingRatio: 3, spatialScale: 0.5 }, 7],
      ];
      for (const [k, [shape, o, nBoxes]] of cases.entries()) {
        const [n, c, h, w] = shape;
        const scale = o.spatialScale ?? 1;
        const boxes = randomBoxes(nBoxes, n, w / scale, h / scale, 90 + k);
        // A tiny box and a duplicate.
        boxes.push(0, 3 / scale, 2 / scale, 3.2 / scale, 2.1 / scale, ...boxes.slice(0, 5));
        const [oh, ow] = typeof o.outputSize === 'number' ? [o.outputSize, o.outputSize] : o.outputSize;
        const K = boxes.length / 5;
        const dy = randomArray(K * c * oh * ow, 100 + k, 1);
        const want = roiAlignBackwardReference(dy, shape, boxes, o);
        const [tdy, tb] = [Tensor.from(gpu, dy, [K, c, oh, ow]), Tensor.from(gpu, boxes, [K, 5])];
        const g = await kernels.roiAlignBackward(gpu, tdy, tb, { ...o, featuresShape: shape });
        expect(g.shape).toEqual([...shape]);
        expectClose(await g.read(), want, { scaleTol: 1e-5, label: `nchw ${shape}` });
        const gh = await kernels.roiAlignBackward(gpu, tdy, tb, { ...o, layout: 'nhwc', featuresShape: [n, h, w, c] });
        const back = await kernels.transpose(gpu, gh, [0, 3, 1, 2]);
        expectClose(await back.read(), want, { scaleTol: 1e-5, label: `nhwc ${shape}` });
        for (const t of [tdy, tb, g, gh, back]) t.dispose();
      }
    });

    it('splits boxes into chunks under the binding limit, each adding to the gradient, eager and in a graph', async () => {
      const gpu = await getGpu();
      const small = await getSmallGpu();
      // dy of 150 boxes x 40 channels x 7 x 7 f32 is 1.2 MB: some 20 chunks of 64 KiB.
      const shape = [2, 40, 6, 6] as const;
      const k = 150;
      const boxes = randomBoxes(k, 2, 96, 96, 31);
      const o: RoiAlignOptions = { outputSize: 7, spatialScale: 1 / 16, samplingRatio: 0, aligned: true };
      const dy = randomArray(k * 40 * 49, 32, 1);
      const want = roiAlignBackwardReference(dy, shape, boxes, o);
      const options = { ...o, featuresShape: shape };
      const whole = [Tensor.from(gpu, dy, [k, 40, 7, 7]), Tensor.from(gpu, boxes, [k, 5])];
      const unsplit = await kernels.roiAlignBackward(gpu, whole[0]!, whole[1]!, options);
      const inputs = [Tensor.from(small, dy, [k, 40, 7, 7]), Tensor.from(small, boxes, [k, 5])];
      const { eager, graph, dispatches } = await runEagerAndGraph(small, kernels.roiAlignBackwardKernel, inputs, options);
      expect(dispatches).toBeGreaterThanOrEqual(Math.ceil((k * 40 * 49 * 4) / SMALL_LIMIT));
      expectClose(await unsplit.read(), want, { scaleTol: 1e-5, label: 'unsplit' });
      expectClose(eager[0]!, want, { scaleTol: 1e-5, label: 'eager, split' });
      expectClose(graph[0]!, want, { scaleTol: 1e-5, label: 'graph, split' });
      // A gradient over the limit is not split: it fails before dispatch, saying what to do.
      await expect(kernels.roiAlignBackward(small, inputs[0]!, inputs[1]!, { ...o, featuresShape: [2, 40, 16, 16] })).rejects.toThrow(
        /roiAlignBackward: the features gradient \(f32 \[2, 40, 16, 16\], 81920 bytes\) is bound whole and exceeds the device's maxStorageBufferBindingSize of 65536 bytes: .*call it per image/,
      );
      for (const t of [unsplit, ...whole, ...inputs]) t.dispose();
    });

    it('matches PyTorch autograd: the roi_align grad fixture (aligned or not, sampling 2 and adaptive, scales 1 and 0.25)', async () => {
      const gpu = await getGpu();
      const fx = gradFixture('roi_align');
      expect(fx.cases).toHaveLength(8);
      for (const c of fx.cases) {
        const [feat, boxes, dy] = ['feat', 'boxes', 'dY'].map((n) => fx.tensor(`${c.name}.${n}`));
        const o: RoiAlignOptions = { outputSize: c.params.output_size as [number, number], spatialScale: c.params.spatial_scale as number, samplingRatio: c.params.sampling_ratio as number, aligned: c.params.aligned as boolean };
        const [tf, tb, tdy] = [Tensor.from(gpu, feat!.data, feat!.shape), Tensor.from(gpu, boxes!.data, boxes!.shape), Tensor.from(gpu, dy!.data, dy!.shape)];
        const y = await kernels.roiAlign(gpu, tf, tb, o);
        expectClose(await y.read(), fx.tensor(`${c.name}.Y_f64`).data, { scaleTol: 1e-5, label: `${c.name} Y` });
        const want = fx.tensor(`${c.name}.grad_feat_f64`).data;
        const g = await kernels.roiAlignBackward(gpu, tdy, tb, { ...o, featuresShape: feat!.shape });
        expectClose(await g.read(), want, { scaleTol: 1e-4, label: `${c.name} grad_feat` });
        const [n, ch, h, w] = feat!.shape as [number, number, number, number];
        const gh = await kernels.roiAlignBackward(gpu, tdy, tb, { ...o, layout: 'nhwc', featuresShape: [n, h, w, ch] });
        const back = await kernels.transpose(gpu, gh, [0, 3, 1, 2]);
        expectClose(await back.read(), want, { scaleTol: 1e-4, label: `${c.name} grad_feat nhwc` });
        for (const t of [tf, tb, tdy, y, g, gh, back]) t.dispose();
      }
    });

    it('rejects bad arguments before dispatching', async () => {
      const gpu = await getGpu();
      const dy = Tensor.from(gpu, new Float32Array(2 * 3 * 2 * 2), [2, 3, 2, 2]);
      const boxes = Tensor.from(gpu, [0, 0, 0, 3, 3, 1, 0, 0, 3, 3], [2, 5]);
      const o = { outputSize: 2, featuresShape: [1, 3, 4, 5] };
      const before = gpu.stats();
      await expect(kernels.roiAlignBackward(gpu, dy, boxes, { ...o, outputSize: 3 })).rejects.toThrow(/roiAlignBackward: dy must be \[2, 3, 3, 3\] \(the forward output's shape\), got \[2, 3, 2, 2\]/);
      await expect(kernels.roiAlignBackward(gpu, dy, boxes, { ...o, featuresShape: [1, 3, 4] })).rejects.toThrow(/roiAlign: features of shape \[1, 3, 4\] must be \[N, C, H, W\]/);
      expect(gpu.stats()).toEqual(before);
      await expect(kernels.roiAlignBackward(gpu, dy, boxes, o)).rejects.toThrow(/box 1: batch index 1 must be an integer in \[0, 0\]/);
      for (const t of [dy, boxes]) t.dispose();
    });
  });
});
