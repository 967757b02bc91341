import type { GraphBuilder, Value } from '../builder.js';

/**
 * dy summed down to `target`'s shape over the dimensions a numpy-style broadcast expanded
 * (leading ones, and dimensions of size 1 in target): the gradient of a broadcast operand.
 */
export function unbroadcast(g: GraphBuilder, dy: Value, target: Value, label: string): Value {
  const lead = dy.shape.length - target.shape.length;
  const axes = dy.shape.map((_, d) => d).filter((d) => d < lead || (target.shape[d - lead] === 1 && dy.shape[d] !== 1));
  return axes.length === 0 ? dy : g.reshape(g.sum(dy, axes, label), target.shape);
}
