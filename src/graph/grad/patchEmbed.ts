import { patchEmbedBackwardKernel, type PatchEmbedOptions } from '../../kernels/patchEmbed.js';
import type { GradRule } from './index.js';

/** One patchEmbedBackward node: d pixels, d weight, d class and position embeddings. */
export const patchEmbedGrad: GradRule = ({ g, node, dys, label }) => {
  const [pixels, weight] = node.inputs;
  return g.op(patchEmbedBackwardKernel, [pixels!, weight!, dys[0]!], node.options as PatchEmbedOptions, label('patchEmbed'));
};
