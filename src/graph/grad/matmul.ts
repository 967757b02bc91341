import type { MatmulOptions } from '../../kernels/matmul.js';
import type { Value } from '../builder.js';
import type { GradRule } from './index.js';

/**
 * out = act(a·b + bias) + residual. With dz = dy·act'(z): da = dz·bᵀ, db = aᵀ·dz (per batch for a
 * batched b, else over every row of a), dbias = dz summed over rows, dresidual = dy.
 */
export const matmulGrad: GradRule = ({ g, node, dys, needs, label }) => {
  const o = node.options as MatmulOptions;
  const [a, b] = node.inputs as [Value, Value];
  const dy = dys[0]!;
  if ((o.activation ?? 'none') !== 'none') throw new Error(`no backward rule for matmul with activation ${o.activation} yet`);
  const dz = dy;
  const grads: (Value | undefined)[] = [];
  if (needs[0]) grads[0] = g.matmul(dz, b, { transposeB: !o.transposeB }, label('a'));
  if (needs[1]) {
    const swap = (v: Value) => g.transpose(v, [...v.shape.keys()].map((d, _, all) => (d < all.length - 2 ? d : 2 * all.length - 3 - d)), label('transpose'));
    const K = a.shape[a.shape.length - 1]!;
    const N = dz.shape[dz.shape.length - 1]!;
    // A shared b sees every row of a as one [rows, K] matrix; a batched b, one matrix per batch.
    const [a2, dz2] = b.shape.length === 2 ? [g.reshape(a, [-1, K]), g.reshape(dz, [-1, N])] : [a, dz];
    grads[1] = o.transposeB ? g.matmul(swap(dz2), a2, {}, label('b')) : g.matmul(swap(a2), dz2, {}, label('b'));
  }
  let next = 2;
  if (o.hasBias) {
    const at = next++;
    if (needs[at]) grads[at] = g.sum(dz, [...dz.shape.keys()].slice(0, -1), label('bias'));
  }
  if (o.hasResidual && needs[next]) grads[next] = dy;
  return grads;
};
