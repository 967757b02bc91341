// CaR (CLIP as RNN, clip_as_rnn/modeling/model/car.py) on ovgpu's CLIP: per stage, a gradCAM per
// remaining query on the proposal CLIP refined by CLIP-ES (mask proposals), visual prompts on the
// image from each binarised proposal, the prompted images scored by the classification CLIP against
// the remaining queries (mask classification); queries that score low are dropped until the set
// stops changing; then a dense CRF per surviving mask.
import type { Gpu } from '../../gpu/gpu.js';
import { PlanCache } from '../../graph/cache.js';
import type { GraphBuilder, Value } from '../../graph/builder.js';
import { ClipModel, type ClipLoadOptions } from '../clip/model.js';
import { transformerBlock } from '../clip/towers.js';
import { clipPixels, clipPixelsResized, decodeImage, type DecodedImage, type ImageInput } from '../preprocess/index.js';
import { InputError } from '../inputs.js';
import { bucket, padRows } from '../buckets.js';
import { clipEsAttention, clipEsTransition, refineCamClipEs, scaleCamToImage } from './clipes.js';
import { applyVisualPrompts, checkVisualPromptTypes, type VisualPromptType } from './prompts.js';
import { gaussianBlurU8 } from './draw.js';
import { classificationProbabilities, runCarLoop, type CarStage } from './loop.js';
import { DenseCrfImage, crfProbabilitiesFromCams, type DenseCrfOptions } from './crf.js';

export interface CarLoadOptions {
  /** Options for loading the proposal CLIP. */
  clip?: ClipLoadOptions;
  /** A second CLIP for mask classification (CaR's semantic CLIP): a checkpoint path or a loaded model. Default: the proposal CLIP. */
  classifier?: string | ClipModel;
  /** Options for loading `classifier` when it is a path. */
  classifierOptions?: ClipLoadOptions;
}

export interface CarSegmentOptions {
  /** Background classes that join the proposal softmax (CaR's bg_cls; default none). */
  background?: readonly string[];
  /** Template of the background classes (CLIPCAM: 'a clean origami {}.'). */
  backgroundTemplate?: string;
  /** CaR's cam_text_template ('a clean origami {}.'): the query text for classification and for the proposals after the first stage. */
  camTemplate?: string;
  /** CLIPCAM's text_template: templates ensembled for the proposal texts (default none: the text as is). */
  textTemplates?: readonly string[];
  /** CaR's semantic_templates: ensembled for classification (summed per-template softmaxes); default none (camTemplate, one softmax). */
  semanticTemplates?: readonly string[];
  /** CaR's confidence_threshold (0.45): a query survives a stage when its own mask's probability exceeds it. */
  threshold?: number;
  /** CaR's clipes_threshold (0.4): the CAM share above which CLIP-ES boxes are taken. */
  clipesThreshold?: number;
  /** CaR's mask_threshold (0.5): proposals above it are the masks the visual prompts and, without CRF, the result use. */
  maskThreshold?: number;
  /** CaR's visual_prompt_type ('circle'); any of blur, gray, black, circle, rectangle, contour, combined. */
  prompts?: readonly VisualPromptType[] | string;
  /** Dense CRF post-processing with CaR's settings (default true), or its options; false keeps the thresholded proposals. */
  crf?: boolean | DenseCrfOptions;
  /** CaR's bg_factor (1): the CRF background is (1 − proposal)^bgFactor. */
  bgFactor?: number;
  /** CaR's scale (1): the proposal CLIP sees the image resized to ceil(scale · side / patch) · patch. */
  scale?: number;
  /** Classification uses the whole vision tower instead of CaR's (which stops before the last block). */
  classifyWithLastBlock?: boolean;
  /** Cut over-long texts to the model's context instead of refusing them. */
  truncate?: boolean;
  /** Called as each stage's steps finish (for progress output). */
  onProgress?: (event: CarProgress) => void;
}

