import { roiAlignBackwardKernel, type RoiAlignOptions } from '../../kernels/roiAlign.js';
import type { GradRule } from './index.js';

/** d features: torchvision's roi_align backward (bilinear weights scattered back); the boxes have none. */
export const roiAlignGrad: GradRule = ({ g, node, dys, needs, label, notDifferentiable }) => {
  const [features, boxes] = node.inputs;
  if (needs[1]) notDifferentiable(1, 'box coordinates have no gradient (as in torchvision)');
  const options = { ...(node.options as RoiAlignOptions), featuresShape: features!.shape };
  return [g.op(roiAlignBackwardKernel, [dys[0]!, boxes!], options, label('features'))[0]!];
};
