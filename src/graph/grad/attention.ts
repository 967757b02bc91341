import { attentionBackwardKernel } from '../../kernels/attentionBackward.js';
import type { AttentionOptions } from '../../kernels/attention.js';
import type { GradRule } from './index.js';

/**
 * One attentionBackward node from q, k, v (or the packed qkv), the forward's output and dy; it
 * recomputes the probabilities from per-row statistics. The additive mask has no gradient.
 */
export const attentionGrad: GradRule = ({ g, node, dys, needs, label, notDifferentiable }) => {
  const o = node.options as AttentionOptions;
  const parts = node.inputs.length - (o.mask === 'tensor' ? 1 : 0);
  if (o.mask === 'tensor' && needs[parts]) notDifferentiable(parts, 'the attention mask has no backward rule');
  const mask = o.mask === 'tensor' ? [node.inputs[parts]!] : [];
  const options = { heads: o.heads, scale: o.scale, packed: o.packed, mask: o.mask };
  return g.op(attentionBackwardKernel, [...node.inputs.slice(0, parts), node.outputs[0]!, dys[0]!, ...mask], options, label('attention'));
};
