// A box-given region classifier on plain CLIP (RegionCLIP / F-VLM / OvarNet style, no training):
// CLIP's dense token map (ln_post on every token, then the projection: already in the joint
// image–text space) → RoIAlign of each box on the patch grid → one embedding per box → CLIP-style
// logits exp(logitScale) · cos against prompt-ensembled category and attribute text embeddings.
// The vision tower runs as one graph per image (its patch grid kept on the GPU until the next
// image); RoIAlign, the similarity, top-k and the softmaxes as another per box-count bucket and
// prompt counts, so new boxes on the same image never re-run the tower. Only text embeddings
// (cached per prompt) come from the host.
import type { Gpu } from '../../gpu/gpu.js';
import { PlanCache, type PlanCacheLimits } from '../../graph/cache.js';
import type { GraphBuilder } from '../../graph/builder.js';
import type { GraphInput } from '../../graph/plan.js';
import { Tensor } from '../../tensor.js';
import type { ReadArray } from '../../dtype.js';
import { bucket } from '../buckets.js';
import { roiAlignKernel } from '../../kernels/roiAlign.js';
import { MAX_TOP_K, regionWordSimilarityKernel } from '../../kernels/regionWordSimilarity.js';
import { ClipModel, type ClipLoadOptions } from '../clip/model.js';
import { InputError, checkFinite, clipBox, encodeQuery, type QueryTokenizer } from '../inputs.js';
import { encodePrompts, readPrompts, type LearnedPrompts } from '../prompts/file.js';
import { ModelLifetime } from '../lifetime.js';
import type { ModelSource } from '../../io/source.js';
import { decodeImage, halfRoundedEven, preprocessClip, preprocessOwlVit, shortSideSize, type ImageInput, type PixelBatch } from '../preprocess/index.js';

/** What the classifier needs from a tokenizer (ClipTokenizer has it). */
export type PromptTokenizer = QueryTokenizer;

/** A box [x1, y1, x2, y2] in pixels of the original image (or of the model input for PixelBatch images). */
export type Box = readonly [number, number, number, number];

/**
 * How an image file becomes the model's square input, and so how boxes map onto the token grid:
 * - 'squash' (default): resized to size × size ignoring the aspect ratio (as OWL-ViT's processor),
 *   so every box lies on the grid; x scales by size / width and y by size / height.
 * - 'crop': CLIP's own preprocessing (shortest side to size, centre crop): boxes are scaled like
 *   the image and shifted by the crop offset; parts outside the crop read zeros (RoIAlign's
 *   out-of-map samples), so a box wholly outside the crop has no evidence.
 */
export type RegionResize = 'squash' | 'crop';

export interface ClassifyOptions {
  /**
   * Category names, each put into every template (`{}` is replaced). With learned `prompts` holding
   * categories, leave it out: the file's names are used.
   */
  labels?: readonly string[];
  /**
   * Learned prompts (a file written by savePrompts / `ovgpu train-prompts`, or readPrompts' result):
   * its categories and attributes replace the templates. Learned attribute scores are sigmoid
   * probabilities (they were trained with binary cross-entropy), not a softmax over attributes.
   */
  prompts?: string | LearnedPrompts;
  /** Attribute names (colours, materials, states, …), scored separately from the categories. */
  attributes?: readonly string[];
  /** Prompt templates for the labels, averaged after normalisation (prompt ensembling). */
  templates?: readonly string[];
  /** Prompt templates for the attributes. */
  attributeTemplates?: readonly string[];
  /** How many categories and attributes to return per box (default 5; at most 64). */
  topK?: number;
  resize?: RegionResize;
  /** Also every category's and attribute's score per box (RegionResult.scores), e.g. for evaluation. */
  allScores?: boolean;
  /** Cut prompts longer than CLIP's context instead of refusing them (default false, as the reference). */
  truncate?: boolean;
}

export interface ScoredName {
  name: string;
  /** Softmax probability over the labels (or over the attributes; a sigmoid for learned attribute prompts). */
  score: number;
  /** exp(logitScale) · cos(region, prompt embedding). */
  logit: number;
}

