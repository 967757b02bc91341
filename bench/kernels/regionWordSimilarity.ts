// Region–word logits at OWL-ViT B/32 768 px (576 patch regions × 1000 queries × 512) in both
// styles, and CLIP B/32 zero-shot (8 images × 1000 class prompts × 512). TF.js peer: matMul of
// row-normalised tensors plus the same epilogue.
import { regionWordSimilarityBackwardKernel, regionWordSimilarityKernel, type RegionWordSimilarityOptions } from '../../src/kernels/regionWordSimilarity.js';
import type { KernelBenchCase, TfjsPeer } from '../types.js';

const normalized = (tf: any, x: any) => tf.div(x, tf.add(tf.norm(x, 'euclidean', -1, true), 1e-6));
const cosine = (tf: any, r: any, w: any) => tf.matMul(normalized(tf, r), normalized(tf, w), false, true);

const clipPeer =
  (logitScale: number): TfjsPeer =>
  (tf, [r, w]) =>
    tf.tidy(() => tf.mul(cosine(tf, r, w), Math.exp(logitScale)));

const owlPeer: TfjsPeer = (tf, [r, w, shift, scale, mask]) =>
  tf.tidy(() => {
    const logits = tf.mul(tf.add(cosine(tf, r, w), tf.expandDims(shift, -1)), tf.add(tf.elu(tf.expandDims(scale, -1)), 1));
    return tf.where(tf.equal(tf.expandDims(mask, 1), 0), tf.fill(logits.shape, -1e6), logits);
  });

const ones = new Array<number>(1000).fill(1);
const clipScale = Math.log(100);

export const cases: KernelBenchCase<RegionWordSimilarityOptions>[] = [
  {
    kernel: regionWordSimilarityKernel,
    label: 'OWL-ViT B/32 768px class head 576 regions x 1000 queries x 512, OWL style + mask',
    inputs: [{ shape: [1, 576, 512] }, { shape: [1, 1000, 512] }, { shape: [1, 576] }, { shape: [1, 576] }, { shape: [1, 1000], dtype: 'i32', data: ones }],
    options: { mode: 'owl', queryMask: true },
    tfjs: owlPeer,
  },
  {
    kernel: regionWordSimilarityKernel,
    label: 'OWL-ViT B/32 768px 576 regions x 1000 queries x 512, CLIP style',
    inputs: [{ shape: [1, 576, 512] }, { shape: [1, 1000, 512] }],
    options: { mode: 'clip', logitScale: clipScale },
    tfjs: clipPeer(clipScale),
  },
  {
    kernel: regionWordSimilarityKernel,
    label: 'OWL-ViT B/32 768px 576 regions x 1000 queries x 512, OWL style + top-5',
    inputs: [{ shape: [1, 576, 512] }, { shape: [1, 1000, 512] }, { shape: [1, 576] }, { shape: [1, 576] }],
    options: { mode: 'owl', topK: 5 },
  },
  {
    kernel: regionWordSimilarityKernel,
    label: 'CLIP B/32 b8 zero-shot 8 images x 1000 prompts x 512',
    inputs: [{ shape: [1, 8, 512] }, { shape: [1, 1000, 512] }],
    options: { mode: 'clip', logitScale: clipScale },
    tfjs: clipPeer(clipScale),
  },
  {
    kernel: regionWordSimilarityBackwardKernel,
    label: 'backward: OWL-ViT B/32 768px class head 576 regions x 80 queries x 512, OWL style',
    inputs: [{ shape: [1, 576, 512] }, { shape: [1, 80, 512] }, { shape: [1, 576] }, { shape: [1, 576] }, { shape: [1, 576, 80] }],
    options: { mode: 'owl' },
  },
];
