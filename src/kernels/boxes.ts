import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { shapeString, sizeOf } from '../dtype.js';
import { Tensor } from '../tensor.js';
import { grid1d, uniforms, type Kernel, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import boxesWgsl from '../../shaders/boxes.wgsl';

/**
 * Box ops. Boxes are f32 rows of 4: xyxy = (x1, y1, x2, y2), cxcywh = (cx, cy, w, h).
 * - `cxcywh_to_xyxy`, `xyxy_to_cxcywh`: [..., 4] → [..., 4]
 * - `decode`: sigmoid(head + bias), head [..., P, 4], bias [P, 4] (any trailing part of head's shape)
 * - `scale`: normalised boxes [B, N, 4] times each image's (w, h, w, h); sizes [B, 2] as (h, w)
 * - `iou`, `giou`: a [N, 4], b [M, 4] (xyxy) → [N, M]
 * - `owl_bias`: no inputs; OWL-ViT's box bias for a `gridSize`² patch grid → [g·g, 4]
 */
export type BoxOp = 'cxcywh_to_xyxy' | 'xyxy_to_cxcywh' | 'decode' | 'scale' | 'iou' | 'giou' | 'owl_bias';

export interface BoxesOptions {
  op: BoxOp;
  /** Patches per side, for 'owl_bias'. */
  gridSize?: number;
}

const NAME = 'boxes';
const WG = 64;
const ENTRY: Record<BoxOp, { entryPoint: string; OP: number; inputs: number }> = {
  cxcywh_to_xyxy: { entryPoint: 'convert', OP: 0, inputs: 1 },
  xyxy_to_cxcywh: { entryPoint: 'convert', OP: 1, inputs: 1 },
  decode: { entryPoint: 'convert', OP: 2, inputs: 2 },
  scale: { entryPoint: 'convert', OP: 3, inputs: 2 },
  iou: { entryPoint: 'pairwise', OP: 0, inputs: 2 },
  giou: { entryPoint: 'pairwise', OP: 1, inputs: 2 },
  owl_bias: { entryPoint: 'box_bias', OP: 0, inputs: 0 },
};

function checkBoxes(op: string, name: string, t: TensorInfo | undefined, rank?: number): asserts t {
  check(t, op, `missing input ${name}`);
  check(t.dtype === 'f32', op, `${name} must be f32, got ${t.dtype}`);
  const want = rank === 2 ? '[N, 4]' : rank === 3 ? '[B, N, 4]' : '[..., 4]';
  check(
    t.shape.length >= 1 && t.shape[t.shape.length - 1] === 4 && (rank === undefined || t.shape.length === rank),
    op,
    () => `${name} of shape ${shapeString(t.shape)} must be ${want}`,
  );
}

/** The box ops of `BoxOp`, one small dispatch each. */
export const boxesKernel: Kernel<BoxesOptions> = {
  name: NAME,
  outputs(inputs, o) {
    check(o && Object.hasOwn(ENTRY, o.op), NAME, () => `unknown op ${JSON.stringify(o?.op)}; expected one of ${Object.keys(ENTRY).join(', ')}`);
    const op = `${NAME}.${o.op}`;
    const want = ENTRY[o.op].inputs;
    check(inputs.length === want, op, `expected ${want} inputs, got ${inputs.length}`);
    const [a, b] = inputs;
    switch (o.op) {
      case 'owl_bias': {
        const g = o.gridSize;
        check(Number.isInteger(g) && g! > 0, op, `gridSize must be a positive integer, got ${g}`);
        return [{ shape: [g! * g!, 4], dtype: 'f32' }];
      }
      case 'iou':
      case 'giou':
        checkBoxes(op, 'a', a, 2);
        checkBoxes(op, 'b', b, 2);
        return [{ shape: [a.shape[0]!, b.shape[0]!], dtype: 'f32' }];
      case 'scale': {
        checkBoxes(op, 'boxes', a, 3);
        check(b, op, 'missing input sizes');
        check(b.dtype === 'f32', op, `sizes must be f32, got ${b.dtype}`);
        check(
          b.shape.length === 2 && b.shape[0] === a.shape[0] && b.shape[1] === 2,
          op,
          () => `sizes of shape ${shapeString(b.shape)} must be [${a.shape[0]}, 2] (one (h, w) per image of boxes ${shapeString(a.shape)})`,
        );
        return [{ shape: a.shape, dtype: 'f32' }];
      }
      case 'decode': {
        checkBoxes(op, 'head', a);
        checkBoxes(op, 'bias', b);
        const suffix = a.shape.slice(a.shape.length - b.shape.length);
        check(
          b.shape.length <= a.shape.length && suffix.every((d, i) => d === b.shape[i]) && sizeOf(b.shape) > 0,
          op,
          () => `bias of shape ${shapeString(b.shape)} must equal a trailing part of head's shape ${shapeString(a.shape)}`,
        );
        return [{ shape: a.shape, dtype: 'f32' }];
      }
      default:
        checkBoxes(op, 'boxes', a);
        return [{ shape: a.shape, dtype: 'f32' }];
    }
  },
  plan(gpu, inputs, outputs, o) {
    const { entryPoint, OP } = ENTRY[o.op];
    const out = outputs[0]!;
    const pairwise = entryPoint === 'pairwise';
    const count = pairwise ? sizeOf(out.shape) : sizeOf(out.shape) / 4;
    // n: M for pairwise, g for the bias, boxes per image for scale, bias boxes for decode.
    const n =
      o.op === 'owl_bias' ? o.gridSize! : pairwise ? out.shape[1]! : o.op === 'scale' ? inputs[0]!.shape[1]! : o.op === 'decode' ? sizeOf(inputs[1]!.shape) / 4 : 1;
    const program = { name: `${NAME}.${o.op}`, key: 'f32', code: boxesWgsl, entryPoint, constants: { OP, WG } };
    const last = inputs.length; // the output's index in [...inputs, ...outputs]
    const dispatch =
      inputs.length === 0
        ? { program: { ...program, bindings: ['write'] as const }, tensors: [0] }
        : { program: { ...program, bindings: ['write', 'read', 'read'] as const }, tensors: [last, 0, inputs.length > 1 ? 1 : 0] };
    const flops = pairwise ? 17 * count : 4 * count;
    return {
      // Nothing to do (and nothing bindable) for empty inputs.
      dispatches: count === 0 ? [] : [{ ...dispatch, uniforms: uniforms(count, n), workgroups: grid1d(gpu, count, WG) }],
      flops,
      bytes: 4 * (sizeOf(out.shape) + inputs.reduce((s, t) => s + sizeOf(t.shape), 0)),
    };
  },
};

async function run(gpu: Gpu, inputs: Tensor[], options: BoxesOptions): Promise<Tensor> {
  return (await runKernel(gpu, boxesKernel, inputs, options))[0]!;
}

/**
 * Eager box ops, `kernels.boxes.*`. Every function takes and returns f32 `Tensor`s.
 */
export const boxes = {
  /** (cx, cy, w, h) → (x1, y1, x2, y2), over [..., 4]. */
  cxcywhToXyxy: (gpu: Gpu, x: Tensor) => run(gpu, [x], { op: 'cxcywh_to_xyxy' }),
  /** (x1, y1, x2, y2) → (cx, cy, w, h), over [..., 4]. */
  xyxyToCxcywh: (gpu: Gpu, x: Tensor) => run(gpu, [x], { op: 'xyxy_to_cxcywh' }),
  /**
   * Normalised boxes [B, N, 4] to pixels: x · w and y · h of each image. `sizes` is [B, 2] as
   * (h, w) (HF's `target_sizes`), a Tensor or host numbers.
   */
  async scale(gpu: Gpu, x: Tensor, sizes: Tensor | ArrayLike<number>): Promise<Tensor> {
    if (sizes instanceof Tensor) return run(gpu, [x, sizes], { op: 'scale' });
    check(sizes.length % 2 === 0, `${NAME}.scale`, () => `sizes must hold (h, w) pairs, got ${sizes.length} numbers`);
    const t = Tensor.from(gpu, Float32Array.from(sizes), [sizes.length / 2, 2]);
    try {
      return await run(gpu, [x, t], { op: 'scale' });
    } finally {
      t.dispose();
    }
  },
  /** OWL-ViT's box bias for a g×g patch grid: [g·g, 4] inverse-sigmoid (cx, cy, w, h), row-major over patches. */
  owlBoxBias: (gpu: Gpu, gridSize: number) => run(gpu, [], { op: 'owl_bias', gridSize }),
  /** sigmoid(head + bias): OWL-ViT's predicted cxcywh boxes from the box head's output. */
  decode: (gpu: Gpu, head: Tensor, bias: Tensor) => run(gpu, [head, bias], { op: 'decode' }),
  /** Pairwise IoU of xyxy boxes a [N, 4] and b [M, 4] → [N, M]; 0 where the union is 0. */
  iou: (gpu: Gpu, a: Tensor, b: Tensor) => run(gpu, [a, b], { op: 'iou' }),
  /** Pairwise generalized IoU (torchvision's generalized_box_iou) → [N, M]; 0/0 terms are 0. */
  giou: (gpu: Gpu, a: Tensor, b: Tensor) => run(gpu, [a, b], { op: 'giou' }),
};

// ---- CPU references (tests only): float64, one box at a time ----

function mapBoxes(x: ArrayLike<number>, f: (b: number[], i: number) => number[]): Float64Array {
  const y = new Float64Array(x.length);
  for (let i = 0; i * 4 < x.length; i++) y.set(f([x[4 * i]!, x[4 * i + 1]!, x[4 * i + 2]!, x[4 * i + 3]!], i), 4 * i);
  return y;
}

export const cxcywhToXyxyReference = (x: ArrayLike<number>) =>
  mapBoxes(x, ([cx, cy, w, h]) => [cx! - w! / 2, cy! - h! / 2, cx! + w! / 2, cy! + h! / 2]);

export const xyxyToCxcywhReference = (x: ArrayLike<number>) =>
  mapBoxes(x, ([x1, y1, x2, y2]) => [(x1! + x2!) / 2, (y1! + y2!) / 2, x2! - x1!, y2! - y1!]);

/** boxes [B, N, 4] (N per image) times (w, h, w, h) from sizes [B, 2] = (h, w). */
export const scaleBoxesReference = (x: ArrayLike<number>, perImage: number, sizes: ArrayLike<number>) =>
  mapBoxes(x, (b, i) => {
    const k = Math.floor(i / perImage);
    const [h, w] = [sizes[2 * k]!, sizes[2 * k + 1]!];
    return [b[0]! * w, b[1]! * h, b[2]! * w, b[3]! * h];
  });

const sigmoidReference = (v: number) => 1 / (1 + Math.exp(-v));

export const decodeBoxesReference = (head: ArrayLike<number>, bias: ArrayLike<number>) =>
  mapBoxes(head, (b, i) => b.map((v, c) => sigmoidReference(v + bias[(4 * i + c) % bias.length]!)));

/**
 * HF's compute_box_bias. The inputs of log and log1p are rounded to f32 as HF computes them in f32:
 * near t = 1, log1p(-t + 1e-4) depends on that rounding by ~3e-4, far above the test tolerance.
 */
export function owlBoxBiasReference(g: number): Float64Array {
  const f = Math.fround;
  const eps = f(1e-4);
  const inv = (t: number) => Math.log(f(t + eps)) - Math.log1p(f(-t + eps));
  const y = new Float64Array(g * g * 4);
  for (let row = 0; row < g; row++) {
    for (let col = 0; col < g; col++) {
      const size = inv(f(1 / g));
      y.set([inv(f((col + 1) / g)), inv(f((row + 1) / g)), size, size], (row * g + col) * 4);
    }
  }
  return y;
}

const area = (b: ArrayLike<number>, i: number) => (b[4 * i + 2]! - b[4 * i]!) * (b[4 * i + 3]! - b[4 * i + 1]!);

/** torchvision's box_iou / generalized_box_iou over a [N, 4] × b [M, 4], with 0/0 → 0. */
export function boxIouReference(a: ArrayLike<number>, b: ArrayLike<number>, generalized = false): Float64Array {
  const n = a.length / 4;
  const m = b.length / 4;
  const y = new Float64Array(n * m);
  const div = (p: number, q: number) => (q === 0 ? 0 : p / q);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) {
      const side = (lo: number, hi: number, outer: boolean) => {
        const l = outer ? Math.min(a[4 * i + lo]!, b[4 * j + lo]!) : Math.max(a[4 * i + lo]!, b[4 * j + lo]!);
        const h = outer ? Math.max(a[4 * i + hi]!, b[4 * j + hi]!) : Math.min(a[4 * i + hi]!, b[4 * j + hi]!);
        return Math.max(h - l, 0);
      };
      const inter = side(0, 2, false) * side(1, 3, false);
      const union = area(a, i) + area(b, j) - inter;
      let r = div(inter, union);
      if (generalized) {
        const hull = side(0, 2, true) * side(1, 3, true);
        r -= div(hull - union, hull);
      }
      y[i * m + j] = r;
    }
  }
  return y;
}