export interface CarProgress {
  stage: number;
  step: 'proposals' | 'prompts' | 'classification' | 'crf';
  /** Queries in this stage (or masks refined, for 'crf'). */
  queries: number;
  ms: number;
}

export interface CarQueryResult {
  query: string;
  /** [height·width] 1 inside the mask (all 0 when the query did not survive). */
  mask: Uint8Array;
  /** The refined proposal [height·width] in [0, 1] the mask came from (absent when the query did not survive). */
  proposal?: Float32Array;
  /** Its own-mask probability in the last stage (0 when it did not survive, as car.py). */
  score: number;
  survived: boolean;
}

export interface CarSegmentation {
  width: number;
  height: number;
  /** Stages the loop ran (car.py's `run`). */
  iterations: number;
  results: CarQueryResult[];
  /** Each stage's queries (indices into `results`), own-mask scores and kept queries. */
  stages: CarStage[];
  /** Milliseconds per step, summed over stages. */
  timings: { proposals: number; prompts: number; classification: number; crf: number };
}

/** An image for segment(): a path or encoded bytes, or decoded RGB(A) pixels. */
export type CarImage = ImageInput | DecodedImage;

const DEFAULTS: Required<Pick<CarSegmentOptions, 'backgroundTemplate' | 'camTemplate' | 'threshold' | 'clipesThreshold' | 'maskThreshold' | 'prompts' | 'bgFactor' | 'scale'>> = {
  backgroundTemplate: 'a clean origami {}.',
  camTemplate: 'a clean origami {}.',
  threshold: 0.45,
  clipesThreshold: 0.4,
  maskThreshold: 0.5,
  prompts: 'circle',
  bgFactor: 1,
  scale: 1,
};

function fill(template: string, text: string): string {
  return template.replaceAll('{}', text);
}

function checkTemplate(op: string, name: string, t: unknown): string {
  if (typeof t !== 'string' || !t.includes('{}')) throw new InputError(op, `${name} must be a string with {} where the text goes, got ${JSON.stringify(t)}`);
  return t;
}

function checkUnit(op: string, name: string, v: number): number {
  if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new InputError(op, `${name} must be in [0, 1], got ${v}`);
  return v;
}

/**
 * CaR segmentation: `CarSegmenter.load(gpu, clipDir)`, then `segment(image, queries)` gives each
 * query a mask at the image's resolution, its score and whether it survived the loop.
 */
export class CarSegmenter {
  readonly proposer: ClipModel;
  readonly classifier: ClipModel;
  readonly #owned: ClipModel[];
  readonly #plans: PlanCache;
  /** Text features by text and template set, per model. */
  readonly #texts = new WeakMap<ClipModel, Map<string, Float32Array>>();

  constructor(proposer: ClipModel, classifier: ClipModel = proposer, owned: ClipModel[] = []) {
    for (const [name, m] of [['proposer', proposer], ['classifier', classifier]] as const) {
      if (!m.config.vision || !m.config.text) throw new InputError('CarSegmenter', `the ${name} CLIP needs both towers`);
    }
    this.proposer = proposer;
    this.classifier = classifier;
    this.#owned = owned;
    this.#plans = new PlanCache(classifier.gpu, 'CarSegmenter');
  }

  /** Loads the proposal CLIP from `clipDir` and, when `options.classifier` is a path, the classification CLIP. */
  static async load(gpu: Gpu, clipDir: string, options: CarLoadOptions = {}): Promise<CarSegmenter> {
    const proposer = await ClipModel.load(gpu, clipDir, options.clip);
    try {
      const c = options.classifier;
      const classifier = typeof c === 'string' ? await ClipModel.load(gpu, c, options.classifierOptions) : c ?? proposer;
      return new CarSegmenter(proposer, classifier, typeof c === 'string' ? [proposer, classifier] : [proposer]);
    } catch (err) {
      proposer.dispose();
      throw err;
    }
  }

