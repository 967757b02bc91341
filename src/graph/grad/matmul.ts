import { matmulBackwardKernel } from '../../kernels/matmulBackward.js';
import type { MatmulOptions } from '../../kernels/matmul.js';
import type { Value } from '../builder.js';
import type { GradRule } from './index.js';

/**
 * out = act(a·b + bias) + residual: one matmulBackward node for those of da, db, dbias needed (it
 * recomputes the pre-activation); the residual's gradient is dy itself.
 */
export const matmulGrad: GradRule = ({ g, node, dys, needs, label }) => {
  const o = node.options as MatmulOptions;
  const [a, b, ...rest] = node.inputs as Value[];
  const dy = dys[0]!;
  const wrt = { a: needs[0]!, b: needs[1]!, bias: !!o.hasBias && needs[2]! };
  const outs = wrt.a || wrt.b || wrt.bias
    ? g.op(matmulBackwardKernel, [dy, a!, b!, ...(o.hasBias ? [rest[0]!] : [])], { transposeB: o.transposeB, activation: o.activation, hasBias: o.hasBias, wrt }, label('matmul'))
    : [];
  const grads = [wrt.a ? outs.shift() : undefined, wrt.b ? outs.shift() : undefined];
  if (o.hasBias) grads.push(wrt.bias ? outs.shift() : undefined);
  if (o.hasResidual) grads.push(dy);
  return grads;
};
