// Losses of the training recipes ovgpu prototypes: cross-entropy over 1000 classes at batch 8
// (zero-shot ImageNet logits; CoOp's prompt learning uses the same op with fewer classes) and
// OWL-ViT-style binary cross-entropy over 576 boxes x 80 classes at batch 8, forward and backward.
import type { KernelBenchCase } from '../types.js';
import {
  binaryCrossEntropyWithLogitsBackwardKernel,
  binaryCrossEntropyWithLogitsKernel,
  crossEntropyBackwardKernel,
  crossEntropyKernel,
  logSoftmaxKernel,
} from '../../src/kernels/losses.js';

const labels = { shape: [8], dtype: 'i32' as const, data: [3, 999, 0, 512, 7, 100, 250, 640] };
const boxes = [8, 576, 80];

export const cases: KernelBenchCase<Record<string, never>>[] = [
  { kernel: logSoftmaxKernel, label: 'logSoftmax 8x1000', inputs: [{ shape: [8, 1000] }], options: {}, tfjs: (tf, [x]) => tf.logSoftmax(x) },
  {
    kernel: crossEntropyKernel,
    label: 'crossEntropy 8x1000 classes',
    inputs: [{ shape: [8, 1000] }, labels],
    options: {},
    tfjs: (tf, [x, k]) => tf.losses.softmaxCrossEntropy(tf.oneHot(k, 1000), x),
  },
  { kernel: crossEntropyBackwardKernel, label: 'crossEntropyBackward 8x1000 classes', inputs: [{ shape: [8, 1000] }, labels, { shape: [] }], options: {} },
  {
    kernel: binaryCrossEntropyWithLogitsKernel,
    label: 'binaryCrossEntropyWithLogits 8x576x80',
    inputs: [{ shape: boxes }, { shape: boxes }],
    options: {},
    tfjs: (tf, [x, t]) => tf.losses.sigmoidCrossEntropy(t, x),
  },
  { kernel: binaryCrossEntropyWithLogitsBackwardKernel, label: 'binaryCrossEntropyWithLogitsBackward 8x576x80', inputs: [{ shape: boxes }, { shape: boxes }, { shape: [] }], options: {} },
];
