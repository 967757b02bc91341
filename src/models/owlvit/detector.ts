import type { Gpu, GpuStats } from '../../gpu/gpu.js';
import { GpuError } from '../../gpu/errors.js';
import type { DType } from '../../dtype.js';
import { Tensor, maxTensorBytes } from '../../tensor.js';
import type { GraphPlan } from '../../graph/plan.js';
import { bucket, firstColumns, firstRows, padColumns, padRows } from '../buckets.js';
import type { GraphBuilder, Value } from '../../graph/builder.js';
import { PlanCache, type PlanCacheLimits } from '../../graph/cache.js';
import { hfNames } from '../clip/names.js';
import { checkSize, checkTensor, loadError, planTower, uploadPlanned, type LoadContext, type PlannedParam, type WeightReader } from '../clip/weights.js';
import { hfOrigin } from '../clip/config.js';
import { openWeightReader } from '../clip/reader.js';
import { SafetensorsError } from '../../io/safetensors.js';
import { locate, readFile, type Location, type ModelSource } from '../../io/source.js';
import { loadTokenizer } from '../clip/model.js';
import { poolIndices, type Weights } from '../clip/towers.js';
import { owlVitConfigFromHf, type OwlModelType, type OwlVitConfig } from './config.js';
import { headShapes, towerRoot, unusedByDetection } from './names.js';
import { classLogits, imageHeads, textEmbeds, type ImageHeadOutputs } from './heads.js';
import { nmsKernel } from '../../kernels/nms.js';
import { logitThreshold, type PlanNms } from './plan-nms.js';
import { ClipTokenizer, TOKENIZER_FILES } from '../tokenizer/index.js';
import { InputError, checkFinite, checkInput, clipBox } from '../inputs.js';
import { DETECT_THRESHOLD, detect, type Detection, type DetectImage, type DetectOptions, type DetectorCalls, type DetectQueries } from './detect.js';
import { ModelLifetime } from '../lifetime.js';
import {
  postProcessImageGuided,
  postProcessObjectDetection,
  selectImageQuery,
  type Detections,
  type ImageGuidedPostProcessOptions,
  type PostProcessOptions,
} from './postprocess.js';

export interface OwlVitLoadOptions {
  /** Weight and activation storage; f16 needs shader-f16 (compute accumulates in f32). */
  dtype?: 'f32' | 'f16';
  /** An OwlViTConfig object; default: the folder's config.json. */
  config?: Record<string, unknown>;
  /** For text queries given as strings (a ClipTokenizer, or where its files are); default: the folder's tokenizer files, if it has any. */
  tokenizer?: ClipTokenizer | ModelSource;
  /** Text embeddings kept per query, least recently added dropped first (default 4096). */
  textCacheSize?: number;
  /** Accept weights holding NaN or ±Inf (default: the load fails, naming the tensor). */
  allowNonFinite?: boolean;
  /** Bounds on the compiled plans kept (vision, text and scoring per batch and query-count bucket, scoring also per NMS IoU and threshold); see PlanCache. */
  plans?: PlanCacheLimits;
}

export interface PredictInputs {
  /** Preprocessed pixels [B, 3, S, S] (S = the config's image size), NCHW. */
  pixelValues: Float32Array;
  pixelShape: readonly number[];
  /** Token ids [B·Q, L]: Q queries per image, image-major; a row whose first id is 0 is padding. */
  inputIds: Int32Array;
  idsShape: readonly number[];
  /** [B·Q, L] (1 = token, 0 = padding); zeros may only follow each row's pooled (argmax) token. */
  attentionMask?: ArrayLike<number>;
}

/** HF OwlViTObjectDetectionOutput's (Owlv2ObjectDetectionOutput's) tensors, flattened row-major. */
export interface PredictOutputs {
  /** [B, N, Q] class logits; padded queries -1e6. */
  logits: Float32Array;
  /** [B, N, 4] cxcywh in [0, 1]. */
  predBoxes: Float32Array;
  /** [B, N, Dt] class embeddings divided by their norm + 1e-6. */
  classEmbeds: Float32Array;
  /** [B, g, g, D] the feature map the heads read. */
  imageEmbeds: Float32Array;
  /** [B, Q, E] L2-normalised query embeddings. */
  textEmbeds: Float32Array;
  /** [B, N] OWLv2's objectness logits (sigmoid gives the probability that a box holds an object); OWL-ViT v1 has none. */
  objectnessLogits?: Float32Array;
}

export interface ImageGuidedInputs {
  pixelValues: Float32Array;
  pixelShape: readonly number[];
  /** Query images [Nq, 3, S, S] with Nq = 1 (shared by every image) or B (one per image). */
  queryPixelValues: Float32Array;
  queryShape: readonly number[];
  /**
   * A box (x1, y1, x2, y2) normalised to the query image, or one per query image: the query is the
   * predicted box that overlaps it most (as the original OWL-ViT). Default: HF's choice.
   */
  queryBox?: readonly number[] | readonly (readonly number[])[];
}

/** HF OwlViTImageGuidedObjectDetectionOutput's tensors, plus how the query was chosen. */
export interface ImageGuidedOutputs {
  /** [B, N, 1] */
  logits: Float32Array;
  /** [B, N, 4] cxcywh of the target images. */
  targetPredBoxes: Float32Array;
  /** [Nq, N, 4] cxcywh of the query images. */
  queryPredBoxes: Float32Array;
  /** [Nq] the predicted box of each query image whose embedding is the query. */
  bestBoxIndices: Int32Array;
  /** [Nq, Dt] those embeddings (class_head.dense0 output, not normalised). */
  queryEmbeds: Float32Array;
  /** [B, N, Dt] normalised class embeddings of the target images. */
  classEmbeds: Float32Array;
  /** [B, g, g, D] and [Nq, g, g, D] feature maps. */
  imageEmbeds: Float32Array;
  queryImageEmbeds: Float32Array;
}

