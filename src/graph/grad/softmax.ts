import { softmaxBackwardKernel } from '../../kernels/softmaxBackward.js';
import { logSoftmaxBackwardKernel } from '../../kernels/losses.js';
import type { GradRule } from './index.js';
import { unbroadcast } from './reduce.js';

/** dx from the saved output y: y ⊙ (dy − Σ y·dy); an additive mask gets dx summed over its broadcast. */
export const softmaxGrad: GradRule = ({ g, node, dys, needs, label }) => {
  const dx = g.op(softmaxBackwardKernel, [node.outputs[0]!, dys[0]!], {}, label('x'))[0]!;
  const mask = node.inputs[1];
  return [dx, mask && needs[1] ? unbroadcast(g, dx, mask, label('mask')) : undefined];
};

/** dx from the saved output y: dy − exp(y)·Σ dy. */
export const logSoftmaxGrad: GradRule = ({ g, node, dys, label }) => [g.op(logSoftmaxBackwardKernel, [node.outputs[0]!, dys[0]!], {}, label('x'))[0]!];