  /** Frees the plans and the models this segmenter loaded. */
  dispose(): void {
    this.#plans.dispose();
    for (const m of this.#owned) m.dispose();
  }

  /** Normalised text features [texts, E]: each text's templates encoded, normalised, averaged, normalised (zeroshot_classifier). */
  async #features(model: ClipModel, texts: readonly string[], templates: readonly string[] | undefined, truncate: boolean | undefined): Promise<Float32Array> {
    const cache = this.#texts.get(model) ?? new Map<string, Float32Array>();
    this.#texts.set(model, cache);
    const e = model.config.embedDim;
    const prompts = texts.flatMap((t) => (templates?.length ? templates.map((tp) => fill(tp, t)) : [t]));
    const missing = [...new Set(prompts.filter((p) => !cache.has(p)))];
    if (missing.length) {
      const embeds = await model.encodeText(missing, undefined, { truncate });
      missing.forEach((p, i) => cache.set(p, normalised(embeds.subarray(i * e, (i + 1) * e))));
    }
    const per = prompts.length / texts.length;
    const out = new Float32Array(texts.length * e);
    for (let t = 0; t < texts.length; t++) {
      const mean = new Float64Array(e);
      for (let k = 0; k < per; k++) {
        const v = cache.get(prompts[t * per + k]!)!;
        for (let d = 0; d < e; d++) mean[d]! += v[d]! / per;
      }
      out.set(normalised(mean), t * e);
    }
    return out;
  }

  /**
   * Classification image embeddings [count, E] of CLIP-preprocessed pixels [count, 3, S, S] (S the
   * classifier's image size): as CaR's CLIPWrapper.forward, the position embedding rounded to fp16
   * and the tower stopped before its last block (all blocks with `withLastBlock`), then the class
   * token through ln_post and the projection.
   */
  async classifierEmbeddings(pixels: Float32Array, count: number, options: { withLastBlock?: boolean } = {}): Promise<Float32Array> {
    const withLastBlock = !!options.withLastBlock;
    const model = this.classifier;
    const v = model.config.vision!;
    const size = v.imageSize;
    if (!Number.isInteger(count) || count < 1 || !(pixels instanceof Float32Array) || pixels.length !== count * 3 * size * size) {
      throw new InputError('CarSegmenter.classifierEmbeddings', `pixels must be a Float32Array [count, 3, ${size}, ${size}] with count ≥ 1, got ${pixels?.length} values for count ${count}`);
    }
    const grid: [number, number] = [size / v.patchSize, size / v.patchSize];
    // CaR's upsample_position_embedding rounds the embedding to fp16 even at the native size.
    const position = await model.visionPositionEmbedding(grid);
    const padded = bucket(count);
    const blocks = withLastBlock ? v.layers : v.layers - 1;
    const build = (g: GraphBuilder) => {
      const weights = model.weights.vision!;
      const values = new Map<string, Value>();
      const w = (name: string) => {
        let val = values.get(name);
        if (!val) values.set(name, (val = g.constant(name === 'pos' ? position : weights.get(name)!)));
        return val;
      };
      let x = g.patchEmbed(g.input('pixels', [padded, 3, size, size], model.dtype), w('patch.weight'), w('class'), w('pos'), { patchSize: v.patchSize }, 'car.embed');
      x = g.layerNorm(x, w('ln_pre.weight'), w('ln_pre.bias'), { eps: v.eps }, 'car.ln_pre');
      for (let i = 0; i < blocks; i++) x = transformerBlock(g, w, i, v, x, undefined, `car.block${i}`);
      const cls = g.reshape(g.slice(x, [0, 0], [padded, 1], 'car.cls'), [padded, -1]);
      const post = g.layerNorm(cls, w('ln_post.weight'), w('ln_post.bias'), { eps: v.eps }, 'car.ln_post');
      g.output('embeds', g.matmul(post, w('proj'), { transposeB: model.convention.projectionLayout === 'NK' }, 'car.proj'));
    };
    const r = await this.#plans.use(`classify:${padded}:${blocks}`, build, (plan) => plan.run({ pixels: padRows(pixels, count, padded) }, { outputs: ['embeds'] }));
    return (r.outputs.embeds as Float32Array).slice(0, count * model.config.embedDim);
  }

