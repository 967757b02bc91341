// CLIP-ES refinement of a gradCAM as CaR does it (clip_as_rnn/modeling/model/clipcam.py, utils.py
// scoremap2bbox): boxes of the thresholded CAM's contours mask an affinity built from the vision
// tower's attention, and the masked affinity propagates the CAM. Everything here is small ([n, n]
// with n patches) and runs on the CPU in float64.
import { InputError } from '../inputs.js';
import { gradCamToImage } from '../clip/gradcam.js';
import { boundingRect, findContours } from './contours.js';

export interface ClipEsOptions {
  /** CaR's clipes_threshold: the share of the CAM's maximum (as 8 bits) that a box's pixels exceed (0.4). */
  threshold?: number;
  /** The [n, n] transition matrix from clipEsTransition(attention), when it is already known (one per image). */
  transition?: Float64Array;
}

export interface ClipEsResult {
  /** The refined CAM on the grid [gh·gw] (trans · cam), before any rescaling. */
  refined: Float64Array;
  /** scoremap2bbox's boxes [x0, y0, x1, y1] on the grid (end coordinates clipped to the last row/column). */
  boxes: [number, number, number, number][];
  /** 1 where a box covers the patch ([y0, y1) × [x0, x1), as CaR's slicing), [gh·gw]. */
  affinityMask: Float64Array;
  /** The transition matrix after masking its columns, [n, n]. */
  maskedTransition: Float64Array;
}

/** The CAM as CaR's `(scoremap * 255).astype(np.uint8)`: float32 arithmetic unless the map is float64. */
function toU8(cam: ArrayLike<number>): Uint8Array {
  const f64 = cam instanceof Float64Array;
  return Uint8Array.from(cam as ArrayLike<number>, (v) => {
    const s = f64 ? v * 255 : Math.fround(Math.fround(v) * 255);
    return Math.min(255, Math.max(0, Math.trunc(s)));
  });
}

/**
 * CaR's scoremap2bbox(cam, threshold, multi_contour_eval=True): the CAM as 8 bits, pixels above
 * int(threshold · max) (the threshold lowered by 0.1 while nothing passes), then one box per contour
 * (outer and hole borders, cv2.findContours RETR_TREE order): [x, y, min(x + w, gw - 1), min(y + h, gh - 1)].
 * No contour gives the single box [0, 0, 0, 0].
 */
export function scoremapBoxes(cam: ArrayLike<number>, grid: readonly [number, number], threshold = 0.4): [number, number, number, number][] {
  const [gh, gw] = grid;
  const u8 = toU8(cam);
  let max = 0;
  for (const v of u8) max = Math.max(max, v);
  let binary = new Uint8Array(u8.length);
  for (let t = threshold; ; t -= 0.1) {
    const thresh = Math.trunc(t * max);
    binary = u8.map((v) => (v > thresh ? 1 : 0));
    if (binary.some((v) => v) || t <= 0) break;
  }
  const contours = findContours(binary, gw, gh);
  if (!contours.length) return [[0, 0, 0, 0]];
  return contours.map((c) => {
    const [x, y, w, h] = boundingRect(c.points);
    return [x, y, Math.min(x + w, gw - 1), Math.min(y + h, gh - 1)];
  });
}

/**
 * CLIP-ES's affinity input from per-block head-averaged attention [blocks, L, L] (L = 1 + n, class
 * token first): the mean over the last `lastBlocks` (8) blocks of the patch-to-patch part, [n, n].
 */
export function clipEsAttention(attention: ArrayLike<number>, blocks: number, tokens: number, lastBlocks = 8): Float64Array {
  const op = 'clipEsAttention';
  if (!Number.isInteger(blocks) || blocks < 1 || !Number.isInteger(tokens) || tokens < 2 || attention.length !== blocks * tokens * tokens) {
    throw new InputError(op, `attention must hold blocks·L·L = ${blocks}·${tokens}·${tokens} values (L ≥ 2 with the class token first), got ${attention.length}`);
  }
  const n = tokens - 1;
  const first = Math.max(0, blocks - lastBlocks);
  const out = new Float64Array(n * n);
  for (let b = first; b < blocks; b++) {
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) out[i * n + j]! += attention[(b * tokens + i + 1) * tokens + j + 1]!;
  }
  const count = blocks - first;
  for (let k = 0; k < out.length; k++) out[k]! /= count;
  return out;
}

function normaliseColumns(m: Float64Array, n: number): void {
  const sums = new Float64Array(n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) sums[j]! += m[i * n + j]!;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) m[i * n + j]! /= sums[j]!;
}

