import { sizeOf } from '../../dtype.js';
import { binaryCrossEntropyWithLogitsBackwardKernel, crossEntropyBackwardKernel, type CrossEntropyOptions } from '../../kernels/losses.js';
import type { GradRule } from './index.js';

/** d logits = dLoss·(softmax(logits) − onehot(labels)) / (rows not ignored); the i32 labels have none. */
export const crossEntropyGrad: GradRule = ({ g, node, dys, label }) => [g.op(crossEntropyBackwardKernel, [...node.inputs, dys[0]!], node.options as CrossEntropyOptions, label('logits'))[0]!];

/** d logits = dLoss·(sigmoid(logits) − targets) / count; d targets = −dLoss·logits / count. */
export const binaryCrossEntropyWithLogitsGrad: GradRule = ({ g, node, dys, needs, label }) => {
  const [logits, targets] = node.inputs as [(typeof node.inputs)[0], (typeof node.inputs)[0]];
  const dLoss = dys[0]!;
  return [
    needs[0] ? g.op(binaryCrossEntropyWithLogitsBackwardKernel, [logits, targets, dLoss], {}, label('logits'))[0]! : undefined,
    needs[1] ? g.scale(g.mul(logits, dLoss, label('targets')), -1 / sizeOf(logits.shape), label('targets_mean')) : undefined,
  ];
};