  /**
   * Segments `image` by `queries` (CaR's loop). Each result has a mask at the image's resolution,
   * its score and whether the query survived; `iterations` counts the stages.
   */
  async segment(image: CarImage, queries: readonly string[], options: CarSegmentOptions = {}): Promise<CarSegmentation> {
    const op = 'CarSegmenter.segment';
    const o = { ...DEFAULTS, ...options };
    if (!Array.isArray(queries) || queries.length === 0) throw new InputError(op, 'queries: give at least one query');
    queries.forEach((q, i) => {
      if (typeof q !== 'string' || q.trim() === '') throw new InputError(op, `query ${i} is empty: every query must name something`);
    });
    for (const [name, v] of [['threshold', o.threshold], ['clipesThreshold', o.clipesThreshold], ['maskThreshold', o.maskThreshold]] as const) checkUnit(op, name, v);
    const types = checkVisualPromptTypes(op, o.prompts);
    checkTemplate(op, 'camTemplate', o.camTemplate);
    checkTemplate(op, 'backgroundTemplate', o.backgroundTemplate);
    for (const [name, list] of [['textTemplates', o.textTemplates], ['semanticTemplates', o.semanticTemplates]] as const) {
      if (list !== undefined) {
        if (!Array.isArray(list) || list.length === 0) throw new InputError(op, `${name} must be a non-empty array of templates, got ${JSON.stringify(list)}`);
        list.forEach((t, i) => checkTemplate(op, `${name}[${i}]`, t));
      }
    }
    const background = o.background ?? [];
    if (!Array.isArray(background)) throw new InputError(op, `background must be an array of class names, got ${JSON.stringify(background)}`);
    background.forEach((b, i) => {
      if (typeof b !== 'string' || b.trim() === '') throw new InputError(op, `background class ${i} is empty`);
    });
    if (!(Number.isFinite(o.bgFactor) && o.bgFactor > 0)) throw new InputError(op, `bgFactor must be a finite number > 0, got ${o.bgFactor}`);
    if (!(Number.isFinite(o.scale) && o.scale > 0)) throw new InputError(op, `scale must be a finite number > 0, got ${o.scale}`);
    const decoded = isDecoded(image) ? image : await decodeImage(image);
    const { width, height } = decoded;
    const patch = this.proposer.config.vision!.patchSize;
    if (width < patch || height < patch) throw new InputError(op, `the image is ${width}×${height}, smaller than one ${patch}×${patch} patch of the proposal CLIP`);
    const rgba = toRgba(decoded);
    const timings = { proposals: 0, prompts: 0, classification: 0, crf: 0 };
    const progress = (stage: number, step: CarProgress['step'], count: number, t0: number) => {
      const ms = performance.now() - t0;
      timings[step] += ms;
      o.onProgress?.({ stage, step, queries: count, ms });
    };

    // Proposal inputs, the same every stage: pixels at the patch-rounded size, background features.
    const camH = Math.ceil((o.scale * height) / patch) * patch;
    const camW = Math.ceil((o.scale * width) / patch) * patch;
    const camPixels = clipPixelsResized(decoded, camH, camW);
    const bgFeatures = background.length ? await this.#features(this.proposer, background, [o.backgroundTemplate], o.truncate) : new Float32Array(0);
    let transition: Float64Array | undefined;
    const blurred = types.includes('blur') ? gaussianBlurU8(rgba, width, height, 4) : undefined;

    const loop = await runCarLoop<Float32Array>(queries.length, o.threshold, {
      propose: async (ids, stage) => {
        const t0 = performance.now();
        // car.py: the first stage's CAM texts are the queries, later ones the cam-templated texts.
        const texts = ids.map((i) => (stage === 1 ? queries[i]! : fill(o.camTemplate, queries[i]!)));
        const fg = await this.#features(this.proposer, texts, o.textTemplates, o.truncate);
        const r = await proposeMasks(this.proposer, camPixels, fg, bgFeatures, width, height, { clipesThreshold: o.clipesThreshold, transition });
        transition = r.transition;
        const maps = r.maps;
        progress(stage, 'proposals', ids.length, t0);
        return maps;
      },
      classify: async (maps, ids, stage) => {
        let t0 = performance.now();
        // car.py's apply_visual_prompts: maps summing to at most 1 leave the image unprompted.
        const prompted = maps.map((m) => {
          let sum = 0;
          for (const v of m) sum += v;
          if (sum <= 1) return rgba;
          const mask = Uint8Array.from(m, (v) => (v > o.maskThreshold ? 1 : 0));
          return applyVisualPrompts(rgba, width, height, mask, types, { blurred });
        });
        progress(stage, 'prompts', ids.length, t0);
        t0 = performance.now();
        const size = this.classifier.config.vision!.imageSize;
        const { data: pixels } = clipPixels(prompted.map((data) => ({ data, width, height, channels: 4 as const })), { size });
        const images = await this.classifierEmbeddings(pixels, prompted.length, { withLastBlock: o.classifyWithLastBlock });
        const templates = o.semanticTemplates ?? [o.camTemplate];
        const logits: Float32Array[] = [];
        for (const tp of templates) {
          const text = await this.#features(this.classifier, ids.map((i) => fill(tp, queries[i]!)), undefined, o.truncate);
          logits.push(this.classifier.similarity(images, text));
        }
        const probs = classificationProbabilities(logits, ids.length, ids.length, o.semanticTemplates !== undefined);
        progress(stage, 'classification', ids.length, t0);
        return probs;
      },
      isEmpty: (m) => m.every((v) => v === 0),
    });

    const t0 = performance.now();
    const masks = await this.#masks(rgba, width, height, loop.proposals, o);
    if (o.crf !== false) progress(loop.stages.length, 'crf', loop.survivors.length, t0);
    return {
      width,
      height,
      iterations: loop.stages.length,
      stages: loop.stages,
      timings,
      results: queries.map((query, i) => ({ query, mask: masks[i]!, proposal: loop.proposals[i], score: loop.scores[i]!, survived: loop.proposals[i] !== undefined })),
    };
  }

