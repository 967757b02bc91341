// Elementwise rows: the activations of CLIP ViT-B/32's MLP (batch 8: 8 x 50 tokens, width 3072)
// and OWL-ViT B/32 at 768 px (577 tokens), bias and residual adds, and OWL-ViT's L2-normalised
// class embeddings (577 x 512). All are memory-bound: read GB/s against the copy peak.
import { elementwiseKernel, type ElementwiseOptions } from '../../src/kernels/elementwise.js';
import type { KernelBenchCase } from '../types.js';

const row = (label: string, shapes: number[][], options: ElementwiseOptions, tfjs: KernelBenchCase['tfjs']): KernelBenchCase<ElementwiseOptions> => ({
  kernel: elementwiseKernel,
  label,
  inputs: shapes.map((shape) => ({ shape })),
  options,
  tfjs,
});

// TF.js has no GELU op: exact GELU is composed from erf, as a TF.js user would write it.
const gelu = (tf: any, [x]: any[]) => tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
const quickGelu = (tf: any, [x]: any[]) => tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));
const add = (tf: any, [a, b]: any[]) => tf.add(a, b);
const mul = (tf: any, [a, b]: any[]) => tf.mul(a, b);
const quickGeluGrad = (tf: any, [x, dy]: any[]) => {
  const s = tf.sigmoid(tf.mul(x, 1.702));
  return tf.mul(dy, tf.add(s, tf.mul(tf.mul(tf.mul(x, 1.702), s), tf.sub(1, s))));
};
const l2norm = (tf: any, [x]: any[]) => tf.div(x, tf.add(tf.sqrt(tf.sum(tf.square(x), -1, true)), 1e-6));

export const cases: KernelBenchCase[] = [
  row('CLIP B/32 b8 MLP gelu 400x3072', [[400, 3072]], { op: 'gelu' }, gelu),
  row('CLIP B/32 b8 MLP quick_gelu 400x3072', [[400, 3072]], { op: 'quick_gelu' }, quickGelu),
  row('OWL-ViT B/32 MLP quick_gelu 577x3072', [[577, 3072]], { op: 'quick_gelu' }, quickGelu),
  row('CLIP B/32 b8 add bias 400x3072 + 3072', [[400, 3072], [3072]], { op: 'add' }, add),
  row('OWL-ViT B/32 residual add 577x768', [[577, 768], [577, 768]], { op: 'add' }, add),
  row('OWL-ViT B/32 class-token product 1x576x768 by 1x1x768', [[1, 576, 768], [1, 1, 768]], { op: 'mul' }, mul),
  row('OWL-ViT B/32 b8 class-token product 8x576x768 by 8x1x768 (broadcast path)', [[8, 576, 768], [8, 1, 768]], { op: 'mul' }, mul),
  row('OWL-ViT B/32 class embeds l2norm 577x512', [[577, 512]], { op: 'l2norm' }, l2norm),
  row('CLIP B/32 b8 MLP backward gelu_grad 400x3072', [[400, 3072], [400, 3072]], { op: 'gelu_grad' }, undefined),
  row('CLIP B/32 b8 MLP backward quick_gelu_grad 400x3072', [[400, 3072], [400, 3072]], { op: 'quick_gelu_grad' }, quickGeluGrad),
  row('OWL-ViT B/32 class embeds backward l2norm_grad 577x512', [[577, 512], [577, 512]], { op: 'l2norm_grad' }, undefined),
];