export interface RegionResult {
  box: [number, number, number, number];
  /** The topK categories, best first. */
  categories: ScoredName[];
  /** The topK attributes, best first (empty without attributes). */
  attributes: ScoredName[];
  /** With `allScores`: the score of every category and attribute by name. */
  scores?: { categories: Record<string, number>; attributes: Record<string, number> };
}

export const DEFAULT_TEMPLATES: readonly string[] = ['a photo of a {}.'];
export const DEFAULT_ATTRIBUTE_TEMPLATES: readonly string[] = ['a photo of a {} object.'];

/** An image to classify: a file path or encoded bytes, or model-ready pixels [1, 3, S, S] (boxes then in S × S pixels). */
export type RegionImage = ImageInput | PixelBatch;

function isPixelBatch(x: RegionImage): x is PixelBatch {
  return typeof x === 'object' && !(x instanceof Uint8Array) && 'data' in x && 'shape' in x;
}

export class RegionClassifier {
  readonly clip: ClipModel;
  readonly tokenizer?: PromptTokenizer;
  /** Unit-norm text embeddings by prompt. */
  readonly #prompts = new Map<string, Float32Array>();
  readonly #plans: PlanCache;
  /** The last image's pixels and its dense patch grid [1, g, g, E]. */
  #image?: { pixels: Float32Array; grid: Tensor };
  #queue: Promise<unknown> = Promise.resolve();
  /** Learned prompt files' names and re-encoded text features, by path or object. */
  readonly #learned = new Map<string | LearnedPrompts, Promise<LearnedWords>>();
  #ownsClip = false;
  readonly #life: ModelLifetime;

  /**
   * A classifier on a loaded CLIP; prompts are tokenized with `tokenizer`, default the model's own.
   * `plans` bounds the classifier's compiled plans (the vision tower, and the box head per box-count
   * bucket and prompt counts).
   */
  constructor(clip: ClipModel, options: { tokenizer?: PromptTokenizer; plans?: PlanCacheLimits } = {}) {
    this.#plans = new PlanCache(clip.gpu, 'RegionClassifier', options.plans);
    this.#life = new ModelLifetime(clip.gpu, 'classifier');
    if (!clip.config.vision) throw new InputError('RegionClassifier', 'the CLIP checkpoint has no vision tower');
    this.clip = clip;
    this.tokenizer = options.tokenizer ?? clip.tokenizer;
  }

  /** Loads CLIP (and its tokenizer files) from a folder (path, URL or files; see ModelSource), as ClipModel.load does; dispose() frees it. */
  static async load(gpu: Gpu, source: ModelSource, options: ClipLoadOptions = {}): Promise<RegionClassifier> {
    const r = new RegionClassifier(await ClipModel.load(gpu, source, options), { plans: options.plans });
    r.#ownsClip = true;
    return r;
  }

  /** Side of the square model input. */
  get imageSize(): number {
    return this.clip.config.vision!.imageSize;
  }

  /** Patches per side of the token grid. */
  get gridSize(): number {
    const v = this.clip.config.vision!;
    return v.imageSize / v.patchSize;
  }