/**
 * What OWL-ViT computes from an image alone, kept on the GPU so that any number of query sets can
 * be scored without re-running the vision tower (see OwlVitDetector.embedImage). Dispose it when done
 * (the detector's dispose also frees every embedding it made).
 */
export class OwlVitImageEmbedding {
  readonly batch: number;
  /** [B, N, 4] cxcywh in [0, 1]. */
  readonly predBoxes: Float32Array;
  /** [B, g, g, D], when embedImage was asked for it. */
  readonly imageEmbeds?: Float32Array;
  /** [B, N, Dt] class_head.dense0 outputs, when embedImage was asked for them (what queryImage picks a query from). */
  readonly classEmbedsRaw?: Float32Array;
  /** [B, N] objectness logits (OWLv2 only). */
  readonly objectnessLogits?: Float32Array;
  /**
   * class_head inputs [P, N, Dt], [P, N, 1], [P, N, 1] in the detector's dtype, where P is the batch
   * rounded up to a power of two (plans serve such buckets; rows past `batch` are padding).
   */
  readonly tensors: { readonly classEmbedsRaw: Tensor; readonly logitShift: Tensor; readonly logitScale: Tensor };
  readonly #onDispose: (e: OwlVitImageEmbedding) => void;

  /** @internal made by OwlVitDetector.embedImage */
  constructor(init: { batch: number; predBoxes: Float32Array; imageEmbeds?: Float32Array; classEmbedsRaw?: Float32Array; objectnessLogits?: Float32Array; tensors: OwlVitImageEmbedding['tensors']; onDispose: (e: OwlVitImageEmbedding) => void }) {
    this.batch = init.batch;
    this.predBoxes = init.predBoxes;
    this.imageEmbeds = init.imageEmbeds;
    this.classEmbedsRaw = init.classEmbedsRaw;
    this.objectnessLogits = init.objectnessLogits;
    this.tensors = init.tensors;
    this.#onDispose = init.onDispose;
  }

  get disposed(): boolean {
    return this.tensors.classEmbedsRaw.disposed;
  }

  dispose(): void {
    if (this.disposed) return;
    for (const t of Object.values(this.tensors)) t.dispose();
    this.#onDispose(this);
  }
}

const OP = 'OwlVitDetector';
const F32_MAX = 3.4028234663852886e38;
const TEXT_CACHE_SIZE = 4096;

/**
 * OWL-ViT and OWLv2 open-vocabulary detection (Hugging Face OwlViTForObjectDetection and
 * Owlv2ForObjectDetection checkpoints, told apart by config.json's model_type) on the graph executor. Graph plans (vision + heads per batch bucket, text per batch bucket and length,
 * class logits per batch and query-count bucket; buckets are powers of two, padded) are compiled
 * once and cached; image embeddings and text
 * query embeddings can be kept and reused.
 */
export class OwlVitDetector {
  readonly gpu: Gpu;
  readonly config: OwlVitConfig;
  readonly dtype: DType;
  /** Checkpoint tensors that detection does not read, besides OwlViTModel's (Owlv2Model's) logit_scale and visual_projection. */
  readonly unusedWeights: readonly string[];
  readonly weights: { readonly vision: ReadonlyMap<string, Tensor>; readonly text: ReadonlyMap<string, Tensor>; readonly head: ReadonlyMap<string, Tensor> };
  /** Tokenizes string queries (detect); undefined when the folder had none and none was given. */
  readonly tokenizer?: ClipTokenizer;
  readonly #plans: PlanCache;
  readonly #textCache = new Map<string, Float32Array>();
  readonly #textCacheSize: number;
  readonly #embeddings = new Set<OwlVitImageEmbedding>();
  readonly #life: ModelLifetime;
  /** The calls detect() is built on, run inside its own call (see ModelLifetime.call). */
  readonly #calls: DetectorCalls;

