import type { Gpu } from '../gpu/gpu.js';
import { check } from '../gpu/errors.js';
import { shapeString } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { grid1d, uniforms, type Dispatch, type Kernel, type TensorInfo } from './program.js';
import { runKernel } from './runtime.js';
import nmsWgsl from '../../shaders/nms.wgsl';

export interface NmsOptions {
  /** A box is suppressed when its IoU with a kept, higher-scoring box is > iouThreshold (strictly). */
  iouThreshold: number;
  /**
   * Only boxes with score > scoreThreshold (strictly, compared in f32 as torch compares an f32
   * tensor with a Python float, like Hugging Face's `scores > threshold`) take part; applied before
   * NMS. torchvision's nms has no such option. Default: every box, NaN scores included (they sort
   * first, as in torch.sort).
   */
  scoreThreshold?: number;
  /** At most this many indices, the best first (default: all). */
  maxOutputs?: number;
}

/** Kernel options: `batched` adds a third input, labels [K] i32. */
export interface NmsKernelOptions extends NmsOptions {
  batched?: boolean;
}

const NAME = 'nms';
const WG = 256;
/** The greedy pass keeps its removed bitset in workgroup memory: MAX_WORDS = 512 in nms.wgsl. */
export const NMS_MAX_BOXES = 16384;

/** The next f32 above the finite f32 f. */
function nextF32(f: number): number {
  if (f === 0) return 2 ** -149;
  const bits = new Int32Array(new Float32Array([f]).buffer);
  bits[0]! += f > 0 ? 1 : -1;
  return new Float32Array(bits.buffer)[0]!;
}

/** The shader's sort key of a non-NaN f32 (score_key in nms.wgsl): unsigned order = float order. */
function f32Key(f: number): number {
  const bits = f === 0 ? 0 : new Uint32Array(new Float32Array([f]).buffer)[0]!;
  return (bits & 0x80000000 ? ~bits : bits | 0x80000000) >>> 0;
}

/**
 * torchvision.ops.nms (inputs [boxes [K, 4] xyxy f32, scores [K] f32]) and, with `batched`,
 * batched_nms (third input labels [K] i32: boxes of different labels never suppress each other).
 * Output: [min(K, maxOutputs)] i32, the kept box indices best first, then -1 padding (the number
 * kept depends on the data; -1 rows gather as zeros). Dispatches: sort keys, a bitonic sort of
 * (key, index), the IoU bitmask of the boxes taking part, then a one-workgroup greedy pass;
 * scratch: the order and the mask.
 */