  /**
   * Pixels and the boxes mapped into model-input pixels. For files, boxes go through the same
   * resize (and crop) as the image; PixelBatch boxes are taken as model-input pixels already.
   */
  async #prepare(op: string, image: RegionImage, boxes: readonly Box[], resize: RegionResize): Promise<{ pixels: Float32Array; clipped: Box[]; mapped: number[][] }> {
    const size = this.imageSize;
    const clip = (width: number, height: number) => boxes.map((b, i) => clipBox(op, `box ${i}`, b, width, height));
    if (isPixelBatch(image)) {
      const s = image.shape;
      if (s.length !== 4 || s[0] !== 1 || s[1] !== 3 || s[2] !== size || s[3] !== size || image.data?.length !== 3 * size * size) {
        throw new InputError(op, `pixels must be [1, 3, ${size}, ${size}], got [${s.join(', ')}] with ${image.data?.length} values`);
      }
      checkFinite(op, 'pixels', image.data);
      const clipped = clip(size, size);
      return { pixels: image.data, clipped, mapped: clipped.map((b) => [...b]) };
    }
    if (resize === 'squash') {
      const p = await preprocessOwlVit(image, { size });
      const [h, w] = p.originalSize;
      const clipped = clip(w, h);
      return { pixels: p.data, clipped, mapped: clipped.map(([x1, y1, x2, y2]) => [(x1 * size) / w, (y1 * size) / h, (x2 * size) / w, (y2 * size) / h]) };
    }
    const { width, height } = await decodeImage(image);
    const clipped = clip(width, height);
    const [rw, rh] = shortSideSize(width, height, size);
    const [left, top] = [halfRoundedEven(rw - size), halfRoundedEven(rh - size)];
    const p = await preprocessClip(image, { size });
    const fx = rw / width;
    const fy = rh / height;
    return { pixels: p.data, clipped, mapped: clipped.map(([x1, y1, x2, y2]) => [x1 * fx - left, y1 * fy - top, x2 * fx - left, y2 * fy - top]) };
  }

  /**
   * The dense patch grid [1, g, g, E] of `pixels`: the vision tower runs only when the image differs
   * from the previous call's, whose grid is kept on the GPU until then.
   */
  async #grid(pixels: Float32Array): Promise<Tensor> {
    const last = this.#image;
    if (last && last.pixels.length === pixels.length && last.pixels.every((v, i) => v === pixels[i])) return last.grid;
    const { imageSize: size, gridSize: grid } = this;
    const e = this.clip.config.embedDim;
    const build = (g: GraphBuilder) => {
      const dense = this.clip.buildVision(g, g.input('pixels', [1, 3, size, size], this.clip.dtype), { dense: true }).dense!;
      g.output('grid', g.reshape(g.slice(dense, [0, 1], undefined, 'region.patches'), [1, grid, grid, e]));
    };
    const tensor = Tensor.empty(this.clip.gpu, [1, grid, grid, e], this.clip.dtype);
    try {
      await this.#plans.use(`vision:${size}`, build, (plan) => plan.run({ pixels }, { outputs: [], copyTo: { grid: tensor } }));
    } catch (err) {
      tensor.dispose();
      throw err;
    }
    last?.grid.dispose();
    this.#image = { pixels: pixels.slice(), grid: tensor };
    return tensor;
  }

  /**
   * The box head on a patch grid: RoIAlign with one bin per box, aligned (pixel centres), adaptive
   * sampling: ceil(box side in patches) samples per side, so a box over whole patches averages
   * exactly those patches' tokens → [1, K, E] region embeddings, then per prompt set the CLIP
   * logits, top-k and softmax. Plans serve box counts padded to a power of two (the last box
   * repeated); outputs are box-major, so the first K rows are the boxes'.
   */
  async #runBoxes({ pixels, mapped }: { pixels: Float32Array; mapped: number[][] }, words: { labels?: Float32Array; attributes?: Float32Array }, tops: { labels: number; attributes: number }): Promise<Record<string, ReadArray>> {
    const run = async () => {
      const grid = await this.#grid(pixels);
      const k = bucket(mapped.length);
      const rows = boxRows(Array.from({ length: k }, (_, i) => mapped[Math.min(i, mapped.length - 1)]!));
      const nl = (words.labels?.length ?? 0) / this.clip.config.embedDim;
      const na = (words.attributes?.length ?? 0) / this.clip.config.embedDim;
      const inputs: Record<string, GraphInput> = { grid, boxes: rows, ...words };
      const outputs = nl === 0 ? ['regions'] : ['labels', 'attributes'].filter((n) => words[n as 'labels']).flatMap((n) => [`${n}.logits`, `${n}.top`, `${n}.probs`]);
      const plan = `boxes:${k}:${nl}:${na}:${tops.labels}:${tops.attributes}`;
      return (await this.#plans.use(plan, (g) => this.#buildBoxes(g, k, nl, na, tops), (p) => p.run(inputs, { outputs }))).outputs;
    };
    // One call at a time: the next image's vision run replaces the grid a running call reads.
    const result = this.#queue.then(run);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  #buildBoxes(g: GraphBuilder, k: number, nl: number, na: number, tops: { labels: number; attributes: number }): void {
    const { imageSize: size, gridSize: grid } = this;
    const dtype = this.clip.dtype;
    const e = this.clip.config.embedDim;
    const tokens = g.input('grid', [1, grid, grid, e], dtype);
    const boxes = g.input('boxes', [k, 5], 'f32');
    const options = { outputSize: 1, spatialScale: grid / size, samplingRatio: -1, aligned: true, layout: 'nhwc' as const };
    const pooled = g.op(roiAlignKernel, [tokens, boxes], options, 'region.roiAlign')[0]!;
    const regions = g.reshape(pooled, [1, k, e]);
    g.output('regions', regions);
    const head = (name: 'labels' | 'attributes', n: number) => {
      if (n === 0) return;
      const words = g.input(name, [1, n, e], dtype);
      const [logits, , indices] = g.op(regionWordSimilarityKernel, [regions, words], { mode: 'clip', logitScale: this.clip.logitScale, topK: tops[name] }, `region.${name}`);
      g.output(`${name}.logits`, logits!);
      g.output(`${name}.top`, indices!);
      g.output(`${name}.probs`, g.softmax(logits!, {}, `region.${name}.softmax`));
    };
    head('labels', nl);
    head('attributes', na);
  }

  /** Region embeddings [K, E] (unnormalised, in CLIP's joint space) of boxes on one image. */
  embedRegions(image: RegionImage, boxes: readonly Box[], options: { resize?: RegionResize } = {}): Promise<Float32Array> {
    return this.#life.call('RegionClassifier.embedRegions', () => this.#embedRegions(image, boxes, options));
  }

  async #embedRegions(image: RegionImage, boxes: readonly Box[], options: { resize?: RegionResize }): Promise<Float32Array> {
    const e = this.clip.config.embedDim;
    checkBoxList('RegionClassifier.embedRegions', boxes);
    if (boxes.length === 0) return new Float32Array(0);
    const prepared = await this.#prepare('RegionClassifier.embedRegions', image, boxes, options.resize ?? 'squash');
    const outputs = await this.#runBoxes(prepared, {}, { labels: 0, attributes: 0 });
    return (outputs.regions as Float32Array).slice(0, boxes.length * e);
  }

  /**
   * Per box, the top categories and attributes. Category scores are a softmax over `labels`;
   * attribute scores a softmax over `attributes` (they rank attributes against each other: CLIP
   * logits of ~20–30 would saturate a per-attribute sigmoid, which needs a trained bias).
   */
  classify(image: RegionImage, boxes: readonly Box[], options: ClassifyOptions): Promise<RegionResult[]> {
    return this.#life.call('RegionClassifier.classify', () => this.#classify(image, boxes, options));
  }

  async #classify(image: RegionImage, boxes: readonly Box[], options: ClassifyOptions): Promise<RegionResult[]> {
    const learned = options.prompts === undefined ? {} : await this.#learnedPrompts(options.prompts);
    if (learned.categories && options.labels?.length) throw new InputError('RegionClassifier.classify', 'labels come from the learned prompts: leave labels out (or use a prompt file without categories)');
    if (learned.attributes && options.attributes?.length) throw new InputError('RegionClassifier.classify', 'attributes come from the learned prompts: leave attributes out');
    const labels = learned.categories?.names ?? options.labels ?? [];
    const attributes = learned.attributes?.names ?? options.attributes ?? [];
    if (labels.length === 0) throw new InputError('RegionClassifier.classify', 'give at least one label');
    const topK = options.topK ?? 5;
    if (!Number.isInteger(topK) || topK < 1 || topK > MAX_TOP_K) throw new InputError('RegionClassifier.classify', `topK must be an integer in [1, ${MAX_TOP_K}], got ${topK}`);
    checkBoxList('RegionClassifier.classify', boxes);
    const templates = checkTemplates(options.templates ?? DEFAULT_TEMPLATES);
    const attributeTemplates = checkTemplates(options.attributeTemplates ?? DEFAULT_ATTRIBUTE_TEMPLATES);
    if (boxes.length === 0) return [];
    const topL = Math.min(topK, labels.length);
    const topA = Math.min(topK, attributes.length);
    const prepared = await this.#prepare('RegionClassifier.classify', image, boxes, options.resize ?? 'squash');
    const truncate = { truncate: options.truncate };
    const labelWords = learned.categories?.features ?? (await this.#promptEmbeddings(labels, templates, truncate));
    const attributeWords = learned.attributes?.features ?? (attributes.length ? await this.#promptEmbeddings(attributes, attributeTemplates, truncate) : undefined);
    const words = attributeWords ? { labels: labelWords, attributes: attributeWords } : { labels: labelWords };
    const outputs = await this.#runBoxes(prepared, words, { labels: topL, attributes: topA });
    const pick = (name: string, names: readonly string[], top: number, r: number): ScoredName[] => {
      if (top === 0) return [];
      const idx = outputs[`${name}.top`] as Int32Array;
      const probs = outputs[`${name}.probs`] as Float32Array;
      const logits = outputs[`${name}.logits`] as Float32Array;
      const sigmoid = name === 'attributes' && !!learned.attributes;
      return Array.from(idx.subarray(r * top, (r + 1) * top), (j) => {
        const logit = logits[r * names.length + j]!;
        return { name: names[j]!, score: sigmoid ? 1 / (1 + Math.exp(-logit)) : probs[r * names.length + j]!, logit };
      });
    };
    // Every name's score (for evaluation), as the top lists score them.
    const all = (name: string, names: readonly string[], r: number) =>
      Object.fromEntries(names.map((n, j) => [n, name === 'attributes' && learned.attributes ? 1 / (1 + Math.exp(-(outputs[`${name}.logits`] as Float32Array)[r * names.length + j]!)) : (outputs[`${name}.probs`] as Float32Array)[r * names.length + j]!]));
    return prepared.clipped.map((b, r) => ({
      box: [...b] as RegionResult['box'],
      categories: pick('labels', labels, topL, r),
      attributes: pick('attributes', attributes, topA, r),
      ...(options.allScores && { scores: { categories: all('labels', labels, r), attributes: topA ? all('attributes', attributes, r) : {} } }),
    }));
  }

  /**
   * A prompt file (path or readPrompts' result) re-encoded on this classifier's CLIP, once per
   * file: its names and text features; a file trained on another CLIP is an InputError.
   */
  learnedPrompts(prompts: string | LearnedPrompts): Promise<LearnedWords> {
    return this.#life.call('RegionClassifier.learnedPrompts', () => this.#learnedPrompts(prompts));
  }

  #learnedPrompts(prompts: string | LearnedPrompts): Promise<LearnedWords> {
    let entry = this.#learned.get(prompts);
    if (!entry) {
      const load = async (): Promise<LearnedWords> => {
        const data = typeof prompts === 'string' ? await readPrompts(prompts) : prompts;
        const features = await encodePrompts(this.clip, data, { tokenizer: this.tokenizer, source: typeof prompts === 'string' ? prompts : undefined });
        const out: LearnedWords = {};
        if (data.categories) out.categories = { names: data.categories.names, features: features.categories! };
        if (data.attributes) out.attributes = { names: data.attributes.names, features: features.attributes! };
        return out;
      };
      entry = load();
      this.#learned.set(prompts, entry);
      entry.catch(() => this.#learned.delete(prompts));
    }
    return entry;
  }

  /**
   * One embedding per name: the mean of its unit-norm prompt embeddings over the templates
   * (CLIP's prompt ensembling; the similarity kernel normalises the mean again). [names, E].
   */
  promptEmbeddings(names: readonly string[], templates: readonly string[], options: { truncate?: boolean } = {}): Promise<Float32Array> {
    return this.#life.call('RegionClassifier.promptEmbeddings', () => this.#promptEmbeddings(names, templates, options));
  }

  async #promptEmbeddings(names: readonly string[], templates: readonly string[], options: { truncate?: boolean }): Promise<Float32Array> {
    checkTemplates(templates);
    const e = this.clip.config.embedDim;
    const texts = promptTexts(names, templates);
    await this.#embedPrompts(texts, !!options.truncate);
    const out = new Float32Array(names.length * e);
    texts.forEach((p, i) => {
      const v = this.#prompts.get(p)!;
      const row = Math.floor(i / templates.length) * e;
      for (let d = 0; d < e; d++) out[row + d]! += v[d]! / templates.length;
    });
    return out;
  }

  async #embedPrompts(prompts: readonly string[], truncate: boolean): Promise<void> {
    const text = this.clip.config.text;
    if (!text) throw new InputError('RegionClassifier', 'the CLIP checkpoint has no text tower');
    if (!this.tokenizer) throw new InputError('RegionClassifier', 'no tokenizer: the CLIP folder has no tokenizer files; pass { tokenizer } to the constructor or to load');
    const l = text.contextLength;
    // Every prompt is tokenized, cached or not, so an over-long one is refused on every call.
    const encoded = new Map([...new Set(prompts)].map((p) => [p, encodeQuery('RegionClassifier', this.tokenizer!, p, l, truncate)]));
    const missing = [...encoded.keys()].filter((p) => !this.#prompts.has(p));
    if (missing.length === 0) return;
    const ids = new Int32Array(missing.length * l);
    missing.forEach((p, i) => ids.set(encoded.get(p)!, i * l));
    const embeds = await this.clip.encodeText(ids, [missing.length, l]);
    const e = this.clip.config.embedDim;
    missing.forEach((p, i) => {
      const v = embeds.slice(i * e, (i + 1) * e);
      const norm = Math.hypot(...v);
      this.#prompts.set(p, v.map((x) => x / norm));
    });
  }

  /** Frees the plans and the kept patch grid (and the CLIP model when `load` created it). */
  dispose(): void {
    this.#life.dispose(() => {
      this.#plans.dispose();
      this.#image?.grid.dispose();
      this.#image = undefined;
      if (this.#ownsClip) this.clip.dispose();
    });
  }
}

