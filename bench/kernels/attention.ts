// Fused attention at the shapes CLIP ViT-B/32 and B/16, CLIP's text tower and OWL-ViT B/32 (768 px) run.
// The TF.js peer is the four-op attention (matMul q·kᵀ, mul scale, softmax, matMul ·v) on
// [B·H, L, Dh] tensors; it also pays for splitting heads out of the [B, L, H·Dh] rows (two
// transposes in, one out), which the fused kernel does by indexing.
// The "ours unfused" rows run the same four steps with our kernels on already split [B·H, L, Dh]
// q/k/v (scale q, batched matmul q·kᵀ, softmax, batched matmul ·v), against TF.js doing the same
// on the same split tensors: fused vs unfused in one run.
import { attentionKernel, type AttentionOptions } from '../../src/kernels/attention.js';
import { elementwiseKernel } from '../../src/kernels/elementwise.js';
import { matmulKernel } from '../../src/kernels/matmul.js';
import { softmaxKernel } from '../../src/kernels/softmax.js';
import { sequenceKernel } from '../sequence.js';
import type { KernelBenchCase, TfjsPeer } from '../types.js';

function tfjsAttention(heads: number, causal: boolean): TfjsPeer {
  return (tf, inputs) =>
    tf.tidy(() => {
      const [B, L, width] = inputs[0].shape as number[];
      const parts = inputs.length === 1 ? tf.split(inputs[0], 3, 2) : inputs;
      const D = (inputs.length === 1 ? width! / 3 : width!) / heads;
      const split = (x: any) => tf.reshape(tf.transpose(tf.reshape(x, [B, L, heads, D]), [0, 2, 1, 3]), [B! * heads, L, D]);
      const [q, k, v] = parts.map(split);
      let logits = tf.mul(tf.matMul(q, k, false, true), D ** -0.5);
      if (causal) {
        const keep = tf.linalg.bandPart(tf.ones([L, L]), -1, 0);
        logits = tf.add(logits, tf.mul(tf.sub(1, keep), -1e9));
      }
      const out = tf.matMul(tf.softmax(logits), v);
      return tf.reshape(tf.transpose(tf.reshape(out, [B, heads, L, D]), [0, 2, 1, 3]), [B, L, heads * D]);
    });
}

function packedCase(label: string, batch: number, tokens: number, heads: number, causal = false): KernelBenchCase<AttentionOptions> {
  return {
    kernel: attentionKernel,
    label,
    inputs: [{ shape: [batch, tokens, 3 * heads * 64] }],
    options: { heads, packed: true, mask: causal ? 'causal' : 'none' },
    tfjs: tfjsAttention(heads, causal),
  };
}

const DH = 64;

/** softmax(q·kᵀ·Dh^-0.5)·v on split [B·H, L, Dh] q, k, v, as separate kernels (inputs [q, k, v]). */
const unfusedAttention = sequenceKernel('attention', [
  // Scaling q (B·H·L·Dh elements) costs less than scaling the logits (B·H·L·L) when L > Dh.
  { kernel: elementwiseKernel, inputs: [0], options: { op: 'scale', scalar: DH ** -0.5 } },
  { kernel: matmulKernel, inputs: [{ step: 0 }, 1], options: { transposeB: true } },
  { kernel: softmaxKernel, inputs: [{ step: 1 }], options: {} },
  { kernel: matmulKernel, inputs: [{ step: 2 }, 2], options: {} },
]);

function unfusedCase(label: string, batch: number, tokens: number, heads: number): KernelBenchCase {
  const shape = [batch * heads, tokens, DH];
  return {
    kernel: unfusedAttention,
    label: `${label} ours unfused (matmul → softmax → matmul), split q/k/v [${shape.join(', ')}]`,
    inputs: [{ shape }, { shape }, { shape }],
    options: {},
    tfjs: (tf, [q, k, v]) => tf.tidy(() => tf.matMul(tf.softmax(tf.matMul(tf.mul(q, DH ** -0.5), k, false, true)), v)),
  };
}

export const cases: KernelBenchCase[] = [
  packedCase('CLIP B/32 b1 attention, packed qkv, 50 tokens, 12 heads of 64', 1, 50, 12),
  packedCase('CLIP B/32 b8 attention, packed qkv, 50 tokens, 12 heads of 64', 8, 50, 12),
  packedCase('CLIP B/16 b1 attention, packed qkv, 197 tokens, 12 heads of 64', 1, 197, 12),
  {
    kernel: attentionKernel,
    label: 'CLIP B/32 b8 attention, separate q/k/v, 50 tokens, 12 heads of 64',
    inputs: [{ shape: [8, 50, 768] }, { shape: [8, 50, 768] }, { shape: [8, 50, 768] }],
    options: { heads: 12 },
    tfjs: tfjsAttention(12, false),
  },
  unfusedCase('CLIP B/32 b8 attention,', 8, 50, 12),
  packedCase('CLIP text b8 attention, causal, packed qkv, 77 tokens, 8 heads of 64', 8, 77, 8, true),
  packedCase('OWL-ViT B/32 768px attention, packed qkv, 577 tokens, 12 heads of 64', 1, 577, 12),
  unfusedCase('OWL-ViT B/32 768px attention,', 1, 577, 12),
  packedCase('OWLv2 B/16 960px attention, packed qkv, 3601 tokens, 12 heads of 64', 1, 3601, 12),
];
