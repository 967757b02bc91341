// Layout copies the models need: heads to the front ([B, L, H, Dh] → [B, H, L, Dh]) as an unfused
// attention would, OWL-ViT's patch tokens without the class token (a strided slice), and a concat.
import type { KernelBenchCase } from '../types.js';
import { concatKernel, sliceView, stridedCopyKernel, transposeView, type StridedView } from '../../src/kernels/copy.js';

const heads = [8, 50, 12, 64];
const tokens = [8, 577, 768];

export const cases: KernelBenchCase<StridedView | { axis: number }>[] = [
  {
    kernel: stridedCopyKernel,
    label: 'CLIP B/32 b8 heads first: transpose 8x50x12x64 → 8x12x50x64',
    inputs: [{ shape: heads }],
    options: transposeView(heads, [0, 2, 1, 3]),
    tfjs: (tf, [x]) => tf.transpose(x, [0, 2, 1, 3]),
  },
  {
    kernel: stridedCopyKernel,
    label: 'OWL-ViT B/32 b8 patch tokens: slice 8x577x768 → 8x576x768',
    inputs: [{ shape: tokens }],
    options: sliceView(tokens, [0, 1]),
    tfjs: (tf, [x]) => tf.slice(x, [0, 1, 0], [-1, -1, -1]),
  },
  {
    kernel: concatKernel,
    label: 'concat two 8x577x768 along tokens',
    inputs: [{ shape: tokens }, { shape: tokens }],
    options: { axis: 1 },
    tfjs: (tf, [a, b]) => tf.concat([a, b], 1),
  },
];
