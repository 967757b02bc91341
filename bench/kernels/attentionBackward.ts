// Attention backward (dq, dk, dv) at L = 50 (CLIP ViT-B/32, batch 8), 197 (ViT-B/16) and 577
// (OWL-ViT B/32 at 768 px), 12 heads of 64; inputs [q, k, v, out, dOut] as [B, L, 768]. The TF.js
// peer recomputes the probabilities with matMul + softmax on split heads and forms the same
// products (it materialises [B·H, L, L], which the fused kernel never does).
import type { KernelBenchCase } from '../types.js';
import { attentionBackwardKernel, type AttentionBackwardOptions } from '../../src/kernels/attentionBackward.js';

const HEADS = 12;
const DH = 64;

function tfjsAttentionBackward(tf: any, inputs: any[]) {
  return tf.tidy(() => {
    const [B, L] = inputs[0].shape as number[];
    const split = (x: any) => tf.reshape(tf.transpose(tf.reshape(x, [B, L, HEADS, DH]), [0, 2, 1, 3]), [B! * HEADS, L, DH]);
    const merge = (x: any) => tf.reshape(tf.transpose(tf.reshape(x, [B, HEADS, L, DH]), [0, 2, 1, 3]), [B, L, HEADS * DH]);
    const [q, k, v, , dO] = inputs.map(split);
    const scale = DH ** -0.5;
    const P = tf.softmax(tf.mul(tf.matMul(q, k, false, true), scale));
    const dP = tf.matMul(dO, v, false, true);
    const dS = tf.mul(P, tf.sub(dP, tf.sum(tf.mul(P, dP), -1, true)));
    return [merge(tf.mul(tf.matMul(dS, k), scale)), merge(tf.mul(tf.matMul(dS, q, true, false), scale)), merge(tf.matMul(P, dO, true, false))];
  });
}

function backwardCase(label: string, batch: number, tokens: number): KernelBenchCase<AttentionBackwardOptions> {
  const shape = [batch, tokens, HEADS * DH];
  return {
    kernel: attentionBackwardKernel,
    label: `${label} attention backward (dq, dk, dv), ${tokens} tokens, ${HEADS} heads of ${DH}`,
    inputs: [{ shape }, { shape }, { shape }, { shape }, { shape }],
    options: { heads: HEADS },
    tfjs: tfjsAttentionBackward,
  };
}

export const cases: KernelBenchCase<AttentionBackwardOptions>[] = [
  backwardCase('CLIP B/32 b8', 8, 50),
  backwardCase('ViT-B/16 b1', 1, 197),
  backwardCase('OWL-ViT B/32 768px b1', 1, 577),
];