  private constructor(gpu: Gpu, init: { config: OwlVitConfig; dtype: DType; unused: string[]; vision: Map<string, Tensor>; text: Map<string, Tensor>; head: Map<string, Tensor>; tokenizer?: ClipTokenizer; textCacheSize: number; plans?: PlanCacheLimits }) {
    this.gpu = gpu;
    this.#textCacheSize = init.textCacheSize;
    this.#plans = new PlanCache(gpu, 'OwlVitDetector', init.plans);
    this.tokenizer = init.tokenizer;
    this.config = init.config;
    this.dtype = init.dtype;
    this.unusedWeights = init.unused;
    this.weights = { vision: init.vision, text: init.text, head: init.head };
    this.#life = new ModelLifetime(gpu, 'detector');
    this.#calls = {
      config: this.config,
      tokenizer: this.tokenizer,
      embedImage: (...a) => this.#embedImage(...a),
      queryText: (...a) => this.#queryText(...a),
      queryImage: (...a) => this.#queryImage(...a),
      postProcess: (...a) => this.postProcess(...a),
      postProcessImageGuided: (outputs, options = {}, kept) => this.#postProcessImageGuided(outputs, options, kept),
      nms: (...a) => this.#nms(...a),
    };
  }

  /** Patches per image (N = g²). */
  get numPatches(): number {
    return this.config.gridSize ** 2;
  }

  /**
   * Loads a folder holding config.json and model.safetensors (or shards): OWL-ViT or OWLv2, as the
   * config's model_type says (without one, as the weight names say). The folder is a path (Node), a
   * URL ending with '/', or files by name (see ModelSource).
   */
  static async load(gpu: Gpu, source: ModelSource, options: OwlVitLoadOptions = {}): Promise<OwlVitDetector> {
    const op = `${OP}.load`;
    const dtype = options.dtype ?? 'f32';
    checkInput(dtype === 'f32' || dtype === 'f16', op, `dtype must be f32 or f16, got ${JSON.stringify(dtype)}`);
    checkInput(dtype !== 'f16' || gpu.features.has('shader-f16'), op, 'dtype f16 needs the shader-f16 feature, which this adapter lacks');
    const textCacheSize = options.textCacheSize ?? TEXT_CACHE_SIZE;
    checkInput(Number.isInteger(textCacheSize) && textCacheSize >= 0, op, `textCacheSize must be a non-negative integer, got ${textCacheSize}`);
    const where = await locate(source);
    checkInput(where.file === undefined, op, () => `${where.files.path(where.file!)}: no such model folder`);
    let config: OwlVitConfig;
    const configPath = where.files.path('config.json');
    const configSource = options.config ? 'options.config' : configPath;
    let json: Record<string, unknown>;
    try {
      const bytes = options.config ? undefined : await readFile(where.files, 'config.json');
      if (options.config) json = options.config;
      else if (bytes) json = JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
      else throw new Error('no config.json in this folder');
      config = owlVitConfigFromHf(json, json?.model_type === undefined ? await typeFromWeights(where) : undefined);
    } catch (err) {
      throw new InputError(op, `${configSource}: ${(err as Error).message}`, { cause: err });
    }
    let tokenizer: ClipTokenizer | undefined;
    try {
      tokenizer = await loadTokenizer(where, options.tokenizer);
    } catch (err) {
      throw new InputError(op, `tokenizer: ${(err as Error).message}`, { cause: err });
    }
    let reader: (WeightReader & { close(): void }) | undefined;
    const loaded: Map<string, Tensor>[] = [];
    try {
      reader = await openWeightReader(where, { allowNonFinite: options.allowNonFinite });
      const root = towerRoot(config);
      const conv = hfNames(root);
      if (!reader.names().some((n) => n.startsWith(root))) {
        const model = config.modelType === 'owlv2' ? 'OWLv2 weights: no tensor named owlv2.* (Owlv2ForObjectDetection)' : 'OWL-ViT weights: no tensor named owlvit.* (OwlViTForObjectDetection)';
        throw new SafetensorsError(reader.path, `no ${model}, e.g. "${conv.vision.prefix}embeddings.class_embedding" (config.json's model_type is ${JSON.stringify(config.modelType)})`);
      }
      const ctx: LoadContext = { op, reader, conv, origin: hfOrigin(configSource, json), dtype, maxBytes: maxTensorBytes(gpu) };
      // Every tensor is checked against the config before the first is read.
      const plans = [planTower(ctx, 'vision', config.vision, config.embedDim, ['proj']), planTower(ctx, 'text', config.text, config.embedDim), planHead(ctx, config)];
      const used = new Set<string>();
      for (const plan of plans) loaded.push(await uploadPlanned(gpu, reader, plan, dtype, used));
      const skipped = unusedByDetection(config);
      const unused = reader.names().filter((n) => !used.has(n) && !skipped.includes(n));
      if (unused.length) console.warn(`ovgpu: ${unused.length} tensor(s) in ${reader.path} not used by ${config.modelType === 'owlv2' ? 'OWLv2' : 'OWL-ViT'}: ${unused.slice(0, 5).join(', ')}${unused.length > 5 ? ', …' : ''}`);
      const [vision, text, head] = loaded as [Map<string, Tensor>, Map<string, Tensor>, Map<string, Tensor>];
      return new OwlVitDetector(gpu, { config, dtype, unused, vision, text, head, tokenizer, textCacheSize, plans: options.plans });
    } catch (err) {
      for (const m of loaded) for (const t of m.values()) t.dispose();
      throw loadError(op, err);
    } finally {
      reader?.close();
    }
  }

  /** Graph weights: canonical names → constants of graph g. */
  #weights(map: ReadonlyMap<string, Tensor>, g: GraphBuilder): Weights {
    const values = new Map<string, Value>();
    return (name) => {
      let v = values.get(name);
      if (!v) {
        const t = map.get(name);
        if (!t) throw new GpuError(OP, `no weight ${name}`);
        values.set(name, (v = g.constant(t)));
      }
      return v;
    };
  }


  /**
   * Adds the image side to a graph (for export or composition, as ClipModel.buildVision): pixels
   * [B, 3, S, S] → boxes, image embeddings and the class head's per-patch inputs.
   */
  buildImage(g: GraphBuilder, pixels: Value): ImageHeadOutputs {
    return imageHeads(g, this.#weights(this.weights.vision, g), this.#weights(this.weights.head, g), this.config, pixels);
  }

  /** Adds the text side to a graph: ids [T, L] (i32) and pooled positions as flat t·L + l → query embeddings [T, embed]. */
  buildText(g: GraphBuilder, ids: Value, pool: Value): Value {
    return textEmbeds(g, this.#weights(this.weights.text, g), this.config, ids, pool);
  }

  #checkPixels(op: string, pixels: Float32Array, shape: readonly number[], what = 'pixels'): number {
    const s = this.config.vision.imageSize;
    checkInput(
      shape.length === 4 && shape[0]! >= 1 && Number.isInteger(shape[0]) && shape[1] === 3 && shape[2] === s && shape[3] === s,
      op,
      () => `${what} must be [B, 3, ${s}, ${s}] (B ≥ 1), got [${shape.join(', ')}]`,
    );
    checkInput(pixels?.length === shape[0]! * 3 * s * s, op, () => `${what} hold ${pixels?.length} values, expected ${shape[0]! * 3 * s * s} for [${shape.join(', ')}]`);
    checkFinite(op, what, pixels);
    return shape[0]!;
  }

  /** The vision plan (tower, box head, class-head inputs) for `padded` images: cache key and graph. */
  #visionPlan(padded: number): { key: string; build: (g: GraphBuilder) => void } {
    const size = this.config.vision.imageSize;
    const build = (gb: GraphBuilder) => {
      const out = this.buildImage(gb, gb.input('pixels', [padded, 3, size, size], this.dtype));
      for (const [name, v] of Object.entries(out)) gb.output(name, v);
    };
    return { key: `vision:${padded}`, build };
  }

  /** The text plan for `padded` rows of l token ids. */
  #textPlan(padded: number, l: number): { key: string; build: (g: GraphBuilder) => void } {
    const build = (g: GraphBuilder) => {
      g.output('textEmbeds', this.buildText(g, g.input('ids', [padded, l], 'i32'), g.input('pool', [padded], 'i32')));
    };
    return { key: `text:${padded}:${l}`, build };
  }

  /**
   * The class-head scoring plan: `padded` embedded images against [pbq, pq] queries. With `nms`,
   * also class-aware NMS of each image's boxes (inputs nmsBoxes [padded, N, 4] and nmsBias
   * [padded, N], see PlanNms), scored by their best logit: outputs keep0, keep1, … (kept box
   * indices, best first, then -1), so detection with NMS is one submit.
   */
  #scorePlan(padded: number, pbq: number, pq: number, nms?: Pick<PlanNms, 'iouThreshold' | 'logitThreshold'>): { key: string; build: (g: GraphBuilder) => void } {
    const n = this.numPatches;
    const width = this.config.text.width;
    const build = (g: GraphBuilder) => {
      const out = classLogits(
        g,
        {
          classEmbedsRaw: g.input('classEmbedsRaw', [padded, n, width], this.dtype),
          logitShift: g.input('logitShift', [padded, n, 1], this.dtype),
          logitScale: g.input('logitScale', [padded, n, 1], this.dtype),
        },
        g.input('queries', [pbq, pq, width], this.dtype),
        g.input('mask', [pbq, pq], 'i32'),
        { best: nms !== undefined },
      );
      g.output('logits', out.logits);
      g.output('classEmbeds', out.classEmbeds);
      if (!nms) return;
      const boxes = g.input('nmsBoxes', [padded, n, 4]);
      const scores = g.add(g.reshape(out.best!.logits, [padded, n]), g.input('nmsBias', [padded, n]), 'owl.nms_scores');
      const labels = g.reshape(out.best!.queries, [padded, n]);
      const image = (v: Value, i: number) => g.reshape(g.slice(v, [i], [i + 1]), v.shape.slice(1));
      const options = { batched: true, iouThreshold: nms.iouThreshold, scoreThreshold: nms.logitThreshold };
      for (let i = 0; i < padded; i++) g.output(`keep${i}`, g.op(nmsKernel, [image(boxes, i), image(scores, i), image(labels, i)], options, `owl.nms${i}`)[0]!);
    };
    return { key: `score:${padded}:${pbq}:${pq}${nms ? `:nms:${nms.iouThreshold}:${nms.logitThreshold}` : ''}`, build };
  }

  /**
   * Compiles, without running them, the plans a detect of `images` images with `queries` text
   * queries uses (vision tower and heads, text tower at the context length, class-head scoring;
   * with `nms`, the scoring plan with detect's NMS at that IoU and `threshold`, which key it),
   * every pipeline of them at once (createComputePipelineAsync): the first real call then starts at
   * once. Worth it where shader compilation is slow (seconds per kernel in a browser on a software
   * adapter).
   */
  warmUp(options: { images?: number; queries?: number } & Pick<DetectOptions, 'threshold' | 'nms'> = {}): Promise<void> {
    return this.#life.call(`${OP}.warmUp`, async () => {
      const { images = 1, queries = 1, threshold = DETECT_THRESHOLD, nms } = options;
      for (const [name, n] of [['images', images], ['queries', queries]] as const) {
        checkInput(Number.isInteger(n) && n >= 1, `${OP}.warmUp`, () => `${name} must be a positive integer, got ${n}`);
      }
      checkInput(Number.isFinite(threshold) && (nms === undefined || Number.isFinite(nms)), `${OP}.warmUp`, () => `threshold and nms must be finite numbers, got ${threshold} and ${nms}`);
      const padded = bucket(images);
      // Each image has its own queries (pbq = the batch) unless there is one image.
      const scoring = this.#scorePlan(padded, images === 1 ? 1 : padded, bucket(queries), nms === undefined ? undefined : { iouThreshold: nms, logitThreshold: logitThreshold(threshold) });
      const plans = [this.#visionPlan(padded), this.#textPlan(bucket(queries), this.config.text.contextLength), scoring];
      await Promise.all(plans.map(({ key, build }) => this.#plans.use(key, build, async () => undefined)));
    });
  }

  /**
   * Runs the vision tower and the query-independent heads once: boxes, and the class head's inputs
   * kept on the GPU for scoring queries later (queryText / queryImage). With `imageEmbeds` the
   * feature map is also read back, with `classEmbedsRaw` the class embeddings (in the same run: what
   * an image used as a query needs).
   */
  embedImage(pixelValues: Float32Array, pixelShape: readonly number[], options: { imageEmbeds?: boolean; classEmbedsRaw?: boolean } = {}): Promise<OwlVitImageEmbedding> {
    return this.#life.call(`${OP}.embedImage`, () => this.#embedImage(pixelValues, pixelShape, options));
  }

  async #embedImage(pixelValues: Float32Array, pixelShape: readonly number[], options: { imageEmbeds?: boolean; classEmbedsRaw?: boolean } = {}): Promise<OwlVitImageEmbedding> {
    const op = `${OP}.embedImage`;
    const b = this.#checkPixels(op, pixelValues, pixelShape);
    const { gridSize: g, text } = this.config;
    const n = g * g;
    const padded = bucket(b);
    const { key, build } = this.#visionPlan(padded);
    const tensors = {
      classEmbedsRaw: Tensor.empty(this.gpu, [padded, n, text.width], this.dtype),
      logitShift: Tensor.empty(this.gpu, [padded, n, 1], this.dtype),
      logitScale: Tensor.empty(this.gpu, [padded, n, 1], this.dtype),
    };
    try {
      // Boxes (and OWLv2's objectness) always come back; the rest when asked.
      const wanted = ['imageEmbeds', 'classEmbedsRaw'].filter((o) => options[o as 'imageEmbeds']);
      const always = ['predBoxes', ...(this.config.modelType === 'owlv2' ? ['objectnessLogits'] : [])];
      const run = (plan: GraphPlan) => plan.run({ pixels: padRows(pixelValues, b, padded) }, { outputs: [...always, ...wanted], copyTo: tensors });
      const { outputs } = await this.#plans.use(key, build, run);
      const rows = (name: string) => outputs[name] && firstRows(outputs[name] as Float32Array, b, padded);
      const e = new OwlVitImageEmbedding({
        batch: b,
        predBoxes: rows('predBoxes')!,
        imageEmbeds: rows('imageEmbeds'),
        classEmbedsRaw: rows('classEmbedsRaw'),
        objectnessLogits: rows('objectnessLogits'),
        tensors,
        onDispose: (x) => this.#embeddings.delete(x),
      });
      this.#embeddings.add(e);
      return e;
    } catch (err) {
      for (const t of Object.values(tensors)) t.dispose();
      throw err;
    }
  }

  /**
   * L2-normalised text embeddings [T, E] of token id rows [T, L] (pooled at each row's argmax, as
   * OWL-ViT). Each row's embedding is cached by its tokens up to the pooled one (all that a causal
   * tower reads there), so repeated queries skip the text tower.
   */
  embedText(inputIds: Int32Array, idsShape: readonly number[], attentionMask?: ArrayLike<number>): Promise<Float32Array> {
    return this.#life.call(`${OP}.embedText`, () => this.#embedText(inputIds, idsShape, attentionMask));
  }

  async #embedText(inputIds: Int32Array, idsShape: readonly number[], attentionMask?: ArrayLike<number>): Promise<Float32Array> {
    const op = `${OP}.embedText`;
    const t = this.config.text;
    checkInput(idsShape.length === 2 && idsShape.every((d) => Number.isInteger(d)) && idsShape[0]! >= 1 && idsShape[1]! >= 1 && idsShape[1]! <= t.contextLength, op, () => `ids must be [T, L] with T ≥ 1 and 1 ≤ L ≤ ${t.contextLength}, got [${idsShape.join(', ')}]`);
    const [rows, l] = idsShape as [number, number];
    checkInput(inputIds instanceof Int32Array && inputIds.length === rows * l, op, () => `inputIds must be an Int32Array of ${rows * l} ids for [${rows}, ${l}], got ${inputIds?.length} values`);
    for (const id of inputIds) checkInput(id >= 0 && id < t.vocabSize, op, () => `token id ${id} outside the vocabulary [0, ${t.vocabSize})`);
    const pool = poolIndices(inputIds, rows, l);
    if (attentionMask) {
      checkInput(attentionMask.length === rows * l, op, () => `attentionMask has ${attentionMask.length} values, expected ${rows * l} like inputIds`);
      for (let r = 0; r < rows; r++) {
        // Under the causal mask only keys up to the pooled token reach the output.
        for (let k = r * l; k <= pool[r]!; k++) checkInput(attentionMask[k] !== 0, op, () => `attentionMask row ${r} masks token ${k - r * l}, before its pooled token ${pool[r]! - r * l}: only padding after it is supported`);
      }
    }
    const keys = Array.from({ length: rows }, (_, r) => inputIds.subarray(r * l, pool[r]! + 1).join(','));
    const missing = [...new Set(keys.filter((k) => !this.#textCache.has(k)))];
    // This call's rows, taken before eviction: a call with more new queries than the cache holds
    // must not lose its own first ones.
    const found = new Map(keys.map((k) => [k, this.#textCache.get(k)]));
    if (missing.length) {
      const padded = bucket(missing.length);
      const { key, build } = this.#textPlan(padded, l);
      const ids = new Int32Array(padded * l);
      const poolAt = new Int32Array(padded);
      missing.forEach((k, i) => {
        const r = keys.indexOf(k);
        ids.set(inputIds.subarray(r * l, (r + 1) * l), i * l);
        poolAt[i] = i * l + (pool[r]! - r * l);
      });
      for (let i = missing.length; i < padded; i++) poolAt[i] = i * l;
      const out = (await this.#plans.use(key, build, (plan) => plan.run({ ids, pool: poolAt }))).outputs.textEmbeds as Float32Array;
      const e = this.config.embedDim;
      missing.forEach((k, i) => {
        const v = out.slice(i * e, (i + 1) * e);
        found.set(k, v);
        this.#textCache.set(k, v);
      });
      while (this.#textCache.size > this.#textCacheSize) this.#textCache.delete(this.#textCache.keys().next().value!);
    }
    const e = this.config.embedDim;
    const result = new Float32Array(rows * e);
    keys.forEach((k, r) => result.set(found.get(k)!, r * e));
    return result;
  }

  /**
   * Class logits of an embedded image against query embeddings [Bq, Q, Dt] (Bq = 1 or the batch)
   * with mask [Bq, Q]; with `nms`, each image's kept box indices from the same run (see #scorePlan).
   */
  async #score(op: string, image: OwlVitImageEmbedding, queries: Float32Array, qShape: readonly [number, number, number], mask: Int32Array, nms?: PlanNms): Promise<{ logits: Float32Array; classEmbeds: Float32Array; kept?: Int32Array[] }> {
    checkInput(image instanceof OwlVitImageEmbedding && !image.disposed, op, 'the image embedding was disposed (or is not one)');
    checkInput(this.#embeddings.has(image), op, 'the image embedding belongs to another detector');
    const b = image.batch;
    const [bq, q, dt] = qShape;
    checkInput(bq === 1 || bq === b, op, () => `queries for ${bq} images cannot score a batch of ${b} (give 1 or ${b})`);
    // Images as embedImage padded them; queries padded to a power of two with mask 0 (logit -1e6, trimmed).
    const padded = image.tensors.classEmbedsRaw.shape[0]!;
    const [pbq, pq] = [bq === 1 ? 1 : padded, bucket(q)];
    checkInput(dt === this.config.text.width, op, () => `query embeddings must have ${this.config.text.width} values each, got ${dt}`);
    const n = this.numPatches;
    checkInput(!nms || (nms.boxes.length === b * n * 4 && nms.bias.length === b * n), op, 'NMS needs boxes [B, N, 4] and bias [B, N]');
    const { key, build } = this.#scorePlan(padded, pbq, pq, nms);
    const inputs = { ...image.tensors, queries: padRows(padColumns(queries, bq, q * dt, pq * dt), bq, pbq), mask: padRows(padColumns(mask, bq, q, pq), bq, pbq) };
    let nmsInputs: { nmsBoxes: Float32Array; nmsBias: Float32Array } | undefined;
    if (nms) {
      // Padded images keep every box out of their NMS.
      nmsInputs = { nmsBoxes: padRows(nms.boxes, b, padded), nmsBias: new Float32Array(padded * n).fill(-Infinity) };
      nmsInputs.nmsBias.set(nms.bias);
    }
    const keeps = nms ? Array.from({ length: b }, (_, i) => `keep${i}`) : [];
    const { outputs } = await this.#plans.use(key, build, (plan) => plan.run({ ...inputs, ...nmsInputs }, { outputs: ['logits', 'classEmbeds', ...keeps] }));
    const kept = keeps.map((name) => keptIndices(outputs[name] as Int32Array));
    return { logits: firstColumns(outputs.logits as Float32Array, b * n, pq, q), classEmbeds: firstRows(outputs.classEmbeds as Float32Array, b, padded), ...(nms && { kept }) };
  }

  /**
   * Scores an embedded image against text queries: ids [B·Q, L], Q per image, image-major (HF's
   * layout; a row whose first id is 0 is a padded query and gets -1e6).
   */
  queryText(image: OwlVitImageEmbedding, query: { inputIds: Int32Array; idsShape: readonly number[]; attentionMask?: ArrayLike<number> }): Promise<{ logits: Float32Array; classEmbeds: Float32Array; textEmbeds: Float32Array }> {
    return this.#life.call(`${OP}.queryText`, () => this.#queryText(image, query));
  }

  async #queryText(image: OwlVitImageEmbedding, query: { inputIds: Int32Array; idsShape: readonly number[]; attentionMask?: ArrayLike<number> }, nms?: PlanNms): Promise<{ logits: Float32Array; classEmbeds: Float32Array; textEmbeds: Float32Array; kept?: Int32Array[] }> {
    const op = `${OP}.queryText`;
    const rows = query.idsShape[0]!;
    checkInput(Number.isInteger(rows) && rows >= 1 && rows % image.batch === 0, op, () => `ids must have B·Q rows for a batch of ${image.batch}, got ${rows}`);
    const textEmbeds = await this.#embedText(query.inputIds, query.idsShape, query.attentionMask);
    const q = rows / image.batch;
    const l = query.idsShape[1]!;
    // HF's query_mask: a query whose first token id is 0 is padding.
    const mask = Int32Array.from({ length: rows }, (_, r) => (query.inputIds[r * l]! > 0 ? 1 : 0));
    const scored = await this.#score(op, image, textEmbeds, [image.batch, q, this.config.embedDim], mask, nms);
    return { ...scored, textEmbeds };
  }

  /** OwlViTForObjectDetection.forward (Owlv2ForObjectDetection.forward): text-queried detection of a batch of images. */
  predict(inputs: PredictInputs): Promise<PredictOutputs> {
    return this.#life.call(`${OP}.predict`, () => this.#predict(inputs));
  }

  async #predict(inputs: PredictInputs): Promise<PredictOutputs> {
    const op = `${OP}.predict`;
    checkInput(inputs && typeof inputs === 'object', op, 'expected { pixelValues, pixelShape, inputIds, idsShape, attentionMask? }');
    const b = this.#checkPixels(op, inputs.pixelValues, inputs.pixelShape);
    checkInput(Array.isArray(inputs.idsShape) && inputs.idsShape.length === 2 && inputs.idsShape[0]! % b === 0 && inputs.idsShape[0]! >= b, op, () => `idsShape must be [B·Q, L] with B = ${b}, got [${inputs.idsShape?.join(', ')}]`);
    // Check the text before running the vision tower.
    await this.#embedText(inputs.inputIds, inputs.idsShape, inputs.attentionMask);
    const image = await this.#embedImage(inputs.pixelValues, inputs.pixelShape, { imageEmbeds: true });
    try {
      const scored = await this.#queryText(image, inputs);
      return { logits: scored.logits, predBoxes: image.predBoxes, classEmbeds: scored.classEmbeds, imageEmbeds: image.imageEmbeds!, textEmbeds: scored.textEmbeds, ...(image.objectnessLogits && { objectnessLogits: image.objectnessLogits }) };
    } finally {
      image.dispose();
    }
  }

  /**
   * Scores embedded target images against query images' embeddings (OwlViTForObjectDetection's
   * image_guided_detection from two embeddings). The query has 1 image or one per target image.
   */
  queryImage(target: OwlVitImageEmbedding, query: OwlVitImageEmbedding, options: { queryBox?: ImageGuidedInputs['queryBox'] } = {}): Promise<Omit<ImageGuidedOutputs, 'imageEmbeds' | 'queryImageEmbeds'>> {
    return this.#life.call(`${OP}.queryImage`, () => this.#queryImage(target, query, options));
  }

  async #queryImage(target: OwlVitImageEmbedding, query: OwlVitImageEmbedding, options: { queryBox?: ImageGuidedInputs['queryBox'] } = {}, nms?: PlanNms): Promise<Omit<ImageGuidedOutputs, 'imageEmbeds' | 'queryImageEmbeds'> & { kept?: Int32Array[] }> {
    const op = `${OP}.imageGuided`;
    checkInput(query instanceof OwlVitImageEmbedding && !query.disposed, op, 'the query image embedding was disposed (or is not one)');
    const nq = query.batch;
    checkInput(nq === 1 || nq === target.batch, op, () => `${nq} query images for ${target.batch} target images: give 1 or ${target.batch}`);
    const boxes = normaliseQueryBoxes(op, options.queryBox, nq);
    const n = this.numPatches;
    const dt = this.config.text.width;
    // The query is picked on the host: embeddings made with { classEmbedsRaw } brought them back in their run.
    const raw = query.classEmbedsRaw ?? ((await query.tensors.classEmbedsRaw.read()) as Float32Array);
    const bestBoxIndices = new Int32Array(nq);
    const queryEmbeds = new Float32Array(nq * dt);
    for (let i = 0; i < nq; i++) {
      const embeds = raw.subarray(i * n * dt, (i + 1) * n * dt);
      const best = selectImageQuery(query.predBoxes.subarray(i * n * 4, (i + 1) * n * 4), embeds, n, boxes?.[i]);
      checkInput(best >= 0, op, `no predicted box of query image ${i} qualifies as the query (IoUs are NaN, or every generalized IoU is negative)`);
      bestBoxIndices[i] = best;
      queryEmbeds.set(embeds.subarray(best * dt, (best + 1) * dt), i * dt);
    }
    const { logits, classEmbeds, kept } = await this.#score(op, target, queryEmbeds, [nq, 1, dt], new Int32Array(nq).fill(1), nms);
    return { ...(kept && { kept }), logits, targetPredBoxes: target.predBoxes, queryPredBoxes: query.predBoxes, bestBoxIndices, queryEmbeds, classEmbeds };
  }

  /** OwlViTForObjectDetection.image_guided_detection: detect what a query image shows. */
  imageGuided(inputs: ImageGuidedInputs): Promise<ImageGuidedOutputs> {
    return this.#life.call(`${OP}.imageGuided`, () => this.#imageGuided(inputs));
  }

  async #imageGuided(inputs: ImageGuidedInputs): Promise<ImageGuidedOutputs> {
    const op = `${OP}.imageGuided`;
    checkInput(inputs && typeof inputs === 'object', op, 'expected { pixelValues, pixelShape, queryPixelValues, queryShape, queryBox? }');
    const b = this.#checkPixels(op, inputs.pixelValues, inputs.pixelShape);
    const nq = this.#checkPixels(op, inputs.queryPixelValues, inputs.queryShape, 'query pixels');
    checkInput(nq === 1 || nq === b, op, () => `${nq} query images for ${b} target images: give 1 or ${b}`);
    normaliseQueryBoxes(op, inputs.queryBox, nq);
    const target = await this.#embedImage(inputs.pixelValues, inputs.pixelShape, { imageEmbeds: true });
    let query: OwlVitImageEmbedding | undefined;
    try {
      query = await this.#embedImage(inputs.queryPixelValues, inputs.queryShape, { imageEmbeds: true, classEmbedsRaw: true });
      const out = await this.#queryImage(target, query, { queryBox: inputs.queryBox });
      return { ...out, imageEmbeds: target.imageEmbeds!, queryImageEmbeds: query.imageEmbeds! };
    } finally {
      target.dispose();
      query?.dispose();
    }
  }

  /**
   * HF post_process_object_detection of predict's outputs (see postprocess.ts). OWLv2: `targetSizes`
   * are the original images' (h, w) and boxes come out in their pixels (the padding removed,
   * clipped), each with its objectness when the outputs hold objectnessLogits.
   */
  postProcess(outputs: Pick<PredictOutputs, 'logits' | 'predBoxes' | 'objectnessLogits'>, options: Omit<PostProcessOptions, 'padded'> = {}): Detections[] {
    const [b, n, q] = this.#outputShape(`${OP}.postProcess`, outputs.logits, outputs.predBoxes);
    return postProcessObjectDetection(outputs.logits, outputs.predBoxes, [b, n, q], this.#postOptions(options, outputs.objectnessLogits));
  }

  /** The model's box frame (OWLv2: the padded square) and objectness, for the post-processing. */
  #postOptions<T extends PostProcessOptions>(options: T, objectnessLogits?: Float32Array): T {
    return { ...options, padded: this.config.modelType === 'owlv2', objectnessLogits: options.objectnessLogits ?? objectnessLogits };
  }

  /** HF post_process_image_guided_detection of imageGuided's outputs, NMS on the GPU (see postprocess.ts and nms); OWLv2 boxes as in postProcess. */
  postProcessImageGuided(outputs: Pick<ImageGuidedOutputs, 'logits' | 'targetPredBoxes'>, options: Omit<ImageGuidedPostProcessOptions, 'padded'> = {}): Promise<Detections[]> {
    return this.#life.call(`${OP}.postProcessImageGuided`, async () => this.#postProcessImageGuided(outputs, options));
  }

  /** With `kept`, the NMS already ran (per image, the indices it kept). */
  #postProcessImageGuided(outputs: Pick<ImageGuidedOutputs, 'logits' | 'targetPredBoxes'>, options: Omit<ImageGuidedPostProcessOptions, 'padded'>, kept?: readonly ArrayLike<number>[]): Promise<Detections[]> {
    const shape = this.#outputShape(`${OP}.postProcessImageGuided`, outputs.logits, outputs.targetPredBoxes);
    return postProcessImageGuided(kept ?? ((...args) => this.#nms(...args)), outputs.logits, outputs.targetPredBoxes, shape, this.#postOptions(options));
  }

  /**
   * torchvision's batched_nms of boxes [K, 4] (x1, y1, x2, y2), scores [K] and labels [K] (boxes of
   * different labels never suppress each other), as a graph plan per power-of-two K (padded rows
   * never take part): the kept indices, best first. Only boxes with score > `scoreThreshold` take
   * part (default: every box with a score that is not NaN).
   */
  nms(boxes: Float32Array, scores: Float32Array, labels: Int32Array, options: { iouThreshold: number; scoreThreshold?: number }): Promise<Int32Array> {
    return this.#life.call(`${OP}.nms`, () => this.#nms(boxes, scores, labels, options));
  }

  async #nms(boxes: Float32Array, scores: Float32Array, labels: Int32Array, options: { iouThreshold: number; scoreThreshold?: number }): Promise<Int32Array> {
    const op = `${OP}.nms`;
    const k = scores?.length;
    checkInput(boxes?.length === 4 * k && labels?.length === k, op, () => `expected boxes [K, 4], scores [K] and labels [K], got ${boxes?.length}, ${k} and ${labels?.length} values`);
    if (k === 0) return new Int32Array(0);
    const padded = bucket(k);
    // Padded rows score -Infinity, which no threshold lets through.
    const nmsOptions = { batched: true, iouThreshold: options.iouThreshold, scoreThreshold: options.scoreThreshold ?? -F32_MAX };
    const build = (g: GraphBuilder) => {
      g.output('keep', g.op(nmsKernel, [g.input('boxes', [padded, 4]), g.input('scores', [padded]), g.input('labels', [padded], 'i32')], nmsOptions, 'owl.nms')[0]!);
    };
    const inputs = { boxes: padRows(boxes, k, padded), scores: Float32Array.from({ length: padded }, (_, i) => (i < k ? scores[i]! : -Infinity)), labels: padRows(labels, k, padded) };
    const { outputs } = await this.#plans.use(`nms:${padded}:${nmsOptions.iouThreshold}:${nmsOptions.scoreThreshold}`, build, (plan) => plan.run(inputs));
    return keptIndices(outputs.keep as Int32Array);
  }

  #outputShape(op: string, logits: ArrayLike<number>, boxes: ArrayLike<number>): [number, number, number] {
    const n = this.numPatches;
    checkInput(logits && boxes && boxes.length > 0 && boxes.length % (4 * n) === 0, op, () => `boxes must be [B, ${n}, 4], got ${boxes?.length} values`);
    const b = boxes.length / (4 * n);
    checkInput(logits.length > 0 && logits.length % (b * n) === 0, op, () => `logits must be [${b}, ${n}, Q], got ${logits.length} values`);
    return [b, n, logits.length / (b * n)];
  }

  /**
   * Finds what the queries describe in each image: per image, detections with boxes in its
   * original pixels, best first (see detect.ts).
   */
  detect(images: readonly DetectImage[], queries: DetectQueries, options: DetectOptions = {}): Promise<Detection[][]> {
    return this.#life.call(`${OP}.detect`, () => detect(this.#calls, images, queries, options));
  }

  get disposed(): boolean {
    return this.#life.disposed;
  }

  /**
   * Frees plans, weights, cached text embeddings and every image embedding not yet disposed, and
   * returns the GPU's stats after. New calls are refused at once; calls in flight finish first
   * (an embedding one of them returns is then already disposed), and what they read is freed when
   * the last one settles, so the stats drop only then.
   */
  dispose(): GpuStats {
    this.#life.dispose(() => {
      for (const e of [...this.#embeddings]) e.dispose();
      this.#plans.dispose();
      this.#textCache.clear();
      for (const m of Object.values(this.weights)) for (const t of m.values()) t.dispose();
    });
    return this.gpu.stats();
  }
}

/** The kept indices of an NMS output (the -1 padding after them dropped). */
function keptIndices(keep: Int32Array): Int32Array {
  const count = keep.indexOf(-1);
  return count < 0 ? keep : keep.slice(0, count);
}

/** queryBox as one box per query image (or undefined), checked and clipped to the query image. */
function normaliseQueryBoxes(op: string, box: ImageGuidedInputs['queryBox'], nq: number): (readonly number[])[] | undefined {
  if (box === undefined) return undefined;
  checkInput(Array.isArray(box), op, () => `queryBox must be [x1, y1, x2, y2] normalised to the query image, or one such box per query image; got ${typeof box}`);
  const one = !Array.isArray(box[0]);
  const boxes = one ? Array.from({ length: nq }, () => box as readonly number[]) : [...(box as readonly (readonly number[])[])];
  checkInput(boxes.length === nq, op, () => `queryBox: ${boxes.length} boxes for ${nq} query images`);
  return boxes.map((b, i) => clipBox(op, `queryBox ${one ? 0 : i} (normalised to the query image)`, b, 1, 1));
}

/** The model type a folder's weights imply, for a config without model_type: OWLv2 when they are named owlv2.*. */
async function typeFromWeights(where: Location): Promise<OwlModelType> {
  try {
    const reader = await openWeightReader(where);
    try {
      return reader.names().some((n) => n.startsWith('owlv2.')) ? 'owlv2' : 'owlvit';
    } finally {
      reader.close();
    }
  } catch {
    return 'owlvit'; // the load opens the weights again and reports what is wrong with them
  }
}

/** The detection heads' parameters under their canonical names, checked like the towers'. */
function planHead(ctx: LoadContext, config: OwlVitConfig): PlannedParam[] {
  return [...headShapes(config)].map(([param, { name, shape }]) => {
    const what = param.startsWith('objectness_head.') ? "OWLv2's objectness head" : 'detection head';
    checkTensor(ctx.reader, name, shape, what);
    checkSize(ctx, name, shape, what);
    return { param, shape, names: [name] };
  });
}
