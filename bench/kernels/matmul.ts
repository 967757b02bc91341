// Matmul at the shapes of CLIP ViT-B/32 (50 tokens, width 768, MLP 3072; batch 1 and 8) and of
// OWL-ViT B/32 at 768 px (577 tokens). Weights are PyTorch Linear [out, in] (transposeB), with the
// epilogue each layer fuses (the projections of pooled tokens, M = 1 and 8, with a bias here); the TF.js peer computes the same with fused.matMul and elementwise ops.
import type { KernelBenchCase } from '../types.js';
import { matmulKernel, type MatmulActivation, type MatmulOptions } from '../../src/kernels/matmul.js';

interface Layer {
  name: string;
  K: number;
  N: number;
  activation?: MatmulActivation;
  residual?: boolean;
}

const LAYERS: Layer[] = [
  { name: 'attn qkv', K: 768, N: 2304 },
  { name: 'attn out-proj +residual', K: 768, N: 768, residual: true },
  { name: 'MLP fc1 +quick_gelu', K: 768, N: 3072, activation: 'quick_gelu' },
  { name: 'MLP fc2 +residual', K: 3072, N: 768, residual: true },
];

/** TF.js: a [..., K] flattened to 2-D, fused matmul + bias (it has no GELU), then the rest. */
function tfjsLinear(K: number, activation: MatmulActivation) {
  return (tf: any, [a, b, bias, residual]: any[]) => {
    let y = tf.fused.matMul({ a: tf.reshape(a, [-1, K]), b, transposeB: true, bias });
    if (activation === 'quick_gelu') y = tf.mul(y, tf.sigmoid(tf.mul(y, 1.702)));
    if (residual) y = tf.add(y, tf.reshape(residual, y.shape));
    return y;
  };
}

/** A layer applied to `rows` tokens of `batch` images: a is [batch, rows, K]. */
function linearCase(label: string, [batch, rows]: [number, number], layer: Layer): KernelBenchCase<MatmulOptions> {
  const { K, N, activation = 'none', residual = false } = layer;
  const aShape = [batch, rows, K];
  const out = [batch, rows, N];
  return {
    kernel: matmulKernel,
    label: `${label} ${layer.name} ${batch * rows}x${K}x${N}`,
    inputs: [{ shape: aShape }, { shape: [N, K] }, { shape: [N] }, ...(residual ? [{ shape: out }] : [])],
    options: { transposeB: true, hasBias: true, activation, hasResidual: residual },
    tfjs: tfjsLinear(K, activation),
  };
}

/** Small-M products: the pooled-token projections (image: 1 or 8 class tokens, 768 → 512). */
const PROJECTION: Layer = { name: 'visual projection', K: 768, N: 512 };

export const cases: KernelBenchCase<MatmulOptions>[] = [
  linearCase('CLIP B/32 b1', [1, 1], PROJECTION),
  linearCase('CLIP B/32 b8', [8, 1], PROJECTION),
  ...LAYERS.map((layer) => linearCase('CLIP B/32 b1', [1, 50], layer)),
  ...LAYERS.map((layer) => linearCase('CLIP B/32 b8', [8, 50], layer)),
  linearCase('OWL-ViT B/32 768px', [1, 577], LAYERS[2]!),
  {
    kernel: matmulKernel,
    label: 'plain 50x768x3072, b as [K, N]',
    inputs: [{ shape: [50, 768] }, { shape: [768, 3072] }],
    options: {},
    tfjs: (tf: any, [a, b]: any[]) => tf.matMul(a, b),
  },
];
