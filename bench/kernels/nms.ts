// NMS at the sizes detection post-processing meets: OWL-ViT B/32 at 768 px (24x24 = 576 boxes),
// and 5000 boxes (moderate overlap) alone and across 80 classes.
// TF.js peer: tf.image.nonMaxSuppressionAsync (boxes [y1, x1, y2, x2]; our x1, y1, x2, y2 give the
// same IoUs, the axes being swapped consistently). It has no classes: the batched peer shifts each
// class's boxes apart, as torchvision's batched_nms does. Both peers return a Promise.
import type { KernelBenchCase } from '../types.js';
import { nmsKernel, type NmsKernelOptions } from '../../src/kernels/nms.js';
import { rng } from '../../test/util/random.js';

/** n boxes with centres uniform in the image and sides 30-120 px: moderate overlap. */
function boxes(n: number, extent: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => {
    const [cx, cy, w, h] = [r() * extent, r() * extent, 30 + 90 * r(), 30 + 90 * r()];
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2];
  }).flat();
}

const nmsCase = (label: string, n: number, extent: number): KernelBenchCase<NmsKernelOptions> => ({
  kernel: nmsKernel,
  label,
  inputs: [{ shape: [n, 4], data: boxes(n, extent, 1) }, { shape: [n] }],
  options: { iouThreshold: 0.5 },
  tfjs: (tf, [b, s]) => tf.image.nonMaxSuppressionAsync(b, s, n, 0.5),
});

const classes = 80;
const n = 5000;
const r = rng(2);

export const cases: KernelBenchCase[] = [
  nmsCase('OWL-ViT B/32 768px nms 576 boxes iou 0.5', 576, 768),
  nmsCase('nms 5000 boxes iou 0.5', n, 1000),
  {
    kernel: nmsKernel,
    label: 'batchedNms 5000 boxes 80 classes iou 0.5',
    inputs: [
      { shape: [n, 4], data: boxes(n, 1000, 1) },
      { shape: [n] },
      { shape: [n], dtype: 'i32', data: Array.from({ length: n }, () => Math.floor(r() * classes)) },
    ],
    options: { iouThreshold: 0.5, batched: true },
    tfjs: async (tf, [b, s, labels]) => {
      const shifted = tf.tidy(() => tf.add(b, tf.mul(tf.expandDims(tf.cast(labels, 'float32'), 1), 2000)));
      try {
        return await tf.image.nonMaxSuppressionAsync(shifted, s, n, 0.5);
      } finally {
        shifted.dispose();
      }
    },
  },
];
