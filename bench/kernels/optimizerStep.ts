// Optimizer updates (in place) over a CLIP ViT-B/32 MLP weight (3072x768) and a CoOp context
// (4x512). Inputs per parameter as optimizerInputNames; TF.js peer: the same formulas with ops
// (returning new tensors, as TF.js cannot update in place).
import type { KernelBenchCase } from '../types.js';
import { optimizerStepKernel, type OptimizerUpdate } from '../../src/kernels/optimizerStep.js';

const ADAM: OptimizerUpdate = { kind: 'adam', lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, decoupled: false };
const SGD: OptimizerUpdate = { kind: 'sgd', lr: 0.1, momentum: 0.9, dampening: 0, nesterov: false, weightDecay: 0 };

function tfjsAdam(tf: any, [p, g, m, v]: any[]) {
  return tf.tidy(() => {
    const m1 = tf.add(tf.mul(m, 0.9), tf.mul(g, 0.1));
    const v1 = tf.add(tf.mul(v, 0.999), tf.mul(tf.square(g), 0.001));
    return [tf.sub(p, tf.mul(tf.div(m1, tf.add(tf.div(tf.sqrt(v1), Math.sqrt(1 - 0.999)), 1e-8)), 1e-3 / (1 - 0.9))), m1, v1];
  });
}

function tfjsSgd(tf: any, [p, g, buf]: any[]) {
  return tf.tidy(() => {
    const b = tf.add(tf.mul(buf, 0.9), g);
    return [tf.sub(p, tf.mul(b, 0.1)), b];
  });
}

function updateCase(label: string, update: OptimizerUpdate, shape: number[]): KernelBenchCase<OptimizerUpdate> {
  const state = update.kind === 'adam' ? [{ shape }, { shape }] : [{ shape }];
  // Step 1 so that the momentum buffer takes the decaying path every repetition.
  const step = { shape: [1], dtype: 'i32' as const, data: [1] };
  return {
    kernel: optimizerStepKernel,
    label: `${label} ${update.kind} update ${shape.join('x')}`,
    inputs: [{ shape }, { shape }, ...(update.kind === 'adam' ? [...state, step] : [...state, step])],
    options: update,
    tfjs: update.kind === 'adam' ? tfjsAdam : tfjsSgd,
  };
}

export const cases: KernelBenchCase<OptimizerUpdate>[] = [
  updateCase('CLIP B/32 MLP weight', ADAM, [3072, 768]),
  updateCase('CLIP B/32 MLP weight', SGD, [3072, 768]),
  updateCase('CoOp context', ADAM, [4, 512]),
];
