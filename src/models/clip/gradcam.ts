// gradCAM on CLIP as CaR computes it (google-research clip_as_rnn/modeling/model/: clip_wrapper.py
// forward_last_layer, cam.py CAM, clipcam.py CLIPCAM): the vision tower up to its last block once;
// the last block with gradients, ln_post, the mean of the patch tokens (or the class token), the
// projection; logits = exp(logitScale) · normalised image features against normalised text
// features; softmax over the texts; a target's score is its probability. The CAM weights are the
// gradients at the last block's ln_1 output averaged over the grid; cam = Σ_c weight_c · act_c.
// All targets run in one submit: the last block is batched over the targets (batch row k carries
// target k), so one backward pass seeded with the one-hot rows gives every target's gradient.
import type { GraphBuilder, Value } from '../../graph/builder.js';
import type { VisionConfig } from './config.js';
import type { PositionEmbeddingOptions } from './position.js';
import { headAveragedAttention, transformerBlock, visionEmbed, type BlockTaps, type Weights } from './towers.js';

export interface GradCamOptions {
  /** Indices of the texts that get a map; the others (e.g. background texts) only join the softmax. Default: all. */
  targets?: readonly number[];
  /** Input size [height, width] (or one side for a square) that images are resized to; multiples of the patch size. Default: the config's image size. Ignored for `{ data, shape }` pixels. */
  size?: number | readonly [number, number];
  /** log of the logit scale (as stored in checkpoints); default the checkpoint's. */
  logitScale?: number;
  /** Pool the class token instead of the mean of the patch tokens (CaR's use_cls_token). */
  classToken?: boolean;
  /** Prompt templates with `{}` for string texts: each text is the normalised mean of its prompts' normalised embeddings (CaR's zeroshot_classifier). Default: the text itself. */
  templates?: readonly string[];
  /** How the position embedding is resized (default bilinear, rounded to fp16 as CaR, even at the native size). */
  position?: PositionEmbeddingOptions;
  /** Compute the head-averaged attention of every block (default true). */
  attention?: boolean;
  /** Also return the target layer's activations and gradients. */
  intermediates?: boolean;
}

export interface GradCamResult {
  /** [gh, gw]: the patch grid of the maps. */
  grid: [number, number];
  /** The text indices the maps belong to, in order. */
  targets: number[];
  /** [targets, gh, gw]: Σ_c weight_c · act_c, before ReLU. */
  raw: Float32Array;
  /** [targets, gh, gw]: ReLU, then CaR's min-max scaling (x - min) / (1e-15 + max), twice. */
  cam: Float32Array;
  /** [texts]: exp(logitScale) · cosine(image, text). */
  logits: Float32Array;
  /** [texts]: softmax of the logits. */
  probs: Float32Array;
  /** [layers, L, L] with L = 1 + gh·gw (class token first): each block's attention probabilities averaged over heads (absent with `attention: false`). */
  attention?: Float32Array;
  /** [gh·gw, width]: the last block's ln_1 output at the patch tokens (with `intermediates`). */
  activations?: Float32Array;
  /** [targets, gh·gw, width]: d probs[target] / d activations (with `intermediates`). */
  gradients?: Float32Array;
}

export interface GradCamGraphInputs {
  /** [1, 3, H, W] pixels. */
  pixels: Value;
  /** [T, E] text features (normalised here once more, as forward_last_layer does). */
  text: Value;
  /** [1]: exp(logitScale). */
  scale: Value;
  /** [K, T]: one-hot rows, row k selecting target k's probability. */
  seed: Value;
}

/**
 * Adds gradCAM to a graph; outputs `raw` [K, gh·gw], `logits` and `probs` [K, T] (every row the
 * same), `attention` [layers, L, L] unless disabled, `activations` [1, gh·gw, width] and `gradients`
 * [K, gh·gw, width].
 */