function normaliseRows(m: Float64Array, n: number): void {
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) s += m[i * n + j]!;
    for (let j = 0; j < n; j++) m[i * n + j]! /= s;
  }
}

/**
 * CLIP-ES's transition matrix from the patch attention [n, n]: columns then rows normalised three
 * times, symmetrised ((T + Tᵀ) / 2), then squared. `symmetric` is the matrix before squaring.
 */
export function clipEsTransition(attention: ArrayLike<number>, n: number): { symmetric: Float64Array; transition: Float64Array } {
  if (!Number.isInteger(n) || n < 1 || attention.length !== n * n) {
    throw new InputError('clipEsTransition', `attention must be [n, n] = [${n}, ${n}] (${n * n} values), got ${attention.length}`);
  }
  const t = Float64Array.from(attention);
  for (let r = 0; r < 3; r++) {
    normaliseColumns(t, n);
    normaliseRows(t, n);
  }
  const symmetric = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) symmetric[i * n + j] = (t[i * n + j]! + t[j * n + i]!) / 2;
  const transition = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const row = transition.subarray(i * n, (i + 1) * n);
    for (let k = 0; k < n; k++) {
      const a = symmetric[i * n + k]!;
      if (a === 0) continue;
      const bk = symmetric.subarray(k * n, (k + 1) * n);
      for (let j = 0; j < n; j++) row[j]! += a * bk[j]!;
    }
  }
  return { symmetric, transition };
}

/**
 * CLIP-ES refinement of one scaled CAM [gh·gw] (values in [0, 1], as gradCam's `cam`) with the
 * head-averaged patch attention [n, n] (n = gh·gw; see clipEsAttention): boxes from scoremapBoxes,
 * the transition matrix with the columns outside every box zeroed, refined = that matrix · cam.
 */
export function refineCamClipEs(cam: ArrayLike<number>, grid: readonly [number, number], attention: ArrayLike<number> | null, options: ClipEsOptions = {}): ClipEsResult {
  const op = 'refineCamClipEs';
  const [gh, gw] = grid ?? [];
  if (!Number.isInteger(gh) || !Number.isInteger(gw) || gh! < 1 || gw! < 1) throw new InputError(op, `grid must be [gh, gw] of positive integers, got ${JSON.stringify(grid)}`);
  const n = gh! * gw!;
  if (!cam || cam.length !== n) throw new InputError(op, `cam must hold gh·gw = ${n} values, got ${cam?.length}`);
  for (let k = 0; k < n; k++) if (!Number.isFinite(cam[k])) throw new InputError(op, `cam holds ${cam[k]} at index ${k}`);
  const threshold = options.threshold ?? 0.4;
  if (!(threshold >= 0 && threshold <= 1)) throw new InputError(op, `threshold must be in [0, 1], got ${threshold}`);
  let transition = options.transition;
  if (transition) {
    if (transition.length !== n * n) throw new InputError(op, `options.transition must be [n, n] = [${n}, ${n}], got ${transition.length} values`);
  } else {
    if (!attention || attention.length !== n * n) throw new InputError(op, `attention must be the [n, n] patch attention with n = gh·gw = ${n}, got ${attention?.length} values`);
    transition = clipEsTransition(attention, n).transition;
  }
  const boxes = scoremapBoxes(cam, [gh!, gw!], threshold);
  const affinityMask = new Float64Array(n);
  for (const [x0, y0, x1, y1] of boxes) for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) affinityMask[y * gw! + x] = 1;
  const maskedTransition = new Float64Array(n * n);
  const refined = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) {
      const m = transition[i * n + j]! * affinityMask[j]!;
      maskedTransition[i * n + j] = m;
      s += m * cam[j]!;
    }
    refined[i] = s;
  }
  return { refined, boxes, affinityMask, maskedTransition };
}

/**
 * CaR's scale_cam_image for one map [gh·gw]: (x − min) / (1e-15 + max of that), as float32, then
 * resized to width × height as cv2.resize (INTER_LINEAR): the refined mask CLIPCAM returns.
 */
export function scaleCamToImage(map: ArrayLike<number>, grid: readonly [number, number], width: number, height: number): Float32Array {
  let min = Infinity;
  for (let k = 0; k < map.length; k++) min = Math.min(min, map[k]!);
  const shifted = Float64Array.from(map as ArrayLike<number>, (v) => v - min);
  let max = 0;
  for (const v of shifted) max = Math.max(max, v);
  return gradCamToImage({ grid, cam: Float32Array.from(shifted, (v) => v / (1e-15 + max)) }, width, height);
}
