// CaR's visual prompts (clip_as_rnn/modeling/model/utils.py apply_visual_prompts): the original image
// marked by one binary mask, in CaR's fixed order whatever order the types are given in — blur,
// gray and black change the pixels outside the mask; circle, rectangle and contour draw a red
// outline (thickness 1) around it. On the CPU: the drawing is a few hundred pixels, grey and black
// are one pass, and the blur is of the whole image, the same for every mask, so it is computed once
// per image (pass it as `blurred`; measured in bench/).
import { InputError } from '../inputs.js';
import { findContours } from './contours.js';
import { drawEllipse, drawRectangle, fillHoles, gaussianBlurU8, grayBgr, type Plot } from './draw.js';

export const VISUAL_PROMPT_TYPES = ['blur', 'gray', 'black', 'circle', 'rectangle', 'contour'] as const;
export type VisualPromptType = (typeof VISUAL_PROMPT_TYPES)[number];

export interface VisualPromptOptions {
  /** gaussianBlurU8(rgba, width, height, 4) of this image (CaR's 15×15 blur), when already computed. */
  blurred?: Uint8Array;
  /** Outline colour (CaR: red). */
  color?: readonly [number, number, number];
}

/** Checks prompt types, naming an unknown one; a string may list several, comma-separated. */
export function checkVisualPromptTypes(op: string, types: unknown): VisualPromptType[] {
  const list = typeof types === 'string' ? types.split(',').map((s) => s.trim()) : types;
  if (!Array.isArray(list) || list.length === 0) throw new InputError(op, `visual prompt types must be a non-empty list of ${VISUAL_PROMPT_TYPES.join(', ')}; got ${JSON.stringify(types)}`);
  for (const t of list) {
    if (!VISUAL_PROMPT_TYPES.includes(t)) throw new InputError(op, `unknown visual prompt type ${JSON.stringify(t)}: expected ${VISUAL_PROMPT_TYPES.join(', ')}`);
  }
  return list as VisualPromptType[];
}

/** CaR's mask2chw: centre (int of the mean row and column of the mask's pixels), height and width of its extent. */
function maskExtent(mask: ArrayLike<number>, width: number): { cx: number; cy: number; w: number; h: number } | undefined {
  let n = 0;
  let sx = 0;
  let sy = 0;
  let x0 = Infinity;
  let x1 = -Infinity;
  let y0 = Infinity;
  let y1 = -Infinity;
  for (let i = 0; i < mask.length; i++) {
    if (!mask[i]) continue;
    const x = i % width;
    const y = (i - x) / width;
    n++;
    sx += x;
    sy += y;
    x0 = Math.min(x0, x);
    x1 = Math.max(x1, x);
    y0 = Math.min(y0, y);
    y1 = Math.max(y1, y);
  }
  if (!n) return undefined;
  return { cx: Math.trunc(sx / n), cy: Math.trunc(sy / n), w: x1 - x0 + 1, h: y1 - y0 + 1 };
}

/**
 * The image `rgba` (width × height × 4, alpha kept) prompted with `mask` (width × height, nonzero =
 * inside) as CaR's apply_visual_prompts with `types`. An empty mask leaves the shapes undrawn (CaR
 * would fail on it; its caller skips masks summing to ≤ 1).
 */
export function applyVisualPrompts(rgba: Uint8Array, width: number, height: number, mask: ArrayLike<number>, types: readonly VisualPromptType[] | string, options: VisualPromptOptions = {}): Uint8Array {
  const op = 'applyVisualPrompts';
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) throw new InputError(op, `width and height must be positive integers, got ${width} × ${height}`);
  if (!(rgba instanceof Uint8Array) || rgba.length !== width * height * 4) throw new InputError(op, `rgba must be a Uint8Array of width·height·4 = ${width * height * 4} bytes, got ${rgba?.length}`);
  if (!mask || mask.length !== width * height) throw new InputError(op, `mask must hold width·height = ${width * height} values, got ${mask?.length}`);
  const kinds = new Set(checkVisualPromptTypes(op, types));
  const [r, g, b] = options.color ?? [255, 0, 0];
  const out = rgba.slice();
  const n = width * height;
  if (kinds.has('blur')) {
    const blurred = options.blurred ?? gaussianBlurU8(rgba, width, height, 4);
    if (blurred.length !== rgba.length) throw new InputError(op, `options.blurred must have rgba's ${rgba.length} bytes, got ${blurred.length}`);
    for (let i = 0; i < n; i++) if (!mask[i]) for (let c = 0; c < 3; c++) out[i * 4 + c] = blurred[i * 4 + c]!;
  }
  if (kinds.has('gray')) {
    for (let i = 0; i < n; i++) if (!mask[i]) out[i * 4] = out[i * 4 + 1] = out[i * 4 + 2] = grayBgr(out[i * 4]!, out[i * 4 + 1]!, out[i * 4 + 2]!);
  }
  if (kinds.has('black')) {
    for (let i = 0; i < n; i++) if (!mask[i]) out[i * 4] = out[i * 4 + 1] = out[i * 4 + 2] = 0;
  }
  const plot: Plot = (x, y) => {
    const i = (y * width + x) * 4;
    out[i] = r;
    out[i + 1] = g;
    out[i + 2] = b;
  };
  const extent = (kinds.has('circle') || kinds.has('rectangle')) && maskExtent(mask, width);
  if (extent && kinds.has('circle')) drawEllipse(width, height, [extent.cx, extent.cy], [extent.w >> 1, extent.h >> 1], plot);
  if (extent && kinds.has('rectangle')) {
    drawRectangle(width, height, extent.cx - (extent.w >> 1), extent.cy - (extent.h >> 1), extent.cx + (extent.w >> 1), extent.cy + (extent.h >> 1), plot);
  }
  if (kinds.has('contour')) {
    for (const c of findContours(fillHoles(mask, width, height), width, height)) {
      for (let k = 0; k < c.points.length; k += 2) plot(c.points[k]!, c.points[k + 1]!);
    }
  }
  return out;
}
