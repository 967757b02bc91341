// OWLv2 B/16 at 960 px: 3 601 vision tokens. The image plan for one image (compiled, never run: a
// 960-px B/16 forward takes minutes on lavapipe; the bench runs one) keeps attention fused — no
// [B, H, L, L] value and no buffer that large — and fits WebGPU's default binding limits at f32
// and f16. Real B/16 vision shapes with random weights, one vision layer: every layer has the same
// shapes and the memory plan reuses buffers across layers (the bench reports the 12-layer plan).
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OwlVitDetector, TINY_OWLVIT, owlv2B16, writeRandomModel } from '../../src/index.js';
import { requireF16, useGpu } from '../util/gpu.js';
import { imagePlanReport } from '../util/image-plan.js';

/** WebGPU's default limits: what any adapter offers. */
const DEFAULT_BINDING = 2 ** 27;
const getGpu = useGpu('auto', { limits: { maxStorageBufferBindingSize: DEFAULT_BINDING, maxBufferSize: 2 ** 28 } });

describe('OWLv2 B/16 at 960 px: the image plan for one image', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ovgpu-owlv2-b16-'));
    const b16 = owlv2B16();
    // The text tower is not in the image plan: one layer and the small byte vocabulary keep the file small (its width, 512, is the class head's).
    const text = { ...b16.text!, layers: 1, vocabSize: TINY_OWLVIT.text!.vocabSize, eosTokenId: TINY_OWLVIT.text!.eosTokenId };
    writeRandomModel(dir, 'owlv2', { ...b16, vision: { ...b16.vision!, layers: 1 }, text }, 3);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  for (const dtype of ['f32', 'f16'] as const) {
    it(`${dtype}: attention stays fused at L = 3601 and every buffer fits the default maxStorageBufferBindingSize`, async (ctx) => {
      const gpu = await getGpu();
      if (dtype === 'f16') requireF16(ctx, gpu);
      expect(gpu.device.limits.maxStorageBufferBindingSize).toBe(DEFAULT_BINDING);
      const det = await OwlVitDetector.load(gpu, dir, { dtype });
      try {
        const report = await imagePlanReport(det);
        const bytes = dtype === 'f16' ? 2 : 4;
        const { memory } = report;
        console.log(
          `${dtype}: ${report.tokens} tokens; intermediates ${(memory.intermediateBytes / 2 ** 20).toFixed(1)} MiB in ${memory.intermediateBuffers} buffers, ` +
            `largest ${(memory.largestBytes / 2 ** 20).toFixed(1)} MiB (limit 128 MiB; [1, 12, L, L] would be ${((12 * 3601 ** 2 * bytes) / 2 ** 20).toFixed(0)} MiB)`,
        );
        expect(report.tokens).toBe(3601);
        expect(report.attentionTokens).toEqual([3601]);
        expect(report.squareValues).toEqual([]);
        // Scratch buffers count too: nothing near one head's L × L scores.
        expect(memory.largestBytes).toBeLessThan(3601 ** 2 * bytes);
        expect(memory.largestBytes).toBeLessThanOrEqual(DEFAULT_BINDING);
        // The largest value is the MLP's hidden activation [1, 3601, 3072].
        expect(memory.largestBytes).toBe(3601 * 3072 * bytes);
      } finally {
        det.dispose();
      }
    }, 600_000);
  }
});
