// Attention-probability softmax: 12 heads over 50 tokens (CLIP ViT-B/32, batch 1 and 8) and over
// 577 tokens (OWL-ViT B/32 at 768 px); the masked case is CLIP's causal text attention (8 heads of 77).
import type { KernelBenchCase } from '../types.js';
import { softmaxKernel, type SoftmaxOptions } from '../../src/kernels/softmax.js';

const plain = (label: string, shape: number[]): KernelBenchCase<SoftmaxOptions> => ({
  kernel: softmaxKernel,
  label: `${label} softmax ${shape.join('x')}`,
  inputs: [{ shape }],
  options: {},
  tfjs: (tf, [x]) => tf.softmax(x),
});

const L = 77;
const causal = Array.from({ length: L * L }, (_, i) => (i % L <= Math.floor(i / L) ? 0 : -Infinity));

export const cases: KernelBenchCase<SoftmaxOptions>[] = [
  plain('CLIP B/32 b1', [12, 50, 50]),
  plain('CLIP B/32 b8', [8 * 12, 50, 50]),
  plain('OWL-ViT B/32 768px', [12, 577, 577]),
  {
    kernel: softmaxKernel,
    label: `CLIP text b8 causal-masked softmax ${[8 * 8, L, L].join('x')}`,
    inputs: [{ shape: [8 * 8, L, L] }, { shape: [L, L], data: causal }],
    options: { mask: true },
    tfjs: (tf, [x, mask]) => tf.tidy(() => tf.softmax(tf.add(x, mask))),
  },
];
