import { layerNormBackwardKernel } from '../../kernels/layerNormBackward.js';
import type { LayerNormOptions } from '../../kernels/layerNorm.js';
import type { Value } from '../builder.js';
import type { GradRule } from './index.js';

/**
 * layerNorm(x) and addLayerNorm (out = layerNorm(s), s = x + residual, both outputs): one
 * layerNormBackward node from the normalised input (statistics recomputed), adding the gradient of
 * s when it has one; x and residual share dx.
 */
export const layerNormGrad: GradRule = ({ g, node, dys, needs, label }) => {
  const o = node.options as LayerNormOptions;
  const [x, weight] = node.inputs as [Value, Value];
  const [dOut, dSum] = dys;
  const wantX = needs[0]! || (!!o.residual && needs[3]!);
  const wantParams = needs[1]! || needs[2]!;
  // Only the sum output of addLayerNorm has a gradient: it passes straight to x and residual.
  if (!dOut) return [dSum, undefined, undefined, dSum];
  const normalised = o.residual ? node.outputs[1]! : x;
  const outs = [...g.op(layerNormBackwardKernel, [normalised, weight, dOut, ...(dSum ? [dSum] : [])], { eps: o.eps, hasSumGrad: !!dSum, wrt: { x: wantX, params: wantParams } }, label('layerNorm'))];
  const dx = wantX ? outs.shift() : undefined;
  const [dweight, dbias] = wantParams ? outs : [];
  return [dx, dweight, dbias, dx];
};