  /** Final masks: the dense CRF of each surviving proposal against the background (car.py's refer mode), or the thresholded proposal. */
  async #masks(rgba: Uint8Array, width: number, height: number, proposals: readonly (Float32Array | undefined)[], o: CarSegmentOptions & typeof DEFAULTS): Promise<Uint8Array[]> {
    const n = width * height;
    if (o.crf === false) return proposals.map((p) => (p ? Uint8Array.from(p, (v) => (v > o.maskThreshold ? 1 : 0)) : new Uint8Array(n)));
    const crf = proposals.some((p) => p) ? DenseCrfImage.prepare(this.proposer.gpu, rgba, width, height, o.crf === true || o.crf === undefined ? {} : o.crf) : undefined;
    try {
      const out: Uint8Array[] = [];
      for (const p of proposals) {
        if (!p) {
          out.push(new Uint8Array(n));
          continue;
        }
        const { labels } = await crf!.run(crfProbabilitiesFromCams(p, width, height, o.bgFactor));
        out.push(Uint8Array.from(labels, (l) => (l === 1 ? 1 : 0)));
      }
      return out;
    } finally {
      crf?.dispose();
    }
  }
}

export interface ProposalResult {
  /** Per foreground text: the refined CAM resized to width × height, min-max scaled (CLIPCAM's mask). */
  maps: Float32Array[];
  /** gradCAM's grid [gh, gw] and scaled CAMs [fg, gh, gw] (after CLIPCAM's background fallback). */
  grid: [number, number];
  cams: Float32Array;
  /** Per foreground text: CLIP-ES boxes and refined grid. */
  boxes: [number, number, number, number][][];
  refined: Float64Array[];
  /** The CLIP-ES transition matrix [n, n] (the same for every text of this image: pass it back in). */
  transition: Float64Array;
}

