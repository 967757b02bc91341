// LayerNorm rows of CLIP ViT-B/32 (50 tokens, batch 1 and 8) and OWL-ViT B/32 at 768 px (577 tokens),
// width 768, alone and with the pre-LN residual add fused.
import type { KernelBenchCase } from '../types.js';
import { layerNormKernel, type LayerNormOptions } from '../../src/kernels/layerNorm.js';

const D = 768;
const SHAPES: [string, number][] = [
  ['CLIP B/32 b1', 50],
  ['CLIP B/32 b8', 400],
  ['OWL-ViT B/32 768px', 577],
];

// TF.js has no fused LayerNorm: moments, then the affine map (what tf.layers.layerNormalization does).
const tfLayerNorm = (tf: any, x: any, w: any, b: any) => {
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, 1e-5))), w), b);
};

export const cases: KernelBenchCase<LayerNormOptions>[] = SHAPES.flatMap(([model, rows]): KernelBenchCase<LayerNormOptions>[] => [
  {
    kernel: layerNormKernel,
    label: `${model} layerNorm ${rows}x${D}`,
    inputs: [{ shape: [rows, D] }, { shape: [D] }, { shape: [D] }],
    options: {},
    tfjs: (tf, [x, w, b]) => tf.tidy(() => tfLayerNorm(tf, x, w, b)),
  },
  {
    kernel: layerNormKernel,
    label: `${model} residual add + layerNorm ${rows}x${D}`,
    inputs: [{ shape: [rows, D] }, { shape: [D] }, { shape: [D] }, { shape: [rows, D] }],
    options: { residual: true },
    // Both results, as the fused kernel writes both.
    tfjs: (tf, [x, w, b, r]) =>
      tf.tidy(() => {
        const s = tf.add(x, r);
        return [tfLayerNorm(tf, s, w, b), s];
      }),
  },
]);
