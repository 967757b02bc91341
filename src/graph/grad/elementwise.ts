import { elementwiseKernel, type ElementwiseOptions } from '../../kernels/elementwise.js';
import type { GradRule } from './index.js';
import { unbroadcast } from './reduce.js';

/**
 * add and mul (broadcast operands get the sum over the broadcast dimensions), scale, cast, and the
 * activations and l2norm through their backward ops (inputs [x, dy]).
 */
export const elementwiseGrad: GradRule = ({ g, node, dys, needs, label, notDifferentiable }) => {
  const o = node.options as ElementwiseOptions;
  const dy = dys[0]!;
  const [x, b] = node.inputs as [(typeof node.inputs)[0], (typeof node.inputs)[0]];
  switch (o.op) {
    case 'add':
      return [needs[0] ? unbroadcast(g, dy, x, label('x')) : undefined, needs[1] ? unbroadcast(g, dy, b, label('b')) : undefined];
    case 'mul':
      return [
        needs[0] ? unbroadcast(g, g.mul(dy, b, label('x')), x, label('x_sum')) : undefined,
        needs[1] ? unbroadcast(g, g.mul(dy, x, label('b')), b, label('b_sum')) : undefined,
      ];
    case 'scale':
      return [g.scale(dy, o.scalar!, label('x'))];
    case 'cast':
      return [g.cast(dy, x.dtype as 'f32' | 'f16', label('x'))];
    case 'gelu':
    case 'quick_gelu':
    case 'l2norm':
      return [g.op(elementwiseKernel, [x, dy], { op: `${o.op}_grad`, eps: o.eps }, label('x'))[0]!];
    default:
      return notDifferentiable(0, `elementwise.${o.op} is itself a backward op`);
  }
};