export const nmsKernel: Kernel<NmsKernelOptions> = {
  name: NAME,
  outputs(inputs, o) {
    const op = o?.batched ? `${NAME}.batched` : NAME;
    check(o && typeof o === 'object', NAME, 'options { iouThreshold, scoreThreshold?, maxOutputs? } are required');
    const names = o.batched ? '[boxes, scores, labels]' : '[boxes, scores]';
    check(inputs.length === (o.batched ? 3 : 2), op, `expected inputs ${names}, got ${inputs.length} inputs`);
    const [boxes, scores, labels] = inputs as [TensorInfo, TensorInfo, TensorInfo?];
    check(boxes.dtype === 'f32', op, `boxes must be f32, got ${boxes.dtype}`);
    check(boxes.shape.length === 2 && boxes.shape[1] === 4, op, () => `boxes must be [K, 4] (x1, y1, x2, y2), got ${shapeString(boxes.shape)}`);
    const k = boxes.shape[0]!;
    check(k <= NMS_MAX_BOXES, op, () => `boxes has ${k} rows; at most ${NMS_MAX_BOXES} are supported`);
    check(scores.dtype === 'f32', op, `scores must be f32, got ${scores.dtype}`);
    check(scores.shape.length === 1 && scores.shape[0] === k, op, () => `scores must be [${k}] like boxes' rows, got ${shapeString(scores.shape)}`);
    if (labels) {
      check(labels.dtype === 'i32', op, `labels must be i32, got ${labels.dtype}`);
      check(labels.shape.length === 1 && labels.shape[0] === k, op, () => `labels must be [${k}] like boxes' rows, got ${shapeString(labels.shape)}`);
    }
    check(Number.isFinite(o.iouThreshold), op, `iouThreshold must be a finite number, got ${o.iouThreshold}`);
    check(
      o.scoreThreshold === undefined || Number.isFinite(Math.fround(o.scoreThreshold)),
      op,
      `scoreThreshold must be a number within the f32 range, got ${o.scoreThreshold}`,
    );
    check(
      o.maxOutputs === undefined || (Number.isInteger(o.maxOutputs) && o.maxOutputs >= 0),
      op,
      `maxOutputs must be an integer >= 0, got ${o.maxOutputs}`,
    );
    return [{ shape: [Math.min(k, o.maxOutputs ?? k)], dtype: 'i32' }];
  },
  plan(gpu, inputs, outputs, o) {
    const k = inputs[0]!.shape[0]!;
    const padded = 2 ** Math.ceil(Math.log2(Math.max(k, 1)));
    const words = Math.ceil(k / 32);
    const batched = o.batched ? 1 : 0;
    // torchvision compares the f32 IoU with the threshold as a double: IoU > t holds for an f32 IoU
    // exactly when IoU > fround(t), or IoU == fround(t) where fround rounded t up.
    const iouThr = Math.fround(o.iouThreshold);
    const iouEq = iouThr > o.iouThreshold ? 1 : 0;
    // score > fround(t) (torch compares an f32 tensor with a Python float in f32) holds exactly
    // when score >= the next f32 above fround(t).
    const keyMin = o.scoreThreshold === undefined ? 1 : f32Key(nextF32(Math.fround(o.scoreThreshold)));
    const nanPasses = o.scoreThreshold === undefined ? 1 : 0;
    const out = inputs.length;
    // Bindings: boxes, scores, labels (scores again when not batched: never read), order, mask, out.
    const tensors = [0, 1, batched ? 2 : 1, out + 1, out + 2, out];
    const dispatch = (entryPoint: string, workgroups: [number, number, number], kStage = 0, jStep = 0): Dispatch => ({
      program: {
        name: `${NAME}.${entryPoint}`,
        key: 'f32',
        code: nmsWgsl,
        entryPoint,
        constants: { WG, BATCHED: batched },
        bindings: ['read', 'read', 'read', 'write', 'write', 'write'],
      },
      tensors,
      uniforms: uniforms(k, padded, words, keyMin, nanPasses, { f32: iouThr }, iouEq, outputs[0]!.shape[0]!, kStage, jStep),
      workgroups,
    });
    // Bitonic sort: sort_local does the steps within blocks of 2·WG (every stage up to that size
    // first, then the tail of each larger stage), sort_step the longer compare distances.
    const block = 2 * WG;
    const local = (kStage: number) => dispatch('sort_local', grid1d(gpu, Math.ceil(padded / block) * WG, WG), kStage);
    const dispatches = [dispatch('keys', grid1d(gpu, padded, WG)), local(0)];
    for (let kStage = 2 * block; kStage <= padded; kStage *= 2) {
      for (let jStep = kStage / 2; jStep >= block; jStep /= 2) dispatches.push(dispatch('sort_step', grid1d(gpu, padded / 2, WG), kStage, jStep));
      dispatches.push(local(kStage));
    }
    dispatches.push(dispatch('build_mask', grid1d(gpu, k * words, WG)), dispatch('greedy', [1, 1, 1]));
    const sortSteps = dispatches.length - 3;
    return {
      dispatches,
      scratch: [
        { shape: [padded, 2], dtype: 'u32' },
        { shape: [k * words], dtype: 'u32' },
      ],
      // Nominal: ~17 flops per IoU of the K(K-1)/2 pairs.
      flops: (17 * k * (k - 1)) / 2,
      // Nominal: inputs once, every sort step reads and writes the order, the mask written and read.
      bytes: (20 + 4 * batched) * k + 16 * padded * sortSteps + 8 * k * words + 4 * outputs[0]!.shape[0]!,
    };
  },
};

async function run(gpu: Gpu, inputs: Tensor[], options: NmsKernelOptions): Promise<Int32Array> {
  const [out] = await runKernel(gpu, nmsKernel, inputs, options);
  try {
    const indices = (await out!.read()) as Int32Array;
    const count = indices.indexOf(-1);
    return count < 0 ? indices : indices.slice(0, count);
  } finally {
    out!.dispose();
  }
}

/**
 * torchvision.ops.nms on the GPU: indices of the kept boxes [K, 4] (x1, y1, x2, y2), by score
 * descending (equal scores: lower index first). One small readback of the indices.
 */
export function nms(gpu: Gpu, boxes: Tensor, scores: Tensor, options: NmsOptions): Promise<Int32Array> {
  return run(gpu, [boxes, scores], { ...options, batched: false });
}