/**
 * CaR's mask proposals (CLIPCAM) for one image: gradCAM of each foreground text against the
 * foreground then background text features (normalised rows [fg + bg, E]); a map that comes out all
 * zero is recomputed against the foreground alone; each CAM refined by CLIP-ES and resized to
 * width × height with scale_cam_image. `pixels` are the model-ready [1, 3, H, W] pixels.
 */
export async function proposeMasks(model: ClipModel, pixels: { data: Float32Array; shape: readonly number[] }, fg: Float32Array, bg: Float32Array, width: number, height: number, options: { clipesThreshold?: number; transition?: Float64Array } = {}): Promise<ProposalResult> {
  const e = model.config.embedDim;
  const count = fg.length / e;
  if (!Number.isInteger(count) || count < 1 || bg.length % e !== 0) throw new InputError('proposeMasks', `fg and bg must be [T, ${e}] text features (fg at least one row), got ${fg.length} and ${bg.length} values`);
  const targets = Array.from({ length: count }, (_, k) => k);
  const r = await model.gradCam(pixels, concatRows(fg, bg), { targets, attention: !options.transition });
  let cams = r.cam;
  const n = r.grid[0] * r.grid[1];
  const zero = targets.filter((k) => cams.subarray(k * n, (k + 1) * n).every((v) => v === 0));
  if (zero.length && bg.length) {
    const again = await model.gradCam(pixels, fg, { targets: zero, attention: false });
    cams = cams.slice();
    zero.forEach((k, j) => cams.set(again.cam.subarray(j * n, (j + 1) * n), k * n));
  }
  const transition = options.transition ?? clipEsTransition(clipEsAttention(r.attention!, r.attention!.length / (n + 1) ** 2, n + 1), n).transition;
  const refinedAll = targets.map((k) => refineCamClipEs(cams.subarray(k * n, (k + 1) * n), r.grid, null, { threshold: options.clipesThreshold, transition }));
  return {
    maps: refinedAll.map((x) => scaleCamToImage(x.refined, r.grid, width, height)),
    grid: r.grid,
    cams,
    boxes: refinedAll.map((x) => x.boxes),
    refined: refinedAll.map((x) => x.refined),
    transition,
  };
}

function normalised(v: ArrayLike<number>): Float32Array {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i]! * v[i]!;
  const norm = Math.sqrt(s);
  return Float32Array.from(v as ArrayLike<number>, (x) => x / norm);
}

function concatRows(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function isDecoded(image: CarImage): image is DecodedImage {
  return typeof image === 'object' && image !== null && !(image instanceof Uint8Array) && 'data' in image && 'width' in image;
}

/** RGBA bytes of a decoded image (CaR converts to RGB: the alpha is set opaque). */
function toRgba(img: DecodedImage): Uint8Array {
  const n = img.width * img.height;
  if (!(img.data instanceof Uint8Array) || img.data.length !== n * img.channels || (img.channels !== 3 && img.channels !== 4)) {
    throw new InputError('CarSegmenter.segment', `image pixels must be width·height·channels (3 or 4) bytes, got ${img.data?.length} for ${img.width}×${img.height}×${img.channels}`);
  }
  const out = new Uint8Array(n * 4);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) out[i * 4 + c] = img.data[i * img.channels + c]!;
    out[i * 4 + 3] = 255;
  }
  return out;
}
