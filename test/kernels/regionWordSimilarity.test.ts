import { describe, expect, it } from 'vitest';
import { GpuError, GraphBuilder, Tensor, kernels } from '../../src/index.js';
import { regionWordSimilarityBackwardReference, regionWordSimilarityReference, topKReference } from '../../src/kernels/regionWordSimilarity.js';
import { gradFixture } from '../util/grad.js';
import { forEachProfile, requireF16, useGpu } from '../util/gpu.js';
import { firstDifference, runEagerAndGraph } from '../util/chunks.js';
import { expectClose } from '../util/check.js';
import { randomArray } from '../util/random.js';
import { fixtureTensor, loadFixture } from '../util/fixtures.js';

forEachProfile((profile, getGpu) => {
  const getSmallGpu = useGpu(profile, { limits: { maxStorageBufferBindingSize: 4096 } });
  describe('regionWordSimilarity', () => {
    it('OWL-ViT style reproduces HF logits from the fixture class embeddings (padded query row 5 → -1e6)', async () => {
      const gpu = await getGpu();
      const expected = loadFixture('owlvit_tiny', 'expected.safetensors');
      const model = loadFixture('owlvit_tiny', 'model.safetensors');
      const ids = fixtureTensor(loadFixture('owlvit_tiny', 'inputs.safetensors'), 'input_ids');
      const classEmbeds = fixtureTensor(expected, 'class_embeds'); // [2, 16, 48]
      const textEmbeds = fixtureTensor(expected, 'text_embeds'); // [2, 3, 48]
      const feats = fixtureTensor(expected, 'image_embeds').data; // [2, 4, 4, 64] = [2, 16, 64] patches
      // The class head's shift and scale are Linear(64 → 1) of the patch features: computed here on the host.
      const linear = (name: string) => {
        const w = fixtureTensor(model, `class_head.${name}.weight`).data;
        const bias = fixtureTensor(model, `class_head.${name}.bias`).data[0]!;
        return Float32Array.from({ length: 32 }, (_, p) => bias + Array.from(w).reduce((s, wj, j) => s + wj * feats[p * 64 + j]!, 0));
      };
      const shiftData = linear('logit_shift');
      const scaleData = linear('logit_scale');
      // HF: a query whose first token id is 0 is padding; input_ids [6, 16] = 2 images × 3 queries.
      const maskData = Int32Array.from({ length: 6 }, (_, i) => (ids.data[i * 16]! > 0 ? 1 : 0));
      expect(Array.from(maskData)).toEqual([1, 1, 1, 1, 1, 0]);

      const regions = Tensor.from(gpu, classEmbeds.data, [2, 16, 48]);
      const words = Tensor.from(gpu, textEmbeds.data, [2, 3, 48]);
      const shift = Tensor.from(gpu, shiftData, [2, 16, 1]);
      const scale = Tensor.from(gpu, scaleData, [2, 16]);
      const queryMask = Tensor.from(gpu, maskData, [2, 3], 'i32');
      const { logits } = await kernels.regionWordSimilarity(gpu, regions, words, { shift, scale, queryMask });
      expect(logits.shape).toEqual([2, 16, 3]);
      const got = await logits.read();
      const want = fixtureTensor(expected, 'logits').data;
      const report = expectClose(got, want, { atol: 1e-5, rtol: 1e-5, label: 'owlvit logits' });
      console.log(`owlvit_tiny logits max abs error ${report.maxAbsError.toExponential(2)}`);
      for (let r = 0; r < 16; r++) expect(got[(16 + r) * 3 + 2]).toBe(-1e6);
      for (const t of [regions, words, shift, scale, queryMask, logits]) t.dispose();
    });

    it('CLIP style reproduces clip_tiny logits_per_image with the checkpoint logit_scale', async () => {
      const gpu = await getGpu();
      const io = loadFixture('clip_tiny', 'io.safetensors');
      const logitScale = fixtureTensor(loadFixture('clip_tiny', 'weights_openai.safetensors'), 'logit_scale').data[0]!;
      const images = Tensor.from(gpu, fixtureTensor(io, 'image_embeds').data, [1, 2, 32]);
      const texts = Tensor.from(gpu, fixtureTensor(io, 'text_embeds').data, [1, 3, 32]);
      const { logits } = await kernels.regionWordSimilarity(gpu, images, texts, { logitScale });
      const report = expectClose(await logits.read(), fixtureTensor(io, 'logits_per_image_f64').data, { scaleTol: 1e-5, label: 'clip logits' });
      console.log(`clip_tiny logits_per_image max abs error ${report.maxAbsError.toExponential(2)} (scale ${report.scale.toFixed(2)})`);
      for (const t of [images, texts, logits]) t.dispose();
    });

    const cases = [
      { b: 1, r: 1, q: 1, d: 1, sharedWords: false },
      { b: 2, r: 7, q: 5, d: 3, sharedWords: true },
      { b: 3, r: 13, q: 37, d: 33, sharedWords: false },
      { b: 1, r: 41, q: 9, d: 512, sharedWords: true },
    ];
    for (const mode of ['clip', 'owl'] as const) {
      for (const dtype of ['f32', 'f16'] as const) {
        it(`${mode} style with masks and top-k matches the reference on awkward shapes (${dtype})`, async (ctx) => {
          const gpu = await getGpu();
          if (dtype === 'f16') requireF16(ctx, gpu);
          for (const [i, { b, r, q, d, sharedWords }] of cases.entries()) {
            const wb = sharedWords ? 1 : b;
            const reg = randomArray(b * r * d, 10 + i, 2);
            const wor = randomArray(wb * q * d, 20 + i, 2);
            const shiftData = randomArray(b * r, 30 + i, 1);
            const scaleData = randomArray(b * r, 40 + i, 2);
            // Shared mask for shared words; every third query padded, never all of them.
            const maskData = Int32Array.from({ length: wb * q }, (_, j) => (j % 3 === 1 ? 0 : 1));
            const k = Math.min(q, 4);
            const regions = Tensor.from(gpu, reg, [b, r, d], dtype);
            const words = Tensor.from(gpu, wor, [wb, q, d], dtype);
            const shift = Tensor.from(gpu, shiftData, [b, r], dtype);
            const scale = Tensor.from(gpu, scaleData, [b, r, 1], dtype);
            const queryMask = Tensor.from(gpu, maskData, [wb, q], 'i32');
            const args = mode === 'owl' ? { shift, scale } : { logitScale: 2.6592 };
            const refArgs = mode === 'owl' ? { shift: await shift.read(), scale: await scale.read() } : { logitScale: 2.6592 };
            const dims = [b, r, q, d] as const;
            const [hostReg, hostWor] = [await regions.read(), await words.read()];
            const tol = dtype === 'f16' ? 1e-3 : 1e-5; // f16 rounds only the inputs: the math is f32
            // Without a mask.
            const plain = await kernels.regionWordSimilarity(gpu, regions, words, args);
            expect(plain.logits.shape).toEqual([b, r, q]);
            expect(plain.topValues).toBeUndefined();
            expectClose(await plain.logits.read(), regionWordSimilarityReference(hostReg, hostWor, dims, refArgs), { scaleTol: tol, label: `${mode} ${dtype} ${dims}` });
            // With a mask and top-k.
            const masked = await kernels.regionWordSimilarity(gpu, regions, words, { ...args, queryMask, topK: k });
            const ref = regionWordSimilarityReference(hostReg, hostWor, dims, { ...refArgs, queryMask: maskData });
            const got = await masked.logits.read();
            expectClose(got, ref, { atol: tol * 20, rtol: tol, label: `${mode} ${dtype} masked ${dims}` });
            expect(masked.topValues!.shape).toEqual([b, r, k]);
            expect(masked.topIndices!.dtype).toBe('i32');
            // Top-k of the kernel's own logits (ties among -1e6 go to the lower index).
            const top = topKReference(got, q, k);
            expect(Array.from(await masked.topIndices!.read())).toEqual(top.indices);
            expect(Array.from(await masked.topValues!.read())).toEqual(top.values);
            for (const t of [regions, words, shift, scale, queryMask, plain.logits, masked.logits, masked.topValues!, masked.topIndices!]) t.dispose();
          }
        });
      }
    }

    it('top-k picks the reference order on a larger row set (k = 64, Q = 1000)', async () => {
      const gpu = await getGpu();
      const [b, r, q, d] = [1, 5, 1000, 8];
      const reg = randomArray(b * r * d, 1);
      const wor = randomArray(q * d, 2);
      const regions = Tensor.from(gpu, reg, [b, r, d]);
      const words = Tensor.from(gpu, wor, [1, q, d]);
      const out = await kernels.regionWordSimilarity(gpu, regions, words, { logitScale: 0, topK: 64 });
      const logits = await out.logits.read();
      const top = topKReference(logits, q, 64);
      expect(Array.from(await out.topIndices!.read())).toEqual(top.indices);
      expect(Array.from(await out.topValues!.read())).toEqual(top.values);
      expectClose(logits, regionWordSimilarityReference(reg, wor, [b, r, q, d], { logitScale: 0 }), { scaleTol: 1e-5 });
      for (const t of [regions, words, out.logits, out.topValues!, out.topIndices!]) t.dispose();
    });

    // Under a 4 KiB binding limit: (a) rows of regions and logits split inside each image (22 of 37
    // rows per chunk on lavapipe's 16-byte offset alignment) and shared words split by queries
    // (42 of 45 at f32), with a shared mask and top-k; (b) words per image split by queries, one
    // image per chunk; (c) whole images per chunk (4 of 20 at f32, 9 at f16), a per-image mask,
    // words bound whole. Chunks start mid-row of the bound slices (element bases), not only at
    // aligned rows.
    const splitCases = [
      { name: 'rows within images, shared words by queries', mode: 'owl', b: 3, r: 37, q: 45, d: 24, wb: 1, mask: 1, k: 5 },
      { name: 'per-image words by queries', mode: 'clip', b: 4, r: 5, q: 60, d: 20, wb: 4, mask: 0, k: 3 },
      { name: 'whole images per chunk', mode: 'owl', b: 20, r: 7, q: 10, d: 30, wb: 1, mask: 20, k: 0 },
    ] as const;
    for (const dtype of ['f32', 'f16'] as const) {
      it(`splits regions and queries under the binding limit, eager and in a graph, equal to one unsplit call (${dtype})`, async (ctx) => {
        const gpu = await getGpu();
        const small = await getSmallGpu();
        if (dtype === 'f16') requireF16(ctx, small);
        for (const [i, c] of splitCases.entries()) {
          const data = [
            { data: randomArray(c.b * c.r * c.d, 50 + i, 2), shape: [c.b, c.r, c.d], dtype },
            { data: randomArray(c.wb * c.q * c.d, 60 + i, 2), shape: [c.wb, c.q, c.d], dtype },
            ...(c.mode === 'owl'
              ? [
                  { data: randomArray(c.b * c.r, 70 + i, 1), shape: [c.b, c.r], dtype },
                  { data: randomArray(c.b * c.r, 80 + i, 2), shape: [c.b, c.r, 1], dtype },
                ]
              : []),
            ...(c.mask ? [{ data: Int32Array.from({ length: c.mask * c.q }, (_, j) => (j % 7 === 2 ? 0 : 1)), shape: [c.mask, c.q], dtype: 'i32' as const }] : []),
          ];
          const options = { mode: c.mode, logitScale: c.mode === 'clip' ? 2.6592 : undefined, queryMask: c.mask > 0, topK: c.k || undefined };
          const whole = data.map((t) => Tensor.from(gpu, t.data, t.shape, t.dtype));
          const unsplit = await kernels.runKernel(gpu, kernels.regionWordSimilarityKernel, whole, options);
          const want = await Promise.all(unsplit.map((t) => t.read()));
          const inputs = data.map((t) => Tensor.from(small, t.data, t.shape, t.dtype));
          const { eager, graph, dispatches } = await runEagerAndGraph(small, kernels.regionWordSimilarityKernel, inputs, options);
          expect(dispatches, c.name).toBeGreaterThanOrEqual(3);
          want.forEach((w, o) => {
            expect(firstDifference(eager[o]!, w), `${c.name}: eager output ${o}`).toBe(-1);
            expect(firstDifference(graph[o]!, w), `${c.name}: graph output ${o}`).toBe(-1);
          });
          for (const t of [...whole, ...unsplit, ...inputs]) t.dispose();
        }
      });
    }

    it('a query or row too wide for one binding fails before dispatch, naming the op, the sizes and the limit', async () => {
      const small = await getSmallGpu();
      const regions = Tensor.from(small, new Float32Array(2 * 1100), [1, 2, 1100]);
      const words = Tensor.from(small, new Float32Array(3 * 1100), [1, 3, 1100]);
      const before = small.stats();
      await expect(kernels.regionWordSimilarity(small, regions, words, { logitScale: 1 })).rejects.toThrow(
        /regionWordSimilarity: one row of regions or logits \(4400 bytes\) does not fit the device's maxStorageBufferBindingSize of 4096 bytes \(less \d+ for alignment\), so splitting by regions and queries cannot help/,
      );
      expect(small.stats().submits).toBe(before.submits);
      for (const t of [regions, words]) t.dispose();
    });

    it('rejects bad input before dispatching', async () => {
      const gpu = await getGpu();
      const regions = Tensor.from(gpu, new Float32Array(2 * 3 * 4), [2, 3, 4]);
      const words = Tensor.from(gpu, new Float32Array(5 * 4), [1, 5, 4]);
      const words3 = Tensor.from(gpu, new Float32Array(3 * 5 * 4), [3, 5, 4]);
      const wordsD = Tensor.from(gpu, new Float32Array(5 * 3), [1, 5, 3]);
      const shift = Tensor.from(gpu, new Float32Array(6), [2, 3]);
      const shiftBad = Tensor.from(gpu, new Float32Array(6), [3, 2]);
      const maskF = Tensor.from(gpu, new Float32Array(5), [1, 5]);
      const mask4 = Tensor.from(gpu, new Int32Array(4), [1, 4], 'i32');
      const r2 = Tensor.from(gpu, new Float32Array(12), [3, 4]);
      const wordsI = Tensor.from(gpu, new Int32Array(20), [1, 5, 4], 'i32');
      const before = gpu.stats();
      const cases: [Promise<unknown>, RegExp][] = [
        [kernels.regionWordSimilarity(gpu, regions, words, {}), /pass either logitScale \(CLIP style\) or shift and scale/],
        [kernels.regionWordSimilarity(gpu, regions, words, { logitScale: 1, shift, scale: shift }), /not both or neither/],
        [kernels.regionWordSimilarity(gpu, regions, words, { shift }), /needs both shift and scale/],
        [kernels.regionWordSimilarity(gpu, regions, words, { logitScale: NaN }), /logitScale must be a finite number/],
        [kernels.regionWordSimilarity(gpu, regions, words, { logitScale: Infinity }), /logitScale must be a finite number/],
        [kernels.regionWordSimilarity(gpu, regions, words, { logitScale: 1000 }), /exp\(logitScale\) overflows/],
        [kernels.regionWordSimilarity(gpu, r2, words, { logitScale: 1 }), /regions of shape \[3, 4\] must be \[B, R, D\]/],
        [kernels.regionWordSimilarity(gpu, regions, words3, { logitScale: 1 }), /words of shape \[3, 5, 4\] must be \[2 or 1, Q, 4\]/],
        [kernels.regionWordSimilarity(gpu, regions, wordsD, { logitScale: 1 }), /words of shape \[1, 5, 3\] must be/],
        [kernels.regionWordSimilarity(gpu, regions, wordsI, { logitScale: 1 }), /words must be f32 or f16, got i32/],
        [kernels.regionWordSimilarity(gpu, regions, words, { shift: shiftBad, scale: shift }), /shift of shape \[3, 2\] must be \[2, 3\] or \[2, 3, 1\]/],
        [kernels.regionWordSimilarity(gpu, regions, words, { logitScale: 1, queryMask: maskF }), /queryMask must be i32 or u32/],
        [kernels.regionWordSimilarity(gpu, regions, words, { logitScale: 1, queryMask: mask4 }), /queryMask of shape \[1, 4\] must be \[2 or 1, 5\]/],
        [kernels.regionWordSimilarity(gpu, regions, words, { logitScale: 1, topK: 0 }), /topK must be an integer in \[1, 5\]/],
        [kernels.regionWordSimilarity(gpu, regions, words, { logitScale: 1, topK: 6 }), /topK must be an integer in \[1, 5\]/],
        [kernels.runKernel(gpu, kernels.regionWordSimilarityKernel, [regions, words], { mode: 'owl' }), /expected 4 inputs \(regions, words, shift, scale\), got 2/],
        [kernels.runKernel(gpu, kernels.regionWordSimilarityKernel, [regions, words], { mode: 'dot' as never }), /mode must be 'clip' or 'owl'/],
      ];
      for (const [p, re] of cases) {
        await expect(p).rejects.toThrow(GpuError);
        await expect(p).rejects.toThrow(re);
      }
      expect(gpu.stats()).toEqual(before);
      for (const t of [regions, words, words3, wordsD, shift, shiftBad, maskF, mask4, r2, wordsI]) t.dispose();
    });
  });
  describe('regionWordSimilarityBackward', () => {
    it('matches the reference: OWL style with a mask, CLIP style with shared words, a zero region', async () => {
      const gpu = await getGpu();
      const [b, r, q, d] = [2, 7, 5, 13];
      const regionsData = randomArray(b * r * d, 1, 1);
      regionsData.fill(0, 3 * d, 4 * d); // region 3 is zero: only the first term of its gradient remains
      const wordsData = randomArray(b * q * d, 2, 1);
      const dyData = randomArray(b * r * q, 3, 1);
      const shiftData = randomArray(b * r, 4, 1);
      const scaleData = randomArray(b * r, 5, 2);
      const maskData = Int32Array.from({ length: b * q }, (_, i) => (i % 4 === 3 ? 0 : 1));
      const [regions, words, dy, shift, scale] = [
        Tensor.from(gpu, regionsData, [b, r, d]),
        Tensor.from(gpu, wordsData, [b, q, d]),
        Tensor.from(gpu, dyData, [b, r, q]),
        Tensor.from(gpu, shiftData, [b, r, 1]),
        Tensor.from(gpu, scaleData, [b, r]),
      ];
      const queryMask = Tensor.from(gpu, maskData, [b, q], 'i32');
      const g = await kernels.regionWordSimilarityBackward(gpu, regions, words, dy, { shift, scale, queryMask });
      const want = regionWordSimilarityBackwardReference(regionsData, wordsData, [b, r, q, d], dyData, { shift: shiftData, scale: scaleData, queryMask: maskData });
      expect([g.regions.shape, g.words.shape, g.shift!.shape, g.scale!.shape]).toEqual([[b, r, d], [b, q, d], [b, r, 1], [b, r]]);
      for (const key of ['regions', 'words', 'shift', 'scale'] as const) expectClose(await g[key]!.read(), want[key], { scaleTol: 1e-5, label: `owl ${key}` });
      // CLIP style, words [1, Q, D] shared by both images.
      const shared = Tensor.from(gpu, wordsData.subarray(0, q * d), [1, q, d]);
      const c = await kernels.regionWordSimilarityBackward(gpu, regions, shared, dy, { logitScale: 1.5 });
      const wantC = regionWordSimilarityBackwardReference(regionsData, wordsData.subarray(0, q * d), [b, r, q, d], dyData, { logitScale: 1.5 });
      expect(c.words.shape).toEqual([1, q, d]);
      expectClose(await c.regions.read(), wantC.regions, { scaleTol: 1e-5, label: 'clip regions' });
      expectClose(await c.words.read(), wantC.words, { scaleTol: 1e-5, label: 'clip shared words' });
      for (const t of [regions, words, dy, shift, scale, queryMask, shared, ...Object.values(g), ...Object.values(c)]) t.dispose();
    });

    it('matches PyTorch autograd: the region_word fixture (d regions, words, shift, scale)', async () => {
      const gpu = await getGpu();
      const fx = gradFixture('region_word');
      expect(fx.cases).toHaveLength(1);
      for (const c of fx.cases) {
        const up = (n: string) => Tensor.from(gpu, fx.tensor(`${c.name}.${n}`).data, fx.tensor(`${c.name}.${n}`).shape);
        const [regions, words, shift, scale, dy] = ['regions', 'words', 'shift', 'scale', 'dY'].map(up) as [Tensor, Tensor, Tensor, Tensor, Tensor];
        const { logits } = await kernels.regionWordSimilarity(gpu, regions, words, { shift, scale });
        expectClose(await logits.read(), fx.tensor(`${c.name}.Y_f64`).data, { scaleTol: 1e-5, label: `${c.name} Y` });
        const g = await kernels.regionWordSimilarityBackward(gpu, regions, words, dy, { shift, scale });
        for (const key of ['regions', 'words', 'shift', 'scale'] as const) {
          expectClose(await g[key]!.read(), fx.tensor(`${c.name}.grad_${key}_f64`).data, { scaleTol: 1e-4, label: `${c.name} grad_${key}` });
        }
        for (const t of [regions, words, shift, scale, dy, logits, ...Object.values(g)]) t.dispose();
      }
    });

    it('is not split: over the binding limit it fails before dispatch, naming the op, the sizes, the limit and what to do, in eager calls and graphs', async () => {
      const small = await getSmallGpu();
      // 20 regions x 30 queries: dy is 2400 bytes, the scratch (8 bytes a pair and the norms) 5080.
      const inputs = [Tensor.from(small, randomArray(160, 1), [1, 20, 8]), Tensor.from(small, randomArray(240, 2), [1, 30, 8]), Tensor.from(small, randomArray(600, 3), [1, 20, 30])];
      const before = small.stats();
      const message = /regionWordSimilarityBackward: its scratch \(8 bytes per region-query pair\) \(f32 \[1270\], 5080 bytes\) is bound whole and exceeds the device's maxStorageBufferBindingSize of 4096 bytes: call it on fewer regions/;
      await expect(kernels.regionWordSimilarityBackward(small, inputs[0]!, inputs[1]!, inputs[2]!, { logitScale: 1 })).rejects.toThrow(message);
      const g = new GraphBuilder();
      const grads = g.op(kernels.regionWordSimilarityBackwardKernel, inputs.map((t, i) => g.input(`x${i}`, t.shape)), { mode: 'clip', logitScale: 1 });
      grads.forEach((v, i) => g.output(`d${i}`, v));
      await expect(g.compile(small)).rejects.toThrow(message);
      expect(small.stats().submits).toBe(before.submits);
      for (const t of inputs) t.dispose();
    });

    it('rejects bad arguments before dispatching', async () => {
      const gpu = await getGpu();
      const regions = Tensor.from(gpu, new Float32Array(2 * 3 * 4), [2, 3, 4]);
      const words = Tensor.from(gpu, new Float32Array(2 * 5 * 4), [2, 5, 4]);
      const dyBad = Tensor.from(gpu, new Float32Array(2 * 3 * 4), [2, 3, 4]);
      const before = gpu.stats();
      await expect(kernels.regionWordSimilarityBackward(gpu, regions, words, dyBad, { logitScale: 1 })).rejects.toThrow(/regionWordSimilarityBackward: dy must be \[2, 3, 5\] \(the logits' shape\), got \[2, 3, 4\]/);
      const infos = [regions, words, dyBad].map((t) => ({ shape: t.shape, dtype: t.dtype }));
      expect(() => kernels.regionWordSimilarityBackwardKernel.outputs(infos, { mode: 'clip', logitScale: 1, topK: 2 })).toThrow(/regionWordSimilarityBackward: topK is not differentiable/);
      expect(gpu.stats()).toEqual(before);
      for (const t of [regions, words, dyBad]) t.dispose();
    });
  });
});
