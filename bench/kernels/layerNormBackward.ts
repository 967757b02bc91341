// LayerNorm backward (dx, dweight, dbias) at CLIP ViT-B/32 b8 (400 tokens of 768) and OWL-ViT B/32
// 768 px (577 tokens). Inputs [x, weight, dOut]; TF.js computes the same formulas with ops.
import type { KernelBenchCase } from '../types.js';
import { layerNormBackwardKernel, type LayerNormBackwardOptions } from '../../src/kernels/layerNormBackward.js';

function tfjsLayerNormBackward(tf: any, [x, w, dOut]: any[]) {
  return tf.tidy(() => {
    const { mean, variance } = tf.moments(x, -1, true);
    const rstd = tf.rsqrt(tf.add(variance, 1e-5));
    const xh = tf.mul(tf.sub(x, mean), rstd);
    const g = tf.mul(dOut, w);
    const dx = tf.mul(rstd, tf.sub(tf.sub(g, tf.mean(g, -1, true)), tf.mul(xh, tf.mean(tf.mul(g, xh), -1, true))));
    const rows = [-1, x.shape[x.shape.length - 1]];
    return [dx, tf.sum(tf.reshape(tf.mul(dOut, xh), rows), 0), tf.sum(tf.reshape(dOut, rows), 0)];
  });
}

const rows = (label: string, shape: number[]): KernelBenchCase<LayerNormBackwardOptions> => ({
  kernel: layerNormBackwardKernel,
  label: `${label} layerNorm backward ${shape.join('x')}`,
  inputs: [{ shape }, { shape: [shape[shape.length - 1]!] }, { shape }],
  options: {},
  tfjs: tfjsLayerNormBackward,
});

export const cases: KernelBenchCase<LayerNormBackwardOptions>[] = [rows('CLIP B/32 b8', [8, 50, 768]), rows('OWL-ViT B/32 768px', [1, 577, 768])];