export function gradCamGraph(g: GraphBuilder, w: Weights, c: VisionConfig, layout: 'NK' | 'KN', inputs: GradCamGraphInputs, options: { classToken?: boolean; attention?: boolean } = {}): Record<string, Value> {
  const [k] = inputs.seed.shape as [number, number];
  const attention: Value[] = [];
  let x = visionEmbed(g, w, c, inputs.pixels);
  for (let i = 0; i < c.layers - 1; i++) {
    const t: BlockTaps = {};
    x = transformerBlock(g, w, i, c, x, undefined, `vision.block${i}`, t);
    if (options.attention !== false) attention.push(headAveragedAttention(g, t.qkv!, c.heads, `vision.block${i}.probs`));
  }
  // The last block once per target: rows are identical forward, separate backward.
  const [, l, width] = x.shape as [number, number, number];
  if (k > 1) x = g.add(x, g.fill([k, 1, 1], 0, x.dtype), 'gradcam.repeat');
  const last: BlockTaps = {};
  const y = transformerBlock(g, w, c.layers - 1, c, x, undefined, `vision.block${c.layers - 1}`, last);
  if (options.attention !== false) attention.push(headAveragedAttention(g, g.slice(last.qkv!, [0], [1]), c.heads, `vision.block${c.layers - 1}.probs`));
  const post = g.layerNorm(y, w('ln_post.weight'), w('ln_post.bias'), { eps: c.eps }, 'vision.ln_post');
  const pooled = options.classToken ? g.reshape(g.slice(post, [0, 0], [k, 1], 'gradcam.cls'), [k, width]) : g.mean(g.slice(post, [0, 1], [k, l], 'gradcam.patches'), [1], 'gradcam.pool');
  const image = g.l2Normalize(g.matmul(pooled, w('proj'), { transposeB: layout === 'NK' }, 'vision.proj'), 0, 'gradcam.image_norm');
  const text = g.l2Normalize(inputs.text, 0, 'gradcam.text_norm');
  // (scale · image) · textᵀ, in forward_last_layer's order.
  const logits = g.matmul(g.mul(image, inputs.scale, 'gradcam.scale'), text, { transposeB: true }, 'gradcam.logits');
  const probs = g.softmax(logits, {}, 'gradcam.softmax');
  const act = last.ln1!;
  const [grad] = g.gradients(probs, [act], { seed: inputs.seed });
  const patches = (v: Value, rows: number) => g.slice(v, [0, 1], [rows, l], 'gradcam.grid');
  const actGrid = patches(act, 1);
  const gradGrid = patches(grad!, k);
  const weights = g.reshape(g.mean(gradGrid, [1], 'gradcam.weights'), [k, 1, width]);
  const raw = g.sum(g.mul(actGrid, weights, 'gradcam.weighted'), [2], 'gradcam.raw');
  const out: Record<string, Value> = { raw, logits, probs, activations: actGrid, gradients: gradGrid };
  if (attention.length) out.attention = attention.length > 1 ? g.concat(attention, 0, 'gradcam.attention') : attention[0]!;
  return out;
}

/** CaR's scale_cam_image on one map, in place: x - min, then / (1e-15 + max). */
function scaleCam(m: Float32Array): void {
  let min = Infinity;
  for (const v of m) min = Math.min(min, v);
  let max = -Infinity;
  for (let i = 0; i < m.length; i++) max = Math.max(max, (m[i] = m[i]! - min));
  for (let i = 0; i < m.length; i++) m[i] = m[i]! / (1e-15 + max);
}

/** ReLU, then CaR's min-max scaling twice (once per target layer, once after averaging the one layer), per map of `n` cells. */
export function scaledCam(raw: Float32Array, n: number): Float32Array {
  const out = raw.map((v) => Math.max(v, 0));
  for (let i = 0; i < out.length; i += n) {
    const m = out.subarray(i, i + n);
    scaleCam(m);
    scaleCam(m);
  }
  return out;
}

