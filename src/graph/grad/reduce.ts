import { expandView, stridedCopyKernel } from '../../kernels/copy.js';
import { broadcastAxes, normalizeAxes, type ReduceOptions } from '../../kernels/reduce.js';
import type { GraphBuilder, Value } from '../builder.js';
import type { GradRule } from './index.js';

/** dy summed down to `target`'s shape over the axes a numpy-style broadcast expanded: the gradient of a broadcast operand. */
export function unbroadcast(g: GraphBuilder, dy: Value, target: Value, label: string): Value {
  const axes = broadcastAxes(target.shape, dy.shape);
  return axes.length === 0 ? dy : g.reshape(g.sum(dy, axes, label), target.shape);
}

/** sum: dy copied back over the reduced axes; mean: the same divided by their size. */
export const reduceGrad: GradRule = ({ g, node, dys, label }) => {
  const o = node.options as ReduceOptions;
  const x = node.inputs[0]!;
  const axes = new Set(normalizeAxes(o.axes, x.shape.length));
  const kept = x.shape.map((n, d) => (axes.has(d) ? 1 : n));
  let dx = g.op(stridedCopyKernel, [g.reshape(dys[0]!, kept)], expandView(kept, x.shape), label('x'))[0]!;
  if (o.op === 'mean') dx = g.scale(dx, kept.reduce((a, b) => a * b, 1) / x.shape.reduce((a, b) => a * b, 1), label('x_mean'));
  return [dx];
};
