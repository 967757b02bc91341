// OWL-ViT post-processing as Hugging Face's OwlViTImageProcessor (v4.35) does it, and the choice of
// an image query's embedding (OwlViTForObjectDetection.embed_image_query). Arithmetic is rounded
// to f32 where the reference computes in f32, so thresholds decide the same way. The NMS of
// image-guided detection is a function the caller gives (the detector runs it as a graph plan), or
// its result when it ran elsewhere (inside the scoring plan, see plan-nms.ts).
import { checkInput } from '../inputs.js';
import { NMS_MAX_BOXES } from '../../kernels/nms.js';

const f = Math.fround;

/** Detections of one image: K scores, K labels (query index) and K boxes [K, 4] (x1, y1, x2, y2). */
export interface Detections {
  scores: Float32Array;
  labels: Int32Array;
  boxes: Float32Array;
  /** [K] the predicted box (patch) each detection is. */
  indices: Int32Array;
  /** [K] sigmoid of each box's objectness logit, when objectnessLogits were given (OWLv2). */
  objectness?: Float32Array;
}

export interface PostProcessOptions {
  /** Keep boxes whose score is above this (default 0.1, as HF's post_process_object_detection). */
  threshold?: number;
  /**
   * (h, w) of each image: boxes come out in its pixels (x scaled by w, y by h); default: normalised.
   * With `padded`, the original image's (h, w).
   */
  targetSizes?: readonly (readonly [number, number])[];
  /**
   * The model saw each image padded to a square at the bottom and right (OWLv2): boxes are relative
   * to that square, so they are scaled by max(h, w) on both axes and clipped to [0, w] × [0, h], in
   * the original image's pixels. (HF scales them to the padded square and does not clip.)
   */
  padded?: boolean;
  /** [B, N] OWLv2's objectness logits: each detection then carries sigmoid of its box's. */
  objectnessLogits?: ArrayLike<number>;
}

/**
 * Class-aware NMS as torchvision's batched_nms: boxes [K, 4] xyxy, scores [K], labels [K]; only
 * boxes with score > scoreThreshold take part. Resolves to the kept indices.
 */
export type BatchedNms = (boxes: Float32Array, scores: Float32Array, labels: Int32Array, options: { iouThreshold: number; scoreThreshold?: number }) => Promise<Int32Array>;

export interface ImageGuidedPostProcessOptions extends PostProcessOptions {
  /** Boxes whose score (sigmoid, after NMS, before the rescaling) is below this are dropped (default 0, as HF v4.35). */
  threshold?: number;
  /** IoU above which a lower-scoring box is suppressed (default 0.3); 1 or more: no NMS. */
  nmsThreshold?: number;
}

/** The score of a logit, as the reference rounds it (to f32). */
export const sigmoid = (x: number) => f(1 / (1 + Math.exp(-x)));

/** HF center_to_corners_format of box `i` of cxcywh boxes, in f32. */
function corners(boxes: ArrayLike<number>, i: number): [number, number, number, number] {
  const [cx, cy, w, h] = [boxes[4 * i]!, boxes[4 * i + 1]!, boxes[4 * i + 2]!, boxes[4 * i + 3]!];
  const hw = f(0.5 * w);
  const hh = f(0.5 * h);
  return [f(cx - hw), f(cy - hh), f(cx + hw), f(cy + hh)];
}

function checkShapes(op: string, logits: ArrayLike<number>, boxes: ArrayLike<number>, [b, n, q]: readonly number[], { targetSizes, objectnessLogits }: PostProcessOptions): void {
  checkInput(logits.length === b! * n! * q!, op, () => `logits has ${logits.length} values, expected B·N·Q = ${b}·${n}·${q}`);
  checkInput(boxes.length === b! * n! * 4, op, () => `boxes has ${boxes.length} values, expected B·N·4 = ${b}·${n}·4`);
  checkInput(objectnessLogits === undefined || objectnessLogits.length === b! * n!, op, () => `objectnessLogits has ${objectnessLogits!.length} values, expected B·N = ${b}·${n}`);
  checkInput(
    targetSizes === undefined || (targetSizes.length === b && targetSizes.every((s) => s.length === 2 && s.every((v) => Number.isFinite(v) && v > 0))),
    op,
    () => `targetSizes must hold one positive (h, w) pair per image (${b}), got ${JSON.stringify(targetSizes)}`,
  );
}

/** Per box of image `img`: sigmoid of the best query's logit and that query (the first on ties). */
export function bestQueries(logits: ArrayLike<number>, img: number, n: number, q: number): { scores: Float32Array; labels: Int32Array } {
  const scores = new Float32Array(n);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const row = (img * n + i) * q;
    let best = 0;
    for (let j = 1; j < q; j++) if (logits[row + j]! > logits[row + best]!) best = j;
    scores[i] = sigmoid(logits[row + best]!);
    labels[i] = best;
  }
  return { scores, labels };
}

