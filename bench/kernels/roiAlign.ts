// RoIAlign at OWL-ViT B/32 768 px: 1000 boxes on the 24×24×768 patch-token grid (NHWC, no
// transpose) to 7×7, and the same on an NCHW copy for comparison. No TF.js peer: its
// cropAndResize samples differently (one bilinear tap per output, no bin averaging).
import { roiAlignBackwardKernel, type RoiAlignBackwardOptions, roiAlignKernel, type RoiAlignOptions } from '../../src/kernels/roiAlign.js';
import type { KernelBenchCase } from '../types.js';
import { rng } from '../../test/util/random.js';

/** n xyxy boxes inside a 768-px image, 16 to 400 px a side, as (batch 0, x1, y1, x2, y2). */
function boxes(n: number): number[] {
  const r = rng(2024);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const w = 16 + r() * 384;
    const h = 16 + r() * 384;
    const x = r() * (768 - w);
    const y = r() * (768 - h);
    out.push(0, x, y, x + w, y + h);
  }
  return out;
}

const base: RoiAlignOptions = { outputSize: 7, spatialScale: 1 / 32, aligned: true };

/**
 * The three layouts/samplings for n boxes (the NHWC ones for 5000). 1000 and 5000 boxes give 150 and
 * 753 MB [n, 768, 7, 7] outputs, more than a 128 MiB storage binding (lavapipe's limit and the
 * usual one): the kernel runs them in chunks of 888 boxes, where 500 boxes are one dispatch.
 */
function roiCases(n: number, layouts = 3): KernelBenchCase<RoiAlignOptions>[] {
  const data = boxes(n);
  const all: KernelBenchCase<RoiAlignOptions>[] = [
    {
      kernel: roiAlignKernel,
      label: `OWL-ViT B/32 768px tokens 24x24x768 NHWC, ${n} boxes → 7x7, sampling 2`,
      inputs: [{ shape: [1, 24, 24, 768] }, { shape: [n, 5], data }],
      options: { ...base, samplingRatio: 2, layout: 'nhwc' },
    },
    {
      kernel: roiAlignKernel,
      label: `OWL-ViT B/32 768px tokens 24x24x768 NHWC, ${n} boxes → 7x7, adaptive sampling`,
      inputs: [{ shape: [1, 24, 24, 768] }, { shape: [n, 5], data }],
      options: { ...base, samplingRatio: 0, layout: 'nhwc' },
    },
    {
      kernel: roiAlignKernel,
      label: `same on NCHW features 768x24x24, ${n} boxes → 7x7, sampling 2`,
      inputs: [{ shape: [1, 768, 24, 24] }, { shape: [n, 5], data }],
      options: { ...base, samplingRatio: 2 },
    },
  ];
  return all.slice(0, layouts);
}

/** The backward into BARON-style features: 100 boxes (a training step's proposals) on the same grid. */
const backward = (layout: 'nchw' | 'nhwc'): KernelBenchCase<RoiAlignBackwardOptions> => ({
  kernel: roiAlignBackwardKernel,
  label: `roiAlignBackward 100 boxes 7x7 sampling 2 → ${layout === 'nhwc' ? '24x24x768 NHWC' : '768x24x24 NCHW'}`,
  inputs: [{ shape: [100, 768, 7, 7] }, { shape: [100, 5], data: boxes(100) }],
  options: { ...base, samplingRatio: 2, layout, featuresShape: layout === 'nhwc' ? [1, 24, 24, 768] : [1, 768, 24, 24] },
});

export const cases: KernelBenchCase<RoiAlignOptions>[] = [...roiCases(1000), ...roiCases(500), ...roiCases(5000, 2), backward('nhwc'), backward('nchw')];