/** Learned prompts' names and text features [names, embed] per vocabulary. */
export interface LearnedWords {
  categories?: { names: readonly string[]; features: Float32Array };
  attributes?: { names: readonly string[]; features: Float32Array };
}

/** The prompts of names × templates, name-major: each template with `{}` replaced by the name. */
export function promptTexts(names: readonly string[], templates: readonly string[]): string[] {
  return names.flatMap((n) => templates.map((t) => t.replaceAll('{}', n)));
}

function checkBoxList(op: string, boxes: readonly Box[]): void {
  if (!Array.isArray(boxes)) throw new InputError(op, `boxes must be an array of [x1, y1, x2, y2], got ${typeof boxes}`);
}

function checkTemplates(templates: readonly string[]): readonly string[] {
  if (!Array.isArray(templates) || templates.length === 0 || !templates.every((t) => typeof t === 'string' && t.includes('{}'))) {
    throw new InputError('RegionClassifier', `templates must be a non-empty list of strings holding {}, got ${JSON.stringify(templates)}`);
  }
  return templates;
}

/** RoIAlign rows (batch 0, x1, y1, x2, y2). */
function boxRows(boxes: readonly number[][]): Float32Array {
  const rows = new Float32Array(boxes.length * 5);
  boxes.forEach((b, i) => rows.set([0, ...b], i * 5));
  return rows;
}