function scaledCorners(boxes: ArrayLike<number>, img: number, i: number, n: number, size: readonly [number, number] | undefined, padded: boolean | undefined): number[] {
  const c = corners(boxes, img * n + i);
  if (!size) return c;
  const [h, w] = size;
  if (!padded) return [f(c[0] * w), f(c[1] * h), f(c[2] * w), f(c[3] * h)];
  const s = Math.max(h, w);
  const clip = (v: number, hi: number) => Math.min(Math.max(f(v * s), 0), hi);
  return [clip(c[0], w), clip(c[1], h), clip(c[2], w), clip(c[3], h)];
}

/**
 * Every box of predBoxes [B, N, 4] cxcywh as post-processing gives it (xyxy, in targetSizes' pixels
 * when given, padded as `padded` says): [B, N, 4].
 */
export function cornerBoxes(predBoxes: ArrayLike<number>, n: number, options: PostProcessOptions): Float32Array {
  const out = new Float32Array(predBoxes.length);
  for (let k = 0; k < predBoxes.length / 4; k++) {
    const img = Math.floor(k / n);
    out.set(scaledCorners(predBoxes, img, k % n, n, options.targetSizes?.[img], options.padded), 4 * k);
  }
  return out;
}

/** The kept boxes `keep` of image `img` with their scores (and labels, objectness) as Detections. */
function detections(keep: readonly number[], scores: ArrayLike<number>, labels: ArrayLike<number>, predBoxes: ArrayLike<number>, img: number, n: number, options: PostProcessOptions): Detections {
  const obj = options.objectnessLogits;
  return {
    scores: Float32Array.from(keep, (i) => scores[i]!),
    labels: Int32Array.from(keep, (i) => labels[i]!),
    boxes: Float32Array.from(keep.flatMap((i) => scaledCorners(predBoxes, img, i, n, options.targetSizes?.[img], options.padded))),
    indices: Int32Array.from(keep),
    ...(obj && { objectness: Float32Array.from(keep, (i) => sigmoid(obj[img * n + i]!)) }),
  };
}

/**
 * post_process_object_detection: per image, boxes whose sigmoid(max logit) > threshold, with that
 * query as label, as xyxy (scaled per axis to targetSizes). logits [B, N, Q], boxes [B, N, 4] cxcywh.
 */
export function postProcessObjectDetection(logits: ArrayLike<number>, predBoxes: ArrayLike<number>, shape: readonly [number, number, number], options: PostProcessOptions = {}): Detections[] {
  const [b, n, q] = shape;
  checkShapes('OwlVit.postProcess', logits, predBoxes, shape, options);
  const threshold = f(options.threshold ?? 0.1);
  return Array.from({ length: b }, (_, img) => {
    const { scores, labels } = bestQueries(logits, img, n, q);
    const keep = [...scores.keys()].filter((i) => scores[i]! > threshold);
    return detections(keep, scores, labels, predBoxes, img, n, options);
  });
}

/**
 * post_process_image_guided_detection (v4.35.2, the same for OWL-ViT and OWLv2): scores =
 * sigmoid(max logit); greedy NMS per image on the normalised corners (a box suppresses
 * lower-scoring boxes with IoU > nmsThreshold; suppressed scores become 0); scores below
 * `threshold` (default 0) become 0 *before* the rescaling (HF PR #25608: before it, the rescaled
 * scores were thresholded, so the best box always passed); then the scores are rescaled so the
 * image's best remaining box gets 1 and 10% of it gets 0, (s - 0.1·m) / (0.9·m) with
 * m = max + 1e-6, clipped to [0, 1], and boxes whose rescaled score is 0 are dropped. Boxes keep
 * their index order, as in the reference. Labels are the best query (0 with one image query).
 * Unlike the reference, an image whose scores are all 0 gives an empty entry instead of being left
 * out of the list. `nms` runs the NMS, or is its result: per image, the indices of the boxes it kept.
 */
export async function postProcessImageGuided(nms: BatchedNms | readonly ArrayLike<number>[], logits: ArrayLike<number>, predBoxes: ArrayLike<number>, shape: readonly [number, number, number], options: ImageGuidedPostProcessOptions = {}): Promise<Detections[]> {
  const [b, n, q] = shape;
  checkShapes('OwlVit.postProcessImageGuided', logits, predBoxes, shape, options);
  const nmsThreshold = options.nmsThreshold ?? 0.3;
  checkInput(Number.isFinite(nmsThreshold), 'OwlVit.postProcessImageGuided', `nmsThreshold must be a finite number, got ${nmsThreshold}`);
  const threshold = f(options.threshold ?? 0);
  const best = Array.from({ length: b }, (_, img) => bestQueries(logits, img, n, q));
  if (nmsThreshold < 1) {
    const kept = typeof nms === 'function' ? await suppress(nms, predBoxes, best.map((x) => x.scores), n, nmsThreshold) : nms.map((k) => new Set(Array.from(k)));
    best.forEach(({ scores }, img) => scores.forEach((_, i) => !kept[img]!.has(i) && (scores[i] = 0)));
  }
  const eps = f(1e-6);
  const [tenth, nineTenths] = [f(0.1), f(0.9)];
  return best.map(({ scores, labels }, img) => {
    let max = 0;
    for (let i = 0; i < n; i++) {
      if (scores[i]! < threshold) scores[i] = 0;
      max = Math.max(max, scores[i]!);
    }
    const m = f(max + eps);
    const lo = f(m * tenth);
    const span = f(m * nineTenths);
    const alphas = Array.from(scores, (s) => Math.min(1, Math.max(0, f(f(s - lo) / span))));
    const keep = [...alphas.keys()].filter((i) => alphas[i]! > 0);
    return detections(keep, alphas, labels, predBoxes, img, n, options);
  });
}