/**
 * torchvision.ops.batched_nms on the GPU: NMS within each label (labels [K] i32), the kept indices
 * of all labels together by score descending (equal scores: lower index first). Labels are compared
 * directly rather than by torchvision's coordinate-offset trick, so results match per-label NMS exactly.
 */
export function batchedNms(gpu: Gpu, boxes: Tensor, scores: Tensor, labels: Tensor, options: NmsOptions): Promise<Int32Array> {
  return run(gpu, [boxes, scores, labels], { ...options, batched: true });
}

// ---- CPU references (tests only), written for clarity ----
// Unlike other references these compute in float32 (Math.fround after every operation): torchvision
// computes IoU in the boxes' dtype, and a float64 IoU would decide boxes right at the threshold
// differently.

/** torchvision's IoU of boxes a and b (x1, y1, x2, y2) in f32 arithmetic; NaN when both are empty. */
export function boxIouF32Reference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const f = Math.fround;
  const areaA = f(f(a[2]! - a[0]!) * f(a[3]! - a[1]!));
  const areaB = f(f(b[2]! - b[0]!) * f(b[3]! - b[1]!));
  const w = Math.max(0, f(Math.min(a[2]!, b[2]!) - Math.max(a[0]!, b[0]!)));
  const h = Math.max(0, f(Math.min(a[3]!, b[3]!) - Math.max(a[1]!, b[1]!)));
  const inter = f(w * h);
  return f(inter / f(f(areaA + areaB) - inter));
}

/** Descending score order as torch.sort(descending=True, stable=True): NaN first, ties by index. */
function byScoreDescending(scores: ArrayLike<number>): (i: number, j: number) => number {
  return (i, j) => {
    const a = scores[i]!;
    const b = scores[j]!;
    if (Number.isNaN(a) || Number.isNaN(b)) return Number(Number.isNaN(b)) - Number(Number.isNaN(a));
    return a > b ? -1 : a < b ? 1 : 0; // Array.prototype.sort is stable: ties keep index order
  };
}

/** torchvision.ops.nms on flat boxes [K*4] and scores [K], with NmsOptions' score filter and truncation. */
export function nmsReference(boxes: ArrayLike<number>, scores: ArrayLike<number>, options: NmsOptions): number[] {
  const box = (i: number) => [boxes[4 * i]!, boxes[4 * i + 1]!, boxes[4 * i + 2]!, boxes[4 * i + 3]!];
  const order = Array.from({ length: scores.length }, (_, i) => i)
    .filter((i) => options.scoreThreshold === undefined || Math.fround(scores[i]!) > Math.fround(options.scoreThreshold))
    .sort(byScoreDescending(scores));
  const suppressed = new Array<boolean>(scores.length).fill(false);
  const keep: number[] = [];
  for (let n = 0; n < order.length; n++) {
    const i = order[n]!;
    if (suppressed[i]) continue;
    keep.push(i);
    for (let m = n + 1; m < order.length; m++) {
      const j = order[m]!;
      if (boxIouF32Reference(box(i), box(j)) > options.iouThreshold) suppressed[j] = true;
    }
  }
  return keep.slice(0, options.maxOutputs ?? keep.length);
}

/**
 * torchvision.ops.batched_nms as its per-class version does it: nmsReference on each label's boxes
 * separately, then all kept indices by score descending (ties: lower index first), then truncation.
 */
export function batchedNmsReference(boxes: ArrayLike<number>, scores: ArrayLike<number>, labels: ArrayLike<number>, options: NmsOptions): number[] {
  const members = new Map<number, number[]>();
  for (let i = 0; i < labels.length; i++) {
    const list = members.get(labels[i]!) ?? [];
    list.push(i);
    members.set(labels[i]!, list);
  }
  const kept: number[] = [];
  for (const idx of members.values()) {
    const subBoxes = idx.flatMap((i) => [boxes[4 * i]!, boxes[4 * i + 1]!, boxes[4 * i + 2]!, boxes[4 * i + 3]!]);
    const subScores = idx.map((i) => scores[i]!);
    const subKept = nmsReference(subBoxes, subScores, { iouThreshold: options.iouThreshold, scoreThreshold: options.scoreThreshold });
    kept.push(...subKept.map((m) => idx[m]!));
  }
  kept.sort((i, j) => byScoreDescending(scores)(i, j) || i - j);
  return kept.slice(0, options.maxOutputs ?? kept.length);
}
