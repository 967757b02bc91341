// Matmul backward (da, dW, dbias; through the fused activation) at CLIP ViT-B/32 b8 shapes
// (400 tokens, width 768, MLP 3072). The TF.js peer computes the same gradients with matMul
// and elementwise ops (recomputing the pre-activation for quick_gelu, as we do).
import type { KernelBenchCase } from '../types.js';
import { matmulBackwardKernel, type MatmulBackwardOptions } from '../../src/kernels/matmulBackward.js';
import type { MatmulActivation } from '../../src/kernels/matmul.js';

function tfjsLinearBackward(K: number, activation: MatmulActivation) {
  return (tf: any, [dOut, a, w, bias]: any[]) => {
    const x = tf.reshape(a, [-1, K]);
    let dz = tf.reshape(dOut, [x.shape[0], -1]);
    if (activation === 'quick_gelu') {
      const z = tf.fused.matMul({ a: x, b: w, transposeB: true, bias });
      const s = tf.sigmoid(tf.mul(z, 1.702));
      dz = tf.mul(dz, tf.add(s, tf.mul(tf.mul(tf.mul(z, 1.702), s), tf.sub(1, s))));
    }
    return [tf.matMul(dz, w), tf.matMul(dz, x, true, false), tf.sum(dz, 0)];
  };
}

function linearBackwardCase(name: string, K: number, N: number, activation: MatmulActivation = 'none'): KernelBenchCase<MatmulBackwardOptions> {
  const rows = 400;
  return {
    kernel: matmulBackwardKernel,
    label: `CLIP B/32 b8 ${name} backward (da, dW, dbias) ${rows}x${K}x${N}`,
    inputs: [{ shape: [8, 50, N] }, { shape: [8, 50, K] }, { shape: [N, K] }, { shape: [N] }],
    options: { transposeB: true, hasBias: true, activation },
    tfjs: tfjsLinearBackward(K, activation),
  };
}

export const cases: KernelBenchCase<MatmulBackwardOptions>[] = [
  linearBackwardCase('attn qkv', 768, 2304),
  linearBackwardCase('MLP fc1 +quick_gelu', 768, 3072, 'quick_gelu'),
  linearBackwardCase('MLP fc2', 3072, 768),
];