/** Source index and weight of the second tap for each output position, as cv2.resize INTER_LINEAR (float32 coefficients, borders clamped). */
function cvTaps(src: number, dst: number): { index: Int32Array; weight: Float32Array } {
  const scale = src / dst;
  const index = new Int32Array(dst);
  const weight = new Float32Array(dst);
  for (let d = 0; d < dst; d++) {
    let fx = Math.fround((d + 0.5) * scale - 0.5);
    let sx = Math.floor(fx);
    fx = Math.fround(fx - sx);
    if (sx < 0) (sx = 0), (fx = 0);
    if (sx >= src - 1) (sx = src - 1), (fx = 0);
    index[d] = sx;
    weight[d] = fx;
  }
  return { index, weight };
}

/** One map [h, w] resized to [height, width] as cv2.resize(map, (width, height)) with INTER_LINEAR on float32. */
function resizeLinear(map: Float32Array, h: number, w: number, width: number, height: number, out: Float32Array): void {
  const f = Math.fround;
  const tx = cvTaps(w, width);
  const ty = cvTaps(h, height);
  // Horizontal pass per source row, then vertical, as OpenCV's resizeGeneric.
  const rows = new Float32Array(h * width);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < width; x++) {
      const sx = tx.index[x]!;
      const a = tx.weight[x]!;
      const v0 = map[y * w + sx]!;
      const v1 = map[y * w + Math.min(sx + 1, w - 1)]!;
      rows[y * width + x] = f(f(v0 * f(1 - a)) + f(v1 * a));
    }
  }
  for (let y = 0; y < height; y++) {
    const sy = ty.index[y]!;
    const b = ty.weight[y]!;
    const r0 = sy * width;
    const r1 = Math.min(sy + 1, h - 1) * width;
    for (let x = 0; x < width; x++) out[y * width + x] = f(f(rows[r0 + x]! * f(1 - b)) + f(rows[r1 + x]! * b));
  }
}

/**
 * Maps of a gradCAM result (`cam`, or any [maps, gh, gw] array passed as `cam` with its `grid`)
 * resized to the image's width × height as cv2.resize does (INTER_LINEAR): [maps, height, width].
 */
export function gradCamToImage(result: { grid: readonly [number, number]; cam: Float32Array }, width: number, height: number): Float32Array {
  const op = 'gradCamToImage';
  const [gh, gw] = result?.grid ?? [];
  if (!Number.isInteger(gh) || !Number.isInteger(gw) || gh! < 1 || gw! < 1) throw new RangeError(`${op}: grid must be [gh, gw] of positive integers, got ${JSON.stringify(result?.grid)}`);
  const cells = gh! * gw!;
  if (!(result.cam instanceof Float32Array) || result.cam.length % cells !== 0) throw new RangeError(`${op}: cam must be a Float32Array of [maps, ${gh}, ${gw}] values, got ${result.cam?.length} values`);
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) throw new RangeError(`${op}: width and height must be positive integers, got ${width} × ${height}`);
  const maps = result.cam.length / cells;
  const out = new Float32Array(maps * width * height);
  for (let m = 0; m < maps; m++) resizeLinear(result.cam.subarray(m * cells, (m + 1) * cells), gh!, gw!, width, height, out.subarray(m * width * height, (m + 1) * width * height));
  return out;
}

/**
 * Text features [T, E] from the embeddings of T·M prompts (text t's M templates in rows t·M …):
 * each normalised, averaged per text, normalised again (CaR's zeroshot_classifier).
 */
export function ensembleTextFeatures(g: GraphBuilder, embeds: Value, texts: number, templates: number): Value {
  const e = embeds.shape[1]!;
  const each = g.reshape(g.l2Normalize(embeds, 0, 'gradcam.prompt_norm'), [texts, templates, e]);
  return g.l2Normalize(g.mean(each, [1], 'gradcam.ensemble'), 0, 'gradcam.ensemble_norm');
}
