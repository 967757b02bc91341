import { GpuError } from '../../gpu/errors.js';
import { regionWordSimilarityBackwardKernel, type RegionWordSimilarityOptions } from '../../kernels/regionWordSimilarity.js';
import type { GradRule } from './index.js';

/** d regions, d words (and d shift, d scale for OWL-ViT style) from the logits' gradient; top-k outputs have none. */
export const regionWordSimilarityGrad: GradRule = ({ g, node, dys, label }) => {
  if (dys[1] || dys[2]) throw new GpuError('graph gradients', `node ${node.label} (regionWordSimilarity): its top-k values and indices are not differentiable; differentiate the logits`);
  const options = { ...(node.options as RegionWordSimilarityOptions), topK: undefined };
  return g.op(regionWordSimilarityBackwardKernel, [...node.inputs, dys[0]!], options, label('regionWordSimilarity'));
};