/**
 * Per image, the boxes NMS keeps, every image in one NMS call (the image index is the label, so
 * images never suppress each other) while they fit in one. Only boxes scoring > 0 take part, as
 * the reference skips zero scores.
 */
async function suppress(nms: BatchedNms, predBoxes: ArrayLike<number>, scores: Float32Array[], n: number, iouThreshold: number): Promise<Set<number>[]> {
  const perCall = Math.max(1, Math.floor(NMS_MAX_BOXES / Math.max(n, 1)));
  const kept = scores.map(() => new Set<number>());
  for (let first = 0; first < scores.length; first += perCall) {
    const images = scores.slice(first, first + perCall);
    const k = images.length * n;
    const boxData = new Float32Array(4 * k);
    for (let i = 0; i < k; i++) boxData.set(corners(predBoxes, first * n + i), 4 * i);
    const labels = Int32Array.from({ length: k }, (_, i) => Math.floor(i / n));
    for (const k of await nms(boxData, Float32Array.from(images.flatMap((s) => Array.from(s))), labels, { iouThreshold, scoreThreshold: 0 })) kept[first + Math.floor(k / n)]!.add(k % n);
  }
  return kept;
}

// ---- image queries (embed_image_query) ----

/** torchvision-style IoU and generalized IoU of two xyxy boxes, in f32 as the reference. */
function iouPair(a: readonly number[], b: readonly number[]): { iou: number; giou: number } {
  const area = (x: readonly number[]) => f(f(x[2]! - x[0]!) * f(x[3]! - x[1]!));
  const side = (lo: number, hi: number, outer: boolean) => {
    const l = outer ? Math.min(a[lo]!, b[lo]!) : Math.max(a[lo]!, b[lo]!);
    const h = outer ? Math.max(a[hi]!, b[hi]!) : Math.min(a[hi]!, b[hi]!);
    return Math.max(0, f(h - l));
  };
  const inter = f(side(0, 2, false) * side(1, 3, false));
  const union = f(f(area(a) + area(b)) - inter);
  const iou = f(inter / union);
  const hull = f(side(0, 2, true) * side(1, 3, true));
  return { iou, giou: f(iou - f(f(hull - union) / hull)) };
}

/**
 * Which predicted box of a query image gives the query embedding. Without `queryBox`, as HF's
 * embed_image_query: the boxes whose IoU with the whole image [0, 0, 1, 1] is at least 0.8 × the
 * best (generalized IoU when every IoU is 0), and of those the one whose raw class embedding is
 * least similar to the image's mean class embedding. With `queryBox` (normalised xyxy), as the
 * original OWL-ViT: the box with the highest IoU with it. Returns -1 when nothing qualifies.
 * predBoxes [N, 4] cxcywh, classEmbedsRaw [N, Dt].
 */
export function selectImageQuery(predBoxes: ArrayLike<number>, classEmbedsRaw: ArrayLike<number>, n: number, queryBox?: readonly number[]): number {
  const target = queryBox ?? [0, 0, 1, 1];
  const pairs = Array.from({ length: n }, (_, i) => iouPair(target, corners(predBoxes, i)));
  if (queryBox) {
    let best = -1;
    pairs.forEach(({ iou }, i) => (best < 0 || iou > pairs[best]!.iou) && !Number.isNaN(iou) && (best = i));
    return best;
  }
  const ious = pairs.every((p) => p.iou === 0) ? pairs.map((p) => p.giou) : pairs.map((p) => p.iou);
  const threshold = f(Math.max(...ious) * f(0.8));
  const selected = [...ious.keys()].filter((i) => ious[i]! >= threshold);
  const dt = classEmbedsRaw.length / n;
  const mean = new Float64Array(dt);
  for (let i = 0; i < n; i++) for (let k = 0; k < dt; k++) mean[k]! += classEmbedsRaw[i * dt + k]! / n;
  let best = -1;
  let bestSim = Infinity;
  for (const i of selected) {
    let sim = 0;
    for (let k = 0; k < dt; k++) sim += mean[k]! * classEmbedsRaw[i * dt + k]!;
    if (sim < bestSim) [best, bestSim] = [i, sim];
  }
  return best;
}
