// Softmax backward over attention probabilities: 12 heads over 50 tokens (CLIP ViT-B/32 b8) and
// 577 tokens (OWL-ViT B/32 at 768 px). Inputs [y, dy]; TF.js computes y·(dy − Σ y·dy) with ops.
import type { KernelBenchCase } from '../types.js';
import { softmaxBackwardKernel } from '../../src/kernels/softmaxBackward.js';

const rows = (label: string, shape: number[]): KernelBenchCase<Record<string, never>> => ({
  kernel: softmaxBackwardKernel,
  label: `${label} softmax backward ${shape.join('x')}`,
  inputs: [{ shape }, { shape }],
  options: {},
  tfjs: (tf, [y, dy]) => tf.tidy(() => tf.mul(y, tf.sub(dy, tf.sum(tf.mul(y, dy), -1, true)))),
});

export const cases: KernelBenchCase<Record<string, never>>[] = [rows('CLIP B/32 b8', [8 * 12, 50, 50]), rows('OWL-ViT B/32 768px', [12, 577, 577])];
