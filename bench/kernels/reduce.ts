// Reductions of the backward pass at CLIP ViT-B/32 batch 8 (8 x 50 tokens) and OWL-ViT B/32
// (577 tokens): bias gradients (a sum over every row), broadcast-operand gradients ([B, 1, D] from
// [B, N, D]) and a mean over tokens (CaR's pooling of patch tokens).
import type { KernelBenchCase } from '../types.js';
import { reduceKernel, type ReduceOptions } from '../../src/kernels/reduce.js';

const row = (label: string, shape: number[], options: ReduceOptions): KernelBenchCase<ReduceOptions> => ({
  kernel: reduceKernel,
  label,
  inputs: [{ shape }],
  options,
  tfjs: (tf, [x]) => (options.op === 'sum' ? tf.sum(x, options.axes, options.keepDims) : tf.mean(x, options.axes, options.keepDims)),
});

export const cases: KernelBenchCase<ReduceOptions>[] = [
  row('CLIP B/32 b8 fc1 bias grad: sum 400x3072 over rows', [400, 3072], { op: 'sum', axes: [0] }),
  row('CLIP B/32 b8 attn-out bias grad: sum 8x50x768 over [0, 1]', [8, 50, 768], { op: 'sum', axes: [0, 1] }),
  row('OWL-ViT B/32 b8 class-token product grad: sum 8x576x768 over tokens', [8, 576, 768], { op: 'sum', axes: [1], keepDims: true }),
  row('OWL-ViT B/32 mean of 576x512 patch tokens over tokens', [1, 576, 512], { op: 'mean', axes: [1] }),
  row('loss: mean of 8x512 to a scalar', [8, 512], { op: 'mean', axes: [0, 1] }),
];
