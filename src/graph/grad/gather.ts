import { gatherBackwardKernel } from '../../kernels/gather.js';
import type { GradRule } from './index.js';

/** d table: dy's rows scatter-added at the indices (repeated indices accumulate); the i32 indices have none. */
export const gatherGrad: GradRule = ({ g, node, dys, label }) => {
  const [table, indices] = node.inputs;
  return [g.op(gatherBackwardKernel, [indices!, dys[0]!], { rows: table!.shape[0]! }, label('table'))[0]!];
};
