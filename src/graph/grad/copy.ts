import { sizeOf } from '../../dtype.js';
import { contiguousStrides, padKernel, type StridedView } from '../../kernels/copy.js';
import type { GradRule } from './index.js';

/**
 * The strided copies the builder makes: a permutation of the source (transpose: copy back with the
 * inverse permutation) or a window with the source's own strides (slice: pad with zeros).
 */
export const stridedCopyGrad: GradRule = ({ g, node, dys, label, notDifferentiable }) => {
  const view = node.options as StridedView;
  const x = node.inputs[0]!;
  const dy = dys[0]!;
  const rank = view.shape.length;
  // Transpose: the view's dimensions, ordered by decreasing stride, lay the source out contiguously.
  const order = [...view.shape.keys()].sort((p, q) => view.strides[q]! - view.strides[p]!);
  const permuted = order.map((d) => view.shape[d]!);
  if (view.offset === 0 && sizeOf(view.shape) === sizeOf(x.shape) && contiguousStrides(permuted).every((s, i) => permuted[i]! <= 1 || s === view.strides[order[i]!])) {
    return [g.reshape(g.transpose(dy, order, label('x')), x.shape)];
  }
  const strides = contiguousStrides(x.shape);
  if (rank === x.shape.length && view.strides.every((s, d) => s === strides[d] || view.shape[d]! <= 1)) {
    // Slice: the offset splits into per-axis starts (mixed radix over the source's strides).
    let rest = view.offset;
    const starts = strides.map((s) => {
      const k = Math.floor(rest / s);
      rest -= k * s;
      return k;
    });
    return [g.op(padKernel, [dy], { shape: x.shape, starts }, label('x'))[0]!];
  }
  return notDifferentiable(0, 'a strided copy that is neither a transpose nor a slice has no backward rule');
};

/** Each input's gradient is its window of dy along the axis. */
export const concatGrad: GradRule = ({ g, node, dys, needs, label }) => {
  const axis = (node.options as { axis: number }).axis;
  const dy = dys[0]!;
  let at = 0;
  return node.inputs.map((x, i) => {
    const starts = dy.shape.map((_, d) => (d === axis ? at : 0));
    at += x.shape[axis]!;
    return needs[i] ? g.slice(dy, starts, dy.shape.map((n, d) => (d === axis ? at : n)), label(`x${i}`)) : undefined;
  });
};
