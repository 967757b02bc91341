// Box ops at OWL-ViT B/32 768 px: 576 predicted boxes per image (24×24 patches), pairwise IoU
// of 1000 × 1000 boxes. TF.js has no pairwise IoU op: the peer builds it from broadcast ops.
import { boxesKernel, type BoxesOptions } from '../../src/kernels/boxes.js';
import type { KernelBenchCase, TfjsPeer } from '../types.js';
import { rng } from '../../test/util/random.js';

function xyxy(n: number, seed: number): number[] {
  const r = rng(seed);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = r() * 700;
    const y = r() * 700;
    out.push(x, y, x + r() * 300, y + r() * 300);
  }
  return out;
}

const iouPeer: TfjsPeer = (tf, [a, b]) =>
  tf.tidy(() => {
    const [ax1, ay1, ax2, ay2] = tf.split(a, 4, 1); // [N, 1] each
    const [bx1, by1, bx2, by2] = tf.split(tf.transpose(b), 4, 0); // [1, M] each
    const w = tf.relu(tf.sub(tf.minimum(ax2, bx2), tf.maximum(ax1, bx1)));
    const h = tf.relu(tf.sub(tf.minimum(ay2, by2), tf.maximum(ay1, by1)));
    const inter = tf.mul(w, h);
    const areaA = tf.mul(tf.sub(ax2, ax1), tf.sub(ay2, ay1));
    const areaB = tf.mul(tf.sub(bx2, bx1), tf.sub(by2, by1));
    return tf.div(inter, tf.sub(tf.add(areaA, areaB), inter));
  });

export const cases: KernelBenchCase<BoxesOptions>[] = [
  { kernel: boxesKernel, label: 'pairwise IoU 1000 x 1000', inputs: [{ shape: [1000, 4], data: xyxy(1000, 1) }, { shape: [1000, 4], data: xyxy(1000, 2) }], options: { op: 'iou' }, tfjs: iouPeer },
  { kernel: boxesKernel, label: 'pairwise GIoU 1000 x 1000', inputs: [{ shape: [1000, 4], data: xyxy(1000, 1) }, { shape: [1000, 4], data: xyxy(1000, 2) }], options: { op: 'giou' } },
  { kernel: boxesKernel, label: 'OWL-ViT B/32 768px box bias 24x24', inputs: [], options: { op: 'owl_bias', gridSize: 24 } },
  { kernel: boxesKernel, label: 'OWL-ViT B/32 768px decode b8 8x576 boxes', inputs: [{ shape: [8, 576, 4] }, { shape: [576, 4] }], options: { op: 'decode' } },
  { kernel: boxesKernel, label: 'OWL-ViT B/32 768px cxcywh→xyxy b8 8x576 boxes', inputs: [{ shape: [8, 576, 4] }], options: { op: 'cxcywh_to_xyxy' } },
  { kernel: boxesKernel, label: 'OWL-ViT B/32 768px scale to pixels b8 8x576 boxes', inputs: [{ shape: [8, 576, 4] }, { shape: [8, 2], data: new Array<number>(8).fill(0).flatMap(() => [480, 640]) }], options: { op: 'scale' } },
];
