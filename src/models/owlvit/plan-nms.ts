// NMS inside the scoring plan (detect with nms, image-guided detect): the plan sorts boxes by their
// best logit, the host path by the f32 sigmoid of it. The sigmoid keeps the order but can round two
// logits to one score (then the lower index goes first), so the host checks, from the logits the
// same run read back, that the plan's NMS saw the boxes the host path would give NMS in the order
// it would sort them; where it did not (rare), the caller runs the host path instead.
import { bestQueries, sigmoid } from './postprocess.js';

/** What the scoring plan needs to run NMS per image (see OwlVitDetector's scoring plan). */
export interface PlanNms {
  /** [B, N, 4] x1, y1, x2, y2: the boxes NMS compares, as the host path gives them. */
  boxes: Float32Array;
  /** [B, N]: 0 lets a box take part, -Infinity keeps it out (OWLv2's objectness filter). */
  bias: Float32Array;
  iouThreshold: number;
  /** Boxes whose best logit is > this f32 take part (see logitThreshold). */
  logitThreshold: number;
}

const F32_MAX = 3.4028234663852886e38;
const f32 = new Float32Array(1);
const bits = new Int32Array(f32.buffer);
/** f32 values as integers in the same order (±0 both 0). */
const ordinal = (x: number) => ((f32[0] = x), bits[0]! >= 0 ? bits[0]! : -(bits[0]! & 0x7fffffff));
const fromOrdinal = (o: number) => ((bits[0] = o >= 0 ? o : -o | 0x80000000), f32[0]!);

/**
 * The f32 logit x* with sigmoid(x) > threshold (the host's f32 score against the f32 threshold)
 * exactly when x > x*: the largest finite f32 whose score is not above the threshold, found by
 * bisection (the rounded sigmoid never decreases; planAgrees checks the decisions anyway).
 */
export function logitThreshold(threshold: number): number {
  const t = Math.fround(threshold);
  const passes = (o: number) => sigmoid(fromOrdinal(o)) > t;
  let [lo, hi] = [ordinal(-F32_MAX), ordinal(F32_MAX)];
  if (passes(lo)) return -F32_MAX;
  if (!passes(hi)) return F32_MAX;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (passes(mid)) hi = mid;
    else lo = mid;
  }
  return fromOrdinal(lo);
}

/** Subnormal f32 values, which a GPU may flush to 0 when it compares them. */
const subnormal = (x: number) => x !== 0 && Math.abs(x) < 2 ** -126;

/**
 * Whether the plan's NMS of image `img` decided as the host path's: the boxes that took part in the
 * plan (bias 0, best logit > logitThreshold) are `candidates` (ascending box indices: the host's),
 * and within each label the plan's order (best logit descending, lower index first on ties) is the
 * host's (f32 score descending, lower index first). Rows holding NaN or subnormal logits, or a best
 * logit not above the padded queries' -1e6, are refused: GPUs may compare those differently.
 * logits [B, N, Q] as the plan read them back.
 */
export function planAgrees(logits: ArrayLike<number>, [n, q]: readonly [number, number], img: number, nms: PlanNms, candidates: ArrayLike<number>): boolean {
  for (let k = img * n * q; k < (img + 1) * n * q; k++) if (Number.isNaN(logits[k]) || subnormal(logits[k]!)) return false;
  const { scores, labels } = bestQueries(logits, img, n, q);
  const best = Float32Array.from(labels, (label, i) => logits[(img * n + i) * q + label]!);
  if (best.some((x) => x <= -1e6)) return false;
  const taking = [...best.keys()].filter((i) => nms.bias[img * n + i] === 0 && best[i]! > nms.logitThreshold);
  if (taking.length !== candidates.length || taking.some((i, k) => i !== candidates[k])) return false;
  taking.sort((a, b) => (best[a]! > best[b]! ? -1 : best[a]! < best[b]! ? 1 : a - b));
  const previous = new Map<number, number>();
  for (const i of taking) {
    const p = previous.get(labels[i]!);
    if (p !== undefined && !(scores[p]! > scores[i]! || (scores[p] === scores[i] && p < i))) return false;
    previous.set(labels[i]!, i);
  }
  return true;
}

/**
 * The plan's kept boxes per image (`kept`, from a run whose logits [B, N, Q] are `logits`) where
 * planAgrees for every image, given the host's candidates of each; otherwise undefined (run the
 * host path).
 */
export function agreedKept(logits: Float32Array, kept: Int32Array[] | undefined, nms: PlanNms, n: number, candidates: (img: number) => ArrayLike<number>): Int32Array[] | undefined {
  if (!kept) return undefined;
  const q = logits.length / (kept.length * n);
  return kept.every((_, img) => planAgrees(logits, [n, q], img, nms, candidates(img))) ? kept : undefined;
}
