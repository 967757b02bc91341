// Patch embedding of CLIP ViT-B/32 at 224 px (batch 1 and 8) and OWL-ViT B/32 at 768 px: p = 32,
// width 768, K = 3·32·32 = 3072; the backward at CLIP's shapes (gradCAM through the whole tower).
import type { KernelBenchCase } from '../types.js';
import { patchEmbedBackwardKernel, patchEmbedKernel, type PatchEmbedOptions } from '../../src/kernels/patchEmbed.js';

const P = 32;
const D = 768;

const embed = (label: string, batch: number, side: number): KernelBenchCase<PatchEmbedOptions> => {
  const grid = side / P;
  const tokens = 1 + grid * grid;
  return {
    kernel: patchEmbedKernel,
    label: `${label} patchEmbed ${batch}x3x${side}x${side} p${P} D${D}`,
    inputs: [{ shape: [batch, 3, side, side] }, { shape: [D, 3, P, P] }, { shape: [D] }, { shape: [tokens, D] }],
    options: { patchSize: P },
    // tf.conv2d wants NHWC pixels and an [h, w, in, out] filter; the transposes are part of the peer.
    tfjs: (tf, [pixels, weight, cls, pos]) =>
      tf.tidy(() => {
        const x = tf.transpose(pixels, [0, 2, 3, 1]);
        const f = tf.transpose(weight, [2, 3, 1, 0]);
        const patches = tf.reshape(tf.conv2d(x, f, P, 'valid'), [batch, grid * grid, D]);
        const classRows = tf.broadcastTo(tf.reshape(cls, [1, 1, D]), [batch, 1, D]);
        return tf.add(tf.concat([classRows, patches], 1), pos);
      }),
  };
};

export const cases: KernelBenchCase<PatchEmbedOptions>[] = [
  embed('CLIP B/32 224px b1', 1, 224),
  embed('CLIP B/32 224px b8', 8, 224),
  embed('OWL-ViT B/32 768px b1', 1, 768),
  ...[1, 8].map((batch) => ({
    kernel: patchEmbedBackwardKernel,
    label: `CLIP B/32 224px b${batch} patchEmbedBackward (d pixels, weight, class, position)`,
    inputs: [{ shape: [batch, 3, 224, 224] }, { shape: [D, 3, P, P] }, { shape: [batch, 50, D] }],
    options: { patchSize: P },
  })),
];
